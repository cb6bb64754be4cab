/**
 * Typed client for the sdx API: types generated from openapi.yaml (sdk/schema.d.ts) and openapi-fetch,
 * with every non-2xx answer or transport failure turned into one `SdxError`.
 *
 *   import { createSdxClient } from "sdx/sdk";
 *   const sdx = createSdxClient({ baseUrl: "http://127.0.0.1:8001" });
 *   const { images, metadata } = await sdx.generate({ prompt: "a lighthouse at dawn", seed: 42 });
 *
 * Image inputs (`init_image`, `mask_image`) may be given as bytes (Uint8Array, ArrayBuffer, Blob); they are
 * base64-encoded before sending. This module runs in browsers too; `sdx/sdk/files` reads them from paths.
 */
import { createParser, type EventSourceMessage } from "eventsource-parser";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type Schemas = components["schemas"];
export type GenerateRequest = Schemas["GenerateRequest"];
export type GenerateResponse = Schemas["GenerateResponse"];
export type ModelList = Schemas["ModelList"];
export type ModelInfo = ModelList["models"][number];
export type ModelCatalog = Schemas["ModelCatalog"];
export type CatalogEntry = ModelCatalog["models"][number];
export type PullRequest = Schemas["PullRequest"];
export type PullResult = Schemas["PullResult"];

type PullEvents = Schemas["PullEvents"];
/** A pull's progress: the file being downloaded, and bytes and files of the whole pull. */
export type PullProgress = PullEvents["progress"];

/** The events of `models.pullStream`: progress…, then done (its result) or error. */
export type PullEvent =
  | Spread<PullEvents, "done" | "error">
  | { type: "done"; result: PullEvents["done"] }
  | { type: "error"; error: PullEvents["error"] };

export interface PullOptions extends RequestOptions {
  /** Folder name in the models directory (default: the catalog name or the repository's name). */
  folder?: string;
  /** Called with each progress event (the pull then streams server-sent events). */
  onProgress?: (progress: PullProgress) => void;
}
export type Health = Schemas["Health"];
export type TokenizeRequest = Schemas["TokenizeRequest"];
export type TokenizeResponse = Schemas["TokenizeResponse"];
export type SchedulerList = Schemas["SchedulerList"];
export type AdapterList = Schemas["AdapterList"];
/** One LoRA, embedding or VAE file of the adapter folders. */
export type AdapterInfo = AdapterList["loras"][number];
/** A LoRA a request applies (`loras` of GenerateRequest). */
export type LoraRequest = NonNullable<GenerateRequest["loras"]>[number];
export type ErrorBody = Schemas["Error"];
export type ErrorCode = ErrorBody["code"] | "unreachable" | "unexpected_response";
export type SchedulerType = NonNullable<GenerateRequest["scheduler_type"]>;
/** What the response says about each input image (SHA-256, format, size, whether it was resized). */
export type InputImagesReport = GenerateResponse["metadata"]["inputs"];

/** An init image or mask: a PNG, JPEG or WebP file's bytes, or its base64 text (raw or a data URL). */
export type ImageInput = string | Uint8Array | ArrayBuffer | Blob;
/** The image fields of a request, which may hold bytes instead of base64 text. */
export type ImageFields = "init_image" | "mask_image";
/** A generate request whose `init_image` and `mask_image` may be bytes (see `ImageInput`). */
export type GenerateInput = Omit<GenerateRequest, ImageFields> & { [K in ImageFields]?: ImageInput };

const BASE64_CHUNK = 0x8000;

/**
 * An image file's bytes as the value of `init_image` or `mask_image` (base64). A Blob (a browser `File`, a
 * fetch response's blob) is read first, so the answer is then a promise.
 */
export function imageFromBytes(bytes: Uint8Array | ArrayBuffer): string;
export function imageFromBytes(bytes: Blob): Promise<string>;
export function imageFromBytes(bytes: Uint8Array | ArrayBuffer | Blob): string | Promise<string>;
export function imageFromBytes(bytes: Uint8Array | ArrayBuffer | Blob): string | Promise<string> {
  if (typeof Blob !== "undefined" && bytes instanceof Blob) {
    return bytes.arrayBuffer().then((buffer) => imageFromBytes(buffer));
  }
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes as ArrayBuffer);
  if (view.byteLength === 0) throw new TypeError("an image input has no bytes");
  // Uint8Array.prototype.toBase64 (Bun, recent browsers), else btoa over binary strings in chunks.
  const native = (view as Uint8Array & { toBase64?: () => string }).toBase64;
  if (typeof native === "function") return native.call(view);
  let binary = "";
  for (let i = 0; i < view.length; i += BASE64_CHUNK) {
    binary += String.fromCharCode(...view.subarray(i, i + BASE64_CHUNK));
  }
  return btoa(binary);
}

/** The request as sent: image inputs given as bytes are base64-encoded; text is passed on as it is. */
export async function toGenerateRequest(params: GenerateInput): Promise<GenerateRequest> {
  const { init_image, mask_image, ...rest } = params;
  const encode = async (value: ImageInput) => (typeof value === "string" ? value : imageFromBytes(value));
  return {
    ...rest,
    ...(init_image !== undefined ? { init_image: await encode(init_image) } : {}),
    ...(mask_image !== undefined ? { mask_image: await encode(mask_image) } : {}),
  };
}

type GenerateEvents = Schemas["GenerateEvents"];
/** The events of `generateStream`, in order: queued…, started, loading (if the model loads), step… (with preview… when the request asks), image…, then done or error. */
export type GenerateEvent =
  | Spread<GenerateEvents, "error">
  | { type: "error"; error: GenerateEvents["error"] };

/** Each event of a stream's event map (the spec's) but `Except`, as its data with its name in `type`. */
type Spread<M, Except extends keyof M> = {
  [K in Exclude<keyof M, Except> & string]: M[K] extends Record<string, never>
    ? { type: K }
    : { type: K } & M[K];
}[Exclude<keyof M, Except> & string];

/** Every event name of each stream, checked against the spec's maps: a new event fails the typecheck here. */
const GENERATE_EVENTS: Record<keyof GenerateEvents, true> = {
  queued: true,
  started: true,
  loading: true,
  step: true,
  preview: true,
  image: true,
  done: true,
  error: true,
};
const PULL_EVENTS: Record<keyof PullEvents, true> = { progress: true, done: true, error: true };

const isEventOf = <M>(names: Record<keyof M, true>, name: string | undefined): name is keyof M & string =>
  name !== undefined && Object.hasOwn(names, name);

function toEvent(message: EventSourceMessage): GenerateEvent | null {
  if (!isEventOf(GENERATE_EVENTS, message.event)) return null;
  const data = JSON.parse(message.data) as Record<string, unknown>;
  if (message.event === "error") return { type: "error", error: data as ErrorBody };
  return { ...data, type: message.event } as GenerateEvent;
}

export class SdxError extends Error {
  override name = "SdxError";
  constructor(
    /** HTTP status; 0 when the server could not be reached. */
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly fields: NonNullable<ErrorBody["fields"]> = [],
  ) {
    super(message);
  }
}

export interface SdxClientOptions {
  baseUrl: string;
  /** Sent as `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** A fetch implementation, e.g. `(req) => app.handle(req)` to call an app in-process. */
  fetch?: (request: Request) => Promise<Response>;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

function isErrorBody(value: unknown): value is ErrorBody {
  return typeof value === "object" && value !== null && "code" in value && "message" in value;
}

async function call<T>(
  baseUrl: string,
  run: () => Promise<{ data?: T; error?: unknown; response: Response }>,
): Promise<T> {
  let result: { data?: T; error?: unknown; response: Response };
  try {
    result = await run();
  } catch (e) {
    if ((e as Error).name === "AbortError") throw e;
    throw new SdxError(
      0,
      "unreachable",
      `cannot reach the sdx server at ${baseUrl}: ${(e as Error).message}`,
    );
  }
  const { data, error, response } = result;
  if (error !== undefined || !response.ok) {
    if (isErrorBody(error))
      throw new SdxError(response.status, error.code, error.message, error.fields ?? []);
    const text = typeof error === "string" ? error : JSON.stringify(error);
    throw new SdxError(response.status, "unexpected_response", `HTTP ${response.status}: ${text}`);
  }
  if (data === undefined) throw new SdxError(response.status, "unexpected_response", "empty response body");
  return data;
}

export function createSdxClient(options: SdxClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const client = createClient<paths>({
    baseUrl,
    ...(options.fetch ? { fetch: options.fetch } : {}),
    headers: options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {},
  });
  return {
    baseUrl,
    health: (opts: RequestOptions = {}) => call(baseUrl, () => client.GET("/health", { ...opts })),
    /** The models directory, and pulls from the Hugging Face hub into it. */
    models: {
      /** GET /v1/models: the models directory. */
      list: (opts: RequestOptions = {}) => call(baseUrl, () => client.GET("/v1/models", { ...opts })),
      /** GET /v1/models/catalog: ready ONNX models on the Hugging Face hub, and whether each is installed. */
      catalog: (opts: RequestOptions = {}) =>
        call(baseUrl, () => client.GET("/v1/models/catalog", { ...opts })),
      /**
       * POST /v1/models/pull: downloads a catalog model or `org/name[@revision]` into the server's models
       * directory and resolves when it is there; `onProgress` gets the download's progress. Aborting `signal`
       * leaves the pull (the server stops it when nobody else waits for it; a later pull resumes it).
       */
      pull: (name: string, opts: PullOptions = {}): Promise<PullResult> => {
        const body: PullRequest = { name, ...(opts.folder !== undefined ? { folder: opts.folder } : {}) };
        const { onProgress, folder: _folder, ...request } = opts;
        if (!onProgress) return call(baseUrl, () => client.POST("/v1/models/pull", { body, ...request }));
        return pullWithProgress(baseUrl, options, body, request, onProgress);
      },
      /** POST /v1/models/pull with server-sent events: yields progress…, then done or error. */
      pullStream: (name: string, opts: Omit<PullOptions, "onProgress"> = {}) =>
        pullEvents(
          baseUrl,
          options,
          { name, ...(opts.folder !== undefined ? { folder: opts.folder } : {}) },
          opts,
        ),
    },
    schedulers: (opts: RequestOptions = {}) => call(baseUrl, () => client.GET("/v1/schedulers", { ...opts })),
    /**
     * GET /v1/adapters: the LoRA, embedding and VAE files beside the checkpoints, each usable or not (and why);
     * `{ refresh: true }` reads the folders again first (POST /v1/adapters/refresh).
     */
    adapters: (opts: RequestOptions & { refresh?: boolean } = {}) => {
      const { refresh, ...request } = opts;
      return refresh
        ? call(baseUrl, () => client.POST("/v1/adapters/refresh", { ...request }))
        : call(baseUrl, () => client.GET("/v1/adapters", { ...request }));
    },
    tokenize: (params: TokenizeRequest, opts: RequestOptions = {}) =>
      call(baseUrl, () => client.POST("/v1/tokenize", { body: params, ...opts })),
    /** POST /v1/generate; `init_image` and `mask_image` may be bytes (see `ImageInput`). */
    generate: async (params: GenerateInput, opts: RequestOptions = {}) => {
      const body = await toGenerateRequest(params);
      return call(baseUrl, () => client.POST("/v1/generate", { body, ...opts }));
    },
    /**
     * POST /v1/generate with server-sent events: yields each event as it comes, ending with `done` or `error`.
     * A refused request (422, 429, 503...) throws SdxError before the first event. Aborting `signal`, or
     * leaving the loop early, closes the connection, which cancels the generation on the server.
     */
    generateStream: async function* (params: GenerateInput, opts: RequestOptions = {}) {
      const body = await toGenerateRequest(params);
      yield* eventStream(baseUrl, options, "/v1/generate", body, opts, toEvent, isLastEvent);
    },
  };
}

/**
 * POSTs `body` to `path` asking for server-sent events and yields them as `toEvent` reads them, until `isLast`.
 * A refused request throws SdxError before the first event; leaving the loop early (or aborting
 * `opts.signal`) closes the connection, which the server takes as a cancellation.
 */
async function* eventStream<E>(
  baseUrl: string,
  options: SdxClientOptions,
  path: string,
  body: unknown,
  opts: RequestOptions,
  toEvent: (message: EventSourceMessage) => E | null,
  isLast: (event: E) => boolean,
): AsyncGenerator<E, void, undefined> {
  const doFetch = options.fetch ?? ((request: Request) => fetch(request));
  const local = new AbortController();
  const onAbort = () => local.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    let response: Response;
    try {
      response = await doFetch(
        new Request(`${baseUrl}${path}`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            accept: "text/event-stream",
            ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
          },
          body: JSON.stringify(body),
          signal: local.signal,
        }),
      );
    } catch (e) {
      if ((e as Error).name === "AbortError") throw e;
      throw new SdxError(
        0,
        "unreachable",
        `cannot reach the sdx server at ${baseUrl}: ${(e as Error).message}`,
      );
    }
    if (!response.ok || !response.body) throw await errorFrom(response);
    const pending: E[] = [];
    const parser = createParser({
      onEvent: (message) => {
        const event = toEvent(message);
        if (event !== null) pending.push(event);
      },
    });
    const decoder = new TextDecoder();
    for await (const chunk of response.body) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      while (pending.length > 0) {
        const event = pending.shift() as E;
        yield event;
        if (isLast(event)) return;
      }
    }
    throw new SdxError(response.status, "unexpected_response", "the event stream ended before done or error");
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    local.abort();
  }
}

/** An answer that is not 2xx as an SdxError, reading the error body when it is one. */
async function errorFrom(response: Response): Promise<SdxError> {
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {}
  if (isErrorBody(body)) return new SdxError(response.status, body.code, body.message, body.fields ?? []);
  return new SdxError(response.status, "unexpected_response", `HTTP ${response.status}: ${text}`);
}

function toPullEvent(message: EventSourceMessage): PullEvent | null {
  if (!isEventOf(PULL_EVENTS, message.event)) return null;
  const data = JSON.parse(message.data);
  if (message.event === "done") return { type: "done", result: data as PullResult };
  if (message.event === "error") return { type: "error", error: data as ErrorBody };
  return { type: "progress", ...(data as PullProgress) };
}

const isLastEvent = (event: { type: string }) => event.type === "done" || event.type === "error";

const pullEvents = (baseUrl: string, options: SdxClientOptions, body: PullRequest, opts: RequestOptions) =>
  eventStream(baseUrl, options, "/v1/models/pull", body, opts, toPullEvent, isLastEvent);

async function pullWithProgress(
  baseUrl: string,
  options: SdxClientOptions,
  body: PullRequest,
  opts: RequestOptions,
  onProgress: (progress: PullProgress) => void,
): Promise<PullResult> {
  for await (const event of pullEvents(baseUrl, options, body, opts)) {
    if (event.type === "progress") {
      const { type: _type, ...progress } = event;
      onProgress(progress);
    } else if (event.type === "done") return event.result;
    else
      throw new SdxError(event.error.status, event.error.code, event.error.message, event.error.fields ?? []);
  }
  throw new SdxError(0, "unexpected_response", "the event stream ended before done or error");
}

export type SdxClient = ReturnType<typeof createSdxClient>;
