/**
 * Model CPU offload: with offload only the running stage's session stays resident; released sessions are
 * created again when their stage next runs, and the pixels never change. Also driven through the engine worker.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { inspectModelFolder, type ModelEntry } from "../../api/engine/model_folder.ts";
import { loadOnnxPipeline } from "../../api/engine/pipeline/load.ts";
import { Residency } from "../../api/engine/pipeline/residency.ts";
import { generate } from "../../api/engine/pipeline/text_to_image.ts";
import type { GenerateInput, PipelineComponents } from "../../api/engine/pipeline/types.ts";
import { EngineWorker } from "../../api/engine/worker/engine_client.ts";
import { imageDiff, TINY_SD15 } from "../helpers/fixtures.ts";

const input: GenerateInput = {
  prompt: "a lighthouse",
  negativePrompt: null,
  promptSyntax: "a1111",
  seeds: [5],
  width: 64,
  height: 64,
  numSteps: 3,
  guidanceScale: 6,
  scheduler: "euler",
  schedulerOptions: {},
  clipSkip: 1,
  vaeSlicing: false,
  vaeTiling: false,
};

let entry: ModelEntry;
let components: PipelineComponents;
beforeAll(async () => {
  entry = await inspectModelFolder("tiny_sd15", TINY_SD15);
  components = await loadOnnxPipeline(entry, "cpu");
});
afterAll(() => new Residency(components).releaseAll());

test("offload keeps only the running stage resident and reloads the others when needed", async () => {
  const residency = new Residency(components);
  const stages: string[] = [];
  const plain = await generate(components, input);
  const offloaded = await generate(components, input, {
    enterStage: async (stage) => {
      stages.push(stage);
      await residency.enterStage(true)(stage);
    },
  });
  expect(stages).toEqual(["text_encoder", "unet", "vae_decoder"]);
  expect([
    residency.isResident("text_encoder"),
    residency.isResident("unet"),
    residency.isResident("vae_decoder"),
  ]).toEqual([false, false, true]);
  expect(residency.reloads).toBe(2);
  const again = await generate(components, input, { enterStage: residency.enterStage(false) });
  expect(residency.reloads).toBe(4);
  expect(residency.isResident("text_encoder") && residency.isResident("unet")).toBe(true);
  for (const other of [offloaded, again]) {
    expect(
      (await imageDiff(plain.images[0]?.png as Uint8Array, other.images[0]?.png as Uint8Array)).max,
    ).toBe(0);
  }
});

test("the engine worker runs every offload mode to the same image", async () => {
  const worker = new EngineWorker();
  try {
    await worker.load(entry, "cpu");
    const [none, model, sequential] = [
      await worker.generate(entry, input, "none"),
      await worker.generate(entry, input, "model"),
      await worker.generate(entry, input, "sequential"),
    ];
    for (const other of [model, sequential]) {
      expect(
        (await imageDiff(none.images[0]?.png as Uint8Array, other.images[0]?.png as Uint8Array)).max,
      ).toBe(0);
    }
  } finally {
    worker.terminate();
  }
});
