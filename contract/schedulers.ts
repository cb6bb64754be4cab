/** GET /v1/schedulers: the samplers, their AUTOMATIC1111 aliases and what each accepts. */
import { Type } from "@sinclair/typebox";
import { SCHEDULER_CHOICES, SCHEDULER_NAMES } from "./samplers.ts";
import { Enum } from "./schema.ts";

export const SchedulerInfoSchema = Type.Object({
  name: Enum(SCHEDULER_NAMES, { description: "The value for scheduler_type." }),
  display_name: Type.String({ description: "AUTOMATIC1111's name for this sampler." }),
  diffusers: Type.String({ description: "The diffusers scheduler it reproduces." }),
  karras: Type.Boolean({ description: "Whether karras_sigmas may be set." }),
  timestep_spacing: Type.Boolean({ description: "Whether timestep_spacing changes it." }),
  eta: Type.Boolean({ description: "Whether eta changes it." }),
  stochastic: Type.Boolean({ description: "Whether each step draws noise from the seed." }),
  aliases: Type.Array(
    Type.Object({
      name: Enum(SCHEDULER_CHOICES),
      karras: Type.Boolean({ description: "Whether the alias implies karras_sigmas." }),
    }),
    { description: "AUTOMATIC1111 names accepted as scheduler_type for this sampler." },
  ),
});

export const SchedulerListSchema = Type.Object({ schedulers: Type.Array(SchedulerInfoSchema) });

export type SchedulerList = typeof SchedulerListSchema.static;
