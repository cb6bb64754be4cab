/**
 * A run folder as its gallery sees it: where it sits (project, prompt set, model, time, all from its path) and its
 * images and failed requests, either collected while `sdx gen` writes them or read back from the files on disk
 * (the metadata YAML holds each image's seed, prompts and parameters).
 */
import { readdir, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { parseDocument } from "yaml";

export interface GalleryImage {
  /** The `<timestamp>` of `images/image_<timestamp>.png`. */
  stamp: string;
  seed: number | null;
  prompt: string | null;
  negativePrompt: string | null;
  /** Every parameter as the server applied it. */
  parameters: Record<string, unknown>;
}

export interface GalleryError {
  /** The `<timestamp>` of `errors/error_<timestamp>.yaml`. */
  stamp: string;
  /** Seeds of the images the failed request would have made. */
  seeds: number[];
  message: string;
}

export interface RunRecord {
  dir: string;
  project: string;
  promptName: string;
  model: string;
  /** The run folder's `<timestamp>`. */
  stamp: string;
  images: GalleryImage[];
  errors: GalleryError[];
}

/** The files of a run, relative to its folder (as the gallery links them). */
export const runFiles = {
  image: (stamp: string) => `images/image_${stamp}.png`,
  metadata: (stamp: string) => `metadata/metadata_${stamp}.yaml`,
  thumb: (stamp: string) => `thumbs/image_${stamp}.jpg`,
  error: (stamp: string) => `errors/error_${stamp}.yaml`,
};

/** `20261123_224501_123_sd15` → its time and model; null for a folder that is not a run's. */
export function parseFolderName(name: string): { stamp: string; rest: string } | null {
  const match = /^(\d{8}_\d{6}_\d{3})_(.+)$/.exec(name);
  return match ? { stamp: match[1] as string, rest: match[2] as string } : null;
}

/** `20261123_224501_123` → `2026-11-23 22:45:01`. */
export function displayTime(stamp: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})_(\d{2})(\d{2})(\d{2})/.exec(stamp);
  return m ? `${m[1]}-${m[2]}-${m[3]} ${m[4]}:${m[5]}:${m[6]}` : stamp;
}

/** An empty record for the run folder `dir` (`<output>/<project>/<prompt set>/<timestamp>_<model>`). */
export function emptyRun(dir: string): RunRecord {
  const parsed = parseFolderName(basename(dir));
  return {
    dir,
    project: basename(dirname(dirname(dir))),
    promptName: basename(dirname(dir)),
    model: parsed?.rest ?? basename(dir),
    stamp: parsed?.stamp ?? "",
    images: [],
    errors: [],
  };
}

const record = (value: unknown): Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
const text = (value: unknown): string | null => (typeof value === "string" ? value : null);
const integer = (value: unknown): number | null => (Number.isInteger(value) ? (value as number) : null);

/** An image as its metadata (what `sdx gen` writes) describes it. */
export function imageFromMetadata(stamp: string, metadata: Record<string, unknown>): GalleryImage {
  const parameters = record(metadata.parameters);
  return {
    stamp,
    seed: integer(metadata.seed) ?? integer(parameters.seed),
    prompt: text(metadata.prompt) ?? text(parameters.prompt),
    negativePrompt: text(metadata.negative_prompt) ?? text(parameters.negative_prompt),
    parameters,
  };
}

/** A failed request as its error file describes it. */
export function errorFromFile(stamp: string, body: Record<string, unknown>): GalleryError {
  const request = record(body.request);
  const first = integer(request.seed);
  const count = integer(request.batch_size) ?? 1;
  return {
    stamp,
    seeds: first === null ? [] : Array.from({ length: count }, (_, i) => first + i),
    message: text(record(body.error).message) ?? "unknown error",
  };
}

/** Metadata and error files are small; anything larger is not read. */
const YAML_MAX_BYTES = 1024 * 1024;

/** A YAML file as a map (plain YAML 1.2, aliases capped); {} when missing, too large or not a map. */
async function readYaml(path: string): Promise<Record<string, unknown>> {
  try {
    if ((await stat(path)).size > YAML_MAX_BYTES) return {};
    const doc = parseDocument(await Bun.file(path).text(), { schema: "core", customTags: [] });
    return doc.errors.length > 0 ? {} : record(doc.toJS({ maxAliasCount: 100 }));
  } catch {
    return {};
  }
}

/** The `<timestamp>`s of the files named `<prefix><timestamp><suffix>` in `dir`, oldest first. */
async function stamps(dir: string, prefix: string, suffix: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names
    .filter((n) => n.startsWith(prefix) && n.endsWith(suffix) && n.length > prefix.length + suffix.length)
    .map((n) => n.slice(prefix.length, n.length - suffix.length))
    .sort();
}

/** A run folder as it is on disk: every `images/image_*.png` with its metadata, every `errors/error_*.yaml`. */
export async function readRun(dir: string): Promise<RunRecord> {
  const run = emptyRun(dir);
  for (const stamp of await stamps(join(dir, "images"), "image_", ".png")) {
    run.images.push(imageFromMetadata(stamp, await readYaml(join(dir, runFiles.metadata(stamp)))));
  }
  for (const stamp of await stamps(join(dir, "errors"), "error_", ".yaml")) {
    run.errors.push(errorFromFile(stamp, await readYaml(join(dir, runFiles.error(stamp)))));
  }
  return run;
}
