/**
 * One `sdx gen` run: the requests of a batch (at most MAX_BATCH images each, image i using seed + i),
 * each sent as a streamed generation (server-sent events), each image written with its metadata as soon as
 * its request is done, each failed request written to `errors/` while the batch goes on. The stream's
 * queue, start and step events are handed to `progress` (bars on a terminal, see progress.ts).
 */
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import YAML from "yaml";
import { DEFAULT_LIMITS, seedAt } from "../contract/index.ts";
import { writeFileAtomic } from "../lib/fs/atomic.ts";
import { VERSION } from "../lib/version.ts";
import type { GenerateEvent, GenerateRequest, GenerateResponse, SdxClient } from "../sdk/index.ts";
import { SdxError } from "../sdk/index.ts";
import { describeSdxError, UnreachableError } from "./base.ts";
import { errorFromFile, imageFromMetadata } from "./gallery/record.ts";
import { RunGallery } from "./gallery/run_gallery.ts";
import { IMAGE_FIELDS, type InputFiles } from "./images.ts";
import { createRunFolder, type RunFolder, TimestampClock, writeImageWithMetadata } from "./outputs.ts";

/** The server's batch_size limit: bigger batches are split into several requests. */
/** Images per request: a server's default limit (a server with a lower --max-batch answers 422). */
export const MAX_BATCH = DEFAULT_LIMITS.batchMax;

export type PlannedRequest = {
  request: GenerateRequest & { seed: number; batch_size: number };
  /** Index of the request's first image in the whole batch. */
  index: number;
  /** Added to each image's metadata under `ollama` (how its prompt was made). */
  ollama?: Record<string, unknown>;
  /** Client-side warnings (e.g. an Ollama fallback), kept in the metadata next to the server's. */
  warnings?: string[];
};

export type RunEvent =
  | {
      event: "image";
      index: number;
      total: number;
      seed: number;
      image: string;
      metadata: string;
      prompt: string;
      warnings: string[];
    }
  | {
      event: "error";
      index: number;
      total: number;
      seed: number;
      error: string;
      error_file: string;
    };

/** What a request is doing, for progress displays: sent, waiting, running its denoising steps, over. */
export type RequestProgress =
  /** A request for images `index` … `index + count - 1` of the batch is being sent. */
  | { type: "request"; index: number; count: number }
  /** The stream's progress events: queued, started, loading (a model), step. */
  | Exclude<GenerateEvent, { type: "image" | "done" | "error" }>
  /** The request is over: its images are written (`ok`) or its error is. Not sent when interrupted. */
  | { type: "finished"; ok: boolean };

export interface RunSummary {
  run_dir: string;
  total: number;
  made: number;
  failed: number;
  interrupted: boolean;
  unreachable: boolean;
}

export interface RunOptions {
  client: SdxClient;
  signal?: AbortSignal;
  outputRoot: string;
  project: string;
  promptName: string;
  total: number;
  /** Seed of image 0 of the whole batch. */
  seed: number;
  /** The model every request names (`model` of the plans' requests); default: the server's default model. */
  model?: string;
  plans: AsyncIterable<PlannedRequest>;
  /** The image files every request carries (init image, mask): their paths and hashes go in the metadata. */
  inputs?: InputFiles;
  /** Told of each image written (or failed) once its files are; awaited before the run goes on. */
  report: (event: RunEvent) => void | Promise<void>;
  /** The project's default parameters: the run's gallery shows the parameters that differ from them. */
  defaults: Record<string, unknown>;
  /** Handed the run's gallery when the run folder is made (an `--all-models` comparison follows it). */
  onGallery?: (gallery: RunGallery) => Promise<void>;
  /** Called with server and client warnings as they arrive. */
  warn: (message: string) => void;
  /** Called with each request's progress (queue place, start, denoising steps) as the server streams it. */
  progress?: (event: RequestProgress) => void;
}

const isAbort = (e: unknown, signal: AbortSignal | undefined) =>
  signal?.aborted === true || (e instanceof Error && e.name === "AbortError");

/** The requests of a plain batch: `total` images in requests of at most MAX_BATCH, continuing seed + i. */
export async function* batchPlans(
  base: GenerateRequest,
  total: number,
  seed: number,
): AsyncGenerator<PlannedRequest> {
  for (let index = 0; index < total; index += MAX_BATCH) {
    const batch_size = Math.min(MAX_BATCH, total - index);
    yield { index, request: { ...base, seed: seedAt(seed, index), batch_size } };
  }
}

/**
 * The metadata's `inputs`: for each image file sent, its path as given and the server's report of it (SHA-256,
 * format, size, whether it was resized); the file's own SHA-256 where the server reported nothing. A server whose
 * hash differs from the file's is worth a warning: the metadata would not reproduce the run.
 */
function inputsMetadata(
  files: InputFiles | undefined,
  reported: GenerateResponse["metadata"]["inputs"] | undefined,
  warnings: string[],
): Record<string, unknown> | undefined {
  if (!files || IMAGE_FIELDS.every((field) => files[field] === undefined)) return undefined;
  const inputs: Record<string, unknown> = {};
  for (const field of IMAGE_FIELDS) {
    const file = files[field];
    if (!file) continue;
    const report = reported?.[field];
    if (report && report.sha256 !== file.sha256) {
      warnings.push(`${field}: the server's SHA-256 ${report.sha256} is not the file's (${file.sha256})`);
    }
    inputs[field] = { path: file.path, ...(report ?? { sha256: file.sha256, format: file.format }) };
  }
  return inputs;
}

/** A request as the error file shows it: image fields as their file paths rather than megabytes of base64. */
function requestForErrorFile(
  request: GenerateRequest,
  files: InputFiles | undefined,
): Record<string, unknown> {
  const shown: Record<string, unknown> = { ...request };
  for (const field of IMAGE_FIELDS) {
    const file = files?.[field];
    if (shown[field] !== undefined)
      shown[field] = file ? { path: file.path, sha256: file.sha256 } : "(base64)";
  }
  return shown;
}

function imageMetadata(
  response: GenerateResponse,
  image: GenerateResponse["images"][number],
  plan: PlannedRequest,
  options: RunOptions,
  date: Date,
  serverVersion: string,
  position: number,
): Record<string, unknown> {
  const { metadata } = response;
  const clientWarnings = [...(plan.warnings ?? [])];
  const inputs = inputsMetadata(options.inputs, metadata.inputs, clientWarnings);
  return {
    timestamp: date.toISOString(),
    project: options.project,
    prompt_name: options.promptName,
    // As sent, and as the server applied it.
    prompt: metadata.parameters.prompt,
    negative_prompt: metadata.parameters.negative_prompt,
    // CLIP tokens of the prompt (without start and end tokens).
    prompt_tokens: metadata.prompt.tokens,
    clip_tokens: { prompt: metadata.prompt, negative_prompt: metadata.negative_prompt },
    // hash: SHA-256 of the checkpoint file (or of an ONNX folder's file manifest), as the server reports it.
    model: { name: metadata.model.name, kind: metadata.model.kind, hash: metadata.model.hash },
    seed: image.seed,
    // Every parameter as the server applied it, for this image alone: send these to remake it.
    parameters: { ...metadata.parameters, seed: image.seed, batch_size: 1 },
    // Image files sent with the request: path as given, SHA-256 (send the same files to remake the image).
    ...(inputs ? { inputs } : {}),
    batch: {
      index: position,
      size: options.total,
      seed: options.seed,
      request: { seed: plan.request.seed, batch_size: plan.request.batch_size },
    },
    scheduler: metadata.scheduler,
    timings: metadata.timings,
    memory: metadata.memory,
    execution_provider: metadata.execution_provider,
    warnings: [...clientWarnings, ...response.warnings],
    ...(plan.ollama ? { ollama: plan.ollama } : {}),
    sdx_version: VERSION,
    server_version: metadata.sdx_version ?? serverVersion,
  };
}

async function writeError(
  run: RunFolder,
  clock: TimestampClock,
  plan: PlannedRequest | undefined,
  inputs: InputFiles | undefined,
  error: unknown,
): Promise<{ file: string; stamp: string; body: Record<string, unknown> }> {
  const dir = join(run.dir, "errors");
  await mkdir(dir, { recursive: true });
  const { date, stamp } = clock.next();
  const file = join(dir, `error_${stamp}.yaml`);
  const serverError =
    error instanceof SdxError
      ? { status: error.status, code: error.code, message: error.message, fields: error.fields }
      : { message: error instanceof Error ? error.message : String(error) };
  const body = {
    timestamp: date.toISOString(),
    request: plan ? requestForErrorFile(plan.request, inputs) : null,
    ...(plan?.ollama ? { ollama: plan.ollama } : {}),
    error: serverError,
    sdx_version: VERSION,
  };
  await writeFileAtomic(file, YAML.stringify(body, { lineWidth: 0 }), { createOnly: true });
  return { file, stamp, body };
}

/**
 * One request as a server-sent event stream: progress events go to `progress`, images are collected, and
 * the answer is the non-streamed one (images, metadata, warnings) once `done` arrives. An `error` event
 * throws the SdxError a non-streamed request would have; aborting `signal` closes the stream, which
 * cancels the generation on the server.
 */
export async function generateStreamed(
  client: SdxClient,
  request: GenerateRequest,
  signal: AbortSignal | undefined,
  progress: ((event: RequestProgress) => void) | undefined,
): Promise<GenerateResponse> {
  const images: (GenerateResponse["images"][number] & { index: number })[] = [];
  for await (const event of client.generateStream(request, { ...(signal ? { signal } : {}) })) {
    if (event.type === "image") {
      images.push({ index: event.index, png: event.png, seed: event.seed });
    } else if (event.type === "done") {
      images.sort((a, b) => a.index - b.index);
      return {
        images: images.map(({ png, seed }) => ({ png, seed })),
        metadata: event.metadata,
        warnings: event.warnings,
      };
    } else if (event.type === "error") {
      const { status, code, message, fields } = event.error;
      throw new SdxError(status, code, message, fields ?? []);
    } else {
      progress?.(event);
    }
  }
  // The SDK throws when the stream ends early; this only keeps the types honest.
  throw new SdxError(200, "unexpected_response", "the event stream ended before done or error");
}

/** Runs every planned request; never throws for a failed request (see the summary), only for no server. */
export async function runGeneration(options: RunOptions): Promise<RunSummary> {
  const { client, signal } = options;
  let health: Awaited<ReturnType<SdxClient["health"]>>;
  try {
    health = await client.health({ ...(signal ? { signal } : {}) });
  } catch (e) {
    if (e instanceof SdxError && e.status === 0) throw new UnreachableError(e.message);
    throw e;
  }
  if (health.status === "draining") {
    throw new SdxError(503, "draining", `the server at ${client.baseUrl} is not ready: ${health.message}`);
  }
  // A named model is loaded on demand by the server; without one, the server's default must be ready.
  const modelName = options.model ?? (health.status === "ok" ? health.model?.name : undefined);
  if (modelName === undefined) {
    throw new SdxError(503, "no_model", `the server at ${client.baseUrl} is not ready: ${health.message}`);
  }
  const clock = new TimestampClock();
  const run = await createRunFolder(
    options.outputRoot,
    options.project,
    options.promptName,
    modelName,
    clock,
  );
  const summary: RunSummary = {
    run_dir: run.dir,
    total: options.total,
    made: 0,
    failed: 0,
    interrupted: false,
    unreachable: false,
  };
  const gallery = new RunGallery(run.dir, options.defaults, options.warn);
  await options.onGallery?.(gallery);
  const iterator = options.plans[Symbol.asyncIterator]();
  let done = 0;
  try {
    while (done < options.total) {
      if (signal?.aborted) {
        summary.interrupted = true;
        break;
      }
      let plan: PlannedRequest | undefined;
      try {
        const next = await iterator.next();
        if (next.done) break;
        plan = next.value;
        for (const warning of plan.warnings ?? []) options.warn(warning);
        options.progress?.({ type: "request", index: plan.index, count: plan.request.batch_size });
        const response = await generateStreamed(client, plan.request, signal, options.progress);
        for (const warning of response.warnings) options.warn(warning);
        for (const [j, image] of response.images.entries()) {
          const { date, stamp } = clock.next();
          const position = plan.index + j;
          const meta = imageMetadata(response, image, plan, options, date, health.version, position);
          const paths = await writeImageWithMetadata(run, stamp, Buffer.from(image.png, "base64"), meta);
          summary.made++;
          await gallery.addImage(imageFromMetadata(stamp, meta));
          await options.report({
            event: "image",
            index: position,
            total: options.total,
            seed: image.seed,
            image: paths.image,
            metadata: paths.metadata,
            prompt: response.metadata.parameters.prompt,
            warnings: meta.warnings as string[],
          });
        }
        done += plan.request.batch_size;
        options.progress?.({ type: "finished", ok: true });
      } catch (e) {
        if (isAbort(e, signal)) {
          summary.interrupted = true;
          break;
        }
        const count = plan?.request.batch_size ?? 1;
        if (plan) options.progress?.({ type: "finished", ok: false });
        const written = await writeError(run, clock, plan, options.inputs, e);
        await gallery.addError(errorFromFile(written.stamp, written.body));
        summary.failed += count;
        const message =
          e instanceof SdxError ? describeSdxError(e) : e instanceof Error ? e.message : String(e);
        const first = plan?.index ?? done;
        for (let k = 0; k < count; k++) {
          await options.report({
            event: "error",
            index: first + k,
            total: options.total,
            seed: seedAt(plan?.request.seed ?? seedAt(options.seed, first), k),
            error: message,
            error_file: written.file,
          });
        }
        done += count;
        if (e instanceof SdxError && e.status === 0) {
          // Every later request would fail the same way: stop, and count them as not made.
          summary.unreachable = true;
          summary.failed += options.total - done;
          break;
        }
      }
    }
  } finally {
    await gallery.close();
  }
  await iterator.return?.();
  return summary;
}
