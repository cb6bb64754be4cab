/**
 * Finds Stable Diffusion models in a models directory: ONNX folders in the layout `optimum-cli export onnx`
 * writes (model_index.json, scheduler/, tokenizer/, text_encoder/model.onnx, unet/model.onnx,
 * vae_decoder/model.onnx, vae_encoder/ optional; SDXL adds tokenizer_2/ and text_encoder_2/), and single-file `.safetensors` checkpoints in the original
 * LDM key layout, each with an optional sidecar `<name>.json`.
 */

import { readdir, stat } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import type { ModelFormat, ModelKind } from "../../contract/index.ts";
import { pathExists } from "../../lib/fs/exists.ts";
import {
  detectKind as detectCheckpointKind,
  detectPredictionType,
  readSidecar,
  type Sidecar,
} from "./checkpoint/detect.ts";
import { readSafetensorsHeader } from "./safetensors.ts";

/**
 * sdx's own folder in a models directory: built checkpoint graphs and the model-hash cache. A dot-folder, so the
 * model scan never lists it.
 */
export const CACHE_DIR = ".sdx-cache";

/** The cache folder of a models directory. */
export function cacheDirOf(modelsDir: string): string {
  return join(modelsDir, CACHE_DIR);
}

export interface ModelEntry {
  /** Folder name inside the models directory; the only handle clients ever use. */
  name: string;
  /** Absolute folder path; never sent to clients. */
  path: string;
  format: ModelFormat;
  /** Null when the folder could not be identified. */
  kind: ModelKind | null;
  pipelineClass: string | null;
  sizeBytes: number;
  /** Why the model cannot be loaded, or null when it can. */
  problem: string | null;
  /** The size the model was trained at (unet sample_size × VAE scale factor). */
  nativeSize: number;
  /** The checkpoint's sidecar `<name>.json`, when it has one. */
  sidecar: Sidecar | null;
  /** Width and height must be multiples of this (the traced UNet's downsampling). */
  sizeMultiple: number;
}

const REQUIRED_FILES = [
  "model_index.json",
  "scheduler/scheduler_config.json",
  "tokenizer/vocab.json",
  "tokenizer/merges.txt",
  "text_encoder/model.onnx",
  "unet/model.onnx",
  "vae_decoder/model.onnx",
] as const;

/** What an SDXL folder needs beyond {@link REQUIRED_FILES}: the second tokenizer and text encoder. */
const REQUIRED_SDXL_FILES = [
  "tokenizer_2/vocab.json",
  "tokenizer_2/merges.txt",
  "text_encoder_2/model.onnx",
] as const;

const DEFAULT_NATIVE_SIZE: Record<ModelKind, number> = { sd1: 512, sd2: 768, sdxl: 1024 };

async function readJson(path: string): Promise<Record<string, unknown> | null> {
  try {
    return (await Bun.file(path).json()) as Record<string, unknown>;
  } catch {
    return null;
  }
}

async function folderSize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await stat(join(entry.parentPath, entry.name))).size;
  }
  return total;
}

/** Tells the model family from the pipeline class and the component configs, as diffusers would load it. */
function detectKind(
  pipelineClass: string | null,
  unetConfig: Record<string, unknown> | null,
  textConfig: Record<string, unknown> | null,
): ModelKind | null {
  if (pipelineClass === null) return null;
  if (/XL/.test(pipelineClass)) return "sdxl";
  if (!/StableDiffusion/.test(pipelineClass)) return null;
  // SD 2.x conditions on OpenCLIP ViT-H: 1024-wide text states.
  if (unetConfig?.cross_attention_dim === 1024 || textConfig?.hidden_size === 1024) return "sd2";
  return "sd1";
}

export async function inspectModelFolder(name: string, path: string): Promise<ModelEntry> {
  const index = await readJson(join(path, "model_index.json"));
  const pipelineClass = typeof index?._class_name === "string" ? index._class_name : null;
  const unetConfig = await readJson(join(path, "unet/config.json"));
  const textConfig = await readJson(join(path, "text_encoder/config.json"));
  const vaeConfig = await readJson(join(path, "vae_decoder/config.json"));
  const kind = detectKind(pipelineClass, unetConfig, textConfig);

  const missing: string[] = [];
  const required = kind === "sdxl" ? [...REQUIRED_FILES, ...REQUIRED_SDXL_FILES] : REQUIRED_FILES;
  for (const file of required) if (!(await pathExists(join(path, file)))) missing.push(file);
  let problem: string | null = null;
  if (index === null) problem = "model_index.json is missing or not valid JSON";
  else if (kind === null)
    problem = `pipeline class ${pipelineClass ?? "(none)"} is not a Stable Diffusion pipeline`;
  else if (kind === "sdxl" && Array.isArray(index.text_encoder) && index.text_encoder[0] === null)
    problem =
      "SDXL refiner folders (no first text encoder) are not supported: sdx runs SDXL base text-to-image";
  else if (missing.length > 0) problem = `incomplete ONNX export: missing ${missing.join(", ")}`;

  const vaeBlocks = Array.isArray(vaeConfig?.block_out_channels) ? vaeConfig.block_out_channels.length : 4;
  const unetBlocks = Array.isArray(unetConfig?.block_out_channels) ? unetConfig.block_out_channels.length : 4;
  const vaeScale = 2 ** (vaeBlocks - 1);
  const sampleSize = typeof unetConfig?.sample_size === "number" ? unetConfig.sample_size : null;
  return {
    name,
    path,
    format: "onnx",
    kind,
    pipelineClass,
    sizeBytes: await folderSize(path),
    problem,
    sidecar: null,
    nativeSize: sampleSize !== null ? sampleSize * vaeScale : DEFAULT_NATIVE_SIZE[kind ?? "sd1"],
    sizeMultiple: vaeScale * 2 ** (unetBlocks - 1),
  };
}

/**
 * A single-file checkpoint: the family from its keys, its sidecar, and why it cannot be loaded (a file that
 * is not a Stable Diffusion checkpoint, or a truncated or corrupt one) — never an exception.
 */
export async function inspectCheckpoint(name: string, path: string): Promise<ModelEntry> {
  const entry: ModelEntry = {
    name,
    path,
    format: "safetensors",
    kind: null,
    pipelineClass: null,
    sizeBytes: Bun.file(path).size,
    problem: null,
    nativeSize: DEFAULT_NATIVE_SIZE.sd1,
    // The graphs sdx builds upsample to each skip connection's size, so any multiple of 8 works.
    sizeMultiple: 8,
    sidecar: null,
  };
  try {
    entry.sidecar = await readSidecar(path.replace(/\.safetensors$/, ".json"));
  } catch (e) {
    entry.problem = (e as Error).message;
  }
  try {
    const header = await readSafetensorsHeader(path);
    const kind = detectCheckpointKind(header);
    entry.kind = kind;
    const { predictionType } = await detectPredictionType(header, kind, entry.sidecar);
    entry.nativeSize = kind === "sd2" && predictionType === "v_prediction" ? 768 : DEFAULT_NATIVE_SIZE[kind];
  } catch (e) {
    entry.problem = (e as Error).message;
  }
  return entry;
}

/**
 * Every model folder directly inside `modelsDir`, sorted by name; a `modelsDir` that is itself a model folder
 * holds just that model. A missing directory holds no models.
 */
export async function scanModelsDir(modelsDir: string): Promise<ModelEntry[]> {
  if (await pathExists(join(modelsDir, "model_index.json"))) {
    return [await inspectModelFolder(basename(resolve(modelsDir)), modelsDir)];
  }
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(modelsDir, { withFileTypes: true });
  } catch {
    return [];
  }
  const models: ModelEntry[] = [];
  const folderNames = new Set(entries.filter((e) => e.isDirectory()).map((e) => e.name));
  for (const entry of entries) {
    if (entry.name.startsWith(".")) continue;
    const path = join(modelsDir, entry.name);
    if (entry.isDirectory()) {
      if (await pathExists(join(path, "model_index.json")))
        models.push(await inspectModelFolder(entry.name, path));
    } else if (entry.isFile() && entry.name.endsWith(".safetensors")) {
      const stem = entry.name.slice(0, -".safetensors".length);
      // A folder of the same name keeps the short name; the checkpoint is then known by its file name.
      models.push(await inspectCheckpoint(folderNames.has(stem) ? entry.name : stem, path));
    }
  }
  return models.sort((a, b) => a.name.localeCompare(b.name));
}
