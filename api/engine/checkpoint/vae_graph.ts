/**
 * The Stable Diffusion VAE (LDM's AutoencoderKL) as ONNX graphs built straight from a single-file checkpoint's
 * `first_stage_model.*` tensors: the original layout (`encoder.down.N.block.M`, `mid.attn_1.q`, `decoder.up.N`,
 * `nin_shortcut`, …), read in place as external data, never converted to diffusers' names.
 *
 * Interfaces follow optimum 1.24's exports: the decoder takes `latent_sample` [b, z, h, w] and gives `sample`
 * [b, out, 8h, 8w] (for 4 resolutions); the encoder takes `sample` [b, in, H, W] and gives `latent_parameters`
 * [b, 2z, H/8, W/8], the mean ‖ logvar of the latent distribution (no sampling in the graph).
 */
import { elementTypeCode } from "../onnx/dtypes.ts";
import { GraphBuilder } from "../onnx/graph_builder.ts";
import { VAE_PREFIX } from "./keys.ts";
import { CheckpointError, type CheckpointWeights } from "./weights.ts";

export interface VaeConfig {
  /** Key prefix of the autoencoder, e.g. "first_stage_model.". */
  prefix: string;
  /** Base channel count (`ch`). */
  ch: number;
  /** Channel multiplier per resolution (`ch_mult`), e.g. [1, 2, 4, 4]. */
  chMult: number[];
  /** ResnetBlocks per resolution in the encoder (the decoder has one more). */
  numResBlocks: number;
  zChannels: number;
  inChannels: number;
  outChannels: number;
  groups: 32;
}

/** LDM Normalize: GroupNorm(32, C, eps 1e-6). */
const GROUP_NORM_EPS = 1e-6;

function dim(shape: readonly number[], axis: number, key: string): number {
  const d = shape[axis];
  if (d === undefined)
    throw new CheckpointError(`tensor ${key} has no axis ${axis} (shape [${shape.join(", ")}])`);
  return d;
}

function count(weights: CheckpointWeights, key: (i: number) => string): number {
  let n = 0;
  while (weights.has(key(n))) n++;
  return n;
}

/** Reads the autoencoder's hyper-parameters (LDM ddconfig) from the tensor shapes under `prefix`. */
export function detectVae(weights: CheckpointWeights, prefix = VAE_PREFIX): VaeConfig {
  const enc = `${prefix}encoder.`;
  const dec = `${prefix}decoder.`;
  const hasEncoder = weights.has(`${enc}conv_in.weight`);
  const hasDecoder = weights.has(`${dec}conv_in.weight`);
  if (!hasEncoder && !hasDecoder)
    throw new CheckpointError(
      `the checkpoint has no VAE under "${prefix}" (no ${enc}conv_in / ${dec}conv_in)`,
    );

  // ddconfig.ch / ch_mult / num_res_blocks: from the encoder when present, else from the decoder.
  let ch: number;
  let chMult: number[];
  let numResBlocks: number;
  if (hasEncoder) {
    ch = dim(weights.shape(`${enc}conv_in.weight`), 0, `${enc}conv_in.weight`);
    const levels = count(weights, (i) => `${enc}down.${i}.block.0.conv1.weight`);
    chMult = Array.from({ length: levels }, (_, i) => {
      const key = `${enc}down.${i}.block.0.conv1.weight`;
      return dim(weights.shape(key), 0, key) / ch;
    });
    numResBlocks = count(weights, (j) => `${enc}down.0.block.${j}.conv1.weight`);
  } else {
    ch = dim(weights.shape(`${dec}conv_out.weight`), 1, `${dec}conv_out.weight`);
    const levels = count(weights, (i) => `${dec}up.${i}.block.0.conv1.weight`);
    chMult = Array.from({ length: levels }, (_, i) => {
      const key = `${dec}up.${i}.block.0.conv1.weight`;
      return dim(weights.shape(key), 0, key) / ch;
    });
    numResBlocks = count(weights, (j) => `${dec}up.0.block.${j}.conv1.weight`) - 1;
  }
  if (chMult.length === 0 || numResBlocks < 1 || chMult.some((m) => !Number.isInteger(m)))
    throw new CheckpointError(`the VAE under "${prefix}" does not have LDM's Encoder/Decoder structure`);

  const zChannels = hasDecoder
    ? dim(weights.shape(`${dec}conv_in.weight`), 1, `${dec}conv_in.weight`)
    : dim(weights.shape(`${enc}conv_out.weight`), 0, `${enc}conv_out.weight`) / 2;
  return {
    prefix,
    ch,
    chMult,
    numResBlocks,
    zChannels,
    inChannels: hasEncoder ? dim(weights.shape(`${enc}conv_in.weight`), 1, `${enc}conv_in.weight`) : 3,
    outChannels: hasDecoder ? dim(weights.shape(`${dec}conv_out.weight`), 0, `${dec}conv_out.weight`) : 3,
    groups: 32,
  };
}

class VaeGraph {
  readonly g: GraphBuilder;

  constructor(
    private readonly w: CheckpointWeights,
    private readonly c: VaeConfig,
    name: string,
  ) {
    this.g = new GraphBuilder(name);
  }

  // ---- precision: compute in weights.precision; group-norm statistics, softmax and graph I/O in float32 ----

  toCompute(x: string): string {
    return this.w.precision === "float32"
      ? x
      : this.g.node("Cast", [x], { to: elementTypeCode(this.w.precision) });
  }

  toFloat32(x: string): string {
    return this.w.precision === "float32" ? x : this.g.node("Cast", [x], { to: elementTypeCode("float32") });
  }

  private ints(values: readonly number[]): string {
    return this.g.constant(values, [values.length], "int64");
  }

  private channels(key: string): number {
    return dim(this.w.shape(key), 0, key);
  }

  // ---- building blocks (ldm/modules/diffusionmodules/model.py) ----

  /** torch.nn.Conv2d; a [C_out, C_in] weight (a Linear saved in its place) is read as a 1×1 kernel. */
  conv(x: string, key: string, options: { stride?: number; pad?: number } = {}): string {
    const shape = this.w.shape(`${key}.weight`);
    const kernel = shape.length === 4 ? [shape[2] ?? 1, shape[3] ?? 1] : [1, 1];
    const weight =
      shape.length === 4
        ? this.w.weight(this.g, `${key}.weight`)
        : this.w.weight(this.g, `${key}.weight`, [...shape, 1, 1]);
    const pad = options.pad ?? ((kernel[0] ?? 1) - 1) / 2;
    const stride = options.stride ?? 1;
    return this.g.node("Conv", [x, weight, this.w.weight(this.g, `${key}.bias`)], {
      kernel_shape: kernel,
      pads: [pad, pad, pad, pad],
      strides: [stride, stride],
    });
  }

  /** Normalize: GroupNorm(32, C, eps 1e-6, affine), statistics in float32 (InstanceNormalization per group). */
  groupNorm(x: string, key: string): string {
    const { g } = this;
    const c = this.channels(`${key}.weight`);
    const groups = this.c.groups;
    const grouped = g.node("Reshape", [this.toFloat32(x), this.ints([0, groups, -1])]);
    const normed = g.node(
      "InstanceNormalization",
      [
        grouped,
        g.constant(new Float32Array(groups).fill(1), [groups]),
        g.constant(new Float32Array(groups), [groups]),
      ],
      { epsilon: { f: GROUP_NORM_EPS } },
    );
    const back = this.toCompute(g.node("Reshape", [normed, g.node("Shape", [x])]));
    const scaled = g.node("Mul", [back, this.w.weight(g, `${key}.weight`, [c, 1, 1])]);
    return g.node("Add", [scaled, this.w.weight(g, `${key}.bias`, [c, 1, 1])]);
  }

  /** nonlinearity: x · sigmoid(x). */
  silu(x: string): string {
    return this.g.node("Mul", [x, this.g.node("Sigmoid", [x])]);
  }

  /** ResnetBlock (no timestep embedding): two norm-SiLU-conv stages and a shortcut when channels change. */
  resnet(x: string, key: string): string {
    const h1 = this.conv(this.silu(this.groupNorm(x, `${key}.norm1`)), `${key}.conv1`);
    const h2 = this.conv(this.silu(this.groupNorm(h1, `${key}.norm2`)), `${key}.conv2`);
    let shortcut = x;
    if (this.w.has(`${key}.nin_shortcut.weight`)) shortcut = this.conv(x, `${key}.nin_shortcut`, { pad: 0 });
    else if (this.w.has(`${key}.conv_shortcut.weight`)) shortcut = this.conv(x, `${key}.conv_shortcut`);
    return this.g.node("Add", [shortcut, h2]);
  }

  /** AttnBlock: single-head spatial self-attention over h·w positions, scale 1/√C, softmax in float32. */
  attention(x: string, key: string): string {
    const { g } = this;
    const c = this.channels(`${key}.q.bias`);
    const h = this.groupNorm(x, `${key}.norm`);
    const flat = this.ints([0, 0, -1]);
    const q = g.node("Transpose", [g.node("Reshape", [this.conv(h, `${key}.q`, { pad: 0 }), flat])], {
      perm: [0, 2, 1],
    }); // [b, hw, c]
    const k = g.node("Reshape", [this.conv(h, `${key}.k`, { pad: 0 }), flat]); // [b, c, hw]
    const v = g.node("Transpose", [g.node("Reshape", [this.conv(h, `${key}.v`, { pad: 0 }), flat])], {
      perm: [0, 2, 1],
    }); // [b, hw, c]
    const scores = g.node("Mul", [this.toFloat32(g.node("MatMul", [q, k])), g.constant([c ** -0.5], [])]);
    const probs = this.toCompute(g.node("Softmax", [scores], { axis: -1 }));
    const attended = g.node("Transpose", [g.node("MatMul", [probs, v])], { perm: [0, 2, 1] }); // [b, c, hw]
    const spatial = g.node("Reshape", [attended, g.node("Shape", [x])]);
    return g.node("Add", [x, this.conv(spatial, `${key}.proj_out`, { pad: 0 })]);
  }

  /** Downsample (with_conv): pad right and bottom by one, then a 3×3 conv of stride 2. */
  downsample(x: string, key: string): string {
    const padded = this.g.node("Pad", [x, this.ints([0, 0, 0, 0, 0, 0, 1, 1])], { mode: "constant" });
    return this.conv(padded, `${key}.conv`, { stride: 2, pad: 0 });
  }

  /** Upsample (with_conv): nearest-neighbour ×2, then a 3×3 conv. */
  upsample(x: string, key: string): string {
    const resized = this.g.node("Resize", [x, "", this.g.constant([1, 1, 2, 2], [4])], {
      mode: "nearest",
      coordinate_transformation_mode: "asymmetric",
      nearest_mode: "floor",
    });
    return this.conv(resized, `${key}.conv`);
  }

  /** The optional per-block AttnBlock of a resolution in attn_resolutions (none in SD's VAEs). */
  private maybeAttention(x: string, key: string): string {
    return this.w.has(`${key}.q.weight`) ? this.attention(x, key) : x;
  }

  /** Encoder/Decoder mid: block_1, attn_1, block_2. */
  mid(x: string, root: string): string {
    const h = this.resnet(x, `${root}mid.block_1`);
    return this.resnet(this.attention(h, `${root}mid.attn_1`), `${root}mid.block_2`);
  }

  /** Encoder.forward: conv_in, down levels (blocks, then a Downsample except at the last), mid, norm_out, conv_out. */
  encoder(x: string): string {
    const root = `${this.c.prefix}encoder.`;
    const levels = this.c.chMult.length;
    let h = this.conv(x, `${root}conv_in`);
    for (let i = 0; i < levels; i++) {
      for (let j = 0; j < this.c.numResBlocks; j++) {
        h = this.resnet(h, `${root}down.${i}.block.${j}`);
        h = this.maybeAttention(h, `${root}down.${i}.attn.${j}`);
      }
      if (i !== levels - 1) h = this.downsample(h, `${root}down.${i}.downsample`);
    }
    h = this.mid(h, root);
    return this.conv(this.silu(this.groupNorm(h, `${root}norm_out`)), `${root}conv_out`);
  }

  /** Decoder.forward: conv_in, mid, up levels from the deepest (blocks, then an Upsample except at level 0). */
  decoder(z: string): string {
    const root = `${this.c.prefix}decoder.`;
    let h = this.mid(this.conv(z, `${root}conv_in`), root);
    for (let i = this.c.chMult.length - 1; i >= 0; i--) {
      for (let j = 0; j <= this.c.numResBlocks; j++) {
        h = this.resnet(h, `${root}up.${i}.block.${j}`);
        h = this.maybeAttention(h, `${root}up.${i}.attn.${j}`);
      }
      if (i !== 0) h = this.upsample(h, `${root}up.${i}.upsample`);
    }
    return this.conv(this.silu(this.groupNorm(h, `${root}norm_out`)), `${root}conv_out`);
  }
}

/** latent_sample → post_quant_conv → Decoder → sample (AutoencoderKL.decode). */
export function buildVaeDecoderGraph(weights: CheckpointWeights, config: VaeConfig): GraphBuilder {
  const vae = new VaeGraph(weights, config, "vae_decoder");
  const { g } = vae;
  const latent = g.input("latent_sample", "float32", [
    "batch_size",
    config.zChannels,
    "height_latent",
    "width_latent",
  ]);
  let z = vae.toCompute(latent);
  const post = `${config.prefix}post_quant_conv`;
  if (weights.has(`${post}.weight`)) z = vae.conv(z, post, { pad: 0 });
  const sample = vae.toFloat32(vae.decoder(z));
  g.output(sample, "sample", "float32", ["batch_size", config.outChannels, "height", "width"]);
  return g;
}

/** sample → Encoder → quant_conv → latent_parameters = mean ‖ logvar (AutoencoderKL.encode's moments). */
export function buildVaeEncoderGraph(weights: CheckpointWeights, config: VaeConfig): GraphBuilder {
  const vae = new VaeGraph(weights, config, "vae_encoder");
  const { g } = vae;
  const image = g.input("sample", "float32", ["batch_size", config.inChannels, "height", "width"]);
  let moments = vae.encoder(vae.toCompute(image));
  const quant = `${config.prefix}quant_conv`;
  if (weights.has(`${quant}.weight`)) moments = vae.conv(moments, quant, { pad: 0 });
  g.output(vae.toFloat32(moments), "latent_parameters", "float32", [
    "batch_size",
    2 * config.zChannels,
    "height_latent",
    "width_latent",
  ]);
  return g;
}
