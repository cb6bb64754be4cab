/** POST /v1/generate logic: resolve parameters against the model, say what will not take effect, run the engine. */
import { AdmissionRefused, type Ticket } from "../engine/admission.ts";
import type { ModelEntry } from "../engine/model_folder.ts";
import type { LoadedModel, ModelHost } from "../engine/model_host.ts";
import type { ModelKind } from "../engine/model_kinds.ts";
import {
  type GenerateInput,
  type GenerateOutput,
  GenerationAborted,
  GenerationFailed,
  GenerationInvalid,
  type ModelCapabilities,
} from "../engine/pipeline/stable_diffusion.ts";
import { xlPromptTexts } from "../engine/pipeline/stable_diffusion_xl.ts";
import { resolveSchedulerChoice, SCHEDULERS } from "../engine/schedulers/index.ts";
import type { Offload } from "../engine/worker/protocol.ts";
import { ApiError, type FieldError, validationFailed } from "../errors.ts";
import { requestedModel, withModel } from "../models/service.ts";
import { tokenizeField } from "../tokenize/service.ts";
import { VERSION } from "../version.ts";
import type { AppliedParams, GenerateRequest, GenerateResponse } from "./model.ts";

/** Seeds are 32-bit: seed + i wraps here, as torch's manual_seed takes them. */
export const SEED_SPACE = 2 ** 32;

type MemoryReport = GenerateResponse["metadata"]["memory"];

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] as number;
}

export interface ModelFacts {
  name: string;
  nativeSize: number;
  sizeMultiple: number;
  capabilities: ModelCapabilities;
  /** The server's width/height limits, which a default (the native size) must respect too. */
  sizeRange?: { min: number; max: number };
}

/** Fills defaults (the model's native size among them) and checks everything that depends on the model. */
export function resolveParams(req: GenerateRequest, model: ModelFacts): AppliedParams {
  const fields: FieldError[] = [];
  const choice = resolveSchedulerChoice(req.scheduler_type ?? "dpmsolver++");
  const entry = SCHEDULERS[choice.scheduler];
  if (choice.karras !== null && req.karras_sigmas === false) {
    fields.push({
      field: "karras_sigmas",
      message: `"${req.scheduler_type}" names the Karras schedule; send karras_sigmas true or leave it out, or use "${choice.scheduler}"`,
    });
  }
  const applied: AppliedParams = {
    prompt: req.prompt,
    negative_prompt: req.negative_prompt ?? null,
    prompt_2: null,
    negative_prompt_2: null,
    original_size: null,
    crops_coords_top_left: null,
    target_size: null,
    seed: req.seed === undefined || req.seed === -1 ? randomSeed() : req.seed,
    batch_size: req.batch_size ?? 1,
    width: req.width ?? model.nativeSize,
    height: req.height ?? model.nativeSize,
    num_steps: req.num_steps ?? 30,
    guidance_scale: req.guidance_scale ?? 7.5,
    scheduler_type: choice.scheduler,
    karras_sigmas: choice.karras ?? req.karras_sigmas ?? false,
    timestep_spacing: req.timestep_spacing ?? null,
    eta: req.eta ?? null,
    prompt_syntax: req.prompt_syntax ?? "a1111",
    scheduler_scale: req.scheduler_scale ?? null,
    clip_skip: req.clip_skip ?? 1,
    enable_attention_slicing: req.enable_attention_slicing ?? false,
    enable_vae_slicing: req.enable_vae_slicing ?? false,
    enable_vae_tiling: req.enable_vae_tiling ?? false,
    enable_model_cpu_offload: req.enable_model_cpu_offload ?? false,
    enable_sequential_cpu_offload: req.enable_sequential_cpu_offload ?? false,
  };
  const xl = model.capabilities.xl;
  if (xl) {
    // SDXL: what each encoder read and the micro-conditioning, defaults filled in (diffusers' order).
    const texts = xlPromptTexts(
      applied.prompt_syntax,
      {
        prompt: req.prompt,
        prompt2: req.prompt_2 ?? null,
        negativePrompt: req.negative_prompt ?? null,
        negativePrompt2: req.negative_prompt_2 ?? null,
      },
      xl.forceZerosForEmptyPrompt,
    );
    applied.prompt_2 = texts.prompt2;
    applied.negative_prompt_2 = texts.negative2;
    applied.original_size = req.original_size ?? [applied.height, applied.width];
    applied.crops_coords_top_left = req.crops_coords_top_left ?? [0, 0];
    applied.target_size = req.target_size ?? [applied.height, applied.width];
  }
  for (const key of ["width", "height"] as const) {
    const range = model.sizeRange;
    if (req[key] === undefined && range && (applied[key] < range.min || applied[key] > range.max)) {
      fields.push({
        field: key,
        message: `defaults to ${model.name}'s native size ${applied[key]}, outside this server's limits ${range.min}–${range.max}; send ${key}`,
      });
      continue;
    }
    if (applied[key] % model.sizeMultiple !== 0) {
      fields.push({
        field: key,
        message: `must be a multiple of ${model.sizeMultiple} for ${model.name} (its UNet downsamples by that factor); got ${applied[key]}`,
      });
    }
  }
  if (applied.karras_sigmas && !entry.karras) {
    fields.push({
      field: "karras_sigmas",
      message: `${applied.scheduler_type} has no Karras variant in diffusers; samplers with one: ${karrasSchedulers().join(", ")}`,
      allowed: karrasSchedulers(),
    });
  }
  const { clipSkipMax, clipSkipUnavailable } = model.capabilities;
  if (applied.clip_skip > clipSkipMax) {
    fields.push({
      field: "clip_skip",
      message:
        clipSkipUnavailable !== null
          ? `${model.name} cannot skip text-encoder layers: ${clipSkipUnavailable}; only clip_skip 1 works`
          : `${model.name}'s text encoder has ${clipSkipMax} layers; clip_skip must be from 1 to ${clipSkipMax}`,
      allowed: Array.from({ length: clipSkipMax }, (_, i) => i + 1),
    });
  }
  if (fields.length > 0) throw validationFailed(fields);
  return applied;
}

function karrasSchedulers(): string[] {
  return Object.entries(SCHEDULERS)
    .filter(([, s]) => s.karras)
    .map(([name]) => name);
}

/** diffusers' memory switches as they apply to onnxruntime on this execution provider. */
export function memoryReport(
  p: AppliedParams,
  provider: string,
  tiled: boolean,
  retried: boolean,
): MemoryReport {
  const cpu = provider === "cpu";
  return {
    attention_slicing: {
      requested: p.enable_attention_slicing,
      applied: false,
      note: "not applicable: attention runs inside the ONNX UNet graph as onnxruntime's own kernels and cannot be sliced from outside",
    },
    vae_slicing: {
      requested: p.enable_vae_slicing,
      applied: p.enable_vae_slicing && p.batch_size > 1,
      note:
        p.batch_size > 1
          ? "the batch is decoded one image at a time when requested"
          : "a batch of one image is decoded alone either way",
    },
    vae_tiling: {
      requested: p.enable_vae_tiling,
      applied: p.enable_vae_tiling && tiled,
      note: tiled
        ? "decoded in overlapping tiles blended as diffusers' tiled_decode does"
        : "the latents fit in one VAE tile, so nothing is tiled",
    },
    model_cpu_offload: {
      requested: p.enable_model_cpu_offload,
      applied: p.enable_model_cpu_offload && !cpu && !p.enable_sequential_cpu_offload,
      note: cpu
        ? "not applicable: the server runs on the CPU provider, so every stage's weights are in system memory already"
        : p.enable_sequential_cpu_offload
          ? "superseded by sequential CPU offload: the whole generation ran on the CPU provider"
          : "only the running stage's session stayed on the GPU; the others were released and are recreated when needed",
    },
    sequential_cpu_offload: {
      requested: p.enable_sequential_cpu_offload,
      applied: p.enable_sequential_cpu_offload && !cpu,
      note: cpu
        ? "not applicable: the server runs on the CPU provider already"
        : "the generation ran on CPU sessions of the model, leaving GPU memory alone",
    },
    retried_after_out_of_memory: retried,
  };
}

/** AUTOMATIC1111's extra-network tags (`<lora:name:0.8>`), which sdx has nothing to apply with. */
const EXTRA_NETWORK = /<(?:lora|lyco|hypernet):[^>]*>/gi;

/** The SDXL-only request fields, for warnings when the model is not SDXL. */
const SDXL_FIELDS = [
  "prompt_2",
  "negative_prompt_2",
  "original_size",
  "crops_coords_top_left",
  "target_size",
] as const;

/** One sentence for each accepted parameter that leaves the image as it would be without it. */
export function warningsFor(
  p: AppliedParams,
  output: GenerateOutput,
  memory: MemoryReport,
  req: Partial<GenerateRequest> = {},
): string[] {
  const warnings: string[] = [];
  const guided = p.guidance_scale > 1;
  const entry = SCHEDULERS[p.scheduler_type];
  if (p.negative_prompt !== null && !guided) {
    warnings.push(
      `negative_prompt was ignored: guidance_scale ${p.guidance_scale} ≤ 1 turns classifier-free guidance off, so there is no unconditional pass to steer.`,
    );
  }
  if (output.xl) {
    if (req.negative_prompt_2 && !guided) {
      warnings.push(
        `negative_prompt_2 was ignored: guidance_scale ${p.guidance_scale} ≤ 1 turns classifier-free guidance off.`,
      );
    } else if (req.negative_prompt_2 && output.xl.zeroUncond) {
      warnings.push(
        'negative_prompt_2 was ignored: without negative_prompt, SDXL\'s unconditional embeddings are zeros (force_zeros_for_empty_prompt), as in diffusers; send negative_prompt too, or prompt_syntax "a1111".',
      );
    }
    if (output.xl.prompt2.truncatedTokens > 0) {
      warnings.push(
        `prompt_2 is ${output.xl.prompt2.tokens} CLIP tokens; with prompt_syntax "diffusers" the second text encoder reads 75, so ${output.xl.prompt2.truncatedTokens} were cut.`,
      );
    }
    if (guided && output.xl.negativePrompt2.truncatedTokens > 0) {
      warnings.push(
        `negative_prompt_2 is ${output.xl.negativePrompt2.tokens} CLIP tokens; ${output.xl.negativePrompt2.truncatedTokens} were cut.`,
      );
    }
  } else {
    for (const field of SDXL_FIELDS) {
      if (req[field] !== undefined) {
        warnings.push(
          `${field} has no effect: it is SDXL's (second text encoder / micro-conditioning), and this is an SD 1.x/2.x model.`,
        );
      }
    }
  }
  if (output.prompt.truncatedTokens > 0) {
    warnings.push(
      `prompt is ${output.prompt.tokens} CLIP tokens; with prompt_syntax "diffusers" the text encoder reads 75, so ${output.prompt.truncatedTokens} were cut (use prompt_syntax "a1111" to encode them in chunks).`,
    );
  }
  if (guided && output.negativePrompt.truncatedTokens > 0) {
    warnings.push(
      `negative_prompt is ${output.negativePrompt.tokens} CLIP tokens; ${output.negativePrompt.truncatedTokens} were cut.`,
    );
  }
  if (p.eta !== null && !entry.eta)
    warnings.push(`eta has no effect: only ddim reads it, not ${p.scheduler_type}.`);
  if (p.timestep_spacing !== null && !entry.timestepSpacing) {
    warnings.push(
      `timestep_spacing has no effect: ${p.scheduler_type} has no timestep spacing option in diffusers.`,
    );
  }
  if (p.scheduler_scale !== null) {
    warnings.push("scheduler_scale has no effect: Stable Diffusion's samplers take no such scale.");
  }
  for (const field of ["prompt", "negative_prompt", "prompt_2", "negative_prompt_2"] as const) {
    const tags = p[field]?.match(EXTRA_NETWORK) ?? [];
    if (tags.length > 0) {
      warnings.push(
        `${field}: ${tags.join(" ")} ${tags.length === 1 ? "was" : "were"} read as text: sdx loads no LoRA, LyCORIS or hypernetwork (AUTOMATIC1111's extra networks).`,
      );
    }
  }
  for (const [key, report] of Object.entries(memory)) {
    if (typeof report === "object" && report.requested && !report.applied) {
      warnings.push(`enable_${key} did not change anything: ${report.note}.`);
    }
  }
  return warnings;
}

/** AUTOMATIC1111's infotext, the `parameters` text of its PNGs, for one image. */
const KIND_LABELS = { sd1: "SD1", sd2: "SD2", sdxl: "SDXL" } as const;

export function infotext(
  p: AppliedParams,
  seed: number,
  modelName: string,
  kind: ModelKind | null,
  modelHash: string | null = null,
): string {
  const quote = (v: string) => (/[,:"\n]/.test(v) ? JSON.stringify(v) : v);
  const entry = SCHEDULERS[p.scheduler_type];
  const fields: [string, string | number][] = [
    ["Steps", p.num_steps],
    ["Sampler", entry.displayName],
    ["Schedule type", p.karras_sigmas ? "Karras" : "Automatic"],
    ["CFG scale", p.guidance_scale],
    ["Seed", seed],
    ["Size", `${p.width}x${p.height}`],
    ...(modelHash ? ([["Model hash", modelHash.slice(0, 10)]] as [string, string][]) : []),
    ["Model", modelName],
    ...(kind ? ([["Model type", KIND_LABELS[kind]]] as [string, string][]) : []),
    ["Clip skip", p.clip_skip],
  ];
  if (p.eta !== null && entry.eta) fields.push(["Eta", p.eta]);
  fields.push(["Version", `sdx ${VERSION}`]);
  const lines = [p.prompt];
  if (p.negative_prompt) lines.push(`Negative prompt: ${p.negative_prompt}`);
  lines.push(fields.map(([k, v]) => `${k}: ${quote(String(v))}`).join(", "));
  return lines.join("\n");
}

const OUT_OF_MEMORY = /out of memory|bad_alloc|failed to allocate|cudaErrorMemoryAllocation/i;

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
}

/** What a streamed generation hears while it waits and runs; every hook is optional. */
export interface GenerateProgress {
  /** The request's place in the queue (1 = next), when it has to wait and whenever that place changes. */
  queued?(position: number): void;
  /** The request holds a slot and the engine starts. */
  started?(): void;
  /** The model is not loaded and loads now, for this request. */
  loading?(model: string): void;
  /** A denoising step finished; `elapsedMs` since the start, `etaMs` the estimated rest. */
  step?(event: { step: number; total: number; elapsedMs: number; etaMs: number }): void;
}

/** A checked and admitted generation: `run` must be called once, and releases the slot whatever happens. */
export interface PreparedGeneration {
  /** The place in the queue at admission (0: runs at once). */
  readonly position: number;
  run(progress?: GenerateProgress): Promise<GenerateResponse>;
}

export async function generateImages(
  host: ModelHost,
  req: GenerateRequest,
  signal?: AbortSignal,
  progress: GenerateProgress = {},
  sizeRange?: ModelFacts["sizeRange"],
): Promise<GenerateResponse> {
  return (await prepareGeneration(host, req, signal, sizeRange)).run(progress);
}

/** The admission error as the API says it: 429 with Retry-After, or 503 while draining. */
function refused(e: AdmissionRefused): ApiError {
  if (e.reason === "draining") return new ApiError(503, "draining", e.message);
  return new ApiError(429, "queue_full", e.message, undefined, { "retry-after": String(e.retryAfterS) });
}

/** A request checked against its model: the parameters as applied and the engine's input. */
interface CheckedRequest {
  params: AppliedParams;
  seeds: number[];
  input: GenerateInput;
  offload: Offload;
}

/** Checks a request against a loaded model: every 422 that depends on the model is thrown here. */
function checkRequest(
  host: ModelHost,
  model: LoadedModel,
  req: GenerateRequest,
  sizeRange?: ModelFacts["sizeRange"],
): CheckedRequest {
  const { entry, capabilities, tokenizer } = model;
  const params = resolveParams(req, { ...entry, capabilities, ...(sizeRange ? { sizeRange } : {}) });
  // Prompts are checked here, on the server thread, so a malformed one never reaches the engine.
  const tokenized: [string, ReturnType<typeof tokenizeField>][] = [
    ["prompt", tokenizeField(tokenizer, "prompt", params.prompt, params.prompt_syntax)],
    [
      "negative_prompt",
      tokenizeField(tokenizer, "negative_prompt", params.negative_prompt ?? "", params.prompt_syntax),
    ],
  ];
  // SDXL's second tokenizer has the same vocabulary, so the first one checks its prompts' syntax too.
  for (const field of ["prompt_2", "negative_prompt_2"] as const) {
    const text = params[field];
    if (text) tokenized.push([field, tokenizeField(tokenizer, field, text, params.prompt_syntax)]);
  }
  const long = tokenized.find(([, t]) => t.chunks.length > 1);
  if (!capabilities.longPrompts && long) {
    const [field, t] = long;
    const message = `${entry.name}'s UNet takes exactly 77 text tokens, so this ${t.tokenCount}-token prompt cannot be encoded in chunks; shorten it or send prompt_syntax "diffusers" to cut it at 75 tokens`;
    throw validationFailed([{ field, message }]);
  }
  const seeds = Array.from({ length: params.batch_size }, (_, i) => (params.seed + i) % SEED_SPACE);
  const schedulerEntry = SCHEDULERS[params.scheduler_type];
  const input: GenerateInput = {
    prompt: params.prompt,
    negativePrompt: params.negative_prompt,
    promptSyntax: params.prompt_syntax,
    seeds,
    width: params.width,
    height: params.height,
    numSteps: params.num_steps,
    guidanceScale: params.guidance_scale,
    scheduler: params.scheduler_type,
    schedulerOptions: {
      karrasSigmas: params.karras_sigmas,
      ...(params.timestep_spacing !== null && schedulerEntry.timestepSpacing
        ? { timestepSpacing: params.timestep_spacing }
        : {}),
      ...(params.eta !== null && schedulerEntry.eta ? { eta: params.eta } : {}),
    },
    clipSkip: params.clip_skip,
    prompt2: req.prompt_2 ?? null,
    negativePrompt2: req.negative_prompt_2 ?? null,
    originalSize: pairOf(params.original_size),
    cropsCoordsTopLeft: pairOf(params.crops_coords_top_left),
    targetSize: pairOf(params.target_size),
    vaeSlicing: params.enable_vae_slicing,
    vaeTiling: params.enable_vae_tiling,
    pngParameters: seeds.map((seed) => infotext(params, seed, entry.name, entry.kind, model.hash)),
  };
  const onGpu = host.provider !== "cpu";
  const offload: Offload =
    onGpu && params.enable_sequential_cpu_offload
      ? "sequential"
      : onGpu && params.enable_model_cpu_offload
        ? "model"
        : "none";
  return { params, seeds, input, offload };
}

/**
 * Checks the request and admits it before any engine work: every 4xx/5xx that needs no engine (an unknown
 * model, bad parameters, no model, queue full, draining) is thrown here, before a streamed answer starts.
 * A request for a model that is not loaded is checked once the model has loaded, in its slot.
 */
export async function prepareGeneration(
  host: ModelHost,
  req: GenerateRequest,
  signal?: AbortSignal,
  sizeRange?: ModelFacts["sizeRange"],
): Promise<PreparedGeneration> {
  const entry = await requestedModel(host, req.model);
  const loaded = host.loadedModel(entry.name);
  const checked = loaded ? checkRequest(host, loaded, req, sizeRange) : null;
  const enqueued = performance.now();
  let ticket: Ticket;
  try {
    ticket = host.admit(checked?.params.num_steps ?? req.num_steps ?? 30, signal);
  } catch (e) {
    if (e instanceof AdmissionRefused) throw refused(e);
    throw e;
  }
  const position = ticket.position();
  return {
    position,
    run: async (progress = {}) => {
      try {
        return await runAdmitted(host, ticket, progress, signal, enqueued, {
          req,
          entry,
          checked,
          sizeRange,
          position,
        });
      } finally {
        ticket.release();
      }
    },
  };
}

interface RunContext {
  req: GenerateRequest;
  entry: ModelEntry;
  /** The checked request, when the model was loaded at admission. */
  checked: CheckedRequest | null;
  sizeRange: ModelFacts["sizeRange"];
  position: number;
}

async function runAdmitted(
  host: ModelHost,
  ticket: Ticket,
  progress: GenerateProgress,
  signal: AbortSignal | undefined,
  enqueued: number,
  ctx: RunContext,
): Promise<GenerateResponse> {
  progress.queued?.(ctx.position);
  ticket.onPosition = (p) => progress.queued?.(p);
  try {
    await ticket.started;
  } catch (e) {
    if (e instanceof GenerationAborted)
      throw new ApiError(499, "cancelled", "the client went away while the request was queued");
    throw e;
  }
  ticket.onPosition = null;
  const queueMs = performance.now() - enqueued;
  progress.started?.();
  const loadStart = performance.now();
  const wasLoaded = host.loadedModel(ctx.entry.name) !== null;
  if (!wasLoaded) progress.loading?.(ctx.entry.name);
  return withModel(host, ctx.entry, (model) => {
    const loadMs = wasLoaded ? 0 : performance.now() - loadStart;
    const checked = ctx.checked ?? checkRequest(host, model, ctx.req, ctx.sizeRange);
    return runChecked(host, model, checked, progress, signal, { queueMs, loadMs, req: ctx.req });
  });
}

async function runChecked(
  host: ModelHost,
  model: LoadedModel,
  checked: CheckedRequest,
  progress: GenerateProgress,
  signal: AbortSignal | undefined,
  times: { queueMs: number; loadMs: number; req: GenerateRequest },
): Promise<GenerateResponse> {
  const { params, seeds, input, offload } = checked;
  const { entry } = model;
  const schedulerEntry = SCHEDULERS[params.scheduler_type];
  let retried = false;
  const startedAt = performance.now();
  const run = (engineInput: GenerateInput) =>
    host.execute(model, engineInput, {
      offload,
      ...(signal ? { signal } : {}),
      onStep: (event) => {
        const elapsedMs = performance.now() - startedAt;
        const etaMs = (elapsedMs / event.step) * (event.total - event.step);
        progress.step?.({ step: event.step, total: event.total, elapsedMs, etaMs });
      },
    });
  let result: Awaited<ReturnType<ModelHost["execute"]>>;
  try {
    try {
      result = await run(input);
    } catch (e) {
      // Out of memory: once more with the VAE decoding in slices and tiles, the diffusers way to fit.
      if (!(e instanceof Error) || !OUT_OF_MEMORY.test(e.message)) throw e;
      retried = true;
      result = await run({ ...input, vaeSlicing: true, vaeTiling: true });
    }
  } catch (e) {
    if (e instanceof GenerationAborted)
      throw new ApiError(499, "cancelled", "the client went away; generation stopped");
    if (e instanceof GenerationInvalid) throw new ApiError(422, "validation_failed", e.message);
    const stage = e instanceof GenerationFailed && e.stage ? e.stage : "engine";
    throw new ApiError(
      500,
      "generation_failed",
      `generation failed in the ${stage} stage: ${(e as Error).message}`,
    );
  }
  const { output } = result;
  const memory = memoryReport(
    retried ? { ...params, enable_vae_slicing: true, enable_vae_tiling: true } : params,
    host.provider,
    output.vaeTiles > 0,
    retried,
  );
  return {
    images: output.images.map((img) => ({ png: toBase64(img.png), seed: img.seed })),
    metadata: {
      model: { name: entry.name, kind: entry.kind ?? "sd1", hash: model.hash },
      parameters: params,
      seeds,
      prompt_tokens: output.prompt.tokens,
      prompt: reportOf(output.prompt),
      negative_prompt: reportOf(output.negativePrompt),
      scheduler: {
        name: params.scheduler_type,
        display_name: `${schedulerEntry.displayName}${params.karras_sigmas ? " Karras" : ""}`,
      },
      memory,
      timesteps: output.timesteps,
      timings: {
        queue_ms: times.queueMs,
        load_ms: times.loadMs,
        encode_ms: output.timings.encodeMs,
        denoise_ms: output.timings.denoiseMs,
        decode_ms: output.timings.decodeMs,
        png_ms: output.timings.pngMs,
        total_ms: times.queueMs + times.loadMs + output.timings.totalMs,
      },
      execution_provider: host.provider,
      sdx_version: VERSION,
    },
    warnings: warningsFor(params, output, memory, times.req),
  };
}

function pairOf(values: number[] | null): [number, number] | null {
  return values === null ? null : [values[0] as number, values[1] as number];
}

function reportOf(r: GenerateOutput["prompt"]) {
  return { tokens: r.tokens, chunks: r.chunks, truncated_tokens: r.truncatedTokens };
}
