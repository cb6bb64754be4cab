/**
 * Schema helpers of the contract, on TypeBox alone: string enums from `as const` lists, and the sentence that
 * says a rejected value's whole rule.
 */
import { Kind, type SchemaOptions, type TSchema, TypeRegistry } from "@sinclair/typebox";

/**
 * A string enum's kind. The name is Elysia's (`t.UnionEnum`), so the server treats these schemas exactly as
 * its own; registered here too, so TypeBox checks them where Elysia is not loaded (the CLI).
 */
const STRING_ENUM = "UnionEnum";
if (!TypeRegistry.Has(STRING_ENUM)) {
  TypeRegistry.Set<{ enum: unknown[] }>(
    STRING_ENUM,
    (schema, value) =>
      (typeof value === "number" || typeof value === "string" || value === null) &&
      schema.enum.includes(value),
  );
}

export interface TStringEnum<T extends readonly string[]> extends TSchema {
  [Kind]: typeof STRING_ENUM;
  static: T[number];
  type: "string";
  enum: T;
}

/**
 * A string enum from an `as const` list: `{ type: "string", enum: [...] }` in the spec. A response field or an
 * enum without a real default claims none.
 */
export const Enum = <const T extends readonly [string, ...string[]]>(
  values: T,
  options: { default?: T[number]; description?: string } & SchemaOptions = {},
): TStringEnum<T> =>
  ({ default: undefined, ...options, [Kind]: STRING_ENUM, type: "string", enum: values }) as TStringEnum<T>;

interface ConstraintSchema {
  type?: unknown;
  minimum?: number;
  exclusiveMinimum?: number;
  maximum?: number;
  multipleOf?: number;
  maxLength?: number;
  enum?: unknown[];
}

/**
 * The rule a rejected value broke, said whole: "must be an integer from 64 to 2048, a multiple of 8" rather
 * than the one bound TypeBox tripped on. Null for schemas with nothing to add.
 */
export function constraintMessage(schema: ConstraintSchema | object, value: unknown): string | null {
  const rule = schema as ConstraintSchema;
  const got = value === undefined ? "" : `; got ${JSON.stringify(value)}`;
  if (Array.isArray(rule.enum)) return `must be one of: ${rule.enum.join(", ")}${got}`;
  if (rule.type === "integer" || rule.type === "number") {
    const kind = rule.type === "integer" ? "an integer" : "a number";
    const range =
      rule.exclusiveMinimum !== undefined
        ? ` greater than ${rule.exclusiveMinimum}${rule.maximum !== undefined ? ` and at most ${rule.maximum}` : ""}`
        : rule.minimum !== undefined && rule.maximum !== undefined
          ? ` from ${rule.minimum} to ${rule.maximum}`
          : rule.minimum !== undefined
            ? ` of at least ${rule.minimum}`
            : rule.maximum !== undefined
              ? ` of at most ${rule.maximum}`
              : "";
    const multiple = rule.multipleOf !== undefined ? `, a multiple of ${rule.multipleOf}` : "";
    return `must be ${kind}${range}${multiple}${got}`;
  }
  if (rule.type === "string" && rule.maxLength !== undefined) {
    return `must be a string of at most ${rule.maxLength} characters`;
  }
  return null;
}
