/**
 * The SDXL pipeline in the engine: model CPU offload releases and recreates both text encoders with the
 * text_encoder stage and leaves the pixels alone; a folder missing SDXL's second encoder is listed with why.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspectModelFolder } from "../../api/engine/model_folder.ts";
import { loadOnnxPipeline } from "../../api/engine/pipeline/load.ts";
import { Residency } from "../../api/engine/pipeline/residency.ts";
import { generate } from "../../api/engine/pipeline/text_to_image.ts";
import type { GenerateInput, PipelineComponents } from "../../api/engine/pipeline/types.ts";
import { imageDiff, TINY_SDXL } from "../helpers/fixtures.ts";

const input: GenerateInput = {
  prompt: "a lighthouse",
  negativePrompt: "fog",
  promptSyntax: "a1111",
  seeds: [5],
  width: 64,
  height: 64,
  numSteps: 3,
  guidanceScale: 6,
  scheduler: "euler",
  schedulerOptions: {},
  clipSkip: 2,
  vaeSlicing: false,
  vaeTiling: false,
};

let components: PipelineComponents;
beforeAll(async () => {
  components = await loadOnnxPipeline(await inspectModelFolder("tiny_sdxl", TINY_SDXL), "cpu");
});
afterAll(() => new Residency(components).releaseAll());

test("offload releases and recreates both SDXL text encoders, and the image is the same", async () => {
  expect(components.xl?.layers).toEqual([3, 3]);
  expect(components.vaeScalingFactor).toBe(0.13025);
  const residency = new Residency(components);
  const stages: string[] = [];
  const plain = await generate(components, input);
  const offloaded = await generate(components, input, {
    enterStage: async (stage) => {
      stages.push(stage);
      await residency.enterStage(true)(stage);
    },
  });
  const again = await generate(components, input, { enterStage: residency.enterStage(false) });
  expect(stages).toEqual(["text_encoder", "unet", "vae_decoder"]);
  expect(residency.reloads).toBe(4);
  expect(offloaded.xl?.timeIds).toEqual([64, 64, 0, 0, 64, 64]);
  for (const other of [offloaded, again]) {
    expect(
      (await imageDiff(plain.images[0]?.png as Uint8Array, other.images[0]?.png as Uint8Array)).max,
    ).toBe(0);
  }
});

test("an SDXL folder without its graphs is listed as incomplete, naming text_encoder_2 among them", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sdx-sdxl-"));
  try {
    const folder = join(dir, "partial");
    await cp(TINY_SDXL, folder, {
      recursive: true,
      filter: (src) => !src.includes("text_encoder_2") && !src.endsWith(".onnx"),
    });
    const entry = await inspectModelFolder("partial", folder);
    expect(entry.kind).toBe("sdxl");
    expect(entry.problem).toContain("text_encoder_2/model.onnx");
    const full = await inspectModelFolder("tiny_sdxl", TINY_SDXL);
    expect([full.problem, full.nativeSize]).toEqual([null, 256]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
