/**
 * The online catalog: a few ready ONNX Stable Diffusion exports on the Hugging Face hub, in the layout sdx
 * loads, and the rules for naming anything else a user asks for (`org/name`, `org/name@revision`).
 * Exact file lists, sizes and hashes are read from the hub when a model is pulled; the sizes here are what the
 * menu and /v1/models/catalog show before that.
 */
import {
  checkPullFolder,
  type ModelKind,
  PullNameError,
  parseRepoReference,
  SAFE_NAME,
} from "../../../contract/index.ts";

export interface CatalogEntry {
  /** Folder name under the models directory, and the name users pull it by. */
  readonly name: string;
  /** Hub repository, `org/name`. */
  readonly repo: string;
  /** Branch, tag or commit. */
  readonly revision: string;
  readonly kind: ModelKind;
  readonly description: string;
  /** What sdx downloads (the ONNX files only), approximately, in bytes. */
  readonly approxBytes: number;
}

export const CATALOG = [
  {
    name: "stable-diffusion-v1-5-onnx",
    repo: "onnx-community/stable-diffusion-v1-5-ONNX",
    revision: "main",
    kind: "sd1",
    description: "Stable Diffusion 1.5, fp32 ONNX export (512 px; runs on the CPU and on CUDA).",
    approxBytes: 4_270_000_000,
  },
  {
    name: "stable-diffusion-v1-4-onnx",
    repo: "CompVis/stable-diffusion-v1-4",
    revision: "onnx",
    kind: "sd1",
    description: "Stable Diffusion 1.4, the diffusers team's fp32 ONNX export (512 px; CPU and CUDA).",
    approxBytes: 4_270_000_000,
  },
  {
    name: "sd-turbo",
    repo: "onnxruntime/sd-turbo",
    revision: "main",
    kind: "sd2",
    description:
      "SD-Turbo (distilled SD 2.1, 1–4 steps, 512 px), fp16 export optimized by the onnxruntime team for GPUs (non-commercial licence).",
    approxBytes: 2_580_000_000,
  },
  {
    name: "sdxl-turbo",
    repo: "onnxruntime/sdxl-turbo",
    revision: "main",
    kind: "sdxl",
    description:
      "SDXL-Turbo (distilled SDXL 1.0, 1–4 steps, 512 px), fp16 export optimized by the onnxruntime team for GPUs (non-commercial licence).",
    approxBytes: 9_700_000_000,
  },
] as const satisfies readonly CatalogEntry[];

export type CatalogName = (typeof CATALOG)[number]["name"];

/** What a pull downloads and where it goes. */
export interface PullTarget {
  repo: string;
  revision: string;
  /** Folder name under the models directory. */
  folder: string;
  /** The catalog entry, when the name was one. */
  entry: CatalogEntry | null;
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
  if (entry) return { repo: entry.repo, revision: entry.revision, folder: folder ?? entry.name, entry };
  const reference = parseRepoReference(name);
  if (reference === null) {
    throw new PullNameError(
      `"${name}" is not in the catalog (${CATALOG.map((e) => e.name).join(", ")}); name a Hugging Face repository as org/name or org/name@revision`,
      true,
    );
  }
  const { repo, revision } = reference;
  return { repo, revision, folder: folder ?? folderNameFor(repo, revision), entry: null };
}
