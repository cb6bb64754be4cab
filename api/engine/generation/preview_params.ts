/**
 * A request's `preview` as the engine takes it, checked before admission: `approx` needs nothing; `taesd` needs
 * the model family's tiny-autoencoder decoder in the vae_approx folder (a 422 naming preview.method and the file
 * to pull when it is missing).
 */
import { type GenerateRequest, PREVIEW_DEFAULTS } from "../../../contract/index.ts";
import type { AdapterCatalog } from "../adapters/catalog.ts";
import type { ModelEntry } from "../model_folder.ts";
import type { PreviewInput } from "../pipeline/types.ts";

/** The engine's preview request for a /v1/generate body, or null without one. */
export async function previewInput(
  preview: GenerateRequest["preview"],
  entry: ModelEntry,
  catalog: AdapterCatalog,
): Promise<PreviewInput | null> {
  if (!preview) return null;
  const method = preview.method ?? PREVIEW_DEFAULTS.method;
  if (method === "approx") return { every: preview.every, method, decoderPath: null };
  const decoder = await catalog.resolvePreviewDecoder(entry.kind ?? "sd1");
  return { every: preview.every, method, decoderPath: decoder.path };
}
