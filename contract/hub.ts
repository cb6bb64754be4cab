/** The online catalog and pulls from the Hugging Face hub: GET /v1/models/catalog, POST /v1/models/pull. */
import { Type } from "@sinclair/typebox";
import { SERVER_DEFAULTS } from "./defaults.ts";
import { MODEL_KINDS } from "./lists.ts";
import { SAFE_NAME, SAFE_NAME_RULE } from "./names.ts";
import { Enum } from "./schema.ts";

/** A hub repository id, `org/name`, as the hub accepts them (no `--` or `..`, not ending in `.git`). */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$/;
/** A branch, tag or commit; sent URL-encoded, never used as a path. */
const REVISION = /^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$/;

/**
 * What a pull brings: a model (an ONNX export, into its own folder in the models directory) or a preview decoder
 * (the TAESD decoder file, into the vae_approx folder).
 */
export const PULL_TYPES = ["model", "vae_approx"] as const;
export type PullType = (typeof PULL_TYPES)[number];

/** A pull's name or folder that breaks the naming rules; the message says what is accepted. */
export class PullNameError extends Error {
  override name = "PullNameError";
  constructor(
    message: string,
    /** Whether the name was neither a catalog name nor `org/name`: the catalog lacks it. */
    readonly notInCatalog = false,
  ) {
    super(message);
  }
}

/** Checks a pull's folder name (a name in the models directory); throws PullNameError. */
export function checkPullFolder(folder: string): void {
  if (!SAFE_NAME.test(folder)) {
    throw new PullNameError(`folder "${folder}" is not a safe folder name: ${SAFE_NAME_RULE}`);
  }
}

/**
 * A hub repository named as `org/name` or `org/name@revision` (default main), checked; throws PullNameError
 * saying what is accepted. A name without "/" is not a repository (it may be a catalog name): null.
 */
export function parseRepoReference(name: string): { repo: string; revision: string } | null {
  if (!name.includes("/")) return null;
  const at = name.indexOf("@");
  const repo = at === -1 ? name : name.slice(0, at);
  const revision = at === -1 ? "main" : name.slice(at + 1);
  if (!REPO_ID.test(repo) || /--|\.\./.test(repo) || repo.endsWith(".git")) {
    throw new PullNameError(
      `"${repo}" is not a Hugging Face repository id: org/name with letters, digits, '-', '_' and '.'`,
    );
  }
  if (!REVISION.test(revision) || revision.includes("..")) {
    throw new PullNameError(`"${revision}" is not a branch, tag or commit name`);
  }
  return { repo, revision };
}

export const CatalogEntrySchema = Type.Object({
  name: Type.String({
    description: "The name to pull it by, and a model's folder name in the models directory.",
    examples: ["sd-turbo"],
  }),
  type: Enum(PULL_TYPES, {
    description:
      "model: an ONNX export, pulled into its own folder in the models directory; vae_approx: a TAESD preview decoder (for `preview.method` taesd), pulled as one file into the vae_approx folder.",
  }),
  repo: Type.String({ description: "Hugging Face hub repository.", examples: ["onnxruntime/sd-turbo"] }),
  revision: Type.String({ description: "Branch, tag or commit downloaded.", examples: ["main"] }),
  kind: Enum(MODEL_KINDS, { description: "The model family (a preview decoder: the first of `families`)." }),
  families: Type.Array(Enum(MODEL_KINDS), {
    description: "The model families it is for: a model's own; taesd: sd1 and sd2; taesdxl: sdxl.",
  }),
  description: Type.String(),
  approx_size_bytes: Type.Integer({
    description:
      "About what a pull downloads (a model's ONNX files, a preview decoder's one file); the exact sizes come from the hub.",
  }),
  installed: Type.Boolean({
    description:
      "Whether it is there: a folder of that name in the models directory, or the decoder's file in the vae_approx folder.",
  }),
});

export const ModelCatalogSchema = Type.Object({
  hub: Type.String({
    description: "The hub pulls download from (HF_ENDPOINT).",
    examples: [SERVER_DEFAULTS.hubEndpoint],
  }),
  models: Type.Array(CatalogEntrySchema),
});

export const PullRequestSchema = Type.Object(
  {
    name: Type.String({
      minLength: 1,
      maxLength: 300,
      description:
        "A catalog name (GET /v1/models/catalog: models, and the taesd/taesdxl preview decoders), or any Hugging Face repository holding an ONNX export in the optimum layout, as `org/name` or `org/name@revision`.",
      examples: ["sd-turbo", "CompVis/stable-diffusion-v1-4@onnx", "taesd"],
    }),
    folder: Type.Optional(
      Type.String({
        pattern: SAFE_NAME.source,
        description:
          "Folder name in the models directory (letters, digits, '.', '-', '_'). Default: the catalog name, or the repository's name (with `-<revision>` when not main). Models only: a preview decoder keeps its file name.",
        examples: ["sd14"],
      }),
    ),
  },
  { additionalProperties: false },
);

export const PullResultSchema = Type.Object({
  name: Type.String({
    description:
      "The new model's name: its folder in the models directory; a preview decoder's: its file name without the extension, as GET /v1/adapters lists it.",
    examples: ["sd-turbo"],
  }),
  type: Enum(PULL_TYPES),
  repo: Type.String({ examples: ["onnxruntime/sd-turbo"] }),
  revision: Type.String({ examples: ["main"] }),
  commit: Type.String({ description: "The commit the files came from." }),
  files: Type.Integer({
    description:
      "Files downloaded (a model: the ONNX folder's, other formats and docs skipped; a preview decoder: its one file).",
  }),
  size_bytes: Type.Integer(),
  resumed_bytes: Type.Integer({ description: "Bytes kept from an earlier, interrupted pull." }),
  joined: Type.Boolean({
    description: "Whether this request joined a pull of the same model already running.",
  }),
  kind: Type.Union([Enum(MODEL_KINDS), Type.Null()], {
    description: "The model family (a preview decoder: the one it serves, null when several)",
  }),
  loadable: Type.Boolean({
    description: "Whether the server can load it, or use the preview decoder (see `problem` when not).",
  }),
  problem: Type.Union([Type.String(), Type.Null()]),
});

export type CatalogEntry = typeof CatalogEntrySchema.static;
export type ModelCatalog = typeof ModelCatalogSchema.static;
export type PullRequest = typeof PullRequestSchema.static;
export type PullResult = typeof PullResultSchema.static;
