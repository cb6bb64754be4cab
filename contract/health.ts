/** GET /health: the server's state, its default model, the engine and the queue. */
import { Type } from "@sinclair/typebox";
import { EXECUTION_PROVIDERS, MODEL_KINDS } from "./lists.ts";
import { Enum } from "./schema.ts";

/**
 * An integer field in the shape the spec has published for the queue counts since the first version: an
 * integer, or the same as a numeric string (how Elysia's `t.Integer` describes itself). The server always
 * sends integers; the shape stays so that the published spec does not change.
 */
const count = (options: { description?: string } = {}) =>
  Type.Union([Type.String({ format: "integer", default: 0 }), Type.Integer(options)], options);

export const HEALTH_STATUSES = ["ok", "loading", "no_model", "error", "draining", "stuck"] as const;

export const HealthSchema = Type.Object({
  status: Enum(HEALTH_STATUSES),
  message: Type.String({ description: "A sentence on the state and, when no model is ready, what to do." }),
  model: Type.Union(
    [Type.Object({ name: Type.String(), kind: Type.Union([Enum(MODEL_KINDS), Type.Null()]) }), Type.Null()],
    {
      description: "The default model: what requests without `model` get.",
    },
  ),
  execution_provider: Enum(EXECUTION_PROVIDERS),
  version: Type.String({ description: "sdx version." }),
  onnxruntime_version: Type.String(),
  gpu: Type.Union(
    [
      Type.Object({
        index: Type.Integer({ description: "The GPU's index as nvidia-smi numbers it." }),
        name: Type.String({ examples: ["NVIDIA H100 80GB HBM3"] }),
        memory_total_mib: Type.Number(),
        memory_used_mib: Type.Union([Type.Number(), Type.Null()], {
          description:
            "Memory in use on the device by all processes; null where the driver does not say (MIG).",
        }),
        driver_version: Type.String(),
      }),
      Type.Null(),
    ],
    { description: "The NVIDIA GPU in use (from nvidia-smi) when the CUDA provider runs; null on the CPU." },
  ),
  provider_fallbacks: Type.Array(
    Type.Object({ provider: Enum(EXECUTION_PROVIDERS), reason: Type.String() }),
    {
      description:
        "Providers passed over before the one in use, in the order tried (auto: cuda, webgpu, cpu), each with why; a GPU provider that failed to load a model is added with its error.",
    },
  ),
  webgpu: Type.Union(
    [
      Type.Object({
        adapter: Type.Union(
          [
            Type.Object({
              name: Type.String({
                examples: ["NVIDIA H100 80GB HBM3", "AMD Radeon RX 7900 XTX (RADV NAVI31)"],
              }),
              type: Type.String({
                description: "Vulkan's device type: DISCRETE_GPU, INTEGRATED_GPU, CPU, …",
              }),
              driver: Type.String(),
              vulkan_version: Type.String(),
            }),
            Type.Null(),
          ],
          {
            description:
              "The Vulkan device Dawn takes (from `vulkaninfo --summary`: a discrete GPU before an integrated one); null where vulkaninfo is not installed or lists none (macOS, Windows).",
          },
        ),
        float16: Type.Boolean({
          description: "Whether checkpoint graphs compute in float16 (the adapter has WebGPU's shader-f16).",
        }),
        note: Type.Union([Type.String(), Type.Null()], {
          description: "Why the graphs stay float32, when they do.",
        }),
      }),
      Type.Null(),
    ],
    { description: "The WebGPU adapter when the WebGPU provider runs; null otherwise." },
  ),
  loaded_models: Type.Array(Type.String(), {
    description: "Models loaded now, most recently used first (at most --max-loaded-models).",
  }),
  queue: Type.Object(
    {
      running: count({ description: "Generations holding a slot." }),
      queued: count({ description: "Generations waiting for one." }),
      concurrency: count(),
      max_queue: count(),
    },
    { description: "Admission: what runs and waits now." },
  ),
});

export type Health = typeof HealthSchema.static;
