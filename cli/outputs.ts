/**
 * The outputs tree: `<output>/<project>/<prompt>/<timestamp>_<model>/{images,metadata}/`. One run folder per
 * invocation, never reused; every file is written atomically and never replaces an existing one (the gallery's
 * own pages and sheets aside, see gallery/files.ts). An `--all-models` run adds a comparison folder
 * `<timestamp>_all-models/` beside its run folders.
 */
import { mkdir } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import YAML from "yaml";
import { SAFE_NAME } from "../contract/index.ts";
import { FileExistsError, writeFileAtomic } from "../lib/fs/atomic.ts";

export class OutputPathError extends Error {
  override name = "OutputPathError";
}

/** `20261123_224501_123`: sortable, unique to the millisecond, safe in every file system. */
export function formatTimestamp(date: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, "0");
  return `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}_${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}_${p(date.getMilliseconds(), 3)}`;
}

/** Hands out timestamps that never repeat within a process, even for images finished in the same millisecond. */
export class TimestampClock {
  private last = 0;
  constructor(private readonly now: () => number = Date.now) {}
  next(): { date: Date; stamp: string } {
    const ms = Math.max(this.now(), this.last + 1);
    this.last = ms;
    const date = new Date(ms);
    return { date, stamp: formatTimestamp(date) };
  }
}

function checkedName(kind: string, name: string): string {
  if (!SAFE_NAME.test(name)) {
    throw new OutputPathError(
      `${kind} "${name}" is not a safe folder name (letters, digits, '.', '-', '_'; no leading dot)`,
    );
  }
  return name;
}

/** A path under `root` built from checked names; refuses anything that would resolve outside it. */
function inside(root: string, ...names: string[]): string {
  const base = resolve(root);
  const path = resolve(base, ...names);
  if (path !== base && !path.startsWith(base + sep)) throw new OutputPathError(`${path} is outside ${base}`);
  return path;
}

export interface RunFolder {
  dir: string;
  imagesDir: string;
  metadataDir: string;
}

/** Creates a fresh `<timestamp>_<suffix>` folder in `parent`; an existing one is never reused. */
async function freshFolder(parent: string, suffix: string, clock: TimestampClock): Promise<string> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const dir = inside(parent, `${clock.next().stamp}_${suffix}`);
    try {
      await mkdir(dir);
      return dir;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
  }
  throw new OutputPathError(`could not create a new folder under ${parent}`);
}

/** Creates a fresh `<timestamp>_<model>` folder; an existing one is never reused. */
export async function createRunFolder(
  outputRoot: string,
  project: string,
  promptSet: string,
  model: string,
  clock: TimestampClock,
): Promise<RunFolder> {
  const parent = inside(
    outputRoot,
    checkedName("project name", project),
    checkedName("prompt-set name", promptSet),
  );
  await mkdir(parent, { recursive: true });
  const dir = await freshFolder(parent, checkedName("model name", model), clock);
  const imagesDir = join(dir, "images");
  const metadataDir = join(dir, "metadata");
  await mkdir(imagesDir);
  await mkdir(metadataDir);
  return { dir, imagesDir, metadataDir };
}

/** Suffix of an `--all-models` comparison's folder, `<timestamp>_all-models`, beside the runs it compares. */
export const COMPARISON_SUFFIX = "all-models";

/** Creates a fresh comparison folder beside the run folder `runDir`. */
export async function createComparisonFolder(runDir: string, clock = new TimestampClock()): Promise<string> {
  return freshFolder(dirname(runDir), COMPARISON_SUFFIX, clock);
}

/** Writes `image_<stamp>.png` and `metadata_<stamp>.yaml`; neither may replace an existing file. */
export async function writeImageWithMetadata(
  run: RunFolder,
  stamp: string,
  png: Uint8Array,
  metadata: Record<string, unknown>,
): Promise<{ image: string; metadata: string }> {
  const image = join(run.imagesDir, `image_${stamp}.png`);
  const meta = join(run.metadataDir, `metadata_${stamp}.yaml`);
  try {
    await writeFileAtomic(image, png, { createOnly: true });
    await writeFileAtomic(meta, YAML.stringify(metadata, { lineWidth: 0 }), { createOnly: true });
  } catch (e) {
    if (e instanceof FileExistsError) throw new OutputPathError(`${e.message}; nothing was overwritten`);
    throw e;
  }
  return { image, metadata: meta };
}
