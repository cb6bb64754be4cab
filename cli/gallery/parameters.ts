/** Which of an image's parameters a gallery shows: those that differ from what the project sends by default. */
import { GenerateParamsSchema } from "../../contract/index.ts";

/** Shown on their own (prompts, seed), 1 for every image (batch_size), or not about the image (preview). */
const NOT_LISTED = new Set(["prompt", "negative_prompt", "seed", "batch_size", "preview"]);
/** Longest value shown; longer ones (base64 images in old metadata) are cut. */
const VALUE_MAX_CHARS = 200;

/** What a project's images get when they set nothing: the request schema's defaults, then `default_params`. */
export function projectDefaults(defaultParams: Record<string, unknown> | undefined): Record<string, unknown> {
  const defaults: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(GenerateParamsSchema.properties)) {
    const value = (schema as { default?: unknown }).default;
    if (value !== undefined) defaults[key] = value;
  }
  return { ...defaults, ...defaultParams };
}

/**
 * The parameters (as the server applied them) that differ from `defaults`, in the metadata's order. A null or
 * false value where the defaults have none is the server's own default (off, or not applicable), not a change.
 */
export function changedParameters(
  parameters: Record<string, unknown>,
  defaults: Record<string, unknown>,
): [string, unknown][] {
  return Object.entries(parameters).filter(([key, value]) => {
    if (NOT_LISTED.has(key)) return false;
    const base = defaults[key];
    if (base === undefined) return value !== null && value !== undefined && value !== false;
    return !Bun.deepEquals(value, base);
  });
}

/** A parameter's value as one short line. */
export function formatValue(value: unknown): string {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > VALUE_MAX_CHARS ? `${text.slice(0, VALUE_MAX_CHARS)}…` : text;
}
