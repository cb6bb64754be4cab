import { t } from "elysia";
import { MODEL_KINDS } from "../engine/model_kinds.ts";
import { EXECUTION_PROVIDERS } from "../engine/onnx/runtime.ts";
import { Enum } from "../schema.ts";

export const HEALTH_STATUSES = ["ok", "loading", "no_model", "error", "draining", "stuck"] as const;

export const HealthSchema = t.Object({
  status: Enum(HEALTH_STATUSES),
  message: t.String({ description: "A sentence on the state and, when no model is ready, what to do." }),
  model: t.Union([t.Object({ name: t.String(), kind: t.Union([Enum(MODEL_KINDS), t.Null()]) }), t.Null()]),
  execution_provider: Enum(EXECUTION_PROVIDERS),
  version: t.String({ description: "sdx version." }),
  onnxruntime_version: t.String(),
  queue: t.Object(
    {
      running: t.Integer({ description: "Generations holding a slot." }),
      queued: t.Integer({ description: "Generations waiting for one." }),
      concurrency: t.Integer(),
      max_queue: t.Integer(),
    },
    { description: "Admission: what runs and waits now." },
  ),
});

export type Health = typeof HealthSchema.static;
