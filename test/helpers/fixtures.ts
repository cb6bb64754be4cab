/** Paths of the fixture data copied from the diffusers reference set (see test/fixtures/README.md). */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import sharp from "sharp";

export const FIXTURES = join(import.meta.dir, "..", "fixtures");
export const MODELS_DIR = join(FIXTURES, "models");
export const TINY_SD15 = join(MODELS_DIR, "tiny_sd15");
/** A models directory holding the tiny SDXL optimum folder only (the server serves the only loadable model). */
export const MODELS_SDXL_DIR = join(FIXTURES, "models_sdxl");
export const TINY_SDXL = join(MODELS_SDXL_DIR, "tiny_sdxl");
export const REPO_ROOT = join(import.meta.dir, "..", "..");

export interface ReferenceCase {
  name: string;
  prompt: string | string[];
  negative_prompt: string | string[] | null;
  num_inference_steps: number;
  guidance_scale: number;
  height: number;
  width: number;
  seed: number;
  clip_skip: number | null;
  scheduler_from_config_overrides: Record<string, unknown>;
  timesteps: number[];
  images: string[];
}

/** One diffusers reference case of `model` (a folder of `cases/`: tiny_sd15 or tiny_sdxl). */
export async function referenceCase(
  name: string,
  model = "tiny_sd15",
): Promise<ReferenceCase & { dir: string }> {
  const dir = join(FIXTURES, "cases", model, name);
  return { ...(readCaseJson(dir) as ReferenceCase), dir };
}

/** A case folder's case.json; Python's json writes -Infinity and NaN (e.g. lambda_min_clipped), read as null. */
export function readCaseJson(dir: string): unknown {
  const text = readFileSync(join(dir, "case.json"), "utf8");
  return JSON.parse(text.replace(/(?<=[:[,]\s*)-?Infinity|NaN/g, "null"));
}

/** RGB pixels of a PNG (from a file path or bytes). */
export async function pixels(
  png: string | Uint8Array,
): Promise<{ data: Uint8Array; width: number; height: number }> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

/** Mean and maximum absolute difference of two images on the 0–255 scale. */
export async function imageDiff(
  a: string | Uint8Array,
  b: string | Uint8Array,
): Promise<{ mean: number; max: number }> {
  const [pa, pb] = await Promise.all([pixels(a), pixels(b)]);
  if (pa.width !== pb.width || pa.height !== pb.height) {
    throw new Error(`sizes differ: ${pa.width}x${pa.height} vs ${pb.width}x${pb.height}`);
  }
  let sum = 0;
  let max = 0;
  for (let i = 0; i < pa.data.length; i++) {
    const d = Math.abs((pa.data[i] as number) - (pb.data[i] as number));
    sum += d;
    if (d > max) max = d;
  }
  return { mean: sum / pa.data.length, max };
}
