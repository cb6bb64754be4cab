import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { MODEL_FORMATS, MODEL_KINDS } from "../engine/model_kinds.ts";
import { Enum } from "../schema.ts";

export const ModelInfoSchema = t.Object({
  name: t.String({ description: "Folder name in the models directory; the model's only handle." }),
  format: Enum(MODEL_FORMATS),
  kind: t.Union([Enum(MODEL_KINDS), t.Null()], {
    description: "Null when the folder is not a model sdx recognises.",
  }),
  pipeline_class: t.Union([t.String(), t.Null()], { description: "`_class_name` of model_index.json." }),
  size_bytes: Type.Integer(),
  native_size: Type.Integer({ description: "Default width and height." }),
  size_multiple: Type.Integer({ description: "Width and height must be multiples of this." }),
  loadable: t.Boolean(),
  problem: t.Union([t.String(), t.Null()], { description: "Why the model cannot be loaded." }),
  loaded: t.Boolean({ description: "Whether the model is loaded now (requests for it start at once)." }),
  default: t.Boolean({ description: "Whether requests that name no model get this one." }),
  hash: t.Union([t.String(), t.Null()], {
    description:
      "SHA-256 of the checkpoint file, or of an ONNX folder's sha256sum-style file manifest; null until the model has been loaded once (hashes are cached).",
  }),
  sidecar: t.Union(
    [
      t.Object(
        {
          model_type: t.Optional(t.String({ description: 'The seed\'s "SD" or "SDXL".' })),
          base_model: t.Optional(t.String()),
          description: t.Optional(t.String()),
          merged_from: t.Optional(t.Union([t.Array(t.String()), t.String()])),
          prediction_type: t.Optional(t.String()),
        },
        { additionalProperties: true },
      ),
      t.Null(),
    ],
    { description: "The checkpoint's sidecar <name>.json, when it has one." },
  ),
});

export const ModelListSchema = t.Object({
  models_dir: t.String(),
  default_model: t.Union([t.String(), t.Null()], {
    description: "The model requests without `model` get; null when none is chosen.",
  }),
  max_loaded_models: Type.Integer({ description: "Models kept loaded at once (--max-loaded-models)." }),
  models: t.Array(ModelInfoSchema),
});

export type ModelInfo = typeof ModelInfoSchema.static;
export type ModelList = typeof ModelListSchema.static;
