/**
 * Typed client for the sdx API: types generated from openapi.yaml (sdk/schema.d.ts) and openapi-fetch,
 * with every non-2xx answer or transport failure turned into one `SdxError`.
 *
 *   import { createSdxClient } from "sdx/sdk";
 *   const sdx = createSdxClient({ baseUrl: "http://127.0.0.1:8001" });
 *   const { images, metadata } = await sdx.generate({ prompt: "a lighthouse at dawn", seed: 42 });
 */
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
  };
}

export type SdxClient = ReturnType<typeof createSdxClient>;
