/** POST /v1/generate logic: resolve parameters, say what will not take effect, run the engine. */

import type { ModelHost } from "../engine/model_host.ts";
import { GenerationAborted } from "../engine/pipeline/stable_diffusion.ts";
import { SCHEDULERS } from "../engine/schedulers/index.ts";
import { ApiError, type FieldError } from "../errors.ts";
import { VERSION } from "../version.ts";
import type { AppliedParams, GenerateRequest, GenerateResponse } from "./model.ts";

const SEED_SPACE = 2 ** 32;

/** The 503 a generation gets while no model is ready, with the sentence /health shows. */
export function requireReady(host: ModelHost) {
  const state = host.state;
  if (state.status === "ready") return state;
  if (state.status === "loading") throw new ApiError(503, "model_loading", state.message);
  if (state.status === "error") throw new ApiError(503, "model_unavailable", state.message);
  throw new ApiError(503, "no_model", state.message);
}

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] as number;
}

/** Fills defaults (the model's native size among them) and checks what depends on the model. */
export function resolveParams(req: GenerateRequest, nativeSize: number, sizeMultiple: number): AppliedParams {
  const applied: AppliedParams = {
    prompt: req.prompt,
    negative_prompt: req.negative_prompt ?? null,
    seed: req.seed === undefined || req.seed === -1 ? randomSeed() : req.seed,
    batch_size: req.batch_size ?? 1,
    width: req.width ?? nativeSize,
    height: req.height ?? nativeSize,
    num_steps: req.num_steps ?? 30,
    guidance_scale: req.guidance_scale ?? 7.5,
    scheduler_type: req.scheduler_type ?? "dpmsolver++",
    karras_sigmas: req.karras_sigmas ?? false,
    scheduler_scale: req.scheduler_scale ?? null,
    clip_skip: req.clip_skip ?? 1,
    enable_attention_slicing: req.enable_attention_slicing ?? false,
    enable_vae_slicing: req.enable_vae_slicing ?? false,
    enable_vae_tiling: req.enable_vae_tiling ?? false,
    enable_model_cpu_offload: req.enable_model_cpu_offload ?? false,
    enable_sequential_cpu_offload: req.enable_sequential_cpu_offload ?? false,
  };
  const fields: FieldError[] = [];
  for (const key of ["width", "height"] as const) {
    if (applied[key] % sizeMultiple !== 0) {
      fields.push({
        field: key,
        message: `must be a multiple of ${sizeMultiple} for this model (its UNet downsamples by that factor); got ${applied[key]}`,
      });
    }
  }
  if (applied.karras_sigmas && !SCHEDULERS[applied.scheduler_type].karras) {
    const allowed = Object.entries(SCHEDULERS)
      .filter(([, s]) => s.karras)
      .map(([name]) => name);
    fields.push({
      field: "karras_sigmas",
      message: `${applied.scheduler_type} has no Karras variant`,
      allowed,
    });
  }
  if (fields.length > 0) {
    throw new ApiError(
      422,
      "validation_failed",
      fields.map((f) => `${f.field}: ${f.message}`).join("; "),
      fields,
    );
  }
  return applied;
}

/** One sentence for each accepted parameter that leaves the image as it would be without it. */
export function warningsFor(p: AppliedParams, promptTokens: number, negativeTokens: number): string[] {
  const warnings: string[] = [];
  const guided = p.guidance_scale > 1;
  if (p.negative_prompt !== null && !guided) {
    warnings.push(
      `negative_prompt was ignored: guidance_scale ${p.guidance_scale} ≤ 1 turns classifier-free guidance off, so there is no unconditional pass to steer.`,
    );
  }
  if (promptTokens > 75) {
    warnings.push(
      `prompt is ${promptTokens} CLIP tokens; the text encoder reads 75, so the rest was cut (as diffusers does).`,
    );
  }
  if (guided && negativeTokens > 75) {
    warnings.push(`negative_prompt is ${negativeTokens} CLIP tokens; only the first 75 were used.`);
  }
  if (p.scheduler_scale !== null) {
    warnings.push("scheduler_scale has no effect: Stable Diffusion's samplers take no such scale.");
  }
  if (p.clip_skip > 1) {
    warnings.push(
      `clip_skip ${p.clip_skip} was not applied: this version conditions on the text encoder's last layer (clip_skip 1).`,
    );
  }
  if (p.enable_attention_slicing) {
    warnings.push(
      "enable_attention_slicing has no effect: onnxruntime's attention kernels manage their own memory; the image is the same either way.",
    );
  }
  if (p.enable_vae_tiling) {
    warnings.push(
      "enable_vae_tiling was not applied: the VAE decodes each image in one piece in this version.",
    );
  }
  if (p.enable_model_cpu_offload || p.enable_sequential_cpu_offload) {
    warnings.push(
      "CPU offload has no effect: onnxruntime keeps every component resident for its execution provider; the image is the same either way.",
    );
  }
  return warnings;
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

export async function generateImages(
  host: ModelHost,
  req: GenerateRequest,
  signal?: AbortSignal,
): Promise<GenerateResponse> {
  const ready = requireReady(host);
  const params = resolveParams(req, ready.entry.nativeSize, ready.entry.sizeMultiple);
  const seeds = Array.from({ length: params.batch_size }, (_, i) => (params.seed + i) % SEED_SPACE);
  let queueMs = 0;
  let result: Awaited<ReturnType<ModelHost["run"]>>;
  try {
    result = await host.run(
      {
        prompt: params.prompt,
        negativePrompt: params.negative_prompt,
        seeds,
        width: params.width,
        height: params.height,
        numSteps: params.num_steps,
        guidanceScale: params.guidance_scale,
        scheduler: params.scheduler_type,
        karrasSigmas: params.karras_sigmas,
        vaeSlicing: params.enable_vae_slicing,
      },
      {
        ...(signal ? { signal } : {}),
        onStart: (ms) => {
          queueMs = ms;
        },
      },
    );
  } catch (e) {
    if (e instanceof GenerationAborted)
      throw new ApiError(499, "cancelled", "the client went away; generation stopped");
    throw new ApiError(500, "generation_failed", `generation failed: ${(e as Error).message}`);
  }
  const { output, entry } = result;
  return {
    images: output.images.map((img) => ({ png: toBase64(img.png), seed: img.seed })),
    metadata: {
      model: { name: entry.name, kind: entry.kind ?? "sd1" },
      parameters: params,
      seeds,
      prompt_tokens: output.promptTokens,
      timesteps: output.timesteps,
      timings: {
        queue_ms: queueMs,
        encode_ms: output.timings.encodeMs,
        denoise_ms: output.timings.denoiseMs,
        decode_ms: output.timings.decodeMs,
        png_ms: output.timings.pngMs,
        total_ms: queueMs + output.timings.totalMs,
      },
      execution_provider: host.options.provider,
      sdx_version: VERSION,
    },
    warnings: warningsFor(params, output.promptTokens, output.negativePromptTokens),
  };
}
