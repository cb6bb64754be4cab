/**
 * The online catalog: a few ready ONNX Stable Diffusion exports on the Hugging Face hub, in the layout sdx
 * loads, and the rules for naming anything else a user asks for (`org/name`, `org/name@revision`).
 * Exact file lists, sizes and hashes are read from the hub when a model is pulled; the sizes here are what the
 * menu and /v1/models/catalog show before that.
 */
import type { ModelKind } from "../model_kinds.ts";

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

/** Folder names a pull may create: letters, digits, dot, dash, underscore; no leading dot; no paths. */
export const MODEL_FOLDER_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,99}$/;

/** A hub repository id, `org/name`, as the hub accepts them (no `--` or `..`, not ending in `.git`). */
const REPO_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$/;
/** A branch, tag or commit; sent URL-encoded, never used as a path. */
const REVISION = /^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$/;

/** What a pull downloads and where it goes. */
export interface PullTarget {
  repo: string;
  revision: string;
  /** Folder name under the models directory. */
  folder: string;
  /** The catalog entry, when the name was one. */
  entry: CatalogEntry | null;
}

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
  return MODEL_FOLDER_NAME.test(cleaned) ? cleaned : "model";
}

/**
 * What `name` asks for: a catalog name, or `org/name` with an optional `@revision` (default main). `folder`
 * overrides the folder name. Throws PullNameError, saying what is accepted, for anything else.
 */
export function resolvePullName(name: string, folder?: string): PullTarget {
  if (folder !== undefined && !MODEL_FOLDER_NAME.test(folder)) {
    throw new PullNameError(
      `folder "${folder}" is not a safe folder name: letters, digits, '.', '-' and '_', not starting with '.' (no paths)`,
    );
  }
  const entry = findCatalogEntry(name);
  if (entry) return { repo: entry.repo, revision: entry.revision, folder: folder ?? entry.name, entry };
  if (!name.includes("/")) {
    throw new PullNameError(
      `"${name}" is not in the catalog (${CATALOG.map((e) => e.name).join(", ")}); name a Hugging Face repository as org/name or org/name@revision`,
      true,
    );
  }
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
  return { repo, revision, folder: folder ?? folderNameFor(repo, revision), entry: null };
}
