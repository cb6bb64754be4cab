/**
 * CLIP text encoders as ONNX graphs built straight from a single-file checkpoint's tensors (no conversion: each
 * weight is an external-data reference into the .safetensors file). Two key layouts are read:
 *
 * - "hf": transformers' CLIPTextModel (`<prefix>text_model.embeddings.*`, `encoder.layers.N.self_attn.q_proj`, …),
 *   as SD1's `cond_stage_model.transformer.` and SDXL's `conditioner.embedders.0.transformer.` store it;
 * - "openclip": OpenCLIP's TextTransformer (`<prefix>token_embedding.weight`, `positional_embedding`,
 *   `transformer.resblocks.N.attn.in_proj_weight` with q, k, v fused, `ln_final`, `text_projection` stored
 *   [width, projection]), as SD2's `cond_stage_model.model.` and SDXL's `conditioner.embedders.1.model.` do.
 *
 * The graph has optimum's interface for a CLIP text export: `input_ids` int64 [batch, sequence] →
 * `last_hidden_state`, `pooler_output`, `text_embeds` (when the checkpoint has a projection) and every
 * `hidden_states.N`, so that clip skip can pick any layer.
 */
import { elementTypeCode } from "../onnx/dtypes.ts";
import { GraphBuilder } from "../onnx/graph_builder.ts";
import { CheckpointError, type CheckpointWeights } from "./weights.ts";

export interface ClipConfig {
  layout: "hf" | "openclip";
  /**
   * hf: the key prefix holding `text_model.` (e.g. "cond_stage_model.transformer."; the prefix including
   * "text_model." is accepted too); openclip: the prefix holding `token_embedding.weight`
   * (e.g. "conditioner.embedders.1.model.").
   */
  prefix: string;
  width: number;
  layers: number;
  heads: number;
  intermediate: number;
  vocab: number;
  maxPositions: number;
  activation: "quick_gelu" | "gelu";
  projectionDim: number | null;
  eps: number;
}

/** Head width of every released CLIP / OpenCLIP text tower (ViT-L 768/12, ViT-H 1024/16, ViT-bigG 1280/20). */
const HEAD_DIM = 64;
/** Heads of the tiny test encoders (transformers' and diffusers' tiny-random CLIP configs use 4). */
const TINY_HEADS = 4;
/** float32's lowest value: transformers' causal mask (`torch.finfo(dtype).min`). */
const F32_MIN = -3.4028234663852886e38;

/**
 * Attention heads leave no trace in the weights, so they follow a convention:
 * - `overrides.heads`, when given (it must divide the width);
 * - width a multiple of 64: width / 64 (every released CLIP text encoder has 64-wide heads);
 * - width below 64 and a multiple of 4: 4 heads (the tiny test models: SD1 width 32, SDXL te2 width 24);
 * - anything else is refused: pass `overrides.heads`.
 */
export function clipHeads(width: number, overrides?: { heads?: number }): number {
  const forced = overrides?.heads;
  if (forced !== undefined) {
    if (!Number.isInteger(forced) || forced < 1 || width % forced !== 0)
      throw new CheckpointError(`CLIP text encoder: ${forced} heads do not divide the width ${width}`);
    return forced;
  }
  if (width % HEAD_DIM === 0) return width / HEAD_DIM;
  if (width < HEAD_DIM && width % TINY_HEADS === 0) return TINY_HEADS;
  throw new CheckpointError(
    `CLIP text encoder of width ${width}: the number of attention heads cannot be inferred (width is not a ` +
      `multiple of ${HEAD_DIM}); give it explicitly`,
  );
}

/** The hf layout's root: `<prefix>text_model.` (or `<prefix>` for checkpoints saved without that level). */
function hfRoot(weights: CheckpointWeights, prefix: string): string | null {
  for (const root of [`${prefix}text_model.`, prefix])
    if (weights.has(`${root}embeddings.token_embedding.weight`)) return root;
  return null;
}

/** HF CLIPTextModelWithProjection's `text_projection.weight` [proj, width], beside `text_model.`. */
function hfProjection(weights: CheckpointWeights, prefix: string): string | null {
  const outer = prefix.endsWith("text_model.") ? prefix.slice(0, -"text_model.".length) : prefix;
  const key = `${outer}text_projection.weight`;
  return weights.has(key) ? key : null;
}

function countLayers(weights: CheckpointWeights, key: (i: number) => string): number {
  let n = 0;
  while (weights.has(key(n))) n++;
  return n;
}

function dim(shape: readonly number[], axis: number, key: string): number {
  const d = shape[axis];
  if (d === undefined)
    throw new CheckpointError(`tensor ${key} has no axis ${axis} (shape [${shape.join(", ")}])`);
  return d;
}

/** Reads a CLIP text encoder's hyper-parameters from the tensor shapes under `prefix`. */
export function detectClip(
  weights: CheckpointWeights,
  prefix: string,
  overrides?: { heads?: number },
): ClipConfig {
  const root = hfRoot(weights, prefix);
  if (root !== null) {
    // transformers CLIPTextModel (modeling_clip.py): OpenAI CLIP weights, quick_gelu.
    const tokens = `${root}embeddings.token_embedding.weight`;
    const positions = `${root}embeddings.position_embedding.weight`;
    const fc1 = `${root}encoder.layers.0.mlp.fc1.weight`;
    const width = dim(weights.shape(tokens), 1, tokens);
    const projection = hfProjection(weights, prefix);
    return {
      layout: "hf",
      prefix,
      width,
      layers: countLayers(weights, (i) => `${root}encoder.layers.${i}.layer_norm1.weight`),
      heads: clipHeads(width, overrides),
      intermediate: dim(weights.shape(fc1), 0, fc1),
      vocab: dim(weights.shape(tokens), 0, tokens),
      maxPositions: dim(weights.shape(positions), 0, positions),
      activation: "quick_gelu",
      projectionDim: projection ? dim(weights.shape(projection), 0, projection) : null,
      eps: 1e-5,
    };
  }
  if (weights.has(`${prefix}token_embedding.weight`)) {
    // open_clip TextTransformer (transformer.py): nn.GELU, nn.LayerNorm eps 1e-5.
    const tokens = `${prefix}token_embedding.weight`;
    const positions = `${prefix}positional_embedding`;
    const fc = `${prefix}transformer.resblocks.0.mlp.c_fc.weight`;
    const width = dim(weights.shape(tokens), 1, tokens);
    const projection = openClipProjection(weights, prefix);
    return {
      layout: "openclip",
      prefix,
      width,
      layers: countLayers(weights, (i) => `${prefix}transformer.resblocks.${i}.attn.in_proj_weight`),
      heads: clipHeads(width, overrides),
      intermediate: dim(weights.shape(fc), 0, fc),
      vocab: dim(weights.shape(tokens), 0, tokens),
      maxPositions: dim(weights.shape(positions), 0, positions),
      activation: "gelu",
      projectionDim: projection
        ? dim(weights.shape(projection.key), projection.transposed ? 0 : 1, projection.key)
        : null,
      eps: 1e-5,
    };
  }
  throw new CheckpointError(
    `the checkpoint has no CLIP text encoder under "${prefix}" (neither ${prefix}text_model.embeddings.* nor ` +
      `${prefix}token_embedding.weight)`,
  );
}

/** OpenCLIP's projection: the parameter `text_projection` [width, proj], or a Linear's `.weight` [proj, width]. */
function openClipProjection(
  weights: CheckpointWeights,
  prefix: string,
): { key: string; transposed: boolean } | null {
  if (weights.has(`${prefix}text_projection`)) return { key: `${prefix}text_projection`, transposed: false };
  if (weights.has(`${prefix}text_projection.weight`))
    return { key: `${prefix}text_projection.weight`, transposed: true };
  return null;
}

interface LinearKeys {
  weight: string;
  bias: string;
}

/** Per-layer weights, named the same for both layouts (q/k/v are graph values: OpenCLIP's are split). */
interface LayerWeights {
  ln1: LinearKeys;
  ln2: LinearKeys;
  q: [string, string];
  k: [string, string];
  v: [string, string];
  out: LinearKeys;
  fc1: LinearKeys;
  fc2: LinearKeys;
}

const lin = (key: string): LinearKeys => ({ weight: `${key}.weight`, bias: `${key}.bias` });

class ClipGraph {
  readonly g: GraphBuilder;

  constructor(
    private readonly w: CheckpointWeights,
    private readonly c: ClipConfig,
  ) {
    this.g = new GraphBuilder(`clip_text_${c.layout}`);
  }

  // ---- precision: compute in weights.precision, softmax and graph outputs in float32 ----

  private toCompute(x: string): string {
    return this.w.precision === "float32"
      ? x
      : this.g.node("Cast", [x], { to: elementTypeCode(this.w.precision) });
  }

  private toFloat32(x: string): string {
    return this.w.precision === "float32" ? x : this.g.node("Cast", [x], { to: elementTypeCode("float32") });
  }

  private scalar(value: number): string {
    return this.toCompute(this.g.constant([value], []));
  }

  private ints(values: readonly number[]): string {
    return this.g.constant(values, [values.length], "int64");
  }

  // ---- building blocks (torch.nn.Linear / LayerNorm) ----

  private param(key: string): string {
    return this.w.weight(this.g, key);
  }

  /** x @ Wᵀ + b for a torch Linear weight [out, in]. */
  private linear(x: string, weight: string, bias: string | null): string {
    const y = this.g.node("MatMul", [x, this.g.node("Transpose", [weight], { perm: [1, 0] })]);
    return bias === null ? y : this.g.node("Add", [y, bias]);
  }

  private layerNorm(x: string, keys: LinearKeys): string {
    // LayerNormalization computes its statistics in float32 (stash_type 1) whatever the input type.
    return this.g.node("LayerNormalization", [x, this.param(keys.weight), this.param(keys.bias)], {
      axis: -1,
      epsilon: { f: this.c.eps },
    });
  }

  private activation(x: string): string {
    if (this.c.activation === "quick_gelu") {
      // transformers QuickGELUActivation: x · sigmoid(1.702 x).
      return this.g.node("Mul", [x, this.g.node("Sigmoid", [this.g.node("Mul", [x, this.scalar(1.702)])])]);
    }
    // torch.nn.GELU (exact): x · ½ · (1 + erf(x / √2)).
    const erf = this.g.node("Erf", [this.g.node("Mul", [x, this.scalar(Math.SQRT1_2)])]);
    const half = this.g.node("Mul", [x, this.scalar(0.5)]);
    return this.g.node("Mul", [half, this.g.node("Add", [erf, this.scalar(1)])]);
  }

  // ---- layer weights per layout ----

  private layerWeights(i: number): LayerWeights {
    const { prefix } = this.c;
    if (this.c.layout === "hf") {
      const root = hfRoot(this.w, prefix) ?? `${prefix}text_model.`;
      const l = `${root}encoder.layers.${i}.`;
      const proj = (name: string): [string, string] => [
        this.param(`${l}self_attn.${name}.weight`),
        this.param(`${l}self_attn.${name}.bias`),
      ];
      return {
        ln1: lin(`${l}layer_norm1`),
        ln2: lin(`${l}layer_norm2`),
        q: proj("q_proj"),
        k: proj("k_proj"),
        v: proj("v_proj"),
        out: lin(`${l}self_attn.out_proj`),
        fc1: lin(`${l}mlp.fc1`),
        fc2: lin(`${l}mlp.fc2`),
      };
    }
    // open_clip ResidualAttentionBlock: nn.MultiheadAttention's in_proj is [q; k; v] along the output axis.
    const l = `${prefix}transformer.resblocks.${i}.`;
    const [qw, kw, vw] = this.g.node("Split", [this.param(`${l}attn.in_proj_weight`)], { axis: 0 }, 3);
    const [qb, kb, vb] = this.g.node("Split", [this.param(`${l}attn.in_proj_bias`)], { axis: 0 }, 3);
    if (!qw || !kw || !vw || !qb || !kb || !vb) throw new Error("Split returned fewer than 3 outputs");
    return {
      ln1: lin(`${l}ln_1`),
      ln2: lin(`${l}ln_2`),
      q: [qw, qb],
      k: [kw, kb],
      v: [vw, vb],
      out: lin(`${l}attn.out_proj`),
      fc1: lin(`${l}mlp.c_fc`),
      fc2: lin(`${l}mlp.c_proj`),
    };
  }

  // ---- the encoder ----

  /** CLIPAttention / nn.MultiheadAttention with a causal mask: q scaled by 1/√d before q·kᵀ. */
  private attention(x: string, lw: LayerWeights, mask: string): string {
    const { g } = this;
    const { heads, width } = this.c;
    const headDim = width / heads;
    const split = this.ints([0, 0, heads, headDim]);
    const q = g.node("Mul", [this.linear(x, lw.q[0], lw.q[1]), this.scalar(headDim ** -0.5)]);
    const qh = g.node("Transpose", [g.node("Reshape", [q, split])], { perm: [0, 2, 1, 3] });
    const kh = g.node("Transpose", [g.node("Reshape", [this.linear(x, lw.k[0], lw.k[1]), split])], {
      perm: [0, 2, 3, 1],
    });
    const vh = g.node("Transpose", [g.node("Reshape", [this.linear(x, lw.v[0], lw.v[1]), split])], {
      perm: [0, 2, 1, 3],
    });
    const scores = g.node("Add", [this.toFloat32(g.node("MatMul", [qh, kh])), mask]);
    const probs = this.toCompute(g.node("Softmax", [scores], { axis: -1 }));
    const context = g.node("Transpose", [g.node("MatMul", [probs, vh])], { perm: [0, 2, 1, 3] });
    const merged = g.node("Reshape", [context, this.ints([0, 0, width])]);
    return this.linear(merged, this.param(lw.out.weight), this.param(lw.out.bias));
  }

  /** CLIPEncoderLayer / ResidualAttentionBlock: pre-norm attention and MLP, each with a residual. */
  private layer(x: string, i: number, mask: string): string {
    const { g } = this;
    const lw = this.layerWeights(i);
    const attended = g.node("Add", [x, this.attention(this.layerNorm(x, lw.ln1), lw, mask)]);
    const hidden = this.linear(
      this.layerNorm(attended, lw.ln2),
      this.param(lw.fc1.weight),
      this.param(lw.fc1.bias),
    );
    const mlp = this.linear(this.activation(hidden), this.param(lw.fc2.weight), this.param(lw.fc2.bias));
    return g.node("Add", [attended, mlp]);
  }

  build(): GraphBuilder {
    const { g, c } = this;
    const root = c.layout === "hf" ? (hfRoot(this.w, c.prefix) ?? `${c.prefix}text_model.`) : c.prefix;
    const keys =
      c.layout === "hf"
        ? {
            tokens: `${root}embeddings.token_embedding.weight`,
            positions: `${root}embeddings.position_embedding.weight`,
            final: lin(`${root}final_layer_norm`),
          }
        : {
            tokens: `${root}token_embedding.weight`,
            positions: `${root}positional_embedding`,
            final: lin(`${root}ln_final`),
          };
    const ids = g.input("input_ids", "int64", ["batch_size", "sequence_length"]);
    const seq = g.node("Shape", [ids], { start: 1, end: 2 });

    // CLIPTextEmbeddings / TextTransformer.forward: token embedding + position embedding of positions 0…s−1.
    const tokens = g.node("Gather", [this.param(keys.tokens), ids], { axis: 0 });
    const positions = g.node("Slice", [this.param(keys.positions), this.ints([0]), seq, this.ints([0])]);
    let x = g.node("Add", [tokens, positions]);

    // Causal mask (transformers' _create_4d_causal_attention_mask, open_clip's build_causal_mask), float32.
    const m = c.maxPositions;
    const maskValues = new Float32Array(m * m);
    for (let r = 0; r < m; r++) for (let col = r + 1; col < m; col++) maskValues[r * m + col] = F32_MIN;
    const square = g.node("Concat", [seq, seq], { axis: 0 });
    const mask = g.node("Slice", [
      g.constant(maskValues, [m, m]),
      this.ints([0, 0]),
      square,
      this.ints([0, 1]),
    ]);

    // CLIPEncoder: hidden_states.0 = embeddings, hidden_states.i = output of layer i (before the final norm).
    const hidden: string[] = [x];
    for (let i = 0; i < c.layers; i++) {
      x = this.layer(x, i, mask);
      hidden.push(x);
    }
    const last = this.layerNorm(x, keys.final);

    // CLIPTextTransformer pooling (legacy eos_token_id == 2 path, also open_clip's text_global_pool "argmax"):
    // the final-norm state at the first position of the largest token id.
    const eos = g.node("ArgMax", [g.node("Cast", [ids], { to: elementTypeCode("int32") })], {
      axis: -1,
      keepdims: 1,
    });
    const pooled = g.node("GatherND", [last, eos], { batch_dims: 1 });

    const dims = ["batch_size", "sequence_length", c.width];
    g.output(this.toFloat32(last), "last_hidden_state", "float32", dims);
    g.output(this.toFloat32(pooled), "pooler_output", "float32", ["batch_size", c.width]);
    if (c.projectionDim !== null) {
      // CLIPTextModelWithProjection.text_projection (Linear, no bias) / open_clip `x @ text_projection`.
      let projected: string;
      if (c.layout === "hf") {
        const projection = hfProjection(this.w, c.prefix);
        if (!projection) throw new CheckpointError(`no text_projection.weight beside ${c.prefix}`);
        projected = this.linear(pooled, this.param(projection), null);
      } else {
        const projection = openClipProjection(this.w, c.prefix);
        if (!projection) throw new CheckpointError(`no text projection under ${c.prefix}`);
        projected = projection.transposed
          ? this.linear(pooled, this.param(projection.key), null)
          : g.node("MatMul", [pooled, this.param(projection.key)]);
      }
      g.output(this.toFloat32(projected), "text_embeds", "float32", ["batch_size", c.projectionDim]);
    }
    hidden.forEach((h, i) => {
      g.output(this.toFloat32(h), `hidden_states.${i}`, "float32", dims);
    });
    return g;
  }
}

/** The text encoder described by `config` as an ONNX graph over the checkpoint's tensors. */
export function buildClipGraph(weights: CheckpointWeights, config: ClipConfig): GraphBuilder {
  if (config.width % config.heads !== 0)
    throw new CheckpointError(
      `CLIP text encoder: ${config.heads} heads do not divide the width ${config.width}`,
    );
  return new ClipGraph(weights, config).build();
}
