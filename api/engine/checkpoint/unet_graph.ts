/**
 * The Stable Diffusion UNet (LDM `ldm/modules/diffusionmodules/openaimodel.py` UNetModel, SD1.x / SD2.x / SDXL) as
 * an ONNX graph built straight from an original-layout ("LDM" / A1111) single-file checkpoint: the architecture is
 * read from the keys and shapes (as ComfyUI's `comfy/model_detection.py` does), the weights stay in the
 * .safetensors file as ONNX external data.
 *
 * The graph has the optimum export's interface — `sample` f32 [batch_size, in, height, width], `timestep` f32 [],
 * `encoder_hidden_states` f32 [batch_size, sequence_length, context] → `out_sample` f32 [batch_size, out, height,
 * width]; SDXL-style checkpoints (with `label_emb`) add `text_embeds` f32 [batch_size, pooled] and `time_ids` f32
 * [batch_size, n] — and computes what diffusers' UNet2DConditionModel (v0.29.2) computes, including latent sizes
 * that are not multiples of 2^levels (each Upsample resizes to its skip connection's size, diffusers'
 * `forward_upsample_size`).
 *
 * Precision: everything runs in `weights.precision`; graph inputs are cast to it where they enter and the output
 * back to float32. GroupNorm (statistics and affine, as LDM's GroupNorm32), softmax and the sinusoidal timestep
 * embeddings are computed in float32 whatever the compute type; LayerNormalization keeps its statistics in float32
 * through its stash_type. With "float32" all of these casts are left out.
 *
 * Attention (`options.attention`, see attention_variant.ts): "plain" spells softmax(q·kᵀ/√d)·v out in opset-17 operators
 * (softmax in float32); "fused" hands q, k, v to onnxruntime's com.microsoft MultiHeadAttention, which the CUDA
 * provider runs with its flash / memory-efficient kernels.
 */
import { elementTypeCode } from "../onnx/dtypes.ts";
import { GraphBuilder } from "../onnx/graph_builder.ts";
import {
  type AttentionVariant,
  CONTRIB_DOMAIN,
  CONTRIB_OPSET,
  multiHeadAttention,
} from "./attention_variant.ts";
import { UNET_PREFIX } from "./keys.ts";
import { CheckpointError, type CheckpointWeights } from "./weights.ts";

export interface UNetConfig {
  /** Key prefix of the UNet's tensors ("model.diffusion_model."). */
  prefix: string;
  inChannels: number;
  outChannels: number;
  /** conv_in's output channels (the first level's width). */
  modelChannels: number;
  /** Channel multiplier per level: level l has modelChannels × channelMult[l] channels (block_out_channels). */
  channelMult: number[];
  /** ResBlocks per level on the way down; the way up has one more per level (layers_per_block). */
  numResBlocks: number[];
  /** SpatialTransformer depth after each input ResBlock, all levels in order (0: none; ComfyUI's transformer_depth). */
  transformerDepth: number[];
  /** SpatialTransformer depth in each output block, deepest level first (ComfyUI's transformer_depth_output). */
  transformerDepthOutput: number[];
  /** Depth of middle_block's SpatialTransformer; -1: a middle block of one ResBlock only; -2: no middle block. */
  transformerDepthMiddle: number;
  /** The largest transformer depth per level, 0 where the level has no attention (SD1.x 1,1,1,0; SDXL 0,2,10). */
  transformerDepthPerLevel: number[];
  /** Width of encoder_hidden_states (cross-attention to_k input); null when the UNet has no attention at all. */
  contextDim: number | null;
  /** proj_in/proj_out are Linear [C, C] (SD2.x, SDXL) rather than 1×1 Conv [C, C, 1, 1] (SD1.x). */
  useLinearProjection: boolean;
  /** time_embed's width (4 × modelChannels in all SD models). */
  timeEmbedDim: number;
  /** label_emb's input width (SDXL ADM conditioning: 2816 base, 2560 refiner); null without label_emb. */
  admInChannels: number | null;
  /**
   * How the ADM vector is made (diffusers' "text_time" addition embedding): text_embeds [pooledDim] followed by the
   * sinusoidal embedding (width timeEmbedDim each) of each of the timeIds time ids; null without label_emb.
   */
  adm: { pooledDim: number; timeIds: number; timeEmbedDim: number } | null;
  /** Attention heads per level (the middle block uses the deepest level's). */
  numHeads: number[];
  /** Channels per head per level (level channels / heads). */
  headDim: number[];
  /** GroupNorm groups (32 in every SD model). */
  normGroups: number;
}

export interface UNetOverrides {
  /**
   * Heads per level, for checkpoints whose head count differs from ComfyUI's rule (8 heads for SD1.x-style UNets;
   * 64 channels per head when proj_in is Linear or context_dim ≥ 1024). Head counts cannot be read from shapes.
   */
  headsPerLevel?: number[];
  /** Width of SDXL's pooled text embedding inside label_emb's input (default 1280, OpenCLIP ViT-bigG's projection). */
  admPooledDim?: number;
}

/** The SDXL-family pooled text embedding width (text_encoder_2's projection). */
const SDXL_POOLED_DIM = 1280;

/**
 * Reads the UNet's architecture from the checkpoint's keys and shapes (ComfyUI's detect_unet_config), plus the
 * head counts by ComfyUI's rule unless `overrides.headsPerLevel` gives them.
 */
export function detectUNet(
  weights: CheckpointWeights,
  prefix: string = UNET_PREFIX,
  overrides: UNetOverrides = {},
): UNetConfig {
  const key = (k: string) => prefix + k;
  if (!weights.has(key("input_blocks.0.0.weight"))) {
    throw new CheckpointError(
      `${weights.header.path}: no UNet under ${prefix} (no ${key("input_blocks.0.0.weight")})`,
    );
  }
  const dim = (k: string, axis: number): number => {
    const d = weights.shape(key(k))[axis];
    if (d === undefined) throw new CheckpointError(`${weights.header.path}: ${key(k)} has no axis ${axis}`);
    return d;
  };
  // Block indices present under input_blocks / output_blocks.
  const blockCount = (group: string): number => {
    const start = key(`${group}.`);
    let max = -1;
    for (const k of weights.keys()) {
      if (!k.startsWith(start)) continue;
      const n = Number.parseInt(k.slice(start.length), 10);
      if (Number.isFinite(n) && n > max) max = n;
    }
    return max + 1;
  };
  const depthOf = (block: string): number => {
    let depth = 0;
    while (weights.has(key(`${block}.1.transformer_blocks.${depth}.norm1.weight`))) depth++;
    return depth;
  };

  const modelChannels = dim("input_blocks.0.0.weight", 0);
  const inChannels = dim("input_blocks.0.0.weight", 1);
  const outChannels = dim("out.2.weight", 0);
  const timeEmbedDim = dim("time_embed.0.weight", 0);

  // input_blocks: ResBlock (+ SpatialTransformer) per entry, a Downsample (`op`) between levels.
  const numResBlocks: number[] = [];
  const channelMult: number[] = [];
  const transformerDepth: number[] = [];
  const transformerDepthPerLevel: number[] = [];
  let resBlocks = 0;
  let mult = 0;
  let levelDepth = 0;
  let firstTransformer: string | null = null;
  const inputCount = blockCount("input_blocks");
  for (let i = 1; i < inputCount; i++) {
    const block = `input_blocks.${i}`;
    if (weights.has(key(`${block}.0.op.weight`))) {
      numResBlocks.push(resBlocks);
      channelMult.push(mult);
      transformerDepthPerLevel.push(levelDepth);
      resBlocks = 0;
      levelDepth = 0;
      continue;
    }
    if (!weights.has(key(`${block}.0.in_layers.0.weight`))) {
      throw new CheckpointError(
        `${weights.header.path}: ${key(block)} is neither a ResBlock nor a Downsample`,
      );
    }
    resBlocks++;
    mult = dim(`${block}.0.out_layers.3.weight`, 0) / modelChannels;
    const depth = depthOf(block);
    transformerDepth.push(depth);
    levelDepth = Math.max(levelDepth, depth);
    if (depth > 0) firstTransformer ??= block;
  }
  numResBlocks.push(resBlocks);
  channelMult.push(mult);
  transformerDepthPerLevel.push(levelDepth);

  // output_blocks: numResBlocks + 1 per level, deepest level first.
  const outputCount = blockCount("output_blocks");
  const expectedOutputs = numResBlocks.reduce((a, n) => a + n + 1, 0);
  if (outputCount !== expectedOutputs) {
    throw new CheckpointError(
      `${weights.header.path}: ${outputCount} output blocks where levels of ${numResBlocks.join(",")} ResBlocks need ${expectedOutputs}`,
    );
  }
  const transformerDepthOutput: number[] = [];
  for (let i = 0; i < outputCount; i++) {
    const depth = depthOf(`output_blocks.${i}`);
    transformerDepthOutput.push(depth);
    if (depth > 0) firstTransformer ??= `output_blocks.${i}`;
  }

  let transformerDepthMiddle: number;
  if (weights.has(key("middle_block.1.proj_in.weight"))) {
    transformerDepthMiddle = depthOf("middle_block");
    firstTransformer ??= "middle_block";
  } else {
    transformerDepthMiddle = weights.has(key("middle_block.0.in_layers.0.weight")) ? -1 : -2;
  }

  // SpatialTransformer: context width from attn2.to_k, Linear or 1×1 Conv projections.
  let contextDim: number | null = null;
  let useLinearProjection = false;
  if (firstTransformer) {
    contextDim = dim(`${firstTransformer}.1.transformer_blocks.0.attn2.to_k.weight`, 1);
    useLinearProjection = weights.shape(key(`${firstTransformer}.1.proj_in.weight`)).length === 2;
  }

  // Heads: ComfyUI's rule (SD1.x num_heads 8; SD2.x / SDXL num_head_channels 64), or the caller's.
  const levels = channelMult.length;
  const headDim64 = useLinearProjection || (contextDim ?? 0) >= 1024;
  const given = overrides.headsPerLevel;
  if (given && given.length !== levels) {
    throw new CheckpointError(`headsPerLevel has ${given.length} entries for a UNet of ${levels} levels`);
  }
  const numHeads: number[] = [];
  const headDim: number[] = [];
  for (let l = 0; l < levels; l++) {
    const channels = modelChannels * (channelMult[l] as number);
    const heads = given?.[l] ?? (headDim64 ? channels / 64 : 8);
    if (!Number.isInteger(heads) || heads < 1 || channels % heads !== 0) {
      throw new CheckpointError(
        `${weights.header.path}: level ${l} (${channels} channels) cannot have ${heads} heads`,
      );
    }
    numHeads.push(heads);
    headDim.push(channels / heads);
  }

  // SDXL label_emb: ADM vector = text_embeds ‖ sinusoid(time_ids) (6 ids base, 5 refiner, 256 each).
  let admInChannels: number | null = null;
  let adm: UNetConfig["adm"] = null;
  if (weights.has(key("label_emb.0.0.weight"))) {
    admInChannels = dim("label_emb.0.0.weight", 1);
    const pooledDim = overrides.admPooledDim ?? SDXL_POOLED_DIM;
    const rest = admInChannels - pooledDim;
    const timeIds = [6, 5].find((n) => rest > 0 && rest % n === 0 && (rest / n) % 2 === 0);
    if (timeIds === undefined) {
      throw new CheckpointError(
        `${weights.header.path}: label_emb takes ${admInChannels} values, which is not a ${pooledDim}-wide pooled ` +
          "text embedding followed by the embeddings of 6 (SDXL) or 5 (SDXL refiner) time ids",
      );
    }
    adm = { pooledDim, timeIds, timeEmbedDim: rest / timeIds };
  } else if (weights.has(key("label_emb.weight"))) {
    throw new CheckpointError(
      `${weights.header.path}: class-conditional UNets (label_emb embedding) are not supported`,
    );
  }

  return {
    prefix,
    inChannels,
    outChannels,
    modelChannels,
    channelMult,
    numResBlocks,
    transformerDepth,
    transformerDepthOutput,
    transformerDepthMiddle,
    transformerDepthPerLevel,
    contextDim,
    useLinearProjection,
    timeEmbedDim,
    admInChannels,
    adm,
    numHeads,
    headDim,
    normGroups: 32,
  };
}

export interface UNetGraphOptions {
  /** How attention is computed (default "plain"; "fused" imports com.microsoft operator set 1). */
  attention?: AttentionVariant;
  /**
   * Every Linear and Conv gets a LoRA branch whose factors are graph inputs (`loraInputNames`): a LoRA set is
   * applied by what is fed, with no new session. Zero-rank factors leave the layer as the checkpoint has it.
   */
  loraSlots?: boolean;
}

/**
 * The inputs of the LoRA branch of the layer whose weight is the checkpoint key `key`: `down` float32 [r, in]
 * (Conv: [r, in, kh, kw]) and `up` float32 [out, r] (Conv: [out, r, 1, 1]) with the LoRA's weight·alpha/rank
 * already multiplied in; r may be 0.
 */
export function loraInputNames(key: string): { down: string; up: string } {
  return { down: `lora_down:${key}`, up: `lora_up:${key}` };
}

/** The UNet as an ONNX graph (opset 17) whose initializers point into the checkpoint file. */
export function buildUNetGraph(
  weights: CheckpointWeights,
  config: UNetConfig,
  options: UNetGraphOptions = {},
): GraphBuilder {
  return new UNetGraph(weights, config, options.attention ?? "plain", options.loraSlots ?? false).build();
}

/** Sinusoidal frequencies exp(-ln(10000)·i/half) rounded as torch computes them in float32. */
function sinusoidFrequencies(dim: number): Float32Array {
  if (dim % 2 !== 0) throw new CheckpointError(`odd timestep embedding width ${dim} is not supported`);
  const half = dim / 2;
  const f = Math.fround;
  const c = f(-Math.log(10000));
  return Float32Array.from({ length: half }, (_, i) => f(Math.exp(f(f(c * i) / half))));
}

class UNetGraph {
  private readonly g: GraphBuilder;
  private readonly half: boolean;
  private readonly intConstants = new Map<string, string>();
  private readonly floatConstants = new Map<string, string>();

  constructor(
    private readonly w: CheckpointWeights,
    private readonly c: UNetConfig,
    private readonly attentionVariant: AttentionVariant,
    private readonly loraSlots: boolean,
  ) {
    this.half = w.precision === "float16";
    this.g = new GraphBuilder(
      "unet",
      17,
      attentionVariant === "fused" ? { [CONTRIB_DOMAIN]: CONTRIB_OPSET } : {},
    );
  }

  build(): GraphBuilder {
    const { g, c } = this;
    const ctx = c.contextDim ?? 1;
    const sample = g.input("sample", "float32", ["batch_size", c.inChannels, "height", "width"]);
    const timestep = g.input("timestep", "float32", []);
    const context = this.toCompute(
      g.input("encoder_hidden_states", "float32", ["batch_size", "sequence_length", ctx]),
    );

    // UNetModel.forward: t_emb = timestep_embedding(t); emb = time_embed(t_emb) (+ label_emb(y) for SDXL)
    let emb = this.timeEmbed(timestep);
    if (c.adm) {
      const textEmbeds = g.input("text_embeds", "float32", ["batch_size", c.adm.pooledDim]);
      const timeIds = g.input("time_ids", "float32", ["batch_size", c.adm.timeIds]);
      emb = g.node("Add", [emb, this.labelEmbed(textEmbeds, timeIds)]);
    }
    // Every ResBlock's emb_layers starts with SiLU of the same emb.
    const embAct = this.silu(emb);

    // input_blocks: conv_in, then per level ResBlock (+ SpatialTransformer) × num_res_blocks, Downsample between.
    let h = this.conv(this.toCompute(sample), "input_blocks.0.0");
    const skips: string[] = [h];
    let block = 1;
    let resIndex = 0;
    const levels = c.channelMult.length;
    for (let level = 0; level < levels; level++) {
      for (let r = 0; r < (c.numResBlocks[level] as number); r++) {
        const prefix = `input_blocks.${block}`;
        h = this.resBlock(h, embAct, `${prefix}.0`);
        const depth = c.transformerDepth[resIndex++] ?? 0;
        if (depth > 0) h = this.spatialTransformer(h, context, `${prefix}.1`, depth, level);
        skips.push(h);
        block++;
      }
      if (level !== levels - 1) {
        // Downsample: 3×3 conv, stride 2, padding 1
        h = this.conv(h, `input_blocks.${block}.0.op`, 2);
        skips.push(h);
        block++;
      }
    }

    // middle_block: ResBlock, SpatialTransformer, ResBlock
    if (c.transformerDepthMiddle !== -2) {
      h = this.resBlock(h, embAct, "middle_block.0");
      if (c.transformerDepthMiddle > 0) {
        h = this.spatialTransformer(h, context, "middle_block.1", c.transformerDepthMiddle, levels - 1);
        h = this.resBlock(h, embAct, "middle_block.2");
      }
    }

    // output_blocks: per level (deepest first) num_res_blocks + 1 × [cat skip, ResBlock, SpatialTransformer?],
    // Upsample at the end of every level but the first.
    block = 0;
    for (let level = levels - 1; level >= 0; level--) {
      const count = (c.numResBlocks[level] as number) + 1;
      for (let r = 0; r < count; r++) {
        const prefix = `output_blocks.${block}`;
        const skip = skips.pop();
        if (skip === undefined)
          throw new CheckpointError("the UNet's output blocks outnumber its skip connections");
        h = g.node("Concat", [h, skip], { axis: 1 });
        h = this.resBlock(h, embAct, `${prefix}.0`);
        let part = 1;
        const depth = c.transformerDepthOutput[block] ?? 0;
        if (depth > 0) h = this.spatialTransformer(h, context, `${prefix}.${part++}`, depth, level);
        if (level > 0 && r === count - 1) {
          const next = skips[skips.length - 1];
          if (next === undefined) throw new CheckpointError("an Upsample has no skip connection to size it");
          h = this.upsample(h, next, `${prefix}.${part}`);
        }
        block++;
      }
    }

    // out: GroupNorm, SiLU, 3×3 conv
    h = this.conv(this.silu(this.groupNorm(h, "out.0", 1e-5)), "out.2");
    g.output(this.toFloat32(h), "out_sample", "float32", ["batch_size", c.outChannels, "height", "width"]);
    return g;
  }

  // ---- embeddings ----

  /** timestep_embedding (cos ‖ sin, i.e. flip_sin_to_cos, freq_shift 0) then time_embed: Linear, SiLU, Linear. */
  private timeEmbed(timestep: string): string {
    const t = this.g.node("Reshape", [timestep, this.ints([-1, 1])]);
    const sinusoid = this.toCompute(this.sinusoid(t, this.c.modelChannels));
    return this.linear(this.silu(this.linear(sinusoid, "time_embed.0")), "time_embed.2");
  }

  /** SDXL label_emb: Linear, SiLU, Linear over text_embeds ‖ the sinusoids of the time ids (diffusers add_embedding). */
  private labelEmbed(textEmbeds: string, timeIds: string): string {
    const { g } = this;
    const adm = this.c.adm;
    if (!adm) throw new CheckpointError("label_emb without ADM config");
    const ids = g.node("Reshape", [timeIds, this.ints([-1, 1])]);
    const idEmbeds = g.node("Reshape", [
      this.sinusoid(ids, adm.timeEmbedDim),
      this.ints([-1, adm.timeIds * adm.timeEmbedDim]),
    ]);
    const y = this.toCompute(g.node("Concat", [textEmbeds, idEmbeds], { axis: -1 }));
    return this.linear(this.silu(this.linear(y, "label_emb.0.0")), "label_emb.0.2");
  }

  /** [n, 1] float32 → [n, dim] float32: cos(t·f) ‖ sin(t·f). */
  private sinusoid(t: string, dim: number): string {
    const freqs = sinusoidFrequencies(dim);
    const args = this.g.node("Mul", [t, this.g.constant(freqs, [1, freqs.length])]);
    return this.g.node("Concat", [this.g.node("Cos", [args]), this.g.node("Sin", [args])], { axis: -1 });
  }

  // ---- blocks ----

  /** ResBlock: in_layers (GroupNorm, SiLU, conv), + emb_layers(emb), out_layers (GroupNorm, SiLU, conv), + skip. */
  private resBlock(x: string, embAct: string, prefix: string): string {
    const { g } = this;
    let h = this.conv(this.silu(this.groupNorm(x, `${prefix}.in_layers.0`, 1e-5)), `${prefix}.in_layers.2`);
    const e = this.linear(embAct, `${prefix}.emb_layers.1`);
    h = g.node("Add", [h, g.node("Unsqueeze", [e, this.ints([2, 3])])]);
    h = this.conv(this.silu(this.groupNorm(h, `${prefix}.out_layers.0`, 1e-5)), `${prefix}.out_layers.3`);
    const skip = this.w.has(this.key(`${prefix}.skip_connection.weight`))
      ? this.conv(x, `${prefix}.skip_connection`)
      : x;
    return g.node("Add", [skip, h]);
  }

  /**
   * SpatialTransformer: GroupNorm (eps 1e-6, LDM's Normalize), proj_in (1×1 conv or Linear), BasicTransformerBlocks
   * over [batch, h·w, C], proj_out, + input.
   */
  private spatialTransformer(
    x: string,
    context: string,
    prefix: string,
    depth: number,
    level: number,
  ): string {
    const { g, c } = this;
    const heads = c.numHeads[level] as number;
    let h = this.groupNorm(x, `${prefix}.norm`, 1e-6);
    const toTokens = (v: string) =>
      g.node("Transpose", [g.node("Reshape", [v, this.ints([0, 0, -1])])], { perm: [0, 2, 1] });
    h = c.useLinearProjection
      ? this.linear(toTokens(h), `${prefix}.proj_in`)
      : toTokens(this.conv(h, `${prefix}.proj_in`));
    for (let d = 0; d < depth; d++)
      h = this.transformerBlock(h, context, `${prefix}.transformer_blocks.${d}`, heads);
    // [batch, h·w, C] → [batch, C, h, w] with h, w from the input
    const shape = g.node(
      "Concat",
      [g.node("Shape", [x], { end: 1 }), this.ints([-1]), g.node("Shape", [x], { start: 2 })],
      {
        axis: 0,
      },
    );
    const toMap = (v: string) => g.node("Reshape", [g.node("Transpose", [v], { perm: [0, 2, 1] }), shape]);
    h = c.useLinearProjection
      ? toMap(this.linear(h, `${prefix}.proj_out`))
      : this.conv(toMap(h), `${prefix}.proj_out`);
    return g.node("Add", [h, x]);
  }

  /** BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm and residual. */
  private transformerBlock(x: string, context: string, prefix: string, heads: number): string {
    const { g } = this;
    let h = g.node("Add", [
      this.attention(this.layerNorm(x, `${prefix}.norm1`), null, `${prefix}.attn1`, heads),
      x,
    ]);
    h = g.node("Add", [
      this.attention(this.layerNorm(h, `${prefix}.norm2`), context, `${prefix}.attn2`, heads),
      h,
    ]);
    return g.node("Add", [this.feedForward(this.layerNorm(h, `${prefix}.norm3`), `${prefix}.ff`), h]);
  }

  /** CrossAttention: softmax(q·kᵀ / √d)·v per head, then to_out.0; self-attention when `context` is null. */
  private attention(x: string, context: string | null, prefix: string, heads: number): string {
    const { g } = this;
    const inner = this.w.shape(this.key(`${prefix}.to_q.weight`))[0] as number;
    const dHead = inner / heads;
    if (!Number.isInteger(dHead))
      throw new CheckpointError(`${prefix}: ${inner} channels do not split into ${heads} heads`);
    if (this.attentionVariant === "fused") {
      // q, k, v [batch, tokens, inner] in the compute precision; the kernel splits and merges the heads and
      // applies the 1/√d scale itself.
      const q = this.linear(x, `${prefix}.to_q`);
      const k = this.linear(context ?? x, `${prefix}.to_k`);
      const v = this.linear(context ?? x, `${prefix}.to_v`);
      return this.linear(multiHeadAttention(g, q, k, v, heads, dHead), `${prefix}.to_out.0`);
    }
    // The 1/√d scale is folded into to_q's weight (a constant onnxruntime folds at load).
    const q = this.linear(x, `${prefix}.to_q`, 1 / Math.sqrt(dHead));
    const k = this.linear(context ?? x, `${prefix}.to_k`);
    const v = this.linear(context ?? x, `${prefix}.to_v`);
    const split = (t: string, perm: number[]) =>
      g.node("Transpose", [g.node("Reshape", [t, this.ints([0, 0, heads, dHead])])], { perm });
    const scores = g.node("MatMul", [split(q, [0, 2, 1, 3]), split(k, [0, 2, 3, 1])]);
    const probs = this.toCompute(g.node("Softmax", [this.toFloat32(scores)], { axis: -1 }));
    const out = g.node("MatMul", [probs, split(v, [0, 2, 1, 3])]);
    const merged = g.node("Reshape", [
      g.node("Transpose", [out], { perm: [0, 2, 1, 3] }),
      this.ints([0, 0, inner]),
    ]);
    return this.linear(merged, `${prefix}.to_out.0`);
  }

  /** FeedForward: GEGLU (proj → x, gate; x · gelu(gate)) then Linear; plain Linear + GELU when not gated. */
  private feedForward(x: string, prefix: string): string {
    const { g } = this;
    let h: string;
    if (this.w.has(this.key(`${prefix}.net.0.proj.weight`))) {
      const [a, gate] = g.node("Split", [this.linear(x, `${prefix}.net.0.proj`)], { axis: -1 }, 2);
      h = g.node("Mul", [a as string, this.gelu(gate as string)]);
    } else {
      h = this.gelu(this.linear(x, `${prefix}.net.0.0`));
    }
    return this.linear(h, `${prefix}.net.2`);
  }

  /** Upsample: nearest to the skip connection's height and width (×2 when it divides), then 3×3 conv. */
  private upsample(x: string, skip: string, prefix: string): string {
    const { g } = this;
    const sizes = g.node(
      "Concat",
      [g.node("Shape", [x], { end: 2 }), g.node("Shape", [skip], { start: 2 })],
      { axis: 0 },
    );
    const up = g.node("Resize", [x, "", "", sizes], {
      mode: "nearest",
      coordinate_transformation_mode: "asymmetric",
      nearest_mode: "floor",
    });
    return this.conv(up, `${prefix}.conv`);
  }

  // ---- layers ----

  private key(k: string): string {
    return this.c.prefix + k;
  }

  /** nn.Linear: x·Wᵀ (+ b), W optionally scaled; + the LoRA branch s·(x·downᵀ)·upᵀ with loraSlots. */
  private linear(x: string, prefix: string, scale?: number): string {
    const { g } = this;
    const weightKey = this.key(`${prefix}.weight`);
    let wt = g.node("Transpose", [this.w.weight(g, weightKey)], { perm: [1, 0] });
    if (scale !== undefined) {
      // Scaled in float32, so that onnxruntime folds it at load (its CPU kernels have no float16 Mul).
      wt = this.toCompute(g.node("Mul", [this.toFloat32(wt), this.scaleFactor(scale)]));
    }
    const y = g.node("MatMul", [x, wt]);
    const bias = this.key(`${prefix}.bias`);
    const out = this.w.has(bias) ? g.node("Add", [y, this.w.weight(g, bias)]) : y;
    if (!this.loraSlots) return out;
    // x·(W + up·down)ᵀ = x·Wᵀ + (x·downᵀ)·upᵀ: r multiply-adds per input and per output value instead of a
    // merged W; the folded scale s (to_q's 1/√d) multiplies up in float32.
    const [rows, cols] = this.w.shape(weightKey) as [number, number];
    const names = loraInputNames(weightKey);
    const rank = `rank:${weightKey}`;
    const down = this.toCompute(g.input(names.down, "float32", [rank, cols]));
    let up = g.input(names.up, "float32", [rows, rank]);
    if (scale !== undefined) up = g.node("Mul", [up, this.scaleFactor(scale)]);
    const low = g.node("MatMul", [x, g.node("Transpose", [down], { perm: [1, 0] })]);
    const branch = g.node("MatMul", [low, g.node("Transpose", [this.toCompute(up)], { perm: [1, 0] })]);
    return g.node("Add", [out, branch]);
  }

  private scaleFactor(scale: number): string {
    return this.floatConstant(`f32:${scale}`, Float32Array.of(scale), []);
  }

  /**
   * nn.Conv2d with the checkpoint's kernel, padding kernel/2, the given stride; with loraSlots + the LoRA branch
   * Conv(Conv(x, down), up), down with the layer's kernel, stride and padding, up 1×1 (LoCon: (up·down) ⊛ x).
   */
  private conv(x: string, prefix: string, stride = 1): string {
    const { g } = this;
    const weightKey = this.key(`${prefix}.weight`);
    const [out = 1, channels = 1, kh = 1, kw = 1] = this.w.shape(weightKey);
    const inputs = [x, this.w.weight(g, weightKey)];
    const bias = this.key(`${prefix}.bias`);
    if (this.w.has(bias)) inputs.push(this.w.weight(g, bias));
    const ph = Math.floor(kh / 2);
    const pw = Math.floor(kw / 2);
    const attributes = { kernel_shape: [kh, kw], pads: [ph, pw, ph, pw], strides: [stride, stride] };
    const y = g.node("Conv", inputs, attributes);
    if (!this.loraSlots) return y;
    const names = loraInputNames(weightKey);
    const rank = `rank:${weightKey}`;
    const down = this.toCompute(g.input(names.down, "float32", [rank, channels, kh, kw]));
    const up = this.toCompute(g.input(names.up, "float32", [out, rank, 1, 1]));
    const low = g.node("Conv", [x, down], attributes);
    const branch = g.node("Conv", [low, up], { kernel_shape: [1, 1], pads: [0, 0, 0, 0], strides: [1, 1] });
    return g.node("Add", [y, branch]);
  }

  /**
   * GroupNorm(32) as torch computes it: Reshape [N, G, -1] → InstanceNormalization → Reshape back → ·γ + β, in
   * float32 (LDM's GroupNorm32 upcasts).
   */
  private groupNorm(x: string, prefix: string, epsilon: number): string {
    const { g, c } = this;
    const weightKey = this.key(`${prefix}.weight`);
    const channels = this.w.shape(weightKey)[0] as number;
    if (channels % c.normGroups !== 0) {
      throw new CheckpointError(`${prefix}: ${channels} channels do not split into ${c.normGroups} groups`);
    }
    const x32 = this.toFloat32(x);
    const grouped = g.node("Reshape", [x32, this.ints([0, c.normGroups, -1])]);
    const ones = this.floatConstant(`ones${c.normGroups}`, new Float32Array(c.normGroups).fill(1));
    const zeros = this.floatConstant(`zeros${c.normGroups}`, new Float32Array(c.normGroups));
    const normed = g.node("InstanceNormalization", [grouped, ones, zeros], { epsilon: { f: epsilon } });
    const back = g.node("Reshape", [normed, g.node("Shape", [x32])]);
    const gamma = this.float32Weight(weightKey, [channels, 1, 1]);
    const beta = this.float32Weight(this.key(`${prefix}.bias`), [channels, 1, 1]);
    return this.toCompute(g.node("Add", [g.node("Mul", [back, gamma]), beta]));
  }

  /** nn.LayerNorm (eps 1e-5) over the last axis; statistics in float32 (stash_type). */
  private layerNorm(x: string, prefix: string): string {
    const { g } = this;
    return g.node(
      "LayerNormalization",
      [x, this.w.weight(g, this.key(`${prefix}.weight`)), this.w.weight(g, this.key(`${prefix}.bias`))],
      { axis: -1, epsilon: { f: 1e-5 }, stash_type: 1 },
    );
  }

  /** SiLU: x·sigmoid(x). */
  private silu(x: string): string {
    return this.g.node("Mul", [x, this.g.node("Sigmoid", [x])]);
  }

  /** Exact GELU as torch's F.gelu: x · 0.5 · (1 + erf(x / √2)). */
  private gelu(x: string): string {
    const { g } = this;
    const erf = g.node("Erf", [g.node("Mul", [x, this.scalar(Math.SQRT1_2)])]);
    return g.node("Mul", [g.node("Mul", [x, this.scalar(0.5)]), g.node("Add", [erf, this.scalar(1)])]);
  }

  // ---- constants and precision ----

  private ints(values: readonly number[]): string {
    const id = values.join(",");
    let name = this.intConstants.get(id);
    if (!name) {
      name = this.g.constant(values, [values.length], "int64");
      this.intConstants.set(id, name);
    }
    return name;
  }

  private floatConstant(id: string, values: Float32Array, dims: readonly number[] = [values.length]): string {
    let name = this.floatConstants.get(id);
    if (!name) {
      name = this.g.constant(values, dims);
      this.floatConstants.set(id, name);
    }
    return name;
  }

  /** A scalar in the compute precision. */
  private scalar(value: number): string {
    const id = `scalar:${value}:${this.half}`;
    let name = this.floatConstants.get(id);
    if (!name) {
      name = this.g.constant([value], []);
      if (this.half) name = this.g.node("Cast", [name], { to: elementTypeCode("float16") });
      this.floatConstants.set(id, name);
    }
    return name;
  }

  /** A checkpoint weight as float32 whatever the compute precision (for float32-only parts). */
  private float32Weight(key: string, reshape: readonly number[]): string {
    const value = this.w.weight(this.g, key, reshape);
    return this.half ? this.g.node("Cast", [value], { to: elementTypeCode("float32") }) : value;
  }

  private toCompute(x: string): string {
    return this.half ? this.g.node("Cast", [x], { to: elementTypeCode("float16") }) : x;
  }

  private toFloat32(x: string): string {
    return this.half ? this.g.node("Cast", [x], { to: elementTypeCode("float32") }) : x;
  }
}
