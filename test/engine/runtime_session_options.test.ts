/**
 * Session options per execution provider: the CPU its defaults, warnings silenced; CUDA gets its provider
 * options (with the CPU provider behind it), the CPU arena, memory patterns and no CUDA graphs.
 */
import { expect, test } from "bun:test";
import { cudaProviderOptions, sessionOptionsFor } from "../../api/engine/onnx/runtime.ts";

test("CPU: level all (or the one asked for), the CPU provider only, onnxruntime's default threads, errors logged", () => {
  expect(sessionOptionsFor({ provider: "cpu" })).toEqual({
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    intraOpNumThreads: 0,
    logSeverityLevel: 3,
  });
  expect(sessionOptionsFor({ provider: "cpu", optimizationLevel: "disabled", intraOpThreads: 2 })).toEqual({
    executionProviders: ["cpu"],
    graphOptimizationLevel: "disabled",
    intraOpNumThreads: 2,
    logSeverityLevel: 3,
  });
});

test("CUDA: the CUDA provider with its options first, the CPU behind it, arena and memory patterns on", () => {
  const options = sessionOptionsFor({ provider: "cuda" });
  expect(options.executionProviders).toEqual([cudaProviderOptions(0), "cpu"]);
  expect(options).toMatchObject({
    graphOptimizationLevel: "all",
    enableCpuMemArena: true,
    enableMemPattern: true,
    executionMode: "sequential",
  });
  expect(cudaProviderOptions(1)).toMatchObject({
    name: "cuda",
    deviceId: 1,
    arenaExtendStrategy: "kSameAsRequested",
    cudnnConvAlgoSearch: "EXHAUSTIVE",
  });
  // CUDA graphs need fixed shapes; sdx's vary per request.
  expect(cudaProviderOptions()).not.toHaveProperty("enableCudaGraph");
  expect(sessionOptionsFor({ provider: "cuda", deviceId: 3 }).executionProviders?.[0]).toMatchObject({
    deviceId: 3,
  });
});
