/**
 * Which checkpoint weights stay in the file's precision in memory (CheckpointWeights' `keepStored`).
 *
 * - "folded": onnxruntime casts every float16 weight to float32 once, at load (constant folding), and lays out
 *   convolution and matrix weights for its kernels (NCHWc blocks, prepacked matrices). Fastest per step; every
 *   weight is held as float32 — SD 1.5's UNet alone is 3.4 GB — and creating the session takes 20–30 s and a
 *   transient peak of ~1.5× the float32 weights on two cores.
 * - "lean": the weights stay float16 (memory-mapped from the checkpoint, 1.7 GB for SD 1.5's UNet) and are cast in
 *   every call, except those of layers that run at the two highest resolutions: there a weight element is used at
 *   the most positions per call (4096 and 1024 latent pixels at 512², ×4 at 1024²), so the per-call cast and the
 *   lost kernel layouts cost the most, while those layers hold few of the parameters (SD 1.5: 15 %). The text
 *   encoders (77 tokens per call, once per request) keep every weight stored. Sessions load in seconds; a step
 *   costs about 8 % more than "folded" (SD 1.5, 512², 2 CPU cores) for 1.8 GiB less peak memory.
 *
 * Only float32 graphs are concerned: float16 graphs (CUDA, WebGPU with shader-f16) compute in the stored
 * precision, and float32 checkpoints have nothing to cast. The VAE stays folded in both: its layers run at up to
 * 512×512 pixels, where the cast is negligible beside the compute but the layouts are not. Figures: bench/README.md
 * (`bun run bench cpu`).
 */
import type { ExecutionProvider } from "../../../contract/index.ts";
import type { UNetConfig } from "./unet_graph.ts";

export const WEIGHT_RESIDENCIES = ["folded", "lean"] as const;
export type WeightResidency = (typeof WEIGHT_RESIDENCIES)[number];

/** Resolution levels (from the full latent size down) whose UNet layers keep folded weights under "lean". */
export const FOLDED_LEVELS = 2;

/**
 * The residency a provider's float32 graphs get: "lean" on the CPU, where the weights live in the host's memory
 * beside everything else; "folded" on GPUs, whose float32 fallback graphs upload the weights once anyway.
 */
export function residencyForProvider(provider: ExecutionProvider): WeightResidency {
  return provider === "cpu" ? "lean" : "folded";
}

/**
 * The resolution level (0: full latent size) a UNet layer with the LDM key `key` (after the UNet prefix) runs
 * at; null for the embeddings (time_embed, label_emb), which run once per call on a vector.
 * Input blocks: conv_in, then per level its ResBlocks (+ transformers), then a Downsample whose stride-2 conv
 * produces the next level. Output blocks: deepest level first, numResBlocks + 1 each, the last one of every level
 * but the first ending in an Upsample whose conv runs at the level above (`output_blocks.N.{1,2}.conv`).
 */
export function unetLevelOf(config: UNetConfig, key: string): number | null {
  const levels = config.channelMult.length;
  if (key.startsWith("out.")) return 0;
  if (key.startsWith("middle_block.")) return levels - 1;
  const input = /^input_blocks\.(\d+)\.(\d+)\.(op\.)?/.exec(key);
  if (input) {
    let block = Number(input[1]);
    if (block === 0) return 0;
    block -= 1;
    for (let level = 0; level < levels; level++) {
      const count = (config.numResBlocks[level] as number) + (level < levels - 1 ? 1 : 0);
      if (block < count) return input[3] ? level + 1 : level;
      block -= count;
    }
    return null;
  }
  const output = /^output_blocks\.(\d+)\.(\d+)\.(conv\.)?/.exec(key);
  if (output) {
    let block = Number(output[1]);
    for (let level = levels - 1; level >= 0; level--) {
      const count = (config.numResBlocks[level] as number) + 1;
      if (block < count) {
        const upsample = output[3] !== undefined && output[2] !== "0" && level > 0 && block === count - 1;
        return upsample ? level - 1 : level;
      }
      block -= count;
    }
  }
  return null;
}

/** The UNet weights "lean" keeps stored: every layer below the FOLDED_LEVELS highest resolutions. */
export function unetKeepStored(
  config: UNetConfig,
  residency: WeightResidency,
): ((key: string) => boolean) | null {
  if (residency === "folded") return null;
  return (key) => {
    if (!key.startsWith(config.prefix)) return false;
    const level = unetLevelOf(config, key.slice(config.prefix.length));
    return level === null || level >= FOLDED_LEVELS;
  };
}

/** The text encoder weights "lean" keeps stored: all of them. */
export function textEncoderKeepStored(residency: WeightResidency): ((key: string) => boolean) | null {
  return residency === "lean" ? () => true : null;
}
