/**
 * sdx's samplers and schedules under AUTOMATIC1111's names: the sampler and schedule-type lists A1111 clients
 * read, and a request's sampler_name / scheduler matched to an sdx sampler with or without Karras sigmas.
 */
import {
  A1111_TXT2IMG_DEFAULTS,
  type A1111Samplers,
  type A1111Schedulers,
  type SchedulerName,
  validationFailed,
} from "../../contract/index.ts";
import { SCHEDULERS } from "../engine/schedulers/index.ts";

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

export function a1111SamplerName(name: SchedulerName): string {
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
export interface SamplerChoice {
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
  const requested = req.sampler_name || req.sampler_index || A1111_TXT2IMG_DEFAULTS.sampler_index;
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
