import { t } from "elysia";
import { SCHEDULER_CHOICES, SCHEDULER_NAMES } from "../engine/schedulers/index.ts";
import { Enum } from "../schema.ts";

export const SchedulerInfoSchema = t.Object({
  name: Enum(SCHEDULER_NAMES, { description: "The value for scheduler_type." }),
  display_name: t.String({ description: "AUTOMATIC1111's name for this sampler." }),
  diffusers: t.String({ description: "The diffusers scheduler it reproduces." }),
  karras: t.Boolean({ description: "Whether karras_sigmas may be set." }),
  timestep_spacing: t.Boolean({ description: "Whether timestep_spacing changes it." }),
  eta: t.Boolean({ description: "Whether eta changes it." }),
  stochastic: t.Boolean({ description: "Whether each step draws noise from the seed." }),
  aliases: t.Array(
    t.Object({
      name: Enum(SCHEDULER_CHOICES),
      karras: t.Boolean({ description: "Whether the alias implies karras_sigmas." }),
    }),
    { description: "AUTOMATIC1111 names accepted as scheduler_type for this sampler." },
  ),
});

export const SchedulerListSchema = t.Object({ schedulers: t.Array(SchedulerInfoSchema) });

export type SchedulerList = typeof SchedulerListSchema.static;
