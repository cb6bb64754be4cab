/**
 * AUTOMATIC1111 compatibility: A1111's txt2img, model, sampler, option and progress calls mapped onto sdx's own
 * generation path (generateImages, one call per iteration) and model host. Nothing here runs the engine itself.
 */
import type { ModelHost } from "../engine/model_host.ts";
import { ModelLoadFailed } from "../engine/model_host.ts";
import { readPngText } from "../engine/pipeline/image.ts";
import { SCHEDULERS, type SchedulerName } from "../engine/schedulers/index.ts";
import { ApiError, type FieldError, validationFailed } from "../errors.ts";
import type { GenerateRequest, GenerateResponse } from "../generate/model.ts";
import { generateImages, type ModelFacts, SEED_SPACE } from "../generate/service.ts";
import type { ModelInfo } from "../models/model.ts";
import { listModels, requestedModel } from "../models/service.ts";
import type {
  A1111Info,
  A1111Options,
  A1111OptionsUpdate,
  A1111Progress,
  A1111Samplers,
  A1111Schedulers,
  A1111SdModel,
  A1111Txt2ImgRequest,
  A1111Txt2ImgResponse,
} from "./model.ts";

/** A1111's metadata of each sdx sampler: its aliases and options, and what its "automatic" schedule is. */
interface A1111Sampler {
  aliases: string[];
  options: Record<string, string | boolean>;
  /** The schedule A1111's "automatic" picks for this sampler (its `options.scheduler`), if not the default one. */
  automatic: "karras" | "exponential" | null;
  /** A1111's timestep samplers (DDIM, PLMS, UniPC) take no schedule type. */
  timesteps: boolean;
}

/** From stable-diffusion-webui 1.10's sd_samplers_kdiffusion / _timesteps / _lcm tables. */
const A1111_SAMPLERS: Record<SchedulerName, A1111Sampler> = {
  "dpmsolver++": {
    aliases: ["k_dpmpp_2m"],
    options: { scheduler: "karras" },
    automatic: "karras",
    timesteps: false,
  },
  "dpmsolver++_sde": {
    aliases: ["k_dpmpp_2m_sde"],
    options: { scheduler: "exponential", brownian_noise: true },
    automatic: "exponential",
    timesteps: false,
  },
  euler_a: {
    aliases: ["k_euler_a", "k_euler_ancestral"],
    options: { uses_ensd: true },
    automatic: null,
    timesteps: false,
  },
  euler: { aliases: ["k_euler"], options: {}, automatic: null, timesteps: false },
  lms: { aliases: ["k_lms"], options: {}, automatic: null, timesteps: false },
  heun: { aliases: ["k_heun"], options: { second_order: true }, automatic: null, timesteps: false },
  dpm2: {
    aliases: ["k_dpm_2"],
    options: { scheduler: "karras", discard_next_to_last_sigma: true, second_order: true },
    automatic: "karras",
    timesteps: false,
  },
  ddim: { aliases: ["ddim"], options: {}, automatic: null, timesteps: true },
  pndm: { aliases: ["plms"], options: {}, automatic: null, timesteps: true },
  unipc: { aliases: ["unipc"], options: {}, automatic: null, timesteps: true },
  lcm: { aliases: ["k_lcm"], options: {}, automatic: null, timesteps: false },
  dpmsolver_singlestep: { aliases: [], options: {}, automatic: null, timesteps: false },
};

/** Samplers of A1111 that sdx does not have, so a 422 can say so rather than "unknown". */
const A1111_ONLY_SAMPLERS = [
  "DPM++ SDE",
  "DPM++ 2M SDE Heun",
  "DPM++ 2S a",
  "DPM++ 3M SDE",
  "DPM2 a",
  "DPM fast",
  "DPM adaptive",
  "Restart",
  "DDIM CFG++",
];

/** A1111's schedule types (sd_schedulers.py); sdx has the first and the third. */
const A1111_SCHEDULES: {
  name: string;
  label: string;
  aliases: string[] | null;
  rho: number;
  inner: boolean;
}[] = [
  { name: "automatic", label: "Automatic", aliases: null, rho: -1, inner: false },
  { name: "uniform", label: "Uniform", aliases: null, rho: -1, inner: true },
  { name: "karras", label: "Karras", aliases: null, rho: 7, inner: false },
  { name: "exponential", label: "Exponential", aliases: null, rho: -1, inner: false },
  { name: "polyexponential", label: "Polyexponential", aliases: null, rho: 1, inner: false },
  { name: "sgm_uniform", label: "SGM Uniform", aliases: ["SGMUniform"], rho: -1, inner: true },
  { name: "kl_optimal", label: "KL Optimal", aliases: null, rho: -1, inner: false },
  { name: "align_your_steps", label: "Align Your Steps", aliases: null, rho: -1, inner: false },
  { name: "simple", label: "Simple", aliases: null, rho: -1, inner: true },
  { name: "normal", label: "Normal", aliases: null, rho: -1, inner: true },
  { name: "ddim", label: "DDIM", aliases: null, rho: -1, inner: true },
  { name: "beta", label: "Beta", aliases: null, rho: -1, inner: true },
];
const SDX_SCHEDULES = ["automatic", "karras"];

/** sdx's request and metadata field names as A1111 spells them, for 422s and warnings. */
const A1111_FIELD_NAMES: [RegExp, string][] = [
  [/\bnum_steps\b/g, "steps"],
  [/\bguidance_scale\b/g, "cfg_scale"],
  [/\bscheduler_type\b/g, "sampler_name"],
  [/\bkarras_sigmas\b/g, "scheduler"],
  [/\bclip_skip\b/g, "override_settings.CLIP_stop_at_last_layers"],
  [/^model$/g, "override_settings.sd_model_checkpoint"],
];

function a1111Text(text: string): string {
  return A1111_FIELD_NAMES.reduce((out, [pattern, name]) => out.replace(pattern, name), text);
}

/** A 422 from sdx's generation path, with A1111's field names. */
function a1111Error(e: unknown): unknown {
  if (!(e instanceof ApiError) || e.status !== 422) return e;
  const fields = e.fields?.map((f) => ({ ...f, field: a1111Text(f.field), message: a1111Text(f.message) }));
  const message = fields ? fields.map((f) => `${f.field}: ${f.message}`).join("; ") : a1111Text(e.message);
  return new ApiError(e.status, e.code, message, fields, e.headers);
}

/** What the A1111 routes keep between requests, and the A1111 jobs in flight (for /progress, /interrupt, /skip). */
export class A1111Session {
  /** CLIP_stop_at_last_layers of requests that do not override it (POST /sdapi/v1/options). */
  clipSkip = 1;
  readonly jobs = new Set<A1111Job>();
}

/** One txt2img call: n_iter sdx generations, one after the other. */
export interface A1111Job {
  readonly startedAt: number;
  readonly timestamp: string;
  readonly nIter: number;
  iteration: number;
  step: number;
  steps: number;
  /** The current iteration holds an engine slot. */
  running: boolean;
  /** Place in sdx's queue while the current iteration waits (1 = next). */
  queuePosition: number;
  interrupted: boolean;
  skipped: boolean;
  /** Stops the current iteration (interrupt and skip). */
  controller: AbortController;
}

// ---------------------------------------------------------------------------------------------------------------
// Models, samplers, schedulers

function filenameOf(m: ModelInfo): string {
  return m.format === "safetensors" ? `${m.name}.safetensors` : m.name;
}

/** A1111's SDModelItem of a model: title "<file> [<hash10>]" once the hash is known, as A1111 titles it. */
function sdModelItem(m: ModelInfo): A1111SdModel {
  const filename = filenameOf(m);
  const short = m.hash?.slice(0, 10) ?? null;
  return {
    title: short ? `${filename} [${short}]` : filename,
    model_name: m.name,
    hash: short,
    sha256: m.hash,
    filename,
    config: null,
  };
}

async function loadableModels(host: ModelHost): Promise<ModelInfo[]> {
  return (await listModels(host)).models.filter((m) => m.loadable);
}

export async function listSdModels(host: ModelHost): Promise<A1111SdModel[]> {
  return (await loadableModels(host)).map(sdModelItem);
}

/** The names a model answers to, as A1111's CheckpointInfo.ids. */
function checkpointIds(m: ModelInfo): string[] {
  const item = sdModelItem(m);
  const ids = [m.name, item.filename, item.title];
  if (item.hash && m.hash)
    ids.push(item.hash, m.hash, `${item.filename} [${item.hash}]`, `${m.name} [${item.hash}]`);
  return ids;
}

/**
 * A checkpoint by A1111's lenient rules (sd_models.get_closet_checkpoint_match): any of its ids exactly, else the
 * shortest title containing the text, else the same without a trailing "[hash]". Only the models of GET /v1/models
 * are candidates, so a path never names anything. A 422 naming `field` when nothing matches.
 */
export async function resolveCheckpoint(host: ModelHost, search: string, field: string): Promise<ModelInfo> {
  const models = await loadableModels(host);
  const exact = models.find((m) => checkpointIds(m).includes(search));
  if (exact) return exact;
  const byTitle = (text: string) =>
    models
      .filter((m) => text.length > 0 && sdModelItem(m).title.includes(text))
      .sort((a, b) => sdModelItem(a).title.length - sdModelItem(b).title.length)[0];
  const found = byTitle(search) ?? byTitle(search.replace(/\s*\[[^\]]+\]\s*$/, ""));
  if (found) return found;
  const titles = models.map((m) => sdModelItem(m).title);
  throw validationFailed([
    {
      field,
      message: `no checkpoint matches "${search}"; ${titles.length ? `checkpoints: ${titles.join(", ")}` : "the models folder has none"}`,
      allowed: titles,
    },
  ]);
}

function a1111SamplerName(name: SchedulerName): string {
  return SCHEDULERS[name].displayName;
}

export function listSamplers(): A1111Samplers {
  return (Object.keys(A1111_SAMPLERS) as SchedulerName[]).map((name) => ({
    name: a1111SamplerName(name),
    aliases: [...A1111_SAMPLERS[name].aliases, name],
    options: { ...A1111_SAMPLERS[name].options },
  }));
}

export function listSchedulers(): A1111Schedulers {
  return A1111_SCHEDULES.filter((s) => SDX_SCHEDULES.includes(s.name)).map((s) => ({
    name: s.name,
    label: s.label,
    aliases: s.aliases,
    default_rho: s.rho,
    need_inner_model: s.inner,
  }));
}

/** The sampler and schedule a request names, as sdx runs them. */
interface SamplerChoice {
  scheduler: SchedulerName;
  karras: boolean;
  /** A1111's sampler name, without the schedule. */
  a1111Name: string;
  warnings: string[];
}

function findSchedule(text: string) {
  const lower = text.toLowerCase();
  return A1111_SCHEDULES.find(
    (s) =>
      s.name.toLowerCase() === lower ||
      s.label.toLowerCase() === lower ||
      (s.aliases ?? []).some((a) => a.toLowerCase() === lower),
  );
}

/**
 * A1111's sampler_name (or sampler_index) and scheduler as an sdx sampler with or without Karras sigmas, the way
 * A1111 ≥ 1.9 splits them (sd_samplers.get_sampler_and_scheduler): a schedule written at the end of the sampler's
 * name wins over `scheduler`, and "automatic" is the sampler's own default schedule. Unknown or unsupported names
 * are 422s naming the field; nothing is substituted silently.
 */
export function resolveSampler(req: {
  sampler_name?: string | undefined;
  sampler_index?: string | undefined;
  scheduler?: string | undefined;
}): SamplerChoice {
  const field = req.sampler_name ? "sampler_name" : req.sampler_index ? "sampler_index" : "sampler_name";
  const requested = req.sampler_name || req.sampler_index || "Euler";
  let name = requested.trim();
  let schedule: (typeof A1111_SCHEDULES)[number] | undefined;
  let scheduleField = "scheduler";
  for (const s of A1111_SCHEDULES) {
    const suffix = [s.label, s.name, ...(s.aliases ?? [])].find((option) =>
      name.toLowerCase().endsWith(` ${option.toLowerCase()}`),
    );
    if (suffix) {
      schedule = s;
      scheduleField = field;
      name = name.slice(0, -(suffix.length + 1));
      break;
    }
  }
  const lower = name.toLowerCase();
  const sampler = (Object.keys(A1111_SAMPLERS) as SchedulerName[]).find(
    (s) =>
      a1111SamplerName(s).toLowerCase() === lower ||
      s === lower ||
      A1111_SAMPLERS[s].aliases.some((a) => a.toLowerCase() === lower),
  );
  const names = (Object.keys(A1111_SAMPLERS) as SchedulerName[]).map(a1111SamplerName);
  if (!sampler) {
    const a1111Only = A1111_ONLY_SAMPLERS.find((s) => s.toLowerCase() === lower);
    throw validationFailed([
      {
        field,
        message: a1111Only
          ? `A1111's ${a1111Only} sampler has no sdx implementation; samplers sdx has: ${names.join(", ")}`
          : `"${requested}" is not a sampler sdx has; samplers: ${names.join(", ")}`,
        allowed: names,
      },
    ]);
  }
  if (!schedule && req.scheduler) {
    schedule = findSchedule(req.scheduler);
    if (!schedule) {
      throw validationFailed([
        {
          field: "scheduler",
          message: `"${req.scheduler}" is not a schedule type; sdx has: ${SDX_SCHEDULES.join(", ")}`,
          allowed: SDX_SCHEDULES,
        },
      ]);
    }
  }
  const meta = A1111_SAMPLERS[sampler];
  const a1111Name = a1111SamplerName(sampler);
  const warnings: string[] = [];
  const explicit = schedule && schedule.name !== "automatic" ? schedule : null;
  if (explicit && !SDX_SCHEDULES.includes(explicit.name)) {
    throw validationFailed([
      {
        field: scheduleField,
        message: `A1111's ${explicit.label} schedule has no sdx implementation; sdx has: ${SDX_SCHEDULES.join(", ")}`,
        allowed: SDX_SCHEDULES,
      },
    ]);
  }
  if (meta.timesteps) {
    if (explicit) {
      warnings.push(
        `scheduler ${explicit.label} has no effect on ${a1111Name}: A1111's timestep samplers (DDIM, PLMS, UniPC) take no schedule type, and sdx runs them the same way.`,
      );
    }
    return { scheduler: sampler, karras: false, a1111Name, warnings };
  }
  const effective = explicit?.name ?? meta.automatic;
  if (effective === "karras") {
    if (!SCHEDULERS[sampler].karras) {
      throw validationFailed([
        {
          field: scheduleField,
          message: `sdx's ${a1111Name} has no Karras schedule (diffusers offers none for it); use "automatic"`,
          allowed: ["automatic"],
        },
      ]);
    }
    return { scheduler: sampler, karras: true, a1111Name, warnings };
  }
  if (effective === "exponential") {
    warnings.push(
      `scheduler automatic: A1111 runs ${a1111Name} with its Exponential schedule, which sdx does not have; sdx used the sampler's own (diffusers) schedule. Send scheduler "karras" for the Karras schedule.`,
    );
  }
  return { scheduler: sampler, karras: false, a1111Name, warnings };
}

// ---------------------------------------------------------------------------------------------------------------
// Options

/** The A1111 settings sdx reports but cannot change: their value, and the values accepted as the same. */
function fixedOptions(
  host: ModelHost,
): Record<string, { value: string | number; same: (string | number)[] }> {
  const fixed = (value: string | number, ...also: (string | number)[]) => ({ value, same: [value, ...also] });
  return {
    sd_checkpoints_limit: fixed(host.maxLoadedModels),
    sd_vae: fixed("Automatic", "None"),
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

/** The default model as GET /v1/models lists it (with its hash), or undefined when there is none. */
async function defaultModelInfo(host: ModelHost): Promise<ModelInfo | undefined> {
  const name = host.defaultModel;
  return name === null ? undefined : (await listModels(host)).models.find((m) => m.name === name);
}

export async function getOptions(host: ModelHost, session: A1111Session): Promise<A1111Options> {
  const name = host.defaultModel;
  const current = await defaultModelInfo(host);
  const fixed = Object.fromEntries(Object.entries(fixedOptions(host)).map(([k, v]) => [k, v.value]));
  return {
    sd_model_checkpoint: current ? sdModelItem(current).title : name,
    sd_checkpoint_hash: current?.hash ?? null,
    CLIP_stop_at_last_layers: session.clipSkip,
    ...(fixed as Omit<
      A1111Options,
      "sd_model_checkpoint" | "sd_checkpoint_hash" | "CLIP_stop_at_last_layers"
    >),
  };
}

/**
 * Checks settings against what sdx can do: the fixed ones must keep their value (a 422 naming `prefix + key`).
 * Returns the keys sdx does not have (not applied).
 */
async function checkSettings(
  host: ModelHost,
  settings: Record<string, unknown>,
  prefix: string,
): Promise<string[]> {
  const fixed = fixedOptions(host);
  const fields: FieldError[] = [];
  const unknown: string[] = [];
  for (const [key, value] of Object.entries(settings)) {
    if (key === "sd_model_checkpoint" || key === "CLIP_stop_at_last_layers") continue;
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
  return ignored;
}

/** Makes the model the server's default, loading it; 503 when it cannot load. */
async function makeDefault(host: ModelHost, name: string): Promise<void> {
  try {
    await host.setDefault(await host.find(name));
  } catch (e) {
    if (e instanceof ModelLoadFailed) throw new ApiError(503, "model_unavailable", e.message);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// txt2img

/** A1111's defaults of the fields txt2img's `parameters` echoes (StableDiffusionProcessingTxt2Img and the API's). */
const A1111_DEFAULTS: Record<string, unknown> = {
  prompt: "",
  negative_prompt: "",
  styles: null,
  seed: -1,
  subseed: -1,
  subseed_strength: 0,
  seed_resize_from_h: -1,
  seed_resize_from_w: -1,
  sampler_name: null,
  scheduler: null,
  batch_size: 1,
  n_iter: 1,
  steps: 50,
  cfg_scale: 7,
  width: 512,
  height: 512,
  restore_faces: null,
  tiling: null,
  do_not_save_samples: false,
  do_not_save_grid: false,
  eta: null,
  denoising_strength: 0.75,
  s_min_uncond: null,
  s_churn: null,
  s_tmax: null,
  s_tmin: null,
  s_noise: null,
  override_settings: null,
  override_settings_restore_afterwards: true,
  refiner_checkpoint: null,
  refiner_switch_at: null,
  disable_extra_networks: false,
  firstpass_image: null,
  comments: null,
  enable_hr: false,
  firstphase_width: 0,
  firstphase_height: 0,
  hr_scale: 2,
  hr_upscaler: null,
  hr_second_pass_steps: 0,
  hr_resize_x: 0,
  hr_resize_y: 0,
  hr_checkpoint_name: null,
  hr_sampler_name: null,
  hr_scheduler: null,
  hr_prompt: "",
  hr_negative_prompt: "",
  force_task_id: null,
  sampler_index: "Euler",
  script_name: null,
  script_args: [],
  send_images: true,
  save_images: false,
  alwayson_scripts: {},
  infotext: null,
};

/** Removes null fields (A1111's "use the default"), at the top level and in override_settings. */
export function withoutNulls(body: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(body)) if (value === null) delete body[key];
  const overrides = body.override_settings;
  if (overrides && typeof overrides === "object" && !Array.isArray(overrides)) {
    withoutNulls(overrides as Record<string, unknown>);
  }
}

/** Fields that change A1111's image and that sdx cannot honour: a 422 each, with why. */
function unsupportedFields(req: A1111Txt2ImgRequest): FieldError[] {
  const fields: FieldError[] = [];
  const no = (field: string, message: string, allowed?: FieldError["allowed"]) =>
    fields.push({ field, message, ...(allowed ? { allowed } : {}) });
  if (req.enable_hr === true)
    no("enable_hr", "sdx has no hires fix; generate at the final width and height instead", [false]);
  if (req.tiling === true) no("tiling", "sdx cannot make seamless tiling images", [false]);
  if ((req.subseed_strength ?? 0) > 0)
    no("subseed_strength", "sdx has no variation seeds; only 0 is possible", [0]);
  for (const key of ["seed_resize_from_w", "seed_resize_from_h"] as const) {
    if ((req[key] ?? -1) > 0) no(key, "sdx cannot resize seeds; send 0 or -1", [0, -1]);
  }
  if (req.refiner_checkpoint && req.refiner_checkpoint !== "None")
    no("refiner_checkpoint", "sdx has no SDXL refiner pass", ["", "None"]);
  if (req.firstpass_image) no("firstpass_image", "sdx has no hires fix first pass");
  if (req.script_name) no("script_name", `sdx has no A1111 scripts; "${req.script_name}" cannot run`, [""]);
  for (const name of Object.keys(req.alwayson_scripts ?? {})) {
    no(`alwayson_scripts.${name}`, "sdx has no A1111 extension scripts; send alwayson_scripts {}");
  }
  if (req.infotext) no("infotext", "sdx does not read parameters from infotext; send them as fields");
  return fields;
}

/** Accepted fields that sdx does not apply, as warnings. */
function ignoredFieldWarnings(
  req: A1111Txt2ImgRequest,
  sampler: SchedulerName,
  raw: Record<string, unknown>,
) {
  const warnings: string[] = [];
  if (req.restore_faces === true)
    warnings.push("restore_faces was not applied: sdx has no face restoration; the image is as generated.");
  if (req.styles && req.styles.length > 0)
    warnings.push(
      `styles ${req.styles.map((s) => JSON.stringify(s)).join(", ")} were not applied: sdx has no prompt styles.`,
    );
  if (req.save_images === true)
    warnings.push("save_images was not applied: sdx never saves images on the server; they are in `images`.");
  if ((req.s_churn ?? 0) > 0)
    warnings.push(`s_churn ${req.s_churn} was not applied: sdx's samplers run without churn.`);
  if (req.s_noise !== undefined && req.s_noise !== 1)
    warnings.push(`s_noise ${req.s_noise} was not applied: sdx's samplers run at s_noise 1.`);
  if ((req.s_min_uncond ?? 0) > 0)
    warnings.push(
      `s_min_uncond ${req.s_min_uncond} was not applied: sdx has no negative guidance minimum sigma.`,
    );
  if (req.eta !== undefined && req.eta !== 1 && SCHEDULERS[sampler].stochastic && sampler !== "lcm")
    warnings.push(
      `eta ${req.eta} was not applied: sdx's ${a1111SamplerName(sampler)} always runs at η 1 (A1111's default eta_ancestral).`,
    );
  const known = new Set(Object.keys(A1111_DEFAULTS));
  const unknown = Object.keys(raw).filter((k) => !known.has(k));
  if (unknown.length > 0)
    warnings.push(
      `${unknown.join(", ")} ${unknown.length === 1 ? "is not an A1111 txt2img field and was" : "are not A1111 txt2img fields and were"} ignored.`,
    );
  return warnings;
}

function randomSeed(): number {
  return (crypto.getRandomValues(new Uint32Array(1))[0] as number) % (SEED_SPACE - 2);
}

/** A1111's job_timestamp: the local time as YYYYMMDDhhmmss. */
function jobTimestamp(date = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}`;
}

function dedupe(lines: string[]): string[] {
  return [...new Set(lines)];
}

/** The request mapped onto sdx: the generation request without seed and batch, and what A1111 reports. */
interface MappedRequest {
  base: GenerateRequest;
  sampler: SamplerChoice;
  seed: number;
  subseed: number;
  batchSize: number;
  nIter: number;
  clipSkip: number;
  /** Overrides kept after the request (override_settings_restore_afterwards false). */
  keep: { model: string | null; clipSkip: number | null };
  warnings: string[];
}

async function mapRequest(
  host: ModelHost,
  session: A1111Session,
  req: A1111Txt2ImgRequest,
  raw: Record<string, unknown>,
  sizeRange: ModelFacts["sizeRange"],
): Promise<MappedRequest> {
  const fields = unsupportedFields(req);
  const sampler = resolveSampler(req);
  const overrides = req.override_settings ?? {};
  const unknownSettings = await checkSettings(host, overrides, "override_settings.");
  const width = req.width ?? 512;
  const height = req.height ?? 512;
  for (const [key, value] of [
    ["width", width],
    ["height", height],
  ] as const) {
    if (sizeRange && req[key] === undefined && (value < sizeRange.min || value > sizeRange.max)) {
      fields.push({
        field: key,
        message: `defaults to A1111's ${value}, outside this server's limits ${sizeRange.min}–${sizeRange.max}; send ${key}`,
      });
    }
  }
  if (sampler.scheduler === "ddim" && req.eta !== undefined && (req.eta < 0 || req.eta > 1)) {
    fields.push({ field: "eta", message: `DDIM's η must be from 0 to 1; got ${req.eta}` });
  }
  if (fields.length > 0) throw validationFailed(fields);
  const checkpoint = overrides.sd_model_checkpoint;
  const model = checkpoint
    ? await resolveCheckpoint(host, checkpoint, "override_settings.sd_model_checkpoint")
    : null;
  let modelName = model?.name;
  if (!modelName) {
    try {
      modelName = (await requestedModel(host, undefined)).name;
    } catch (e) {
      if (e instanceof ApiError && e.code === "no_model") {
        throw new ApiError(
          503,
          "no_model",
          `${e.message} With the A1111 API: send override_settings.sd_model_checkpoint, or choose one with POST /sdapi/v1/options {"sd_model_checkpoint": …} (GET /sdapi/v1/sd-models lists them).`,
        );
      }
      throw e;
    }
  }
  const clipSkip = overrides.CLIP_stop_at_last_layers ?? session.clipSkip;
  const restore = req.override_settings_restore_afterwards !== false;
  const warnings = [
    ...sampler.warnings,
    ...ignoredFieldWarnings(req, sampler.scheduler, raw),
    ...(unknownSettings.length > 0
      ? [
          `override_settings ${unknownSettings.join(", ")} ${unknownSettings.length === 1 ? "was" : "were"} not applied: sdx has no such setting (GET /sdapi/v1/options lists those it has).`,
        ]
      : []),
  ];
  const base: GenerateRequest = {
    prompt: req.prompt ?? "",
    model: modelName,
    width,
    height,
    num_steps: req.steps ?? 50,
    guidance_scale: req.cfg_scale ?? 7,
    scheduler_type: sampler.scheduler,
    karras_sigmas: sampler.karras,
    clip_skip: clipSkip,
    prompt_syntax: "a1111",
    ...(req.negative_prompt ? { negative_prompt: req.negative_prompt } : {}),
    ...(sampler.scheduler === "ddim" ? { eta: req.eta ?? 0 } : {}),
  };
  return {
    base,
    sampler,
    seed: req.seed === undefined || req.seed === -1 ? randomSeed() : req.seed,
    subseed: req.subseed === undefined || req.subseed === -1 ? randomSeed() : req.subseed,
    batchSize: req.batch_size ?? 1,
    nIter: req.n_iter ?? 1,
    clipSkip,
    keep: {
      model: !restore && model ? model.name : null,
      clipSkip: !restore && overrides.CLIP_stop_at_last_layers !== undefined ? clipSkip : null,
    },
    warnings,
  };
}

/**
 * POST /sdapi/v1/txt2img: n_iter sdx generations of batch_size images; iteration j starts at seed + j × batch_size,
 * so image i of iteration j has A1111's seed + j × batch_size + i. An interrupt (POST /sdapi/v1/interrupt) stops
 * the running iteration and the rest: the answer holds the images of the iterations that finished (possibly none)
 * and says so in info.sdx_warnings. A skip (POST /sdapi/v1/skip) drops the running iteration only.
 */
export async function txt2img(
  host: ModelHost,
  session: A1111Session,
  req: A1111Txt2ImgRequest,
  raw: Record<string, unknown>,
  signal: AbortSignal | undefined,
  sizeRange: ModelFacts["sizeRange"],
): Promise<A1111Txt2ImgResponse> {
  const mapped = await mapRequest(host, session, req, raw, sizeRange);
  const { base, batchSize, nIter, seed } = mapped;
  const total = batchSize * nIter;
  const allSeeds = Array.from({ length: total }, (_, x) => (seed + x) % SEED_SPACE);
  const job: A1111Job = {
    startedAt: performance.now(),
    timestamp: jobTimestamp(),
    nIter,
    iteration: 0,
    step: 0,
    steps: 0,
    running: false,
    queuePosition: 0,
    interrupted: false,
    skipped: false,
    controller: new AbortController(),
  };
  session.jobs.add(job);
  const images: string[] = [];
  const warnings = [...mapped.warnings];
  let first: GenerateResponse | null = null;
  try {
    for (let j = 0; j < nIter; j++) {
      if (job.interrupted) {
        warnings.push(`interrupted: iterations ${j + 1} to ${nIter} did not run.`);
        break;
      }
      Object.assign(job, { iteration: j, step: 0, steps: 0, running: false, skipped: false });
      job.controller = new AbortController();
      const stop = signal ? AbortSignal.any([signal, job.controller.signal]) : job.controller.signal;
      let res: GenerateResponse;
      try {
        res = await generateImages(
          host,
          { ...base, seed: (seed + j * batchSize) % SEED_SPACE, batch_size: batchSize },
          stop,
          {
            queued: (position) => {
              job.queuePosition = position;
            },
            started: () => {
              job.running = true;
            },
            step: (e) => {
              job.step = e.step;
              job.steps = e.total;
            },
          },
          sizeRange,
        );
      } catch (e) {
        const cancelled = e instanceof ApiError && e.code === "cancelled" && !signal?.aborted;
        if (!cancelled) throw a1111Error(e);
        if (job.skipped && !job.interrupted) {
          warnings.push(`skipped: iteration ${j + 1} of ${nIter} was stopped, its images are not returned.`);
          continue;
        }
        job.interrupted = true;
        warnings.push(
          `interrupted: iteration ${j + 1} of ${nIter} was stopped before it finished, so its images are not returned (sdx does not decode unfinished latents).`,
        );
        break;
      } finally {
        job.running = false;
      }
      first ??= res;
      images.push(...res.images.map((img) => img.png));
      warnings.push(...res.warnings.map(a1111Text));
    }
  } finally {
    session.jobs.delete(job);
  }
  if (mapped.keep.model) await makeDefault(host, mapped.keep.model);
  if (mapped.keep.clipSkip !== null) session.clipSkip = mapped.keep.clipSkip;
  const infotexts = images.map((png) => readPngText(Buffer.from(png, "base64")).parameters ?? "");
  const prompt = base.prompt;
  const negative = req.negative_prompt ?? "";
  const info: A1111Info = {
    prompt,
    all_prompts: allSeeds.map(() => prompt),
    negative_prompt: negative,
    all_negative_prompts: allSeeds.map(() => negative),
    seed,
    all_seeds: allSeeds,
    subseed: mapped.subseed,
    all_subseeds: allSeeds.map((_, x) => mapped.subseed + x),
    subseed_strength: req.subseed_strength ?? 0,
    width: base.width as number,
    height: base.height as number,
    sampler_name: mapped.sampler.a1111Name,
    cfg_scale: base.guidance_scale as number,
    steps: base.num_steps as number,
    batch_size: batchSize,
    restore_faces: req.restore_faces ?? false,
    face_restoration_model: null,
    sd_model_name: first?.metadata.model.name ?? (base.model as string),
    sd_model_hash: first?.metadata.model.hash.slice(0, 10) ?? null,
    sd_vae_name: null,
    sd_vae_hash: null,
    seed_resize_from_w: req.seed_resize_from_w ?? -1,
    seed_resize_from_h: req.seed_resize_from_h ?? -1,
    denoising_strength: req.denoising_strength ?? null,
    extra_generation_params: { "Schedule type": mapped.sampler.karras ? "Karras" : "Automatic" },
    index_of_first_image: 0,
    infotexts,
    styles: req.styles ?? [],
    job_timestamp: job.timestamp,
    clip_skip: mapped.clipSkip,
    is_using_inpainting_conditioning: false,
    sdx_warnings: dedupe(warnings),
  };
  return {
    images: req.send_images === false ? [] : images,
    parameters: { ...A1111_DEFAULTS, ...raw },
    info: JSON.stringify(info),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Progress, interrupt, skip

const IDLE_STATE: A1111Progress["state"] = {
  skipped: false,
  interrupted: false,
  stopping_generation: false,
  job: "",
  job_count: 0,
  job_timestamp: "0",
  job_no: 0,
  sampling_step: 0,
  sampling_steps: 0,
};

/** A1111's progress formula: 0.01 + finished iterations + the running one's share, and the rest's seconds. */
function estimate(jobNo: number, jobCount: number, step: number, steps: number, elapsedS: number) {
  let progress = 0.01 + jobNo / jobCount;
  if (steps > 0) progress += (1 / jobCount) * (step / steps);
  return { progress: Math.min(progress, 1), eta_relative: elapsedS / progress - elapsedS };
}

/**
 * GET /sdapi/v1/progress: the oldest running A1111 txt2img (else the oldest waiting one), else a running /v1
 * generation, else idle. sdx makes no previews, so current_image is null.
 */
export function progressOf(host: ModelHost, session: A1111Session, now = performance.now()): A1111Progress {
  const jobs = [...session.jobs];
  const job = jobs.find((j) => j.running) ?? jobs[0];
  if (job) {
    const elapsedS = (now - job.startedAt) / 1000;
    return {
      ...estimate(job.iteration, job.nIter, job.step, job.steps, elapsedS),
      state: {
        skipped: job.skipped,
        interrupted: job.interrupted,
        stopping_generation: false,
        job: job.nIter > 1 ? `Batch ${job.iteration + 1} out of ${job.nIter}` : "scripts_txt2img",
        job_count: job.nIter,
        job_timestamp: job.timestamp,
        job_no: job.iteration,
        sampling_step: job.step,
        sampling_steps: job.steps,
      },
      current_image: null,
      textinfo: job.running
        ? null
        : job.queuePosition > 0
          ? `Waiting in sdx's queue (position ${job.queuePosition})`
          : "Starting",
    };
  }
  const running = host.progress(now)[0];
  if (running) {
    return {
      ...estimate(0, 1, running.step, running.total, running.elapsedMs / 1000),
      state: {
        ...IDLE_STATE,
        job: "sdx generate",
        job_count: 1,
        sampling_step: running.step,
        sampling_steps: running.total,
      },
      current_image: null,
      textinfo: `sdx /v1/generate on ${running.model}`,
    };
  }
  const busy = host.admission.running + host.admission.queued;
  if (busy > 0) {
    return {
      progress: 0.01,
      eta_relative: 0,
      state: { ...IDLE_STATE, job: "sdx generate", job_count: busy },
      current_image: null,
      textinfo: `${busy} sdx generation${busy === 1 ? "" : "s"} starting or queued`,
    };
  }
  return { progress: 0, eta_relative: 0, state: { ...IDLE_STATE }, current_image: null, textinfo: null };
}

/**
 * POST /sdapi/v1/interrupt: like A1111's, stops whatever runs: every running generation (/v1 ones too) stops
 * before its next step, and A1111 txt2img calls run no further iterations.
 */
export function interrupt(host: ModelHost, session: A1111Session): void {
  for (const job of session.jobs) {
    job.interrupted = true;
    job.controller.abort();
  }
  host.interrupt();
}

/** POST /sdapi/v1/skip: A1111 txt2img calls drop their running iteration and go on with the next. */
export function skip(session: A1111Session): void {
  for (const job of session.jobs) {
    job.skipped = true;
    job.controller.abort();
  }
}
