/**
 * The online catalog: a few ready ONNX Stable Diffusion exports on the Hugging Face hub, in the layout sdx
 * loads, the TAESD preview decoders, and the rules for naming anything else a user asks for (`org/name`,
 * `org/name@revision`). Exact file lists, sizes and hashes are read from the hub when something is pulled; the
 * sizes here are what the menu and /v1/models/catalog show before that.
 */
import {
  checkPullFolder,
  type ModelKind,
  PullNameError,
  type PullType,
  parseRepoReference,
  SAFE_NAME,
} from "../../../contract/index.ts";
import { TAESD_VARIANTS, type TaesdVariant } from "../previews/taesd_files.ts";

/**
 * What a pull takes from its repository and where it lands: a model's ONNX export (model_index.json and the
 * component folders' files) as the new folder `<modelsDir>/<folder>/`, or exactly `files` (top-level files of
 * the repository), each into the adapter folder of `type` under its own name.
 */
export type PullDestination =
  | { readonly type: "model" }
  | { readonly type: Exclude<PullType, "model">; readonly files: readonly string[] };

export interface CatalogEntry {
  /** The name users pull it by, and a model's folder name under the models directory. */
  readonly name: string;
  /** Hub repository, `org/name`. */
  readonly repo: string;
  /** Branch, tag or commit. */
  readonly revision: string;
  readonly kind: ModelKind;
  /** The families it is for (a model: its kind). */
  readonly families: readonly ModelKind[];
  readonly description: string;
  /** What sdx downloads (a model's ONNX files, a decoder's file), approximately, in bytes. */
  readonly approxBytes: number;
  readonly destination: PullDestination;
}

const MODEL = { type: "model" } as const;

/** A TAESD decoder's entry: its one file from madebyollin's repository into the vae_approx folder. */
function taesdEntry(variant: TaesdVariant, description: string): CatalogEntry {
  const v = TAESD_VARIANTS[variant];
  return {
    name: variant,
    repo: v.repo,
    revision: "main",
    kind: v.families[0],
    families: v.families,
    description,
    approxBytes: v.approxBytes,
    destination: { type: "vae_approx", files: [v.file] },
  };
}

export const CATALOG = [
  {
    name: "stable-diffusion-v1-5-onnx",
    repo: "onnx-community/stable-diffusion-v1-5-ONNX",
    revision: "main",
    kind: "sd1",
    families: ["sd1"],
    description: "Stable Diffusion 1.5, fp32 ONNX export (512 px; runs on the CPU and on CUDA).",
    approxBytes: 4_270_000_000,
    destination: MODEL,
  },
  {
    name: "stable-diffusion-v1-4-onnx",
    repo: "CompVis/stable-diffusion-v1-4",
    revision: "onnx",
    kind: "sd1",
    families: ["sd1"],
    description: "Stable Diffusion 1.4, the diffusers team's fp32 ONNX export (512 px; CPU and CUDA).",
    approxBytes: 4_270_000_000,
    destination: MODEL,
  },
  {
    name: "sd-turbo",
    repo: "onnxruntime/sd-turbo",
    revision: "main",
    kind: "sd2",
    families: ["sd2"],
    description:
      "SD-Turbo (distilled SD 2.1, 1–4 steps, 512 px), fp16 export optimized by the onnxruntime team for GPUs (non-commercial licence).",
    approxBytes: 2_580_000_000,
    destination: MODEL,
  },
  {
    name: "sdxl-turbo",
    repo: "onnxruntime/sdxl-turbo",
    revision: "main",
    kind: "sdxl",
    families: ["sdxl"],
    description:
      "SDXL-Turbo (distilled SDXL 1.0, 1–4 steps, 512 px), fp16 export optimized by the onnxruntime team for GPUs (non-commercial licence).",
    approxBytes: 9_700_000_000,
    destination: MODEL,
  },
  taesdEntry(
    "taesd",
    "TAESD, the tiny autoencoder's decoder for SD 1.x/2.x: full-size live previews (`preview.method` taesd) at a small fraction of the VAE's cost (MIT licence).",
  ),
  taesdEntry(
    "taesdxl",
    "TAESDXL, the tiny autoencoder's decoder for SDXL: full-size live previews (`preview.method` taesd) at a small fraction of the VAE's cost (MIT licence).",
  ),
] as const satisfies readonly CatalogEntry[];

/** The catalog's models (what the startup menu offers to serve). */
export const MODEL_CATALOG = CATALOG.filter((e) => e.destination.type === "model");

/** What a pull downloads and where it goes. */
export interface PullTarget {
  repo: string;
  revision: string;
  /** A model's folder name under the models directory; for a file pull, the catalog name (its staging name). */
  folder: string;
  /** The catalog entry, when the name was one. */
  entry: CatalogEntry | null;
  destination: PullDestination;
}

export function findCatalogEntry(name: string): CatalogEntry | null {
  return CATALOG.find((e) => e.name === name) ?? null;
}

/** A folder name for `repo` at `revision`: the repository's name, plus the revision when it is not main. */
export function folderNameFor(repo: string, revision: string): string {
  const base = repo.slice(repo.indexOf("/") + 1);
  const raw = revision === "main" ? base : `${base}-${revision}`;
  const cleaned = raw
    .replace(/[^A-Za-z0-9._-]+/g, "-")
    .replace(/^[.-]+/, "")
    .slice(0, 100);
  return SAFE_NAME.test(cleaned) ? cleaned : "model";
}

/**
 * What `name` asks for: a catalog name, or `org/name` with an optional `@revision` (default main). `folder`
 * overrides the folder name. Throws PullNameError, saying what is accepted, for anything else.
 */
export function resolvePullName(name: string, folder?: string): PullTarget {
  if (folder !== undefined) checkPullFolder(folder);
  const entry = findCatalogEntry(name);
  if (entry && entry.destination.type !== "model" && folder !== undefined) {
    throw new PullNameError(
      `folder does not apply to ${name}: it is one file (${entry.destination.files.join(", ")}) pulled into the ${entry.destination.type} folder`,
    );
  }
  if (entry) {
    const { repo, revision, destination } = entry;
    return { repo, revision, folder: folder ?? entry.name, entry, destination };
  }
  const reference = parseRepoReference(name);
  if (reference === null) {
    throw new PullNameError(
      `"${name}" is not in the catalog (${CATALOG.map((e) => e.name).join(", ")}); name a Hugging Face repository as org/name or org/name@revision`,
      true,
    );
  }
  const { repo, revision } = reference;
  return { repo, revision, folder: folder ?? folderNameFor(repo, revision), entry: null, destination: MODEL };
}
