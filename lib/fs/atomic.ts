/**
 * Writes that land whole or not at all: data goes to a temporary file in the same folder, is flushed,
 * then renamed into place. `createOnly` never replaces an existing file (link + unlink instead of rename, as
 * `moveCreateOnly` moves any file).
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

export class FileExistsError extends Error {
  override name = "FileExistsError";
}

export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: { createOnly?: boolean } = {},
): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(tmp, "wx");
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    if (options.createOnly) {
      await moveCreateOnly(tmp, path);
    } else {
      await rename(tmp, path);
    }
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/**
 * Moves the file `from` to `to` on the same file system without ever replacing what is at `to` (a hard link, then
 * the old name removed): FileExistsError when `to` exists.
 */
export async function moveCreateOnly(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new FileExistsError(`${to} already exists`);
    throw e;
  }
  await unlink(from);
}
