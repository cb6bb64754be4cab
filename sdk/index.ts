/**
 * Typed client for the sdx API: types generated from openapi.yaml (sdk/schema.d.ts) and openapi-fetch,
 * with every non-2xx answer or transport failure turned into one `SdxError`.
 *
 *   import { createSdxClient } from "sdx/sdk";
 *   const sdx = createSdxClient({ baseUrl: "http://127.0.0.1:8001" });
 *   const { images, metadata } = await sdx.generate({ prompt: "a lighthouse at dawn", seed: 42 });
 */
import { createParser, type EventSourceMessage } from "eventsource-parser";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema";

type Schemas = components["schemas"];
export type GenerateRequest = Schemas["GenerateRequest"];
export type GenerateResponse = Schemas["GenerateResponse"];
export type ModelList = Schemas["ModelList"];
export type ModelInfo = ModelList["models"][number];
export type Health = Schemas["Health"];
export type TokenizeRequest = Schemas["TokenizeRequest"];
export type TokenizeResponse = Schemas["TokenizeResponse"];
export type SchedulerList = Schemas["SchedulerList"];
export type ErrorBody = Schemas["Error"];
export type ErrorCode = ErrorBody["code"] | "unreachable" | "unexpected_response";
export type SchedulerType = NonNullable<GenerateRequest["scheduler_type"]>;

/** The events of `generateStream`, in order: queued…, started, step…, image…, then done or error. */
export type GenerateEvent =
  | { type: "queued"; position: number }
  | { type: "started" }
  | { type: "step"; image: number; step: number; total: number; elapsed_ms: number; eta_ms: number }
  | { type: "image"; index: number; seed: number; png: string }
  | { type: "done"; metadata: GenerateResponse["metadata"]; warnings: string[] }
  | { type: "error"; error: ErrorBody };

const STREAM_EVENTS = new Set(["queued", "started", "step", "image", "done", "error"]);

function toEvent(message: EventSourceMessage): GenerateEvent | null {
  if (!message.event || !STREAM_EVENTS.has(message.event)) return null;
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
    models: (opts: RequestOptions = {}) => call(baseUrl, () => client.GET("/v1/models", { ...opts })),
    schedulers: (opts: RequestOptions = {}) => call(baseUrl, () => client.GET("/v1/schedulers", { ...opts })),
    tokenize: (params: TokenizeRequest, opts: RequestOptions = {}) =>
      call(baseUrl, () => client.POST("/v1/tokenize", { body: params, ...opts })),
    generate: (params: GenerateRequest, opts: RequestOptions = {}) =>
      call(baseUrl, () => client.POST("/v1/generate", { body: params, ...opts })),
    /**
     * POST /v1/generate with server-sent events: yields each event as it comes, ending with `done` or `error`.
     * A refused request (422, 429, 503...) throws SdxError before the first event. Aborting `signal`, or
     * leaving the loop early, closes the connection, which cancels the generation on the server.
     */
    generateStream: (params: GenerateRequest, opts: RequestOptions = {}) =>
      streamEvents(baseUrl, options, params, opts),
  };
}

async function* streamEvents(
  baseUrl: string,
  options: SdxClientOptions,
  params: GenerateRequest,
  opts: RequestOptions,
): AsyncGenerator<GenerateEvent, void, undefined> {
  const doFetch = options.fetch ?? ((request: Request) => fetch(request));
  // Leaving the loop early aborts the request too, so the server stops the generation.
  const local = new AbortController();
  const onAbort = () => local.abort(opts.signal?.reason);
  if (opts.signal?.aborted) onAbort();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    let response: Response;
    try {
      response = await doFetch(
        new Request(`${baseUrl}/v1/generate`, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            accept: "text/event-stream",
            ...(options.apiKey ? { authorization: `Bearer ${options.apiKey}` } : {}),
          },
          body: JSON.stringify(params),
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
    if (!response.ok || !response.body) {
      const text = await response.text();
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {}
      if (isErrorBody(body)) throw new SdxError(response.status, body.code, body.message, body.fields ?? []);
      throw new SdxError(response.status, "unexpected_response", `HTTP ${response.status}: ${text}`);
    }
    const pending: GenerateEvent[] = [];
    const parser = createParser({
      onEvent: (message) => {
        const event = toEvent(message);
        if (event) pending.push(event);
      },
    });
    const decoder = new TextDecoder();
    for await (const chunk of response.body) {
      parser.feed(decoder.decode(chunk, { stream: true }));
      while (pending.length > 0) {
        const event = pending.shift() as GenerateEvent;
        yield event;
        if (event.type === "done" || event.type === "error") return;
      }
    }
    throw new SdxError(response.status, "unexpected_response", "the event stream ended before done or error");
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    local.abort();
  }
}

export type SdxClient = ReturnType<typeof createSdxClient>;
