/**
 * A generation from request to response: checked against its model, admitted into the queue, run on the
 * engine with progress, and reported (metadata, warnings). /v1/generate and the A1111 routes both run here.
 */
import {
  ApiError,
  type AppliedParams,
  DEFAULT_LIMITS,
  GENERATE_DEFAULTS,
  type GenerateEvents,
  type GenerateRequest,
  type GenerateResponse,
  type Limits,
  seedAt,
  validationFailed,
} from "../../../contract/index.ts";
import { VERSION } from "../../../lib/version.ts";
import { AdmissionRefused, type Ticket } from "../admission.ts";
import type { ModelEntry } from "../model_folder.ts";
import type { LoadedModel, ModelHost } from "../model_host.ts";
import { requestedModel, withModel } from "../models.ts";
import { GenerationAborted, GenerationFailed, GenerationInvalid } from "../pipeline/errors.ts";
import type { GenerateInput, GenerateOutput, PreviewInput } from "../pipeline/types.ts";
import { SCHEDULERS } from "../schedulers/index.ts";
import type { Offload } from "../worker/protocol.ts";
import { type ResolvedAdapters, resolveAdapters } from "./adapter_params.ts";
import { type InputImages, prepareImages, readInputImages } from "./image_params.ts";
import { type ModelFacts, resolveParams } from "./params.ts";
import { previewInput } from "./preview_params.ts";
import { tokenizeField } from "./prompt_fields.ts";
import { infotext, memoryReport, warningsFor } from "./report.ts";

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
  /**
   * A preview of one image after a step (right after that step's `step`). Only a caller that listens gets them:
   * a request's `preview` without this hook makes none and says so in its warnings.
   */
  preview?(event: GenerateEvents["preview"]): void;
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
  limits?: Limits,
): Promise<GenerateResponse> {
  return (await prepareGeneration(host, req, signal, limits)).run(progress);
}

/** The server's width/height range, which a default size must respect too. */
function sizeRangeOf(limits: Limits | undefined): ModelFacts["sizeRange"] {
  return limits ? { min: limits.sizeMin, max: limits.sizeMax } : undefined;
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
  /** What the response says about the input images. */
  inputs: GenerateResponse["metadata"]["inputs"];
  /** Changes made to the inputs that the request did not spell out. */
  warnings: string[];
  adapters: ResolvedAdapters;
}

/** Checks a request against a loaded model: every 422 that depends on the model is thrown here. */
async function checkRequest(
  host: ModelHost,
  model: LoadedModel,
  req: GenerateRequest,
  images: InputImages,
  adapters: ResolvedAdapters,
  sizeRange: ModelFacts["sizeRange"],
): Promise<CheckedRequest> {
  const { entry, capabilities, tokenizer } = model;
  const params = resolveParams(req, { ...entry, capabilities, ...(sizeRange ? { sizeRange } : {}) }, images);
  const { prompt, negativePrompt } = adapters.prompts;
  // Embeddings in the order their rows are added to the token tables (adapters/apply.ts).
  const embeddings = adapters.report.embeddings.map((e) => ({ name: e.name, vectors: e.vectors }));
  // Prompts are checked here, on the server thread, so a malformed one never reaches the engine.
  const tokenized: [string, ReturnType<typeof tokenizeField>][] = [
    ["prompt", tokenizeField(tokenizer, "prompt", prompt, params.prompt_syntax)],
    [
      "negative_prompt",
      tokenizeField(tokenizer, "negative_prompt", negativePrompt ?? "", params.prompt_syntax),
    ],
  ];
  // SDXL's second tokenizer has the same vocabulary, so the first one checks its prompts' syntax too.
  for (const field of ["prompt_2", "negative_prompt_2"] as const) {
    const text = params[field];
    if (text)
      tokenized.push([field, tokenizeField(tokenizer, field, text, params.prompt_syntax, embeddings)]);
  }
  const long = tokenized.find(([, t]) => t.chunks.length > 1);
  if (!capabilities.longPrompts && long) {
    const [field, t] = long;
    const message = `${entry.name}'s UNet takes exactly 77 text tokens, so this ${t.tokenCount}-token prompt cannot be encoded in chunks; shorten it or send prompt_syntax "diffusers" to cut it at 75 tokens`;
    throw validationFailed([{ field, message }]);
  }
  const seeds = Array.from({ length: params.batch_size }, (_, i) => seedAt(params.seed, i));
  const schedulerEntry = SCHEDULERS[params.scheduler_type];
  const prepared = await prepareImages(params, images);
  const input: GenerateInput = {
    prompt,
    negativePrompt,
    promptSyntax: params.prompt_syntax,
    embeddings,
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
    pngParameters: seeds.map((seed) =>
      infotext(params, seed, entry.name, entry.kind, model.hash, adapters.infotext),
    ),
    adapters: adapters.input,
    image: prepared.image,
    hires: params.hires,
  };
  // Model offload on the CPU provider releases the idle stages' sessions (their memory goes back to the system).
  const onGpu = host.provider !== "cpu";
  const offload: Offload =
    onGpu && params.enable_sequential_cpu_offload
      ? "sequential"
      : params.enable_model_cpu_offload
        ? "model"
        : "none";
  return {
    params,
    seeds,
    input,
    offload,
    inputs: prepared.inputs,
    warnings: [...adapters.warnings, ...prepared.warnings],
    adapters,
  };
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
  limits?: Limits,
): Promise<PreparedGeneration> {
  const sizeRange = sizeRangeOf(limits);
  const entry = await requestedModel(host, req.model);
  const preview = await previewInput(req.preview, entry, host.adapters);
  const images = await readInputImages(req, limits ?? DEFAULT_LIMITS);
  const syntax = req.prompt_syntax ?? GENERATE_DEFAULTS.prompt_syntax;
  const adapters = await resolveAdapters(req, syntax, entry, host.adapters);
  const loaded = host.loadedModel(entry.name);
  const checked = loaded ? await checkRequest(host, loaded, req, images, adapters, sizeRange) : null;
  const enqueued = performance.now();
  let ticket: Ticket;
  try {
    ticket = host.admit(
      checked ? stepsToRun(checked.params) : (req.num_steps ?? GENERATE_DEFAULTS.num_steps),
      signal,
    );
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
          images,
          adapters,
          sizeRange,
          position,
          preview,
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
  images: InputImages;
  adapters: ResolvedAdapters;
  sizeRange: ModelFacts["sizeRange"];
  position: number;
  /** The request's previews, when it asks for them. */
  preview: PreviewInput | null;
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
  return withModel(host, ctx.entry, async (model) => {
    const loadMs = wasLoaded ? 0 : performance.now() - loadStart;
    const checked =
      ctx.checked ?? (await checkRequest(host, model, ctx.req, ctx.images, ctx.adapters, ctx.sizeRange));
    return runChecked(host, model, checked, progress, signal, {
      queueMs,
      loadMs,
      req: ctx.req,
      preview: ctx.preview,
    });
  });
}

async function runChecked(
  host: ModelHost,
  model: LoadedModel,
  checked: CheckedRequest,
  progress: GenerateProgress,
  signal: AbortSignal | undefined,
  times: { queueMs: number; loadMs: number; req: GenerateRequest; preview: PreviewInput | null },
): Promise<GenerateResponse> {
  const { params, seeds, offload, inputs } = checked;
  const { preview } = times;
  const previewsSent = preview !== null && progress.preview !== undefined;
  const input: GenerateInput = previewsSent ? { ...checked.input, preview } : checked.input;
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
        if (!event.previews || !preview) return;
        for (const p of event.previews) {
          progress.preview?.({
            image: p.image,
            step: event.step,
            total: event.total,
            method: preview.method,
            width: p.width,
            height: p.height,
            png: toBase64(p.png),
          });
        }
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
      ...(output.hiresTimesteps ? { hires_timesteps: output.hiresTimesteps } : {}),
      inputs,
      adapters: {
        ...checked.adapters.report,
        cost: {
          sessions_created: output.adapterCost?.sessionsCreated ?? 0,
          ms: output.adapterCost?.ms ?? 0,
        },
      },
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
    warnings: [
      ...checked.warnings,
      ...(output.adapterWarnings ?? []),
      ...warningsFor(params, output, memory, times.req, previewsSent),
    ],
  };
}

/** Denoising steps a generation runs: strength's share with an init image, plus the hires fix's second pass. */
function stepsToRun(p: AppliedParams): number {
  const first = p.strength === null ? p.num_steps : Math.trunc(p.num_steps * p.strength);
  return first + (p.hires ? Math.trunc(p.hires.steps * p.hires.strength) : 0);
}

function pairOf(values: number[] | null): [number, number] | null {
  return values === null ? null : [values[0] as number, values[1] as number];
}

function reportOf(r: GenerateOutput["prompt"]) {
  return { tokens: r.tokens, chunks: r.chunks, truncated_tokens: r.truncatedTokens };
}
