/**
 * Turns a single-file checkpoint into ONNX graphs onnxruntime can load, once per file version.
 *
 * onnxruntime accepts external-data locations only relative to the graph file's own folder (no absolute paths,
 * no `..`, no symlinks leaving it), so each checkpoint gets a cache folder beside it,
 * `.sdx-cache/<name>-<precision>[-mha][-lean]-<key>/`, holding a hard link to the .safetensors file (no copy of the
 * weights) and the graphs that point into it, plus the tokenizer and scheduler configuration diffusers would use
 * for the family. The key hashes the file's size, mtime and header, the graph version, the precision, the
 * attention variant ("-mha": onnxruntime's fused MultiHeadAttention, see attention_variant.ts) and the weight
 * residency ("-lean": float16 weights kept stored, see weight_residency.ts): a changed file gets new graphs, and graphs of
 * different variants never share a folder.
 * The folder is built under a temporary name and renamed into place, so a half-built cache is never used.
 */

import { createHash, randomBytes } from "node:crypto";
import { copyFile, link, mkdir, readdir, rename, rm, stat, utimes } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { ModelKind } from "../../../contract/index.ts";
import { writeFileAtomic } from "../../../lib/fs/atomic.ts";
import { cacheDirOf } from "../model_folder.ts";
import type { GraphBuilder } from "../onnx/graph_builder.ts";
import { readSafetensorsHeader, type SafetensorsHeader } from "../safetensors.ts";
import type { SchedulerConfig } from "../schedulers/scheduler.ts";
import { type AttentionVariant, DEFAULT_ATTENTION } from "./attention_variant.ts";
import { buildClipGraph, detectClip } from "./clip_graph.ts";
import {
  type CheckpointPredictionType,
  detectKind,
  detectPredictionType,
  readSidecar,
  TEXT_ENCODER_PREFIXES,
} from "./detect.ts";
import { UNET_PREFIX, VAE_PREFIX } from "./keys.ts";
import { buildUNetGraph, detectUNet } from "./unet_graph.ts";
import { buildVaeDecoderGraph, buildVaeEncoderGraph, detectVae } from "./vae_graph.ts";
import { textEncoderKeepStored, unetKeepStored, type WeightResidency } from "./weight_residency.ts";
import { CheckpointWeights, type ComputePrecision } from "./weights.ts";

/**
 * Bump when the graphs sdx writes change (the LoRA-ready UNet and adapter-set graphs included: they live in the
 * same cache folder, whose name carries this version), so caches built by older versions are rebuilt.
 */
export const GRAPH_VERSION = 5;

/** The cache folder's hard link (or copy) of the .safetensors file, which the graphs' external data points into. */
export const WEIGHTS_FILE = "weights.safetensors";
const MANIFEST_FILE = "sdx_pipeline.json";
const BUNDLED_TOKENIZER = join(import.meta.dir, "clip_tokenizer");

/** Everything the pipeline loader needs, for an optimum folder and a built checkpoint alike. */
export interface PipelineFiles {
  textEncoder: string;
  unet: string;
  vaeDecoder: string;
  vaeEncoder: string | null;
  tokenizerDir: string;
  /** SDXL's second text encoder and tokenizer, and model_index.json's force_zeros_for_empty_prompt. */
  xl: { textEncoder2: string; tokenizer2Dir: string; forceZerosForEmptyPrompt: boolean } | null;
  schedulerConfig: SchedulerConfig;
  vae: { scalingFactor: number; blocks: number; sampleSize: number };
}

interface Manifest {
  graphVersion: number;
  attention: AttentionVariant;
  kind: ModelKind;
  predictionType: CheckpointPredictionType;
  files: PipelineFiles;
  buildMs: number;
}

/**
 * The scheduler configuration each family's reference repository ships (the keys of its
 * scheduler_config.json), which diffusers' single-file loader uses too.
 */
function schedulerConfigFor(kind: ModelKind, predictionType: CheckpointPredictionType): SchedulerConfig {
  const common = {
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: "scaled_linear",
    num_train_timesteps: 1000,
    set_alpha_to_one: false,
    skip_prk_steps: true,
    steps_offset: 1,
    clip_sample: false,
    trained_betas: null,
  } as const;
  if (kind === "sdxl") {
    return {
      _class_name: "EulerDiscreteScheduler",
      ...common,
      interpolation_type: "linear",
      prediction_type: predictionType,
      sample_max_value: 1.0,
      timestep_spacing: "leading",
      use_karras_sigmas: false,
    };
  }
  if (kind === "sd2") return { _class_name: "DDIMScheduler", ...common, prediction_type: predictionType };
  return {
    _class_name: "PNDMScheduler",
    ...common,
    ...(predictionType === "v_prediction" ? { prediction_type: predictionType } : {}),
  };
}

/** SD 1.x tokenizers pad with <|endoftext|>; the OpenCLIP encoders (SD 2.x, SDXL's second) with "!" (id 0). */
async function writeTokenizer(dir: string, pad: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  for (const file of ["vocab.json", "merges.txt"])
    await copyFile(join(BUNDLED_TOKENIZER, file), join(dir, file));
  const token = (content: string) => ({
    content,
    lstrip: false,
    rstrip: false,
    single_word: false,
    normalized: true,
  });
  await writeFileAtomic(
    join(dir, "special_tokens_map.json"),
    JSON.stringify({
      bos_token: token("<|startoftext|>"),
      eos_token: token("<|endoftext|>"),
      unk_token: token("<|endoftext|>"),
      pad_token: pad,
    }),
  );
  await writeFileAtomic(
    join(dir, "tokenizer_config.json"),
    JSON.stringify({ model_max_length: 77, do_lower_case: true }),
  );
}

/**
 * A cache folder's key for a .safetensors file: the graph version, the `variant` parts (what else shapes the
 * graphs), the file's size and mtime, and its header; 16 hex digits.
 */
export async function fileCacheKey(
  path: string,
  header: SafetensorsHeader,
  variant: readonly string[],
): Promise<string> {
  const info = await stat(path);
  const headerBytes = await Bun.file(path).slice(0, header.dataOffset).arrayBuffer();
  return createHash("sha256")
    .update(`${[GRAPH_VERSION, ...variant, info.size, info.mtimeMs].join(":")}:`)
    .update(new Uint8Array(headerBytes))
    .digest("hex")
    .slice(0, 16);
}

function cacheKey(
  path: string,
  header: SafetensorsHeader,
  precision: ComputePrecision,
  attention: AttentionVariant,
  residency: WeightResidency,
): Promise<string> {
  return fileCacheKey(path, header, [precision, attention, residency]);
}

/** A hard link keeps one copy of the weights; where the file system refuses one, the file is copied. */
export async function linkWeights(source: string, target: string): Promise<"linked" | "copied"> {
  try {
    await link(source, target);
    return "linked";
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EXDEV" && code !== "EPERM" && code !== "ENOTSUP" && code !== "EMLINK") throw e;
    await copyFile(source, target);
    return "copied";
  }
}

export async function writeGraph(path: string, graph: GraphBuilder): Promise<void> {
  await writeFileAtomic(path, graph.toBytes());
}

/**
 * Removes the cache folders `<stem>-<16 hex digits>` in `cacheRoot` other than `keep`: caches of earlier versions
 * of a file are dead weight (their hard links pin the old file's blocks).
 */
export async function removeStaleCaches(cacheRoot: string, stem: string, keep: string): Promise<void> {
  const ours = new RegExp(`^${stem.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-[0-9a-f]{16}$`);
  for (const entry of await readdir(cacheRoot)) {
    if (ours.test(entry) && entry !== basename(keep)) {
      await rm(join(cacheRoot, entry), { recursive: true, force: true });
    }
  }
}

/**
 * Fills the cache folder `dir` (`<cacheRoot>/<stem>-<key>`) through `fill` under a temporary name, then renames it
 * into place and removes the stem's older folders, so a half-built folder is never used. Another process may
 * finish `dir` meanwhile: when `complete(dir)` says so, that folder is kept (its graphs are as good as ours) and
 * false is returned.
 */
export async function buildCacheFolder(
  cacheRoot: string,
  stem: string,
  dir: string,
  fill: (tmp: string) => Promise<void>,
  complete: (dir: string) => Promise<boolean>,
): Promise<boolean> {
  await mkdir(cacheRoot, { recursive: true });
  const tmp = join(cacheRoot, `.tmp-${stem}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp);
  try {
    await fill(tmp);
    if (await complete(dir)) {
      await rm(tmp, { recursive: true, force: true });
      return false;
    }
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    await removeStaleCaches(cacheRoot, stem, dir);
    return true;
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

export interface PrepareOptions {
  precision?: ComputePrecision;
  /** How the UNet computes attention (attention_variant.ts); default DEFAULT_ATTENTION. */
  attention?: AttentionVariant;
  /** Which weights onnxruntime keeps as float32 (weight_residency.ts); default "folded". Only float32 graphs differ. */
  residency?: WeightResidency;
  log?: (line: string) => void;
}

export interface PreparedCheckpoint {
  files: PipelineFiles;
  kind: ModelKind;
  reused: boolean;
  buildMs: number;
  attention: AttentionVariant;
  /** What adapter graphs are built from (`buildAdapterGraphs`). */
  build: CheckpointBuild;
}

/** A built checkpoint: its cache folder (which holds the weights' link) and how its graphs were made. */
export interface CheckpointBuild {
  dir: string;
  checkpointPath: string;
  kind: ModelKind;
  precision: ComputePrecision;
  attention: AttentionVariant;
  residency: WeightResidency;
}

type GraphName = "text_encoder" | "text_encoder_2" | "unet";

/**
 * The text encoder(s) and UNet graphs of a checkpoint, written into `dir` as `<name><suffix>.onnx`; `only`
 * limits which are written (an adapter set rebuilds just the components it changes).
 */
async function writeModelGraphs(
  dir: string,
  weights: CheckpointWeights,
  kind: ModelKind,
  options: GraphOptions & { loraSlots?: boolean },
  suffix = "",
  only?: ReadonlySet<GraphName>,
): Promise<void> {
  const wanted = (name: GraphName) => only === undefined || only.has(name);
  const textWeights = weights.withKeepStored(textEncoderKeepStored(options.residency));
  const [encoder, encoder2] = TEXT_ENCODER_PREFIXES[kind];
  if (wanted("text_encoder")) {
    await writeGraph(
      join(dir, `text_encoder${suffix}.onnx`),
      buildClipGraph(textWeights, detectClip(textWeights, encoder.prefix)),
    );
  }
  let pooledDim: number | null = null;
  if (encoder2) {
    const clip2 = detectClip(weights, encoder2.prefix);
    pooledDim = clip2.projectionDim;
    if (wanted("text_encoder_2"))
      await writeGraph(join(dir, `text_encoder_2${suffix}.onnx`), buildClipGraph(textWeights, clip2));
  }
  if (wanted("unet")) {
    // SDXL's label_emb takes encoder 2's pooled embedding (its projection width) followed by the time ids.
    const unetConfig = detectUNet(weights, UNET_PREFIX, {
      ...(options.headsPerLevel ? { headsPerLevel: options.headsPerLevel } : {}),
      ...(pooledDim !== null ? { admPooledDim: pooledDim } : {}),
    });
    await writeGraph(
      join(dir, `unet${suffix}.onnx`),
      buildUNetGraph(weights.withKeepStored(unetKeepStored(unetConfig, options.residency)), unetConfig, {
        attention: options.attention,
        ...(options.loraSlots ? { loraSlots: true } : {}),
      }),
    );
  }
}

interface GraphOptions {
  attention: AttentionVariant;
  residency: WeightResidency;
  headsPerLevel?: number[];
}

/** How a built checkpoint's graphs are made again: its variants and its sidecar's heads per level. */
async function graphOptions(build: CheckpointBuild): Promise<GraphOptions> {
  const sidecar = await readSidecar(build.checkpointPath.replace(/\.safetensors$/, ".json"));
  const heads = sidecar?.unet_attention_heads;
  return {
    attention: build.attention,
    residency: build.residency,
    ...(heads ? { headsPerLevel: heads } : {}),
  };
}

/** Adapter sets whose graphs stay in a checkpoint's cache folder; older ones are deleted. */
const ADAPTER_SETS_KEPT = 3;

/** The graphs of an adapter set: a component's path, or null where the set leaves it as the checkpoint has it. */
export type AdapterGraphs = Record<GraphName, string | null>;

/**
 * The checkpoint's text encoder(s) and UNet with `overrides` in place of some weights (an adapter set named by
 * `key`), beside its own graphs: `adapters-<key>.bin` holds the float32 overrides, `<component>.<key>.onnx` the
 * graphs that read them (only the components the overrides touch), `adapters-<key>.json` marks a complete set.
 * Reused when present; the oldest sets beyond a few are deleted.
 */
export async function buildAdapterGraphs(
  build: CheckpointBuild,
  overrides: ReadonlyMap<string, { shape: number[]; data: Float32Array }>,
  key: string,
): Promise<AdapterGraphs> {
  const [encoder, encoder2] = TEXT_ENCODER_PREFIXES[build.kind];
  const touched = new Set<GraphName>();
  for (const name of overrides.keys()) {
    if (name.startsWith(UNET_PREFIX)) touched.add("unet");
    else if (name.startsWith(encoder.prefix)) touched.add("text_encoder");
    else if (encoder2 && name.startsWith(encoder2.prefix)) touched.add("text_encoder_2");
  }
  const graphs: AdapterGraphs = { text_encoder: null, text_encoder_2: null, unet: null };
  for (const name of touched) graphs[name] = join(build.dir, `${name}.${key}.onnx`);
  const marker = join(build.dir, `adapters-${key}.json`);
  if (await Bun.file(marker).exists()) {
    const now = new Date();
    await utimes(marker, now, now); // most recently used: the last to be pruned
    return graphs;
  }

  const location = `adapters-${key}.bin`;
  const entries = new Map<string, { offset: number; length: number; shape: number[] }>();
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, o] of overrides) {
    const bytes = new Uint8Array(o.data.buffer, o.data.byteOffset, o.data.byteLength);
    entries.set(name, { offset, length: bytes.byteLength, shape: o.shape });
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  await writeFileAtomic(join(build.dir, location), Buffer.concat(chunks));
  const header = await readSafetensorsHeader(join(build.dir, WEIGHTS_FILE));
  const weights = new CheckpointWeights(header, WEIGHTS_FILE, build.precision, { location, entries });
  await writeModelGraphs(build.dir, weights, build.kind, await graphOptions(build), `.${key}`, touched);
  await writeFileAtomic(marker, JSON.stringify({ key, components: [...touched] }));
  await pruneAdapterSets(build.dir);
  return graphs;
}

/**
 * The checkpoint's UNet with a LoRA branch on every Linear and Conv whose factors are graph inputs
 * (unet_graph.ts `loraSlots`), `unet.lora.onnx` beside its own graphs: one session serves every LoRA set.
 * Written on first use, reused after.
 */
export async function buildLoraUNetGraph(build: CheckpointBuild): Promise<string> {
  const path = join(build.dir, "unet.lora.onnx");
  if (await Bun.file(path).exists()) return path;
  const header = await readSafetensorsHeader(join(build.dir, WEIGHTS_FILE));
  const weights = new CheckpointWeights(header, WEIGHTS_FILE, build.precision);
  const options = { ...(await graphOptions(build)), loraSlots: true };
  await writeModelGraphs(build.dir, weights, build.kind, options, ".lora", new Set(["unet"]));
  return path;
}

/** Deletes all but the newest adapter sets of a cache folder (their override files are large). */
async function pruneAdapterSets(dir: string): Promise<void> {
  const markers: { key: string; mtime: number }[] = [];
  for (const entry of await readdir(dir)) {
    const m = /^adapters-([0-9a-f]+)\.json$/.exec(entry);
    if (m?.[1]) markers.push({ key: m[1], mtime: (await stat(join(dir, entry))).mtimeMs });
  }
  markers.sort((a, b) => b.mtime - a.mtime);
  for (const { key } of markers.slice(ADAPTER_SETS_KEPT)) {
    for (const entry of await readdir(dir)) {
      if (
        entry === `adapters-${key}.json` ||
        entry === `adapters-${key}.bin` ||
        entry.endsWith(`.${key}.onnx`)
      ) {
        await rm(join(dir, entry), { force: true });
      }
    }
  }
}

/**
 * Builds (or reuses) the cache folder of a checkpoint and returns the files to load. `precision` is what the
 * text encoder and UNet compute in (float16 for CUDA: softmax and group-norm statistics stay float32 inside
 * the graphs); the VAE always computes in float32, since SD VAEs can overflow float16.
 */
export async function prepareCheckpoint(
  checkpointPath: string,
  options: PrepareOptions = {},
): Promise<PreparedCheckpoint> {
  const precision = options.precision ?? "float32";
  const attention = options.attention ?? DEFAULT_ATTENTION;
  const log = options.log ?? (() => undefined);
  const header = await readSafetensorsHeader(checkpointPath);
  const name = basename(checkpointPath).replace(/\.safetensors$/, "");
  const cacheRoot = cacheDirOf(dirname(checkpointPath));
  // Float16 graphs compute in the stored precision: nothing to keep apart.
  const residency = precision === "float16" ? "folded" : (options.residency ?? "folded");
  const key = await cacheKey(checkpointPath, header, precision, attention, residency);
  const tag = `${precision === "float16" ? "fp16" : "fp32"}${attention === "fused" ? "-mha" : ""}${residency === "lean" ? "-lean" : ""}`;
  const dir = join(cacheRoot, `${name}-${tag}-${key}`);
  const manifestFile = Bun.file(join(dir, MANIFEST_FILE));
  if (await manifestFile.exists()) {
    const manifest = (await manifestFile.json()) as Manifest;
    if (manifest.graphVersion === GRAPH_VERSION) {
      const build = { dir, checkpointPath, kind: manifest.kind, precision, attention, residency };
      return { files: manifest.files, kind: manifest.kind, reused: true, buildMs: 0, attention, build };
    }
  }

  const t0 = performance.now();
  const kind = detectKind(header);
  const sidecar = await readSidecar(checkpointPath.replace(/\.safetensors$/, ".json"));
  const { predictionType } = await detectPredictionType(header, kind, sidecar);

  await mkdir(cacheRoot, { recursive: true });
  const tmp = join(cacheRoot, `.tmp-${name}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmp);
  try {
    const how = await linkWeights(checkpointPath, join(tmp, WEIGHTS_FILE));
    if (how === "copied")
      log(`sdx: ${checkpointPath}: no hard link possible here, so the weights were copied into the cache`);
    const weights = new CheckpointWeights(header, WEIGHTS_FILE, precision);
    // The VAE computes in float32 whatever the precision: SD VAEs (SDXL's above all) overflow float16.
    const vaeWeights = new CheckpointWeights(header, WEIGHTS_FILE, "float32");
    const sidecarHeads = sidecar?.unet_attention_heads;
    const encoder2 = TEXT_ENCODER_PREFIXES[kind][1];
    await writeModelGraphs(tmp, weights, kind, {
      attention,
      residency,
      ...(sidecarHeads ? { headsPerLevel: sidecarHeads } : {}),
    });
    if (encoder2) await writeTokenizer(join(tmp, "tokenizer_2"), "!");
    const vae = detectVae(vaeWeights, VAE_PREFIX);
    await writeGraph(join(tmp, "vae_decoder.onnx"), buildVaeDecoderGraph(vaeWeights, vae));
    const hasEncoder = vaeWeights.has(`${VAE_PREFIX}encoder.conv_in.weight`);
    if (hasEncoder) await writeGraph(join(tmp, "vae_encoder.onnx"), buildVaeEncoderGraph(vaeWeights, vae));
    // SD 2.x's OpenCLIP tokenizer pads with "!"; CLIP-L's (SD 1.x, SDXL's first encoder) with <|endoftext|>.
    await writeTokenizer(join(tmp, "tokenizer"), kind === "sd2" ? "!" : "<|endoftext|>");

    const files: PipelineFiles = {
      textEncoder: join(dir, "text_encoder.onnx"),
      unet: join(dir, "unet.onnx"),
      vaeDecoder: join(dir, "vae_decoder.onnx"),
      vaeEncoder: hasEncoder ? join(dir, "vae_encoder.onnx") : null,
      tokenizerDir: join(dir, "tokenizer"),
      xl: encoder2
        ? {
            textEncoder2: join(dir, "text_encoder_2.onnx"),
            tokenizer2Dir: join(dir, "tokenizer_2"),
            forceZerosForEmptyPrompt: true,
          }
        : null,
      schedulerConfig: schedulerConfigFor(kind, predictionType),
      vae: {
        // SDXL's VAE was trained with latents scaled by 0.13025 (diffusers' AutoencoderKL config for SDXL).
        scalingFactor: kind === "sdxl" ? 0.13025 : 0.18215,
        blocks: vae.chMult.length,
        sampleSize: kind === "sdxl" ? 1024 : kind === "sd2" && predictionType === "v_prediction" ? 768 : 512,
      },
    };
    const buildMs = performance.now() - t0;
    const manifest: Manifest = {
      graphVersion: GRAPH_VERSION,
      attention,
      kind,
      predictionType,
      files,
      buildMs,
    };
    await writeFileAtomic(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
    await removeStaleCaches(cacheRoot, `${name}-${tag}`, dir);
    return {
      files,
      kind,
      reused: false,
      buildMs,
      attention,
      build: { dir, checkpointPath, kind, precision, attention, residency },
    };
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}
