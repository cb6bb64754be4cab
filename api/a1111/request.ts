/** A1111 requests as sdx reads them: nulls as defaults, and sdx's field names in A1111's spelling in errors. */
import { ApiError } from "../../contract/index.ts";

/** Removes null fields (A1111's "use the default"), at the top level and in override_settings. */
export function withoutNulls(body: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(body)) if (value === null) delete body[key];
  const overrides = body.override_settings;
  if (overrides && typeof overrides === "object" && !Array.isArray(overrides)) {
    withoutNulls(overrides as Record<string, unknown>);
  }
}

/** sdx's request and metadata field names as A1111 spells them, for 422s and warnings. */
const A1111_FIELD_NAMES: [RegExp, string][] = [
  [/\bhires[./]upscaler\b/g, "hr_upscaler"],
  [/\bhires[./]scale\b/g, "hr_scale"],
  [/\bhires[./]width\b/g, "hr_resize_x"],
  [/\bhires[./]height\b/g, "hr_resize_y"],
  [/\bhires[./]steps\b/g, "hr_second_pass_steps"],
  [/\bhires[./]strength\b/g, "denoising_strength"],
  [/^hires$/g, "enable_hr"],
  [/\binit_image\b/g, "init_images"],
  [/\bmask_image\b/g, "mask"],
  [/\bstrength\b/g, "denoising_strength"],
  [/\bmasked_content\b/g, "inpainting_fill"],
  [/\bnum_steps\b/g, "steps"],
  [/\bguidance_scale\b/g, "cfg_scale"],
  [/\bscheduler_type\b/g, "sampler_name"],
  [/\bkarras_sigmas\b/g, "scheduler"],
  [/\bclip_skip\b/g, "override_settings.CLIP_stop_at_last_layers"],
  [/^model$/g, "override_settings.sd_model_checkpoint"],
  [/^vae$/g, "override_settings.sd_vae"],
  [/^preview\.method$/g, "show_progress_type"],
];

export function a1111Text(text: string): string {
  return A1111_FIELD_NAMES.reduce((out, [pattern, name]) => out.replace(pattern, name), text);
}

/** A 422 from sdx's generation path, with A1111's field names. */
export function a1111Error(e: unknown): unknown {
  if (!(e instanceof ApiError) || e.status !== 422) return e;
  const fields = e.fields?.map((f) => ({ ...f, field: a1111Text(f.field), message: a1111Text(f.message) }));
  const message = fields ? fields.map((f) => `${f.field}: ${f.message}`).join("; ") : a1111Text(e.message);
  return new ApiError(e.status, e.code, message, fields, e.headers);
}
