/**
 * The sdx HTTP application: feature plugins, the shared error model and the one error handler.
 * Only api/index.ts listens; tests drive this app through `app.handle` or a loopback server.
 */
import { Elysia, type ValidationError } from "elysia";
import { a1111Plugin } from "./a1111/index.ts";
import { docsPlugin } from "./docs/index.ts";
import type { ModelHost } from "./engine/model_host.ts";
import { ApiError, type ErrorBody, errorModel, type FieldError, UNPARSABLE_BODY } from "./errors.ts";
import { generatePlugin } from "./generate/index.ts";
import { GenerateRequestSchema } from "./generate/model.ts";
import { healthPlugin } from "./health/index.ts";
import { hubPlugin } from "./hub/index.ts";
import { metricsPlugin, requestMetricsPlugin } from "./metrics/index.ts";
import { modelsPlugin } from "./models/index.ts";
import { schedulersPlugin } from "./schedulers/index.ts";
import { constraintMessage } from "./schema.ts";
import { securityPlugin } from "./security/index.ts";
import { type AppOptions, DEFAULT_LIMITS } from "./security/model.ts";
import { limitGenerateRequest, limitTokenizeRequest, resolveLimits } from "./security/service.ts";
import { tokenizePlugin } from "./tokenize/index.ts";
import { TokenizeRequestSchema } from "./tokenize/model.ts";

interface SchemaLike {
  enum?: unknown[];
  anyOf?: { const?: unknown }[];
}

function allowedValues(schema: SchemaLike | undefined): FieldError["allowed"] {
  if (!schema) return undefined;
  if (Array.isArray(schema.enum)) return schema.enum as FieldError["allowed"];
  if (Array.isArray(schema.anyOf) && schema.anyOf.every((s) => "const" in s)) {
    return schema.anyOf.map((s) => s.const) as FieldError["allowed"];
  }
  return undefined;
}

/** TypeBox's value errors as one entry per field, named by its path (`width`, `prompt`). */
export function validationFields(error: Readonly<ValidationError>): FieldError[] {
  const byField = new Map<string, FieldError>();
  for (const e of error.all) {
    if (!("path" in e)) continue;
    const field = e.path.replace(/^\//, "").replaceAll("/", ".") || error.type;
    if (byField.has(field)) continue;
    const allowed = allowedValues(e.schema as SchemaLike);
    const message =
      e.message === "Unexpected property"
        ? "is not a known field"
        : e.message === "Expected required property"
          ? "is required"
          : (constraintMessage(e.schema as Parameters<typeof constraintMessage>[0], e.value) ?? e.message);
    byField.set(field, { field, message, ...(allowed ? { allowed } : {}) });
  }
  return [...byField.values()];
}

/** Request bodies larger than this are refused with a 413 before they are read (default; see AppOptions). */
export const MAX_BODY_BYTES = DEFAULT_LIMITS.bodyMaxBytes;

function errorResponse(body: ErrorBody, headers?: Record<string, string>): Response {
  return Response.json(body, { status: body.status, ...(headers ? { headers } : {}) });
}

/** The app; `options` sets limits and exposure (api key, CORS, Host guard). The defaults are the spec's. */
export function createApp(host: ModelHost, options: AppOptions = {}) {
  const limits = resolveLimits(options.limits);
  return new Elysia({ name: "sdx", normalize: false })
    .use(requestMetricsPlugin(host.metrics))
    .use(securityPlugin(options.security ?? {}, limits))
    .use(errorModel)
    .onError(({ code, error, request }) => {
      // The body parser's own refusals (a body over the limit) reach here wrapped in Elysia's ParseError.
      const cause = code === "PARSE" ? (error as { cause?: unknown }).cause : undefined;
      if (cause instanceof ApiError) return errorResponse(cause.toBody(), cause.headers);
      if (error instanceof ApiError) return errorResponse(error.toBody(), error.headers);
      switch (code) {
        case "VALIDATION": {
          const fields = validationFields(error);
          const message = `invalid ${error.type}: ${fields.map((f) => `${f.field} ${f.message}`).join("; ")}`;
          return errorResponse({ status: 422, code: "validation_failed", message, fields });
        }
        case "PARSE":
          return errorResponse({
            status: 400,
            code: "bad_request",
            message: UNPARSABLE_BODY,
          });
        case "NOT_FOUND": {
          const path = new URL(request.url).pathname;
          return errorResponse({
            status: 404,
            code: "not_found",
            message: `no route ${request.method} ${path}`,
          });
        }
        default: {
          const message = error instanceof Error ? error.message : String(error);
          console.error(`[sdx] unexpected error on ${request.method} ${request.url}:`, error);
          return errorResponse({ status: 500, code: "internal", message: `internal error: ${message}` });
        }
      }
    })
    .use(docsPlugin(limits))
    .use(healthPlugin(host))
    .use(metricsPlugin(host.metrics))
    .use(modelsPlugin(host))
    .use(hubPlugin(host, options.hub))
    .use(schedulersPlugin())
    .use(tokenizePlugin(host, limitTokenizeRequest(TokenizeRequestSchema, limits)))
    .use(a1111Plugin(host, limits))
    .use(
      generatePlugin(host, limitGenerateRequest(GenerateRequestSchema, limits), {
        min: limits.sizeMin,
        max: limits.sizeMax,
      }),
    );
}

export type App = ReturnType<typeof createApp>;
