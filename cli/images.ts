/**
 * Image inputs of the command line: the `init_image` and `mask_image` files a project names (relative to its
 * folder, never outside it, symbolic links included) or `sdx gen --init-image/--mask` names (relative to the
 * working folder). Each is checked before anything is sent (a regular PNG, JPEG or WebP file small enough for a
 * request), read once, hashed (SHA-256, as the server reports it) and sent base64-encoded.
 */
import { createHash } from "node:crypto";
import { open, realpath, stat } from "node:fs/promises";
import { isAbsolute, normalize, relative, resolve, sep } from "node:path";
import { DEFAULT_LIMITS, type ImageFormat } from "../contract/index.ts";
import { imageFromBytes } from "../sdk/index.ts";

/** The request fields that hold image files. */
export const IMAGE_FIELDS = ["init_image", "mask_image"] as const;
export type ImageField = (typeof IMAGE_FIELDS)[number];

/** Largest image file: its base64 text must fit a request body of a server with the default limits. */
export const IMAGE_FILE_MAX_BYTES = Math.floor((DEFAULT_LIMITS.bodyMaxBytes * 3) / 4) - 64 * 1024;

/** An image file read for a request. */
export interface InputFile {
  /** The path as the user wrote it (in the project's files: relative to the project folder). */
  path: string;
  sha256: string;
  format: ImageFormat;
  bytes: number;
  /** The file, base64-encoded: the request field's value. */
  base64: string;
}

export type InputFiles = Partial<Record<ImageField, InputFile>>;

/** Thrown with a sentence for the user: the caller adds where the path came from. */
export class ImageInputError extends Error {
  override name = "ImageInputError";
}

/** The format a file's first bytes announce, or null when it is none the server reads. */
export function sniffImageFormat(head: Uint8Array): ImageFormat | null {
  const at = (offset: number, ...bytes: number[]) => bytes.every((b, i) => head[offset + i] === b);
  if (at(0, 0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return "png";
  if (at(0, 0xff, 0xd8, 0xff)) return "jpeg";
  if (at(0, 0x52, 0x49, 0x46, 0x46) && at(8, 0x57, 0x45, 0x42, 0x50)) return "webp";
  return null;
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** Checks that `path` is a regular image file the server could read; answers its format. */
async function checkFile(path: string): Promise<ImageFormat> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ImageInputError(code === "ENOENT" ? "no such file" : `cannot read it (${code ?? e})`);
  }
  if (!info.isFile()) throw new ImageInputError("not a regular file");
  if (info.size > IMAGE_FILE_MAX_BYTES) {
    throw new ImageInputError(
      `${mib(info.size)} is too large (at most ${mib(IMAGE_FILE_MAX_BYTES)}, to fit a request)`,
    );
  }
  const handle = await open(path, "r");
  const head = new Uint8Array(16);
  try {
    await handle.read(head, 0, head.length, 0);
  } finally {
    await handle.close();
  }
  const format = sniffImageFormat(head);
  if (!format) throw new ImageInputError("not a PNG, JPEG or WebP file");
  return format;
}

/**
 * Where a project's image path points, once checked: a relative path whose real location (symbolic links
 * followed) is a regular image file inside the project folder. Throws ImageInputError saying what is wrong.
 */
export async function projectImagePath(projectDir: string, path: string): Promise<string> {
  // Both separators count, so that a project written on Windows is judged the same everywhere.
  const portable = path.replaceAll("\\", "/");
  if (isAbsolute(portable) || /^[A-Za-z]:/.test(portable)) {
    throw new ImageInputError("an absolute path; image paths are relative to the project folder");
  }
  if (normalize(portable).split("/").includes("..")) {
    throw new ImageInputError('outside the project folder (".." may not leave it)');
  }
  const root = await realpath(projectDir);
  const target = resolve(root, portable);
  let real: string;
  try {
    real = await realpath(target);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ImageInputError(
      code === "ENOENT" ? "no such file in the project folder" : `cannot read it (${code})`,
    );
  }
  const inside = relative(root, real);
  if (inside === "" || inside.startsWith(`..${sep}`) || inside === ".." || isAbsolute(inside)) {
    throw new ImageInputError("a link to a file outside the project folder");
  }
  await checkFile(real);
  return real;
}

/** Reads a checked image file: its bytes base64-encoded, with the SHA-256 and format for the metadata. */
export async function readImageFile(file: string, pathAsGiven: string): Promise<InputFile> {
  const format = await checkFile(file);
  const bytes = new Uint8Array(await Bun.file(file).arrayBuffer());
  return {
    path: pathAsGiven,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    format,
    bytes: bytes.byteLength,
    base64: imageFromBytes(bytes),
  };
}
