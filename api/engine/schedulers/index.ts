/**
 * The one table of samplers: request names → scheduler implementations. Names and display names follow
 * AUTOMATIC1111 so that users can carry their settings over; `karras` says whether the Karras sigma schedule
 * (Karras et al. 2022) may be requested for that sampler.
 */
import { DPMSolverMultistepScheduler } from "./dpmsolver_multistep.ts";
import { withOverrides } from "./schedule_utils.ts";
import type { Scheduler, SchedulerConfig, SchedulerOptions } from "./scheduler.ts";

export const SCHEDULER_NAMES = ["dpmsolver++"] as const;
export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

export interface SchedulerEntry {
  /** AUTOMATIC1111's sampler name. */
  displayName: string;
  /** Whether `SchedulerOptions.karrasSigmas` is offered for this sampler. */
  karras: boolean;
  /** Builds the sampler from the model's `scheduler_config.json`, like diffusers' `Class.from_config(config, **overrides)`. */
  create(config: SchedulerConfig, options: SchedulerOptions): Scheduler;
}

export const SCHEDULERS: Record<SchedulerName, SchedulerEntry> = {
  "dpmsolver++": {
    displayName: "DPM++ 2M",
    karras: true,
    create: (config, options) =>
      new DPMSolverMultistepScheduler(
        withOverrides(config, { algorithm_type: "dpmsolver++", solver_order: 2 }),
        options,
      ),
  },
};

export function isSchedulerName(name: string): name is SchedulerName {
  return (SCHEDULER_NAMES as readonly string[]).includes(name);
}

export function createScheduler(
  name: SchedulerName,
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): Scheduler {
  const entry = SCHEDULERS[name];
  if (options.karrasSigmas && !entry.karras)
    throw new RangeError(`${entry.displayName} does not offer Karras sigmas`);
  return entry.create(config, options);
}
