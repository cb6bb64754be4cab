/**
 * The API's errors over HTTP: the `Error` model every route documents, and TypeBox's validation errors as the
 * contract's per-field errors. The error type itself (ApiError) is the contract's.
 */
import { Elysia, type ValidationError } from "elysia";
import { constraintMessage, type ErrorBody, ErrorSchema, type FieldError } from "../../contract/index.ts";

/** The `Error` model, registered once; every feature plugin uses it to document its error responses. */
export const errorModel = new Elysia({ name: "sdx.error-model" }).model({ Error: ErrorSchema });

/** The error responses a generating route documents: bad body, too large, invalid, queue full, failure, not ready. */
export const GENERATION_ERROR_RESPONSES = {
  400: "Error",
  413: "Error",
  422: "Error",
  429: "Error",
  500: "Error",
  503: "Error",
} as const;

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

/** An error body as the response, with its status (and extra headers such as Retry-After). */
export function errorResponse(body: ErrorBody, headers?: Record<string, string>): Response {
  return Response.json(body, { status: body.status, ...(headers ? { headers } : {}) });
}
