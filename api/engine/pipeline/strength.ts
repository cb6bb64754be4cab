/**
 * diffusers' `get_timesteps` for image-to-image and inpainting: which part of the sampler's schedule a denoising
 * strength keeps.
 */
import type { Scheduler } from "../schedulers/scheduler.ts";
import { GenerationInvalid } from "./errors.ts";
import type { PipelineComponents } from "./types.ts";

/** The part of the schedule that `strength` keeps, and where in the full schedule it begins. */
export interface StrengthSchedule {
  timesteps: number[];
  beginIndex: number;
}

/**
 * diffusers' `get_timesteps`: init = min(⌊n·strength⌋, n) (a float64 product, truncated: 50 × 0.58 → 28),
 * t_start = n − init, and the sampler runs timesteps[t_start·order:] (order 2 for Heun and DPM2, whose schedule
 * lists each step's two evaluations; PNDM's repeated second timestep leaves it one entry more).
 */
export function strengthSchedule(scheduler: Scheduler, numSteps: number, strength: number): StrengthSchedule {
  const init = Math.min(Math.trunc(numSteps * strength), numSteps);
  const tStart = Math.max(numSteps - init, 0);
  const beginIndex = tStart * scheduler.order;
  const timesteps = scheduler.timesteps.slice(beginIndex);
  if (timesteps.length === 0) {
    throw new GenerationInvalid(
      `strength ${strength} × ${numSteps} steps leaves no step to run; raise strength or num_steps`,
    );
  }
  return { timesteps, beginIndex };
}

/** Cuts every image's scheduler to the strength's schedule (diffusers' `set_begin_index`, where the class has it). */
export function startSchedulers(
  components: PipelineComponents,
  schedulers: Scheduler[],
  numSteps: number,
  strength: number,
): StrengthSchedule {
  const schedule = strengthSchedule(schedulers[0] as Scheduler, numSteps, strength);
  // The SDXL pipelines do not set it: their first step finds its index from the timestep's value.
  if (!components.xl) for (const s of schedulers) s.setBeginIndex?.(schedule.beginIndex);
  return schedule;
}
