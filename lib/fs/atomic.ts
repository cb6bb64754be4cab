/**
 * Writes that land whole or not at all: data goes to a temporary file in the same folder, is flushed,
 * then renamed into place. `createOnly` never replaces an existing file (link + unlink instead of rename).
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
      try {
        await link(tmp, path);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EEXIST")
          throw new FileExistsError(`${path} already exists`);
        throw e;
      }
      await unlink(tmp);
    } else {
      await rename(tmp, path);
    }
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}
