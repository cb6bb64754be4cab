/**
 * Every diffusers reference case of the tiny SDXL model (StableDiffusionXLPipeline 0.29.2) through the public
 * API: POST /v1/generate, driven by the SDK, served by the real app with the engine worker and real onnxruntime
 * sessions on the optimum ONNX folder. Each image must be within mean 0.5 and max 4 (0–255) of the PNG
 * diffusers made. The fixtures count clip skip as diffusers does; sdx's clip_skip is that plus 1 (1 = SDXL's
 * default penultimate layer). Cases recorded with several images use diffusers' one-generator convention: only
 * their first image is comparable, and only where the sampler draws no per-step noise.
 * Then what SDXL adds around the cases: the a1111 syntax, diffusers' empty-negative-prompt rule, the native
 * size, clip skip limits, and warnings for the SDXL-only fields on an SD 1.x model.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { copyFile, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { readPngText } from "../../api/engine/pipeline/image.ts";
import { SCHEDULERS } from "../../api/engine/schedulers/index.ts";
import { SCHEDULER_NAMES, type SchedulerName } from "../../contract/index.ts";
import { createSdxClient, type GenerateRequest, SdxError } from "../../sdk/index.ts";
import {
  FIXTURES,
  imageDiff,
  MODELS_DIR,
  MODELS_SDXL_DIR,
  pixels,
  referenceCase,
} from "../helpers/fixtures.ts";

interface SdxlCaseExtras {
  scheduler_class: string;
  eta?: number;
  num_images_per_prompt: number;
  prompt_2: string | null;
  negative_prompt_2: string | null;
  original_size: number[] | null;
  crops_coords_top_left: number[] | null;
  target_size: number[] | null;
  do_classifier_free_guidance: boolean;
  uncond_is_zeros: boolean;
  add_time_ids_first_call: number[][];
}

/** The sdx scheduler for a diffusers class and its from_config overrides. */
function schedulerFor(cls: string, overrides: Record<string, unknown>): SchedulerName {
  const byClass: Record<string, SchedulerName> = {
    DDIMScheduler: "ddim",
    PNDMScheduler: "pndm",
    LCMScheduler: "lcm",
    EulerDiscreteScheduler: "euler",
    EulerAncestralDiscreteScheduler: "euler_a",
    LMSDiscreteScheduler: "lms",
    HeunDiscreteScheduler: "heun",
    KDPM2DiscreteScheduler: "dpm2" as SchedulerName,
    DPMSolverSinglestepScheduler: "dpmsolver_singlestep",
    UniPCMultistepScheduler: "unipc",
    DPMSolverMultistepScheduler:
      overrides.algorithm_type === "sde-dpmsolver++" ? "dpmsolver++_sde" : "dpmsolver++",
  };
  const name = byClass[cls];
  if (!name) throw new Error(`no sdx scheduler for ${cls}`);
  return name;
}

const pair = (v: number[] | null) => (v ? ([v[0], v[1]] as number[]) : undefined);

function served(modelsDir: string) {
  const host = new ModelHost({ modelsDir, provider: "cpu" });
  const app = createApp(host);
  const client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
  return { host, client };
}

const { host, client } = served(MODELS_SDXL_DIR);
beforeAll(async () => {
  await host.start();
  const state = host.state;
  if (state.status !== "ready") throw new Error(`model did not load: ${state.message}`);
});
afterAll(() => host.close());

const png = (b64: string | undefined) => Buffer.from(b64 ?? "", "base64");

async function rejection(promise: Promise<unknown>): Promise<SdxError> {
  const e = await promise.catch((error: unknown) => error);
  if (!(e instanceof SdxError)) throw new Error(`expected an SdxError, got ${String(e)}`);
  return e;
}

const caseNames = readdirSync(join(FIXTURES, "cases", "tiny_sdxl"), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

/**
 * The single-file checkpoint of the same model, with the sidecar that tells its per-level attention heads
 * (2, 4, 8: the tiny model's own, which no weight shape records).
 */
async function checkpointModelsDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "sdx-sdxl-checkpoint-"));
  await copyFile(join(FIXTURES, "checkpoints", "tiny_sdxl.safetensors"), join(dir, "tiny_sdxl.safetensors"));
  await writeFile(
    join(dir, "tiny_sdxl.json"),
    JSON.stringify({ model_type: "SDXL", unet_attention_heads: [2, 4, 8] }),
  );
  return dir;
}

for (const source of ["onnx", "safetensors"] as const) {
  describe(`tiny SDXL reference cases through POST /v1/generate (${source})`, () => {
    let sourceHost: ModelHost;
    let sourceClient: ReturnType<typeof createSdxClient>;
    beforeAll(async () => {
      ({ host: sourceHost, client: sourceClient } = served(
        source === "onnx" ? MODELS_SDXL_DIR : await checkpointModelsDir(),
      ));
      await sourceHost.start();
      const state = sourceHost.state;
      if (state.status !== "ready") throw new Error(`model did not load: ${state.message}`);
    });
    afterAll(() => sourceHost.close());
    for (const name of caseNames) {
      test(name, async () => {
        const ref = (await referenceCase(name, "tiny_sdxl")) as Awaited<ReturnType<typeof referenceCase>> &
          SdxlCaseExtras;
        const overrides = ref.scheduler_from_config_overrides;
        const scheduler = schedulerFor(ref.scheduler_class, overrides);
        const prompt = Array.isArray(ref.prompt) ? (ref.prompt[0] ?? "") : ref.prompt;
        const negative = Array.isArray(ref.negative_prompt) ? ref.negative_prompt[0] : ref.negative_prompt;
        const originalSize = pair(ref.original_size);
        const crops = pair(ref.crops_coords_top_left);
        const targetSize = pair(ref.target_size);
        const request: GenerateRequest = {
          prompt,
          ...(ref.prompt_2 !== null ? { prompt_2: ref.prompt_2 } : {}),
          ...(negative != null ? { negative_prompt: negative } : {}),
          ...(ref.negative_prompt_2 !== null ? { negative_prompt_2: ref.negative_prompt_2 } : {}),
          ...(originalSize ? { original_size: originalSize } : {}),
          ...(crops ? { crops_coords_top_left: crops } : {}),
          ...(targetSize ? { target_size: targetSize } : {}),
          prompt_syntax: "diffusers",
          seed: ref.seed,
          batch_size: ref.num_images_per_prompt,
          width: ref.width,
          height: ref.height,
          num_steps: ref.num_inference_steps,
          guidance_scale: ref.guidance_scale,
          scheduler_type: scheduler,
          // diffusers' SDXL clip_skip None reads hidden_states[-2] (sdx 1), clip_skip k hidden_states[-(k+2)].
          clip_skip: (ref.clip_skip ?? 0) + 1,
          ...(overrides.use_karras_sigmas === true ? { karras_sigmas: true } : {}),
          ...(typeof overrides.timestep_spacing === "string"
            ? { timestep_spacing: overrides.timestep_spacing as GenerateRequest["timestep_spacing"] }
            : {}),
          ...((ref.eta ?? 0) > 0 ? { eta: ref.eta } : {}),
        };
        if (ref.num_images_per_prompt > 1) {
          // One generator for several images: only image 0 is comparable, and only without per-step noise.
          expect(SCHEDULERS[scheduler].stochastic).toBe(false);
        }
        const res = await sourceClient.generate(request);
        expect(res.metadata.model.kind).toBe("sdxl");
        expect(res.metadata.timesteps).toEqual(ref.timesteps);
        // The micro-conditioning as applied, in diffusers' order, is the time ids diffusers fed the UNet.
        const p = res.metadata.parameters;
        expect([
          ...(p.original_size ?? []),
          ...(p.crops_coords_top_left ?? []),
          ...(p.target_size ?? []),
        ]).toEqual(ref.add_time_ids_first_call[0] as number[]);
        if (ref.do_classifier_free_guidance) expect(p.negative_prompt_2 === null).toBe(ref.uncond_is_zeros);
        expect(res.images).toHaveLength(ref.num_images_per_prompt);
        const diff = await imageDiff(png(res.images[0]?.png), join(ref.dir, "image_0.png"));
        expect(diff.mean).toBeLessThanOrEqual(0.5);
        expect(diff.max).toBeLessThanOrEqual(4);
      });
    }
  });
}

describe("SDXL around the reference cases", () => {
  const small: GenerateRequest = {
    prompt: "a photo of a cat",
    seed: 7,
    width: 64,
    height: 64,
    num_steps: 4,
    guidance_scale: 5,
    scheduler_type: "euler",
  };

  test("every sampler runs on SDXL, with Karras where it has it, and the infotext names the model type", async () => {
    for (const name of SCHEDULER_NAMES) {
      const res = await client.generate({
        ...small,
        num_steps: 3,
        scheduler_type: name,
        ...(SCHEDULERS[name].karras ? { karras_sigmas: true } : {}),
      });
      const image = png(res.images[0]?.png);
      expect(readPngText(image).parameters).toContain("Model type: SDXL");
      const { data } = await pixels(image);
      expect(data.some((v) => v !== data[0])).toBe(true);
    }
  });

  test("a plain short prompt gives the same image in both syntaxes, with and without a negative prompt", async () => {
    for (const extra of [{}, { negative_prompt: "blurry" }, { prompt_2: "in the snow" }]) {
      const [a1111, diffusers] = await Promise.all([
        client.generate({ ...small, ...extra, prompt_syntax: "a1111" }),
        client.generate({ ...small, ...extra, prompt_syntax: "diffusers" }),
      ]);
      expect((await imageDiff(png(a1111.images[0]?.png), png(diffusers.images[0]?.png))).max).toBe(0);
    }
  });

  test('diffusers encodes an explicit "" negative prompt but zeroes a missing one; a1111 zeroes both', async () => {
    const [none, empty, a1111Empty] = await Promise.all([
      client.generate({ ...small, prompt_syntax: "diffusers" }),
      client.generate({ ...small, prompt_syntax: "diffusers", negative_prompt: "" }),
      client.generate({ ...small, prompt_syntax: "a1111", negative_prompt: "" }),
    ]);
    expect(none.metadata.parameters.negative_prompt_2).toBeNull();
    expect(empty.metadata.parameters.negative_prompt_2).toBe("");
    expect((await imageDiff(png(none.images[0]?.png), png(empty.images[0]?.png))).mean).toBeGreaterThan(0.5);
    expect((await imageDiff(png(none.images[0]?.png), png(a1111Empty.images[0]?.png))).max).toBe(0);
  });

  test("negative_prompt_2 without negative_prompt is ignored in diffusers syntax, and the warning says why", async () => {
    const [plain, withSecond] = await Promise.all([
      client.generate({ ...small, prompt_syntax: "diffusers" }),
      client.generate({ ...small, prompt_syntax: "diffusers", negative_prompt_2: "blurry" }),
    ]);
    expect((await imageDiff(png(plain.images[0]?.png), png(withSecond.images[0]?.png))).max).toBe(0);
    expect(withSecond.warnings.join("\n")).toContain("negative_prompt_2 was ignored");
    const used = await client.generate({ ...small, prompt_syntax: "a1111", negative_prompt_2: "blurry" });
    expect(used.metadata.parameters.negative_prompt_2).toBe("blurry");
    expect((await imageDiff(png(plain.images[0]?.png), png(used.images[0]?.png))).mean).toBeGreaterThan(0.5);
  });

  test("micro-conditioning changes the image and is recorded as applied", async () => {
    const [plain, micro] = await Promise.all([
      client.generate(small),
      client.generate({ ...small, original_size: [256, 256], crops_coords_top_left: [16, 8] }),
    ]);
    expect(plain.metadata.parameters.original_size).toEqual([64, 64]);
    expect(plain.metadata.parameters.crops_coords_top_left).toEqual([0, 0]);
    expect(micro.metadata.parameters.original_size).toEqual([256, 256]);
    expect(micro.metadata.parameters.target_size).toEqual([64, 64]);
    expect((await imageDiff(png(plain.images[0]?.png), png(micro.images[0]?.png))).mean).toBeGreaterThan(0.5);
  });

  test("a long a1111 prompt is encoded in chunks by both encoders; prompt_2 of another length is padded", async () => {
    const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(" ");
    const res = await client.generate({ ...small, prompt: `a cat, ${long}`, prompt_2: "a cat" });
    expect(res.metadata.prompt.chunks).toBe(2);
    expect(res.images).toHaveLength(1);
  });

  test("the default size is the model's native size; clip_skip goes down to the embeddings", async () => {
    const res = await client.generate({ prompt: "", num_steps: 1 });
    expect([res.metadata.parameters.width, res.metadata.parameters.height]).toEqual([256, 256]);
    const [one, three] = await Promise.all([
      client.generate(small),
      client.generate({ ...small, clip_skip: 3 }),
    ]);
    expect((await imageDiff(png(one.images[0]?.png), png(three.images[0]?.png))).mean).toBeGreaterThan(0.5);
    const e = await rejection(client.generate({ ...small, clip_skip: 4 }));
    expect(e.status).toBe(422);
    expect(e.fields[0]).toMatchObject({ field: "clip_skip", allowed: [1, 2, 3] });
  });
});

describe("SDXL-only fields on an SD 1.x model", () => {
  const sd = served(MODELS_DIR);
  beforeAll(() => sd.host.start());
  afterAll(() => sd.host.close());

  test("have no effect, are named in warnings and recorded as null", async () => {
    const base: GenerateRequest = { prompt: "a cat", seed: 1, width: 64, height: 64, num_steps: 2 };
    const [plain, extra] = await Promise.all([
      sd.client.generate(base),
      sd.client.generate({
        ...base,
        prompt_2: "a dog",
        negative_prompt_2: "blurry",
        original_size: [512, 512],
        crops_coords_top_left: [0, 0],
        target_size: [512, 512],
      }),
    ]);
    expect((await imageDiff(png(plain.images[0]?.png), png(extra.images[0]?.png))).max).toBe(0);
    const text = extra.warnings.join("\n");
    for (const field of [
      "prompt_2",
      "negative_prompt_2",
      "original_size",
      "crops_coords_top_left",
      "target_size",
    ]) {
      expect(text).toContain(`${field} has no effect`);
    }
    expect(extra.metadata.parameters.prompt_2).toBeNull();
    expect(extra.metadata.parameters.original_size).toBeNull();
  });
});
