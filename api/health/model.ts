import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { MODEL_KINDS } from "../engine/model_kinds.ts";
import { EXECUTION_PROVIDERS } from "../engine/onnx/runtime.ts";
import { Enum } from "../schema.ts";

export const HEALTH_STATUSES = ["ok", "loading", "no_model", "error", "draining", "stuck"] as const;

export const HealthSchema = t.Object({
  status: Enum(HEALTH_STATUSES),
  message: t.String({ description: "A sentence on the state and, when no model is ready, what to do." }),
  model: t.Union([t.Object({ name: t.String(), kind: t.Union([Enum(MODEL_KINDS), t.Null()]) }), t.Null()], {
    description: "The default model: what requests without `model` get.",
  }),
  execution_provider: Enum(EXECUTION_PROVIDERS),
  version: t.String({ description: "sdx version." }),
  onnxruntime_version: t.String(),
  gpu: t.Union(
    [
      t.Object({
        index: Type.Integer({ description: "The GPU's index as nvidia-smi numbers it." }),
        name: t.String({ examples: ["NVIDIA H100 80GB HBM3"] }),
        memory_total_mib: t.Number(),
        memory_used_mib: t.Union([t.Number(), t.Null()], {
          description:
            "Memory in use on the device by all processes; null where the driver does not say (MIG).",
        }),
        driver_version: t.String(),
      }),
      t.Null(),
    ],
    { description: "The NVIDIA GPU in use (from nvidia-smi) when the CUDA provider runs; null on the CPU." },
  ),
  loaded_models: t.Array(t.String(), {
    description: "Models loaded now, most recently used first (at most --max-loaded-models).",
  }),
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
