import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { MODEL_FOLDER_NAME } from "../engine/hub/catalog.ts";
import { MODEL_KINDS } from "../engine/model_kinds.ts";
import { Enum } from "../schema.ts";

export const CatalogEntrySchema = t.Object({
  name: t.String({
    description: "The name to pull it by, and its folder name in the models directory.",
    examples: ["sd-turbo"],
  }),
  repo: t.String({ description: "Hugging Face hub repository.", examples: ["onnxruntime/sd-turbo"] }),
  revision: t.String({ description: "Branch, tag or commit downloaded.", examples: ["main"] }),
  kind: Enum(MODEL_KINDS),
  description: t.String(),
  approx_size_bytes: Type.Integer({
    description: "About what a pull downloads (the ONNX files only); the exact sizes come from the hub.",
  }),
  installed: t.Boolean({ description: "Whether a folder of that name is in the models directory." }),
});

export const ModelCatalogSchema = t.Object({
  hub: t.String({
    description: "The hub pulls download from (HF_ENDPOINT).",
    examples: ["https://huggingface.co"],
  }),
  models: t.Array(CatalogEntrySchema),
});

export const PullRequestSchema = t.Object(
  {
    name: t.String({
      minLength: 1,
      maxLength: 300,
      description:
        "A catalog name (GET /v1/models/catalog), or any Hugging Face repository holding an ONNX export in the optimum layout, as `org/name` or `org/name@revision`.",
      examples: ["sd-turbo", "CompVis/stable-diffusion-v1-4@onnx"],
    }),
    folder: t.Optional(
      t.String({
        pattern: MODEL_FOLDER_NAME.source,
        description:
          "Folder name in the models directory (letters, digits, '.', '-', '_'). Default: the catalog name, or the repository's name (with `-<revision>` when not main).",
        examples: ["sd14"],
      }),
    ),
  },
  { additionalProperties: false },
);

export const PullResultSchema = t.Object({
  name: t.String({
    description: "The new model's name: its folder in the models directory.",
    examples: ["sd-turbo"],
  }),
  repo: t.String({ examples: ["onnxruntime/sd-turbo"] }),
  revision: t.String({ examples: ["main"] }),
  commit: t.String({ description: "The commit the files came from." }),
  files: Type.Integer({
    description: "Files downloaded (the ONNX folder's; other formats and docs are skipped).",
  }),
  size_bytes: Type.Integer(),
  resumed_bytes: Type.Integer({ description: "Bytes kept from an earlier, interrupted pull." }),
  joined: t.Boolean({ description: "Whether this request joined a pull of the same model already running." }),
  kind: t.Union([Enum(MODEL_KINDS), t.Null()]),
  loadable: t.Boolean({ description: "Whether the server can load it (see `problem` when not)." }),
  problem: t.Union([t.String(), t.Null()]),
});

export type CatalogEntryInfo = typeof CatalogEntrySchema.static;
export type ModelCatalog = typeof ModelCatalogSchema.static;
export type PullRequest = typeof PullRequestSchema.static;
export type PullResultBody = typeof PullResultSchema.static;
