/**
 * The engine against diffusers: the tiny SD 1.x fixture model through real onnxruntime sessions must give the
 * reference images (StableDiffusionPipeline, torch CPU generator) for DPM-Solver++ 2M with and without Karras.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { inspectModelFolder } from "../../api/engine/model_folder.ts";
import { GenerationAborted } from "../../api/engine/pipeline/errors.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import { generate } from "../../api/engine/pipeline/text_to_image.ts";
import type { PipelineComponents } from "../../api/engine/pipeline/types.ts";
import { imageDiff, referenceCase, TINY_SD15 } from "../helpers/fixtures.ts";

let pipeline: PipelineComponents;

beforeAll(async () => {
  pipeline = await loadOnnxPipeline(await inspectModelFolder("tiny_sd15", TINY_SD15), "cpu");
});
afterAll(async () => {
  await releasePipeline(pipeline);
});

const first = <T>(v: T | T[] | null): T | null => (Array.isArray(v) ? (v[0] ?? null) : v);

describe("tiny SD 1.x equals diffusers", () => {
  for (const name of ["p04_dpmpp2m_karras20_256", "p14_dpmpp2m15_promptlist"]) {
    test(name, async () => {
      const ref = await referenceCase(name);
      const out = await generate(pipeline, {
        prompt: first(ref.prompt) ?? "",
        negativePrompt: first(ref.negative_prompt),
        seeds: [ref.seed],
        width: ref.width,
        height: ref.height,
        numSteps: ref.num_inference_steps,
        guidanceScale: ref.guidance_scale,
        promptSyntax: "diffusers",
        scheduler: "dpmsolver++",
        schedulerOptions: { karrasSigmas: ref.scheduler_from_config_overrides.use_karras_sigmas === true },
        clipSkip: 1,
        vaeSlicing: false,
        vaeTiling: false,
      });
      expect(out.timesteps).toEqual(ref.timesteps);
      const diff = await imageDiff((out.images[0] as { png: Uint8Array }).png, join(ref.dir, "image_0.png"));
      expect(diff.mean).toBeLessThanOrEqual(0.5);
      expect(diff.max).toBeLessThanOrEqual(4);
    });
  }
});

describe("batches", () => {
  test("image i of a batch is the image of seed + i made alone, with or without VAE slicing", async () => {
    const base = {
      prompt: "a lighthouse at dawn",
      negativePrompt: null,
      width: 64,
      height: 64,
      numSteps: 4,
      guidanceScale: 5,
      promptSyntax: "a1111" as const,
      scheduler: "dpmsolver++" as const,
      schedulerOptions: { karrasSigmas: true },
      clipSkip: 1,
      vaeTiling: false,
    };
    const batch = await generate(pipeline, { ...base, seeds: [7, 8], vaeSlicing: false });
    const sliced = await generate(pipeline, { ...base, seeds: [7, 8], vaeSlicing: true });
    const alone = await generate(pipeline, { ...base, seeds: [8], vaeSlicing: false });
    const [b0, b1] = batch.images;
    expect(b0?.seed).toBe(7);
    expect(b1?.seed).toBe(8);
    expect(
      (await imageDiff(b1?.png as Uint8Array, alone.images[0]?.png as Uint8Array)).max,
    ).toBeLessThanOrEqual(1);
    expect(
      (await imageDiff(b1?.png as Uint8Array, sliced.images[1]?.png as Uint8Array)).max,
    ).toBeLessThanOrEqual(1);
    expect((await imageDiff(b0?.png as Uint8Array, b1?.png as Uint8Array)).mean).toBeGreaterThan(1);
  });

  test("an aborted generation stops before the next step", async () => {
    const controller = new AbortController();
    const steps: number[] = [];
    const run = generate(
      pipeline,
      {
        prompt: "x",
        negativePrompt: null,
        seeds: [1],
        width: 64,
        height: 64,
        numSteps: 20,
        guidanceScale: 5,
        promptSyntax: "a1111",
        scheduler: "dpmsolver++",
        schedulerOptions: {},
        clipSkip: 1,
        vaeSlicing: false,
        vaeTiling: false,
      },
      {
        signal: controller.signal,
        onStep: (e) => {
          steps.push(e.step);
          if (e.step === 3) controller.abort();
        },
      },
    );
    await expect(run).rejects.toBeInstanceOf(GenerationAborted);
    expect(steps).toEqual([1, 2, 3]);
  });
});
