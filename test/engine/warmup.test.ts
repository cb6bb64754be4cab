/**
 * The start-up warm-up: one short generation through the normal pipeline at the model's default size, timed,
 * after which a request at that size runs on warmed sessions.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { inspectModelFolder } from "../../api/engine/model_folder.ts";
import { runStats } from "../../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import type { PipelineComponents } from "../../api/engine/pipeline/types.ts";
import { warmUp } from "../../api/engine/pipeline/warmup.ts";
import { TINY_SD15 } from "../helpers/fixtures.ts";

let pipeline: PipelineComponents;

beforeAll(async () => {
  pipeline = await loadOnnxPipeline(await inspectModelFolder("tiny_sd15", TINY_SD15), "cpu");
});
afterAll(() => releasePipeline(pipeline));

test("runs one short guided generation at the model's default size and reports its duration", async () => {
  const before = { ...runStats };
  const result = await warmUp(pipeline);
  // The tiny fixture's VAE sample size is 256 px.
  expect(pipeline.files.vae.sampleSize).toBe(256);
  expect(result).toMatchObject({ width: 256, height: 256, steps: 2 });
  expect(result.ms).toBeGreaterThan(0);
  expect(result.timings.totalMs).toBeLessThanOrEqual(result.ms);
  // Text encoder (prompt and empty negative prompt, one call each), 2 joint CFG UNet calls, 1 VAE decode.
  expect(runStats.runs - before.runs).toBe(5);
}, 120_000);

test("takes another size and step count", async () => {
  const before = { ...runStats };
  const result = await warmUp(pipeline, { size: 64, steps: 1, guidanceScale: 1 });
  expect(result).toMatchObject({ width: 64, height: 64, steps: 1 });
  // Without guidance: one text-encoder call, one UNet call, one decode.
  expect(runStats.runs - before.runs).toBe(3);
});

test("stops when aborted", async () => {
  const controller = new AbortController();
  controller.abort();
  await expect(warmUp(pipeline, { size: 64, signal: controller.signal })).rejects.toThrow(/cancelled/);
});
