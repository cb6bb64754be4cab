/**
 * How the graphs sdx builds compute attention.
 *
 * - "plain": softmax(q·kᵀ/√d)·v spelled out with MatMul, Softmax and Transpose (opset 17), which every execution
 *   provider runs; the scores [batch, heads, tokens, tokens] are materialized.
 * - "fused": onnxruntime's contrib operator `MultiHeadAttention` (domain com.microsoft, operator set 1), which the
 *   CUDA provider runs with flash / memory-efficient attention kernels (no scores in memory), the WebGPU provider
 *   with its own shaders (contrib_ops/webgpu/bert), and the CPU provider
 *   also implements (float32; float16 through inserted casts), so the fused graph can be checked on a CPU.
 *
 * MultiHeadAttention's contract as used here (onnxruntime docs/ContribOperators.md): inputs `query`
 * [batch, sequence, hidden], `key` [batch, kv_sequence, hidden], `value` [batch, kv_sequence, v_hidden] — the
 * projections already applied, heads not split — and output [batch, sequence, v_hidden] with the heads merged
 * back; attribute `num_heads` (required), `scale` (default 1/√head_size; given explicitly here). The optional
 * `bias`, masks and past/present inputs are left out (SD's to_q/to_k/to_v have no bias).
 *
 * Only the UNet's transformer blocks (self- and cross-attention) take the fused form. The CLIP text encoders stay
 * plain: their causal mask would need MHA's `unidirectional` attribute, which not every kernel accepts (the WebGPU
 * kernel refuses it, the CUDA fast paths gained it late), and over 77 tokens attention is a negligible share of a
 * text encoder that runs once per request. The VAE's single-head mid-block attention stays plain too.
 */
import type { GraphBuilder } from "../onnx/graph_builder.ts";

export const ATTENTION_VARIANTS = ["plain", "fused"] as const;
export type AttentionVariant = (typeof ATTENTION_VARIANTS)[number];

/** The domain and operator-set version a fused graph imports. */
export const CONTRIB_DOMAIN = "com.microsoft";
export const CONTRIB_OPSET = 1;

export function isAttentionVariant(value: string): value is AttentionVariant {
  return (ATTENTION_VARIANTS as readonly string[]).includes(value);
}

/**
 * The variant every provider gets unless told otherwise: fused. CUDA and WebGPU run it with their own kernels
 * (onnxruntime's WebGPU contrib kernels register MultiHeadAttention for float32 and float16:
 * contrib_ops/webgpu/bert/multihead_attention.cc); on the CPU it is both faster and leaner than the plain form at
 * full size — the plain form materializes SD 1.5's 64×64-latent self-attention scores, 1 GB per call at CFG's
 * batch 2 (`bun run bench cpu`, bench/README.md).
 */
export const DEFAULT_ATTENTION: AttentionVariant = "fused";

/**
 * One com.microsoft MultiHeadAttention node: q [b, s, heads·d], k and v [b, l, heads·d] → [b, s, heads·d]. The
 * graph must import CONTRIB_DOMAIN (GraphBuilder's `extraOpsets`).
 */
export function multiHeadAttention(
  g: GraphBuilder,
  q: string,
  k: string,
  v: string,
  heads: number,
  headDim: number,
): string {
  const [out] = g.node(
    "MultiHeadAttention",
    [q, k, v],
    { num_heads: heads, scale: { f: 1 / Math.sqrt(headDim) } },
    1,
    CONTRIB_DOMAIN,
  );
  return out as string;
}
