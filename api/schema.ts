import { t } from "elysia";

/**
 * A string enum from an `as const` list. Elysia's UnionEnum makes the first value the default; a response
 * field or an enum without a real default must not claim one in the spec.
 */
export const Enum = <const T extends readonly [string, ...string[]]>(
  values: T,
  options: { default?: T[number]; description?: string } = {},
) => t.UnionEnum(values, { default: undefined, ...options });

interface ConstraintSchema {
  type?: unknown;
  minimum?: number;
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
      rule.minimum !== undefined && rule.maximum !== undefined
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
