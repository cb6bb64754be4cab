import {
  SCHEDULER_ALIASES,
  SCHEDULER_NAMES,
  type SchedulerAlias,
  type SchedulerList,
} from "../../contract/index.ts";
import { SCHEDULERS } from "../engine/schedulers/index.ts";

export function listSchedulers(): SchedulerList {
  const aliases = Object.entries(SCHEDULER_ALIASES) as [
    SchedulerAlias,
    { scheduler: string; karras?: true },
  ][];
  return {
    schedulers: SCHEDULER_NAMES.map((name) => {
      const s = SCHEDULERS[name];
      return {
        name,
        display_name: s.displayName,
        diffusers: s.diffusers,
        karras: s.karras,
        timestep_spacing: s.timestepSpacing,
        eta: s.eta,
        stochastic: s.stochastic,
        aliases: aliases
          .filter(([, a]) => a.scheduler === name)
          .map(([alias, a]) => ({ name: alias, karras: a.karras === true })),
      };
    }),
  };
}
