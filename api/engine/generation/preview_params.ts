/**
 * A request's `preview` as the engine takes it, checked before admission: the methods this server can make
 * now, and the 422 for the others.
 */
import {
  type GenerateRequest,
  PREVIEW_DEFAULTS,
  PREVIEW_METHODS,
  type PreviewMethod,
  validationFailed,
} from "../../../contract/index.ts";
import type { PreviewInput } from "../pipeline/types.ts";

/**
 * Why this server cannot make previews by `method`, or null when it can. The one place that decides it: taesd
 * needs the tiny autoencoder's decoder, which the engine does not run yet (previews/preview.ts is where it plugs
 * in; its weights file then goes in PreviewInput.decoderPath).
 */
export function previewMethodProblem(method: PreviewMethod): string | null {
  if (method === "taesd")
    return 'taesd previews need the tiny autoencoder (madebyollin/taesd: taesd_decoder for SD 1.x/2.x, taesdxl_decoder for SDXL, in the vae_approx models folder), which this server does not run yet; send method "approx"';
  return null;
}

/** The methods previewMethodProblem lets through. */
export function availablePreviewMethods(): PreviewMethod[] {
  return PREVIEW_METHODS.filter((m) => previewMethodProblem(m) === null);
}

/** The engine's preview request for a /v1/generate body, or null without one; a 422 naming preview.method. */
export function previewInput(preview: GenerateRequest["preview"]): PreviewInput | null {
  if (!preview) return null;
  const method = preview.method ?? PREVIEW_DEFAULTS.method;
  const problem = previewMethodProblem(method);
  if (problem !== null)
    throw validationFailed([
      { field: "preview.method", message: problem, allowed: availablePreviewMethods() },
    ]);
  return { every: preview.every, method, decoderPath: null };
}
