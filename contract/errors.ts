/**
 * The one error type of the API and its JSON shape. Every failure leaves the server as
 * `{ status, code, message, fields? }`; the spec documents it as the `Error` model.
 */
import { Type } from "@sinclair/typebox";
import { Enum } from "./schema.ts";

export const ERROR_CODES = [
  "bad_request",
  "unauthorized",
  "forbidden_host",
  "validation_failed",
  "not_found",
  "payload_too_large",
  "no_model",
  "model_loading",
  "model_unavailable",
  "generation_failed",
  "cancelled",
  "queue_full",
  "draining",
  "model_exists",
  "download_busy",
  "not_in_catalog",
  "hub_not_found",
  "hub_forbidden",
  "hub_unreachable",
  "hub_not_onnx",
  "download_failed",
  "insufficient_storage",
  "internal",
] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export const FieldErrorSchema = Type.Object({
  field: Type.String({ description: "The request field, as a path (`width`, `params.seed`)." }),
  message: Type.String(),
  allowed: Type.Optional(
    Type.Array(Type.Union([Type.String(), Type.Number(), Type.Boolean()]), {
      description: "Allowed values.",
    }),
  ),
});

export const ErrorSchema = Type.Object(
  {
    status: Type.Integer({ description: "HTTP status, repeated." }),
    code: Enum(ERROR_CODES),
    message: Type.String({ description: "What went wrong and what to do about it." }),
    fields: Type.Optional(
      Type.Array(FieldErrorSchema, { description: "Per-field problems of a rejected request." }),
    ),
  },
  { description: "Every error response." },
);

export type FieldError = typeof FieldErrorSchema.static;
export type ErrorBody = typeof ErrorSchema.static;

/** The 400 for a body that is not JSON. */
export const UNPARSABLE_BODY =
  "the request body could not be parsed; send JSON with Content-Type: application/json";

export class ApiError extends Error {
  override name = "ApiError";
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
    readonly fields?: FieldError[],
    /** Extra response headers (Retry-After). */
    readonly headers?: Record<string, string>,
  ) {
    super(message);
  }

  toBody(): ErrorBody {
    return {
      status: this.status,
      code: this.code,
      message: this.message,
      ...(this.fields ? { fields: this.fields } : {}),
    };
  }
}

/** The 422 for fields that fail a check: one message naming each field, and the fields themselves. */
export function validationFailed(fields: FieldError[]): ApiError {
  return new ApiError(
    422,
    "validation_failed",
    fields.map((f) => `${f.field}: ${f.message}`).join("; "),
    fields,
  );
}
