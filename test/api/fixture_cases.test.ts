/**
 * Every diffusers reference case of the tiny SD 1.x model through the public API: POST /v1/generate, driven by
 * the SDK, served by the real app with the engine worker and real onnxruntime sessions — once from the optimum
 * ONNX folder and once from the single-file LDM checkpoint, whose graphs sdx builds itself. Each image must be
 * within mean 0.5 and max 4 (0–255) of the PNG diffusers made. Cases recorded with several images use diffusers'
 * one-generator convention; only their first image is comparable, and only where the sampler draws no per-step
 * noise. Sizes the traced optimum UNet cannot take (torch only) are refused for the folder with a 422 naming
 * the size, and must match diffusers' torch UNet from the checkpoint, whose graph upsamples to each skip's size.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { copyFile, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { SCHEDULERS } from "../../api/engine/schedulers/index.ts";
import type { SchedulerName } from "../../contract/index.ts";
import { createSdxClient, type GenerateRequest, SdxError } from "../../sdk/index.ts";
import { FIXTURES, imageDiff, MODELS_DIR, referenceCase } from "../helpers/fixtures.ts";

interface CaseExtras {
  scheduler_class: string;
  eta: number;
  num_images_per_prompt: number;
  onnx_check: { unet?: unknown };
}

/** The sdx scheduler for a diffusers class and its from_config overrides. */
function schedulerFor(cls: string, overrides: Record<string, unknown>): SchedulerName {
  switch (cls) {
    case "DDIMScheduler":
      return "ddim";
    case "PNDMScheduler":
      return "pndm";
    case "LCMScheduler":
      return "lcm";
    case "EulerDiscreteScheduler":
      return "euler" as SchedulerName;
    case "EulerAncestralDiscreteScheduler":
      return "euler_a" as SchedulerName;
    case "LMSDiscreteScheduler":
      return "lms" as SchedulerName;
    case "HeunDiscreteScheduler":
      return "heun" as SchedulerName;
    case "KDPM2DiscreteScheduler":
      return "dpm2" as SchedulerName;
    case "DPMSolverMultistepScheduler":
      return (
        overrides.algorithm_type === "sde-dpmsolver++" ? "dpmsolver++_sde" : "dpmsolver++"
      ) as SchedulerName;
    case "DPMSolverSinglestepScheduler":
      return "dpmsolver_singlestep" as SchedulerName;
    case "UniPCMultistepScheduler":
      return "unipc" as SchedulerName;
    default:
      throw new Error(`no sdx scheduler for ${cls}`);
  }
}

const first = <T>(v: T | T[] | null): T | null => (Array.isArray(v) ? (v[0] ?? null) : v);

function servedBy(modelsDir: () => string) {
  let host: ModelHost;
  let client: ReturnType<typeof createSdxClient>;
  beforeAll(async () => {
    host = new ModelHost({ modelsDir: modelsDir(), provider: "cpu" });
    await host.start();
    const state = host.state;
    if (state.status !== "ready") throw new Error(`model did not load: ${state.message}`);
    const app = createApp(host);
    client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
  });
  afterAll(() => host.close());
  return () => client;
}

const caseNames = readdirSync(join(FIXTURES, "cases", "tiny_sd15"), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name)
  .sort();

let checkpointDir = "";
beforeAll(async () => {
  checkpointDir = await mkdtemp(join(tmpdir(), "sdx-checkpoint-"));
  await copyFile(
    join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"),
    join(checkpointDir, "tiny_sd15.safetensors"),
  );
});

for (const source of ["onnx", "safetensors"] as const) {
  describe(`tiny SD 1.x reference cases through POST /v1/generate (${source})`, () => {
    const client = servedBy(() => (source === "onnx" ? MODELS_DIR : checkpointDir));
    for (const name of caseNames) {
      test(name, async () => {
        const ref = (await referenceCase(name)) as Awaited<ReturnType<typeof referenceCase>> & CaseExtras;
        const overrides = ref.scheduler_from_config_overrides;
        const scheduler = schedulerFor(ref.scheduler_class, overrides);
        const negative = first(ref.negative_prompt);
        const request: GenerateRequest = {
          prompt: first(ref.prompt) ?? "",
          ...(negative !== null ? { negative_prompt: negative } : {}),
          prompt_syntax: "diffusers",
          seed: ref.seed,
          width: ref.width,
          height: ref.height,
          num_steps: ref.num_inference_steps,
          guidance_scale: ref.guidance_scale,
          scheduler_type: scheduler,
          // The fixtures count clip skip as diffusers does (layers skipped); sdx counts as AUTOMATIC1111.
          clip_skip: (ref.clip_skip ?? 0) + 1,
          ...(overrides.use_karras_sigmas === true ? { karras_sigmas: true } : {}),
          ...(typeof overrides.timestep_spacing === "string"
            ? { timestep_spacing: overrides.timestep_spacing as GenerateRequest["timestep_spacing"] }
            : {}),
          ...(ref.eta > 0 ? { eta: ref.eta } : {}),
        };
        if (source === "onnx" && typeof ref.onnx_check.unet === "string") {
          // Torch-only size: the ONNX UNet cannot take it, so the API refuses it up front.
          const error = await client()
            .generate(request)
            .catch((e: unknown) => e);
          expect(error).toBeInstanceOf(SdxError);
          expect((error as SdxError).status).toBe(422);
          const misfit = ref.width % 64 !== 0 ? "width" : "height";
          expect((error as SdxError).fields.map((f) => f.field)).toContain(misfit);
          return;
        }
        if (ref.num_images_per_prompt > 1 || Array.isArray(ref.prompt)) {
          // One generator for several images: only image 0 is comparable, and only without per-step noise.
          expect(SCHEDULERS[scheduler].stochastic).toBe(false);
        }
        const res = await client().generate(request);
        expect(res.metadata.timesteps).toEqual(ref.timesteps);
        const diff = await imageDiff(
          Buffer.from(res.images[0]?.png ?? "", "base64"),
          join(ref.dir, "image_0.png"),
        );
        expect(diff.mean).toBeLessThanOrEqual(0.5);
        expect(diff.max).toBeLessThanOrEqual(4);
      });
    }
  });
}
