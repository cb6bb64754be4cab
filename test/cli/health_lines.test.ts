/** `sdx health`'s lines on the hardware: the GPU or WebGPU adapter in use and the providers passed over. */
import { expect, test } from "bun:test";
import { hardwareLines } from "../../cli/commands/health.ts";
import type { Health } from "../../sdk/index.ts";

const base = {
  status: "ok",
  message: "ready",
  model: null,
  execution_provider: "cpu",
  version: "0.1.0",
  onnxruntime_version: "1.30.0",
  gpu: null,
  provider_fallbacks: [],
  webgpu: null,
  loaded_models: [],
  queue: { running: 0, queued: 0, concurrency: 1, max_queue: 16 },
} as unknown as Health;

test("the CPU without fallbacks prints nothing more", () => {
  expect(hardwareLines(base)).toEqual([]);
});

test("WebGPU names its adapter and precision, and each provider passed over says why", () => {
  const health = {
    ...base,
    execution_provider: "webgpu",
    webgpu: {
      adapter: {
        name: "AMD Radeon RX 7900 XTX (RADV NAVI31)",
        type: "DISCRETE_GPU",
        driver: "Mesa 24.2",
        vulkan_version: "1.3.289",
      },
      float16: false,
      note: "the adapter has no shader-f16",
    },
    provider_fallbacks: [{ provider: "cuda", reason: "no NVIDIA driver" }],
  } as unknown as Health;
  expect(hardwareLines(health)).toEqual([
    "WebGPU adapter: AMD Radeon RX 7900 XTX (RADV NAVI31) (DISCRETE_GPU, driver Mesa 24.2, Vulkan 1.3.289); graphs in float32 (the adapter has no shader-f16)",
    "passed over cuda: no NVIDIA driver",
  ]);
});

test("CUDA names the GPU", () => {
  const health = {
    ...base,
    execution_provider: "cuda",
    gpu: {
      index: 0,
      name: "NVIDIA H100 80GB HBM3",
      memory_total_mib: 81559,
      memory_used_mib: null,
      driver_version: "580.82",
    },
  } as unknown as Health;
  expect(hardwareLines(health)).toEqual(["GPU 0: NVIDIA H100 80GB HBM3, 81559 MiB, driver 580.82"]);
});
