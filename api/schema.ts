import { t } from "elysia";

/**
 * A string enum from an `as const` list. Elysia's UnionEnum makes the first value the default; a response
 * field or an enum without a real default must not claim one in the spec.
 */
export const Enum = <const T extends readonly [string, ...string[]]>(
  values: T,
  options: { default?: T[number]; description?: string } = {},
) => t.UnionEnum(values, { default: undefined, ...options });
