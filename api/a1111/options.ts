/**
 * A1111's settings: the ones sdx has (the default model, clip skip, VAE, live previews) and the fixed ones it
 * reports.
 */
import {
  A1111_PREVIEW_DEFAULTS,
  A1111_PREVIEW_METHODS,
  A1111_PREVIEW_TYPES,
  type A1111Options,
  type A1111OptionsUpdate,
  type A1111PreviewSettings,
  type A1111PreviewType,
  ApiError,
  type FieldError,
  type GenerateRequest,
  PREVIEW_EVERY_MAX,
  validationFailed,
} from "../../contract/index.ts";
import { previewMethodProblem } from "../engine/generation/preview_params.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { resolveSdVae } from "./adapters.ts";
import { defaultModelInfo, makeDefault, resolveCheckpoint, sdModelItem } from "./checkpoints.ts";
import type { A1111Session } from "./session.ts";

/** The A1111 settings sdx reports but cannot change: their value, and the values accepted as the same. */
function fixedOptions(
  host: ModelHost,
): Record<string, { value: string | number; same: (string | number)[] }> {
  const fixed = (value: string | number, ...also: (string | number)[]) => ({ value, same: [value, ...also] });
  return {
    sd_checkpoints_limit: fixed(host.maxLoadedModels),
    samples_format: fixed("png"),
    randn_source: fixed("CPU"),
    eta_noise_seed_delta: fixed(0),
    eta_ddim: fixed(0),
    eta_ancestral: fixed(1),
    s_churn: fixed(0),
    s_tmin: fixed(0),
    s_tmax: fixed(0),
    s_noise: fixed(1),
    s_min_uncond: fixed(0),
  };
}

/** The live-preview settings' keys. */
const PREVIEW_KEYS = new Set<string>(Object.keys(A1111_PREVIEW_DEFAULTS));

export async function getOptions(host: ModelHost, session: A1111Session): Promise<A1111Options> {
  const name = host.defaultModel;
  const current = await defaultModelInfo(host);
  const fixed = Object.fromEntries(Object.entries(fixedOptions(host)).map(([k, v]) => [k, v.value]));
  return {
    sd_model_checkpoint: current ? sdModelItem(current).title : name,
    sd_checkpoint_hash: current?.hash ?? null,
    CLIP_stop_at_last_layers: session.clipSkip,
    sd_vae: session.sdVae,
    ...session.previews,
    ...(fixed as Omit<
      A1111Options,
      | "sd_model_checkpoint"
      | "sd_checkpoint_hash"
      | "CLIP_stop_at_last_layers"
      | "sd_vae"
      | keyof A1111PreviewSettings
    >),
  };
}

/** The session's live-preview settings with a request's overrides (null and absent ones keep the session's). */
export function previewSettings(
  session: A1111Session,
  overrides: Partial<Record<keyof A1111PreviewSettings, unknown>>,
): A1111PreviewSettings {
  const settings = { ...session.previews };
  for (const key of PREVIEW_KEYS as Set<keyof A1111PreviewSettings>) {
    const value = overrides[key];
    if (value !== undefined && value !== null) Object.assign(settings, { [key]: value });
  }
  return settings;
}

/**
 * A1111's live-preview settings as sdx's `preview`, or undefined when off. A1111 previews every N-th step
 * (shared_state.State.set_current_image): N = 0 every step, N = -1 only once an iteration has finished sampling
 * (State.nextjob), which is sdx's preview after the last step.
 */
export function previewRequest(settings: A1111PreviewSettings): GenerateRequest["preview"] {
  if (!settings.live_previews_enable) return undefined;
  const n = settings.show_progress_every_n_steps;
  return {
    every: n > 0 ? n : n === 0 ? 1 : PREVIEW_EVERY_MAX,
    method: A1111_PREVIEW_METHODS[settings.show_progress_type],
  };
}

/** show_progress_type's values whose sdx method this server makes. */
function availablePreviewTypes(): A1111PreviewType[] {
  return A1111_PREVIEW_TYPES.filter((t) => previewMethodProblem(A1111_PREVIEW_METHODS[t]) === null);
}

/**
 * Checks settings against what sdx can do: the fixed ones must keep their value (a 422 naming `prefix + key`).
 * Returns the keys sdx does not have (not applied).
 */
export async function checkSettings(
  host: ModelHost,
  settings: Record<string, unknown>,
  prefix: string,
): Promise<string[]> {
  const fixed = fixedOptions(host);
  const fields: FieldError[] = [];
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (key === "sd_model_checkpoint" || key === "CLIP_stop_at_last_layers") continue;
    if (PREVIEW_KEYS.has(key)) {
      const problem =
        key === "show_progress_type" && value !== null
          ? previewMethodProblem(A1111_PREVIEW_METHODS[value as A1111PreviewType])
          : null;
      if (problem !== null)
        fields.push({ field: `${prefix}${key}`, message: problem, allowed: availablePreviewTypes() });
      continue;
    }
    if (key === "sd_vae") {
      try {
        await resolveSdVae(host, String(value), `${prefix}${key}`);
      } catch (e) {
        if (!(e instanceof ApiError && e.fields)) throw e;
        fields.push(...e.fields);
      }
      continue;
    }
    if (key === "sd_checkpoint_hash") {
      const current = await defaultModelInfo(host);
      if (value !== (current?.hash ?? null)) {
        fields.push({
          field: `${prefix}${key}`,
          message: "is read-only; choose the model with sd_model_checkpoint",
        });
      }
      continue;
    }
    const rule = fixed[key];
    if (!rule) {
      unknown.push(key);
      continue;
    }
    if (!rule.same.includes(value as string | number)) {
      fields.push({
        field: `${prefix}${key}`,
        message: `sdx cannot change this setting: it is ${JSON.stringify(rule.value)}`,
        allowed: rule.same,
      });
    }
  }
  if (fields.length > 0) throw validationFailed(fields);
  return unknown;
}

/** POST /sdapi/v1/options: checks everything first, then applies; returns the keys accepted and not applied. */
export async function setOptions(
  host: ModelHost,
  session: A1111Session,
  update: A1111OptionsUpdate,
): Promise<string[]> {
  const ignored = await checkSettings(host, update, "");
  const target =
    update.sd_model_checkpoint === undefined
      ? null
      : await resolveCheckpoint(host, update.sd_model_checkpoint, "sd_model_checkpoint");
  if (target) await makeDefault(host, target.name);
  if (update.CLIP_stop_at_last_layers !== undefined) session.clipSkip = update.CLIP_stop_at_last_layers;
  if (update.sd_vae !== undefined) session.sdVae = update.sd_vae;
  session.previews = previewSettings(session, update);
  return ignored;
}
