/**
 * The one table of samplers: each name of the contract's SCHEDULER_NAMES → its scheduler implementation and
 * what it accepts (GET /v1/schedulers, the A1111 sampler list and the request checks read these).
 */

import type { SchedulerName } from "../../../contract/index.ts";
import { SchedulerConfigError, withOverrides } from "./config.ts";
import { DDIMScheduler } from "./ddim.ts";
import { DPMSolverMultistepScheduler } from "./dpmsolver_multistep.ts";
import { DPMSolverSinglestepScheduler } from "./dpmsolver_singlestep.ts";
import { EulerDiscreteScheduler } from "./euler.ts";
import { EulerAncestralDiscreteScheduler } from "./euler_ancestral.ts";
import { HeunDiscreteScheduler } from "./heun.ts";
import { KDPM2DiscreteScheduler } from "./kdpm2.ts";
import { LCMScheduler } from "./lcm.ts";
import { LMSDiscreteScheduler } from "./lms.ts";
import { PNDMScheduler } from "./pndm.ts";
import type { Scheduler, SchedulerConfig, SchedulerOptions } from "./scheduler.ts";
import { UniPCMultistepScheduler } from "./unipc.ts";

export interface SchedulerEntry {
  /** AUTOMATIC1111's sampler name. */
  displayName: string;
  /** The diffusers class this reproduces (and its from_config overrides). */
  diffusers: string;
  /** Whether Karras sigmas may be requested (diffusers' use_karras_sigmas). */
  karras: boolean;
  /** Whether the class reads timestep_spacing. */
  timestepSpacing: boolean;
  /** Whether step() takes eta. */
  eta: boolean;
  /** Whether each step draws fresh noise from the seed's generator. */
  stochastic: boolean;
  /** Builds the sampler from the model's `scheduler_config.json`, like diffusers' `Class.from_config(config, **overrides)`. */
  create(config: SchedulerConfig, options: SchedulerOptions): Scheduler;
}

export const SCHEDULERS: Record<SchedulerName, SchedulerEntry> = {
  ddim: {
    displayName: "DDIM",
    diffusers: "DDIMScheduler",
    karras: false,
    timestepSpacing: true,
    eta: true,
    stochastic: false,
    create: (config, options) => new DDIMScheduler(config, options),
  },
  pndm: {
    displayName: "PLMS",
    diffusers: "PNDMScheduler",
    karras: false,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) => new PNDMScheduler(config, options),
  },
  lms: {
    displayName: "LMS",
    diffusers: "LMSDiscreteScheduler",
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) => new LMSDiscreteScheduler(config, options),
  },
  euler: {
    displayName: "Euler",
    diffusers: "EulerDiscreteScheduler",
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) => new EulerDiscreteScheduler(config, options),
  },
  euler_a: {
    displayName: "Euler a",
    diffusers: "EulerAncestralDiscreteScheduler",
    karras: false,
    timestepSpacing: true,
    eta: false,
    stochastic: true,
    create: (config, options) => new EulerAncestralDiscreteScheduler(config, options),
  },
  heun: {
    displayName: "Heun",
    diffusers: "HeunDiscreteScheduler",
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) => new HeunDiscreteScheduler(config, options),
  },
  dpm2: {
    displayName: "DPM2",
    diffusers: "KDPM2DiscreteScheduler",
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) => new KDPM2DiscreteScheduler(config, options),
  },
  "dpmsolver++": {
    displayName: "DPM++ 2M",
    diffusers: 'DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2)',
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) =>
      new DPMSolverMultistepScheduler(
        withOverrides(config, { algorithm_type: "dpmsolver++", solver_order: 2 }),
        options,
      ),
  },
  "dpmsolver++_sde": {
    displayName: "DPM++ 2M SDE",
    diffusers: 'DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=2)',
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: true,
    create: (config, options) =>
      new DPMSolverMultistepScheduler(
        withOverrides(config, { algorithm_type: "sde-dpmsolver++", solver_order: 2 }),
        options,
      ),
  },
  dpmsolver_singlestep: {
    displayName: "DPM-Solver singlestep",
    diffusers: 'DPMSolverSinglestepScheduler(algorithm_type="dpmsolver++", solver_order=2)',
    karras: true,
    timestepSpacing: false,
    eta: false,
    stochastic: false,
    create: (config, options) =>
      new DPMSolverSinglestepScheduler(
        withOverrides(config, { algorithm_type: "dpmsolver++", solver_order: 2 }),
        options,
      ),
  },
  unipc: {
    displayName: "UniPC",
    diffusers: "UniPCMultistepScheduler",
    karras: true,
    timestepSpacing: true,
    eta: false,
    stochastic: false,
    create: (config, options) => new UniPCMultistepScheduler(config, options),
  },
  lcm: {
    displayName: "LCM",
    diffusers: "LCMScheduler",
    karras: false,
    timestepSpacing: false,
    eta: false,
    stochastic: true,
    create: (config, options) => new LCMScheduler(config, options),
  },
};

export function createScheduler(
  name: SchedulerName,
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): Scheduler {
  const entry = SCHEDULERS[name];
  if (options.karrasSigmas && !entry.karras) {
    throw new SchedulerConfigError(`${entry.displayName} does not offer Karras sigmas`);
  }
  return entry.create(config, options);
}
