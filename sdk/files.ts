/**
 * The SDK's file helpers for Bun and Node (not for browsers: they read the file system).
 *
 *   import { imageFromFile } from "sdx/sdk/files";
 *   await sdx.generate({ prompt: "a lighthouse at dusk", init_image: await imageFromFile("photo.png") });
 */
import { readFile } from "node:fs/promises";
import { imageFromBytes } from "./index.ts";

/** The file at `path` (a PNG, JPEG or WebP image) as the value of `init_image` or `mask_image` (base64). */
export async function imageFromFile(path: string): Promise<string> {
  return imageFromBytes(new Uint8Array(await readFile(path)));
}
