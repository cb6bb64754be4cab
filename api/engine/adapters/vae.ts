/**
 * Replacement VAE files (AUTOMATIC1111's "SD VAE", e.g. vae-ft-mse-840000-ema-pruned.safetensors): the LDM
 * autoencoder's tensors in a .safetensors file of their own, read in place as the graphs' external data.
 *
 * Accepted layout: LDM's `first_stage_model` keys (`encoder.down.N.block.M…`, `decoder.up.N…`, `quant_conv`,
 * `post_quant_conv`, mid-block attention as [C, C, 1, 1] convs), with or without the `first_stage_model.` prefix
 * (A1111 files carry none; a whole checkpoint carries it). diffusers' AutoencoderKL layout
 * (`decoder.up_blocks.N.resnets.M…`) is refused with a message saying how to convert it.
 *
 * Each file gets a cache folder `<cacheRoot>/<name>-vae-<key>/` like a checkpoint's (build.ts): a hard link (or
 * copy) of the file beside the decoder graph and, when the file has an encoder, the encoder graph. The key hashes
 * the file's size, mtime and header and the graph version; the folder is built under a temporary name and renamed
 * into place, and reused while the file is unchanged. The graphs always compute in float32, as for checkpoints:
 * SD VAEs can overflow float16.
 */
import { basename, join } from "node:path";
import { writeFileAtomic } from "../../../lib/fs/atomic.ts";
import {
  buildCacheFolder,
  fileCacheKey,
  GRAPH_VERSION,
  linkWeights,
  WEIGHTS_FILE,
  writeGraph,
} from "../checkpoint/build.ts";
import { VAE_PREFIX } from "../checkpoint/keys.ts";
import { buildVaeDecoderGraph, buildVaeEncoderGraph, detectVae } from "../checkpoint/vae_graph.ts";
import { CheckpointError, CheckpointWeights } from "../checkpoint/weights.ts";
import { readSafetensorsHeader, type SafetensorsHeader } from "../safetensors.ts";

export interface VaeFileInfo {
  format: "vae_safetensors";
  usable: boolean;
  /** Why the file cannot be used, when it cannot. */
  reason: string | null;
  /** Channels of the latents the decoder takes (4 for SD 1.x/2.x/XL VAEs); 0 when unknown. */
  latentChannels: number;
}

export interface PreparedVae {
  /** The decoder graph (`latent_sample` → `sample`). */
  decoder: string;
  /** The encoder graph (`sample` → `latent_parameters`), or null when the file holds no encoder. */
  encoder: string | null;
  /** The cache key: file size, mtime, header and graph version. */
  key: string;
  /** Whether the graphs were already in the cache. */
  reused: boolean;
  latentChannels: number;
  /** Resolutions of the autoencoder (4: 8 pixels per latent cell). */
  blocks: number;
}

interface Manifest {
  graphVersion: number;
  prefix: string;
  hasEncoder: boolean;
  latentChannels: number;
  blocks: number;
}

const MANIFEST_FILE = "sdx_vae.json";
const DECODER_FILE = "vae_decoder.onnx";
const ENCODER_FILE = "vae_encoder.onnx";
const READABLE_DTYPES = new Set(["F32", "F16", "BF16"]);

/** The file name without .safetensors: the VAE's name in requests and in its cache folder's name. */
export function vaeName(path: string): string {
  return basename(path).replace(/\.safetensors$/i, "");
}

function latentChannelsOf(header: SafetensorsHeader, prefix: string): number {
  const shape = header.tensors.get(`${prefix}decoder.conv_in.weight`)?.shape;
  return shape?.length === 4 ? (shape[1] as number) : 0;
}

/**
 * The key prefix of the LDM autoencoder in the file ("" for A1111 files, "first_stage_model." for checkpoints),
 * or a CheckpointError saying why the file is not one sdx reads.
 */
function ldmVaePrefix(header: SafetensorsHeader): string {
  const has = (key: string) => header.tensors.has(key);
  for (const prefix of ["", VAE_PREFIX]) {
    if (has(`${prefix}decoder.conv_in.weight`) && has(`${prefix}decoder.up.0.block.0.conv1.weight`)) {
      return prefix;
    }
  }
  const diffusers = [...header.tensors.keys()].some((k) =>
    /^(vae\.)?(decoder\.up_blocks|encoder\.down_blocks|decoder\.mid_block)\./.test(k),
  );
  if (diffusers) {
    throw new CheckpointError(
      "the file is in diffusers' AutoencoderKL layout (decoder.up_blocks.…); sdx reads VAE files in the " +
        "LDM/AUTOMATIC1111 layout (decoder.up.N.block.M…, as vae-ft-mse-840000-ema-pruned.safetensors): convert it " +
        "with diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py",
    );
  }
  throw new CheckpointError(
    `the file holds no VAE decoder (no decoder.conv_in.weight, with or without the "${VAE_PREFIX}" prefix)`,
  );
}

/** Checks the autoencoder's tensors without reading any weight, and returns its prefix and structure. */
function checkVae(header: SafetensorsHeader) {
  const prefix = ldmVaePrefix(header);
  for (const [key, info] of header.tensors) {
    if (key.startsWith(`${prefix}encoder.`) || key.startsWith(`${prefix}decoder.`)) {
      if (!READABLE_DTYPES.has(info.dtype))
        throw new CheckpointError(`tensor ${key} is ${info.dtype}; sdx reads F32, F16 and BF16 weights`);
    }
  }
  const config = detectVae(new CheckpointWeights(header, WEIGHTS_FILE, "float32"), prefix);
  return { prefix, config, hasEncoder: header.tensors.has(`${prefix}encoder.conv_in.weight`) };
}

/** What a VAE file is, from its header alone. A file that is not a readable .safetensors file is not usable. */
export async function inspectVae(path: string): Promise<VaeFileInfo> {
  let header: SafetensorsHeader;
  try {
    header = await readSafetensorsHeader(path);
  } catch (e) {
    return { format: "vae_safetensors", usable: false, reason: (e as Error).message, latentChannels: 0 };
  }
  try {
    const { prefix } = checkVae(header);
    return {
      format: "vae_safetensors",
      usable: true,
      reason: null,
      latentChannels: latentChannelsOf(header, prefix),
    };
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    const fallback = Math.max(latentChannelsOf(header, ""), latentChannelsOf(header, VAE_PREFIX));
    return { format: "vae_safetensors", usable: false, reason: e.message, latentChannels: fallback };
  }
}

/** Builds in flight, by cache folder, so concurrent calls for one file build it once. */
const building = new Map<string, Promise<PreparedVae>>();

function prepared(dir: string, key: string, manifest: Manifest, reused: boolean): PreparedVae {
  return {
    decoder: join(dir, DECODER_FILE),
    encoder: manifest.hasEncoder ? join(dir, ENCODER_FILE) : null,
    key,
    reused,
    latentChannels: manifest.latentChannels,
    blocks: manifest.blocks,
  };
}

async function readManifest(dir: string): Promise<Manifest | null> {
  const file = Bun.file(join(dir, MANIFEST_FILE));
  if (!(await file.exists())) return null;
  const manifest = (await file.json()) as Manifest;
  return manifest.graphVersion === GRAPH_VERSION ? manifest : null;
}

/**
 * Builds (or reuses) the ONNX graphs of a VAE file in `<cacheRoot>/<name>-vae-<key>/`. A CheckpointError says
 * why a file cannot be used.
 */
export async function prepareVae(path: string, cacheRoot: string): Promise<PreparedVae> {
  const header = await readSafetensorsHeader(path);
  const name = vaeName(path);
  const key = await fileCacheKey(path, header, ["vae", "float32"]);
  const dir = join(cacheRoot, `${name}-vae-${key}`);
  const existing = await readManifest(dir);
  if (existing) return prepared(dir, key, existing, true);
  const pending = building.get(dir);
  if (pending) return pending;
  const build = buildVae(path, header, cacheRoot, dir, key).finally(() => building.delete(dir));
  building.set(dir, build);
  return build;
}

async function buildVae(
  path: string,
  header: SafetensorsHeader,
  cacheRoot: string,
  dir: string,
  key: string,
): Promise<PreparedVae> {
  const { prefix, config, hasEncoder } = checkVae(header);
  const manifest: Manifest = {
    graphVersion: GRAPH_VERSION,
    prefix,
    hasEncoder,
    latentChannels: config.zChannels,
    blocks: config.chMult.length,
  };
  const built = await buildCacheFolder(
    cacheRoot,
    `${vaeName(path)}-vae`,
    dir,
    async (tmp) => {
      await linkWeights(path, join(tmp, WEIGHTS_FILE));
      const weights = new CheckpointWeights(header, WEIGHTS_FILE, "float32");
      await writeGraph(join(tmp, DECODER_FILE), buildVaeDecoderGraph(weights, config));
      if (hasEncoder) await writeGraph(join(tmp, ENCODER_FILE), buildVaeEncoderGraph(weights, config));
      await writeFileAtomic(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
    },
    async (d) => (await readManifest(d)) !== null,
  );
  return built
    ? prepared(dir, key, manifest, false)
    : prepared(dir, key, (await readManifest(dir)) as Manifest, true);
}
