/** GET /v1/models: the models in the models directory and what each can do. */
import { Type } from "@sinclair/typebox";
import { MODEL_FORMATS, MODEL_KINDS } from "./lists.ts";
import { Enum } from "./schema.ts";

export const ModelInfoSchema = Type.Object({
  name: Type.String({ description: "Folder name in the models directory; the model's only handle." }),
  format: Enum(MODEL_FORMATS),
  kind: Type.Union([Enum(MODEL_KINDS), Type.Null()], {
    description: "Null when the folder is not a model sdx recognises.",
  }),
  pipeline_class: Type.Union([Type.String(), Type.Null()], {
    description: "`_class_name` of model_index.json.",
  }),
  size_bytes: Type.Integer(),
  native_size: Type.Integer({ description: "Default width and height." }),
  size_multiple: Type.Integer({ description: "Width and height must be multiples of this." }),
  loadable: Type.Boolean(),
  problem: Type.Union([Type.String(), Type.Null()], { description: "Why the model cannot be loaded." }),
  loaded: Type.Boolean({ description: "Whether the model is loaded now (requests for it start at once)." }),
  default: Type.Boolean({ description: "Whether requests that name no model get this one." }),
  hash: Type.Union([Type.String(), Type.Null()], {
    description:
      "SHA-256 of the checkpoint file, or of an ONNX folder's sha256sum-style file manifest; null until the model has been loaded once (hashes are cached).",
  }),
  sidecar: Type.Union(
    [
      Type.Object(
        {
          model_type: Type.Optional(Type.String({ description: 'The seed\'s "SD" or "SDXL".' })),
          base_model: Type.Optional(Type.String()),
          description: Type.Optional(Type.String()),
          merged_from: Type.Optional(Type.Union([Type.Array(Type.String()), Type.String()])),
          prediction_type: Type.Optional(Type.String()),
        },
        { additionalProperties: true },
      ),
      Type.Null(),
    ],
    { description: "The checkpoint's sidecar <name>.json, when it has one." },
  ),
});

export const ModelListSchema = Type.Object({
  models_dir: Type.String(),
  default_model: Type.Union([Type.String(), Type.Null()], {
    description: "The model requests without `model` get; null when none is chosen.",
  }),
  max_loaded_models: Type.Integer({ description: "Models kept loaded at once (--max-loaded-models)." }),
  models: Type.Array(ModelInfoSchema),
});

export type ModelInfo = typeof ModelInfoSchema.static;
export type ModelList = typeof ModelListSchema.static;
