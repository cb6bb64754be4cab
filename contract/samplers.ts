/**
 * The samplers a request may name: sdx's names (one per sampler implementation in the engine's table) and
 * AUTOMATIC1111's display names accepted as aliases, some of which imply the Karras schedule.
 */

export const SCHEDULER_NAMES = [
  "ddim",
  "pndm",
  "lms",
  "euler",
  "euler_a",
  "heun",
  "dpm2",
  "dpmsolver++",
  "dpmsolver++_sde",
  "dpmsolver_singlestep",
  "unipc",
  "lcm",
] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/** AUTOMATIC1111's names, some of which imply the Karras schedule ("DPM++ 2M Karras"). */
export const SCHEDULER_ALIASES = {
  DDIM: { scheduler: "ddim" },
  PLMS: { scheduler: "pndm" },
  LCM: { scheduler: "lcm" },
  LMS: { scheduler: "lms" },
  "LMS Karras": { scheduler: "lms", karras: true },
  Euler: { scheduler: "euler" },
  "Euler a": { scheduler: "euler_a" },
  Heun: { scheduler: "heun" },
  DPM2: { scheduler: "dpm2" },
  "DPM2 Karras": { scheduler: "dpm2", karras: true },
  "DPM++ 2M": { scheduler: "dpmsolver++" },
  "DPM++ 2M Karras": { scheduler: "dpmsolver++", karras: true },
  "DPM++ 2M SDE": { scheduler: "dpmsolver++_sde" },
  "DPM++ 2M SDE Karras": { scheduler: "dpmsolver++_sde", karras: true },
  UniPC: { scheduler: "unipc" },
} as const satisfies Record<string, { scheduler: SchedulerName; karras?: true }>;
export type SchedulerAlias = keyof typeof SCHEDULER_ALIASES;

/** Every accepted `scheduler_type`: the names, then the aliases. */
export const SCHEDULER_CHOICES = [
  ...SCHEDULER_NAMES,
  ...(Object.keys(SCHEDULER_ALIASES) as SchedulerAlias[]),
] as [SchedulerName | SchedulerAlias, ...(SchedulerName | SchedulerAlias)[]];
export type SchedulerChoice = SchedulerName | SchedulerAlias;

/** A name or alias as the scheduler it names and whether the alias implies Karras sigmas. */
export function resolveSchedulerChoice(choice: SchedulerChoice): {
  scheduler: SchedulerName;
  karras: boolean | null;
} {
  if (isSchedulerName(choice)) return { scheduler: choice, karras: null };
  const alias: { scheduler: SchedulerName; karras?: true } = SCHEDULER_ALIASES[choice];
  return { scheduler: alias.scheduler, karras: alias.karras ?? null };
}

export function isSchedulerName(name: string): name is SchedulerName {
  return (SCHEDULER_NAMES as readonly string[]).includes(name);
}
