/**
 * How galleries write: atomically, like every output. The pages, sheets and comparison lists below are sdx's
 * own derived files, rewritten as a run goes on, so they alone may replace an existing file, and only one that
 * carries sdx's mark; anything else (a user's file of the same name) is never overwritten. Thumbnails are
 * written once.
 */
import { open } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import { FileExistsError, writeFileAtomic } from "../../lib/fs/atomic.ts";
import { runFiles } from "./record.ts";

/** In every gallery page's head. */
export const GENERATOR_MARK = '<meta name="generator" content="sdx gallery">';
/** The first line of a comparison's list of runs. */
export const RUNS_MARK = "# sdx gallery:";
const PNG_SIGNATURE = "\x89PNG\r\n\x1a\n";

/** Each replaceable file's name and the test its existing content must pass to be replaced. */
const REPLACEABLE = {
  "index.html": (head: string) => head.includes(GENERATOR_MARK),
  "grid.png": (head: string) => head.startsWith(PNG_SIGNATURE),
  "runs.yaml": (head: string) => head.startsWith(RUNS_MARK),
} as const;
export type GalleryFile = keyof typeof REPLACEABLE;

/** Longest side of a thumbnail (never enlarged). */
export const THUMB_MAX_SIDE = 256;

export class GalleryFileError extends Error {
  override name = "GalleryFileError";
}

/** The first bytes of a file as Latin-1 text, or null when there is no file. */
async function head(path: string): Promise<string | null> {
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(path, "r");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  try {
    const buffer = Buffer.alloc(1024);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead).toString("latin1");
  } finally {
    await handle.close();
  }
}

/** Writes (or replaces, when it is sdx's) one of a gallery's files in `dir`. */
export async function writeGalleryFile(
  dir: string,
  name: GalleryFile,
  data: string | Uint8Array,
): Promise<void> {
  const path = join(dir, name);
  const existing = await head(path);
  if (existing !== null && !REPLACEABLE[name](existing)) {
    throw new GalleryFileError(`${path} exists and is not sdx's; it was left as it is`);
  }
  await writeFileAtomic(path, data);
}

/** Writes an image's thumbnail (a JPEG, at most THUMB_MAX_SIDE px) unless it exists. */
export async function writeThumb(runDir: string, stamp: string): Promise<void> {
  const path = join(runDir, runFiles.thumb(stamp));
  if ((await head(path)) !== null) return;
  const jpeg = await sharp(join(runDir, runFiles.image(stamp)))
    .resize(THUMB_MAX_SIDE, THUMB_MAX_SIDE, { fit: "inside", withoutEnlargement: true })
    .flatten({ background: "#000" })
    .jpeg({ quality: 80 })
    .toBuffer();
  try {
    await writeFileAtomic(path, jpeg, { createOnly: true });
  } catch (e) {
    if (!(e instanceof FileExistsError)) throw e;
  }
}
