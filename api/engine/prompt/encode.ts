/**
 * The embedding side of prompt handling, independent of the inference runtime: chunks of a
 * {@link TokenizedPrompt} go through a caller-supplied text encoder, AUTOMATIC1111's emphasis is applied per chunk
 * and the chunks are joined into one conditioning tensor.
 */
import type { TokenizedPrompt } from "./chunks.ts";

/** Batch of 77-id rows → text-encoder hidden states `[n, 77, D]` (row-major float32). */
export type EncodeChunks = (
  ids: number[][],
) => Promise<{ data: Float32Array; dims: [number, number, number] }>;

/** A prompt's conditioning: `[1, 77·k, D]`, row-major float32. */
export interface Conditioning {
  data: Float32Array;
  dims: [1, number, number];
}

/**
 * `FrozenCLIPEmbedderWithCustomWordsBase.forward` + `process_tokens` with A1111's default emphasis
 * (`sd_emphasis.EmphasisOriginal.after_transformers`), for one prompt:
 *
 *     original_mean = z.mean(); z = z * multipliers[..., None]; new_mean = z.mean(); z = z * (original_mean / new_mean)
 *
 * applied to each chunk's `[77, D]` hidden states on its own, then `torch.hstack` of the chunks in order.
 * All chunks go to `encode` in one call (the callback may split the batch; rows are independent).
 *
 * Arithmetic is float32 as in torch: the multipliers are rounded to float32 (`torch.asarray` of Python floats),
 * every product, the ratio of the means and each mean are rounded to float32. The means are summed in float64
 * before rounding, where torch sums in float32 (cascade/pairwise sums on CPU, tree reductions on GPU), so a mean
 * may differ from torch's by an ulp or so. A chunk whose weights are all 1 (in float32) is copied unchanged:
 * A1111's arithmetic leaves such a chunk bit-identical too (`z·1 = z`, the ratio is exactly 1) except when its
 * mean is 0 or not finite, where A1111 would produce NaN. Diffusers-mode prompts are therefore exactly the
 * encoder's output.
 */
export async function encodePrompt(encode: EncodeChunks, prompt: TokenizedPrompt): Promise<Conditioning> {
  const k = prompt.chunks.length;
  if (k === 0) throw new RangeError("a tokenized prompt has at least one chunk");
  const seqLen = prompt.chunks[0]?.ids.length ?? 0;
  for (const chunk of prompt.chunks) {
    if (chunk.ids.length !== seqLen || chunk.weights.length !== seqLen) {
      throw new RangeError("every chunk must have the same number of ids and weights");
    }
  }

  const out = await encode(prompt.chunks.map((c) => c.ids));
  const [n, t, width] = out.dims;
  if (n !== k || t !== seqLen || !Number.isInteger(width) || width <= 0) {
    throw new RangeError(
      `text encoder returned dims [${out.dims.join(", ")}], expected [${k}, ${seqLen}, D]`,
    );
  }
  const chunkSize = seqLen * width;
  if (out.data.length !== k * chunkSize) {
    throw new RangeError(`text encoder returned ${out.data.length} values for dims [${out.dims.join(", ")}]`);
  }

  const result = new Float32Array(k * chunkSize);
  for (const [i, chunk] of prompt.chunks.entries()) {
    const z = out.data.subarray(i * chunkSize, (i + 1) * chunkSize);
    const target = result.subarray(i * chunkSize, (i + 1) * chunkSize);
    if (chunk.weights.every((w) => Math.fround(w) === 1)) target.set(z);
    else applyEmphasis(z, chunk.weights, width, target);
  }
  return { data: result, dims: [1, k * seqLen, width] };
}

/** `z.mean()` of a float32 tensor, rounded to float32 (summed in float64). */
function mean32(values: Float32Array): number {
  let sum = 0;
  for (let j = 0; j < values.length; j++) sum += values[j] as number;
  return Math.fround(sum / values.length);
}

/**
 * `EmphasisOriginal.after_transformers` on one chunk `z` `[T, D]`: scale each position by its weight, then
 * restore the original mean. Writes into `out` (a Float32Array, so each store rounds to float32; a product of
 * two float32 values is exact in float64, so storing it gives torch's float32 product).
 */
function applyEmphasis(z: Float32Array, weights: readonly number[], width: number, out: Float32Array): void {
  const originalMean = mean32(z);
  for (const [pos, w] of weights.entries()) {
    const w32 = Math.fround(w);
    const base = pos * width;
    for (let d = 0; d < width; d++) out[base + d] = (z[base + d] as number) * w32;
  }
  const newMean = mean32(out);
  const ratio = Math.fround(originalMean / newMean);
  for (let j = 0; j < out.length; j++) out[j] = (out[j] as number) * ratio;
}

/**
 * `sd_samplers_cfg_denoiser.CFGDenoiser.pad_cond_uncond` / `pad_cond`: when the prompt and negative prompt have
 * different lengths, the shorter one gets `(longer − shorter) / 77` copies of the empty prompt's conditioning
 * (`shared.sd_model.cond_stage_model_empty_prompt`, the encoded `""`) appended along the sequence axis.
 * Returns `[a, b]` in the order given; an input already at the common length is returned as is.
 *
 * Note that this is A1111's opt-in setting "Pad prompt/negative prompt" (`opts.pad_cond_uncond`, default off);
 * by default A1111 runs the UNet separately for cond and uncond when their lengths differ.
 */
export function padToSameLength(
  a: Conditioning,
  b: Conditioning,
  empty: Conditioning,
): [Conditioning, Conditioning] {
  const width = a.dims[2];
  if (b.dims[2] !== width || empty.dims[2] !== width) {
    throw new RangeError(
      `conditionings differ in width: ${a.dims[2]}, ${b.dims[2]}, empty ${empty.dims[2]} (must be equal)`,
    );
  }
  for (const c of [a, b, empty]) {
    if (c.data.length !== c.dims[1] * width) {
      throw new RangeError(`conditioning data holds ${c.data.length} values for dims [${c.dims.join(", ")}]`);
    }
  }
  const emptyLen = empty.dims[1];
  const diff = a.dims[1] - b.dims[1];
  if (diff === 0) return [a, b];
  if (emptyLen <= 0 || diff % emptyLen !== 0) {
    throw new RangeError(
      `length difference ${Math.abs(diff)} is not a multiple of the empty prompt's length ${emptyLen}`,
    );
  }
  const pad = (c: Conditioning, repeats: number): Conditioning => {
    const data = new Float32Array(c.data.length + repeats * empty.data.length);
    data.set(c.data);
    for (let r = 0; r < repeats; r++) data.set(empty.data, c.data.length + r * empty.data.length);
    return { data, dims: [1, c.dims[1] + repeats * emptyLen, width] };
  };
  return diff > 0 ? [a, pad(b, diff / emptyLen)] : [pad(a, -diff / emptyLen), b];
}
