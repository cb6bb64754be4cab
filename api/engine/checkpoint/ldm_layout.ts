/**
 * The key set and shapes of original-layout ("LDM" / A1111 / CompVis) Stable Diffusion single-file checkpoints,
 * generated from the architecture parameters of the LDM yaml configs, plus a streaming writer of random-weight
 * .safetensors files with those keys (for the full-size check and the load benchmark, which need real-sized files
 * without downloading 2–5 GB of weights).
 *
 * Module by module, the keys are the state_dict names of:
 * - UNet: `ldm/modules/diffusionmodules/openaimodel.py` UNetModel (ResBlock, SpatialTransformer of
 *   `ldm/modules/attention.py`, Downsample/Upsample), under `model.diffusion_model.`;
 * - VAE: `ldm/models/autoencoder.py` AutoencoderKL with `ldm/modules/diffusionmodules/model.py` Encoder/Decoder,
 *   under `first_stage_model.`;
 * - text encoder: transformers' CLIPTextModel under `cond_stage_model.transformer.text_model.` (SD 1.x,
 *   FrozenCLIPEmbedder) or OpenCLIP's text tower under `cond_stage_model.model.` (SD 2.x, FrozenOpenCLIPEmbedder,
 *   which deletes `model.visual`; `attn_mask` is a non-persistent buffer and is not saved); SDXL
 *   (Stability-AI/generative-models, `sgm/modules/encoders/modules.py` GeneralConditioner) has both, as
 *   `conditioner.embedders.0.transformer.text_model.` (FrozenCLIPEmbedder, CLIP ViT-L/14) and
 *   `conditioner.embedders.1.model.` (FrozenOpenCLIPEmbedder2, OpenCLIP ViT-bigG/14, again without `visual`);
 * - the DDPM noise-schedule buffers that `ldm/models/diffusion/ddpm.py` DDPM.register_schedule registers at the
 *   top level (`betas`, `alphas_cumprod`, …, each [timesteps]); `lvlb_weights` is registered non-persistent.
 *
 * The sd15/sd21 key sets were checked, key for key and shape for shape, against the component lists of
 * arenasys/stable-diffusion-webui-model-toolkit (`components/UNET-v1-SD.txt`, `UNET-v2-SD.txt`, `VAE-v1-SD.txt`,
 * `CLIP-v1-SD.txt`, `CLIP-v2-SD.txt` at e19dd46e), which that tool uses to recognise the released checkpoints'
 * components; test/engine/ldm_layout.test.ts pins digests of those lists. The sdxl key set was checked the same way
 * against the lists that tool's "SD-XL" architecture is made of (`UNET-XL-SD.txt`, `VAE-v1-SD.txt`,
 * `CLIP-XL-SD.txt` under `conditioner.embedders.1.model.` and `CLIP-v1-SD.txt` under
 * `conditioner.embedders.0.transformer.text_model.`, toolkit.py's CLIP-XL-AUX-SD, at e19dd46e).
 */
import { open } from "node:fs/promises";
import { floatsToHalfBits } from "../half.ts";
import { V_PREDICTION_PROBE } from "./detect.ts";
import {
  HF_CLIP_PREFIX,
  OPENCLIP_PREFIX,
  SDXL_BIGG_PREFIX,
  SDXL_CLIP_L_PREFIX,
  UNET_PREFIX,
  VAE_PREFIX,
} from "./keys.ts";

export interface TensorSpec {
  key: string;
  shape: number[];
  /** "float": written in the file's weight precision; "I64": integers (CLIP's position_ids, 0…n-1). */
  dtype: "float" | "I64";
}

/** UNetModel's parameters as the `unet_config.params` of an LDM yaml config name them. */
export interface UNetArch {
  inChannels: number;
  outChannels: number;
  modelChannels: number;
  channelMult: number[];
  numResBlocks: number;
  /** Downsampling rates (1, 2, 4, …) whose levels get a SpatialTransformer after each ResBlock. */
  attentionResolutions: number[];
  /** SpatialTransformer depth, one for all levels or one per level (SGM/SDXL style). */
  transformerDepth: number | number[];
  /** Depth of the middle block's transformer (default: the deepest level's depth). */
  transformerDepthMiddle?: number;
  contextDim: number;
  /** proj_in/proj_out as Linear [C, C] (SD 2.x, SDXL) instead of 1×1 Conv [C, C, 1, 1] (SD 1.x). */
  useLinearInTransformer: boolean;
  /** label_emb input width (SDXL's ADM vector), or null. */
  admInChannels: number | null;
  /**
   * Heads: a fixed count (num_heads), a fixed width (num_head_channels) or a count per level (what sdx's sidecar
   * `unet_attention_heads` gives, for the tiny test models). Not visible in the keys.
   */
  heads: { numHeads: number } | { numHeadChannels: number } | { numHeadsPerLevel: readonly number[] };
}

/** AutoencoderKL's ddconfig (plus embed_dim). */
export interface VaeArch {
  ch: number;
  chMult: number[];
  numResBlocks: number;
  zChannels: number;
  embedDim: number;
  inChannels: number;
  outCh: number;
  /** Mid-block attention q/k/v/proj_out as 1×1 convs [C, C, 1, 1] (LDM) or Linear [C, C] (some converted files). */
  attention: "conv" | "linear";
}

/** transformers' CLIPTextModel (SD 1.x's FrozenCLIPEmbedder). */
export interface HfClipArch {
  layout: "hf";
  width: number;
  layers: number;
  intermediate: number;
  heads: number;
  vocab: number;
  positions: number;
  /**
   * `embeddings.position_ids` I64 [1, positions]: saved by transformers < 4.31 (a persistent buffer then), so the
   * SD 1.x releases and most files made from them carry it.
   */
  positionIds: boolean;
}

/** OpenCLIP's text tower (SD 2.x's FrozenOpenCLIPEmbedder). */
export interface OpenClipArch {
  layout: "openclip";
  width: number;
  layers: number;
  heads: number;
  mlp: number;
  vocab: number;
  positions: number;
  /** text_projection's output width (the CLIP embedding width). */
  embedDim: number;
  /**
   * `logit_scale` []: a parameter of open_clip's CLIP, so LDM and SGM save it with the text tower; files converted
   * from a diffusers folder (whose CLIPTextModelWithProjection has no such parameter) lack it.
   */
  logitScale: boolean;
}

/** SDXL's two text encoders: SGM GeneralConditioner's embedders 0 (CLIP ViT-L/14) and 1 (OpenCLIP ViT-bigG/14). */
export interface SdxlTextArch {
  layout: "sdxl";
  /** `conditioner.embedders.0.transformer.text_model.`: FrozenCLIPEmbedder's transformers CLIPTextModel. */
  clipL: HfClipArch;
  /** `conditioner.embedders.1.model.`: FrozenOpenCLIPEmbedder2's open_clip text tower. */
  bigG: OpenClipArch;
}

export interface CheckpointArch {
  name: string;
  /** The released file this preset reproduces, and where its numbers come from. */
  mirrors: string;
  unet: UNetArch;
  vae: VaeArch;
  text: HfClipArch | OpenClipArch | SdxlTextArch;
  /** DDPM.register_schedule's buffers, each [timesteps], or null when the file has none. */
  scheduleBuffers: { timesteps: number } | null;
  /** The prediction type of the released model (a random file needs help to be detected as v-prediction). */
  predictionType: "epsilon" | "v_prediction";
}

/** The buffers DDPM.register_schedule registers, in registration order. */
export const SCHEDULE_BUFFERS = [
  "betas",
  "alphas_cumprod",
  "alphas_cumprod_prev",
  "sqrt_alphas_cumprod",
  "sqrt_one_minus_alphas_cumprod",
  "log_one_minus_alphas_cumprod",
  "sqrt_recip_alphas_cumprod",
  "sqrt_recipm1_alphas_cumprod",
  "posterior_variance",
  "posterior_log_variance_clipped",
  "posterior_mean_coef1",
  "posterior_mean_coef2",
] as const;

class Keys {
  readonly list: TensorSpec[] = [];
  constructor(private readonly prefix: string) {}
  add(key: string, shape: number[], dtype: TensorSpec["dtype"] = "float"): void {
    this.list.push({ key: this.prefix + key, shape, dtype });
  }
  /** weight and bias of a Linear, Conv (k×k) or norm layer. */
  layer(key: string, out: number, inp: number | null, kernel: number | null = null): void {
    const shape = inp === null ? [out] : kernel === null ? [out, inp] : [out, inp, kernel, kernel];
    this.add(`${key}.weight`, shape);
    this.add(`${key}.bias`, [out]);
  }
  norm(key: string, channels: number): void {
    this.layer(key, channels, null);
  }
}

/** The SpatialTransformer depth of each ResBlock at `level` (0: no attention there). */
export function depthAt(arch: UNetArch, level: number): number {
  const { transformerDepth } = arch;
  if (typeof transformerDepth === "number") {
    return arch.attentionResolutions.includes(2 ** level) ? transformerDepth : 0;
  }
  return arch.attentionResolutions.includes(2 ** level) ? (transformerDepth[level] ?? 0) : 0;
}

/** Attention heads at `level` of the UNet. */
export function headsAt(arch: UNetArch, level: number): number {
  const { heads } = arch;
  if ("numHeads" in heads) return heads.numHeads;
  if ("numHeadChannels" in heads)
    return (arch.modelChannels * (arch.channelMult[level] as number)) / heads.numHeadChannels;
  const count = heads.numHeadsPerLevel[level];
  if (count === undefined) throw new Error(`numHeadsPerLevel has no entry for level ${level}`);
  return count;
}

/** The UNet's tensors (openaimodel.UNetModel with use_spatial_transformer, legacy False). */
export function unetTensors(arch: UNetArch, prefix: string = UNET_PREFIX): TensorSpec[] {
  const k = new Keys(prefix);
  const mc = arch.modelChannels;
  const ted = mc * 4;
  k.layer("time_embed.0", ted, mc);
  k.layer("time_embed.2", ted, ted);
  if (arch.admInChannels !== null) {
    k.layer("label_emb.0.0", ted, arch.admInChannels);
    k.layer("label_emb.0.2", ted, ted);
  }
  const resBlock = (key: string, inp: number, out: number) => {
    k.norm(`${key}.in_layers.0`, inp);
    k.layer(`${key}.in_layers.2`, out, inp, 3);
    k.layer(`${key}.emb_layers.1`, out, ted);
    k.norm(`${key}.out_layers.0`, out);
    k.layer(`${key}.out_layers.3`, out, out, 3);
    if (inp !== out) k.layer(`${key}.skip_connection`, out, inp, 1);
  };
  // SpatialTransformer: inner width = heads × head_dim = the level's channels in every SD model.
  const transformer = (key: string, ch: number, depth: number) => {
    const proj = (name: string) =>
      arch.useLinearInTransformer ? k.layer(`${key}.${name}`, ch, ch) : k.layer(`${key}.${name}`, ch, ch, 1);
    k.add(`${key}.norm.weight`, [ch]);
    k.add(`${key}.norm.bias`, [ch]);
    proj("proj_in");
    for (let d = 0; d < depth; d++) {
      const b = `${key}.transformer_blocks.${d}`;
      k.add(`${b}.attn1.to_q.weight`, [ch, ch]);
      k.add(`${b}.attn1.to_k.weight`, [ch, ch]);
      k.add(`${b}.attn1.to_v.weight`, [ch, ch]);
      k.layer(`${b}.attn1.to_out.0`, ch, ch);
      k.layer(`${b}.ff.net.0.proj`, ch * 8, ch); // GEGLU: 2 × (4 × ch)
      k.layer(`${b}.ff.net.2`, ch, ch * 4);
      k.add(`${b}.attn2.to_q.weight`, [ch, ch]);
      k.add(`${b}.attn2.to_k.weight`, [ch, arch.contextDim]);
      k.add(`${b}.attn2.to_v.weight`, [ch, arch.contextDim]);
      k.layer(`${b}.attn2.to_out.0`, ch, ch);
      k.norm(`${b}.norm1`, ch);
      k.norm(`${b}.norm2`, ch);
      k.norm(`${b}.norm3`, ch);
    }
    proj("proj_out");
  };

  k.layer("input_blocks.0.0", mc, arch.inChannels, 3);
  const skips = [mc];
  let ch = mc;
  let block = 1;
  const levels = arch.channelMult.length;
  for (const [level, mult] of arch.channelMult.entries()) {
    for (let r = 0; r < arch.numResBlocks; r++) {
      resBlock(`input_blocks.${block}.0`, ch, mult * mc);
      ch = mult * mc;
      const depth = depthAt(arch, level);
      if (depth > 0) transformer(`input_blocks.${block}.1`, ch, depth);
      skips.push(ch);
      block++;
    }
    if (level !== levels - 1) {
      k.layer(`input_blocks.${block}.0.op`, ch, ch, 3);
      skips.push(ch);
      block++;
    }
  }
  resBlock("middle_block.0", ch, ch);
  // SGM's UNetModel: transformer_depth_middle defaults to transformer_depth[-1].
  const middleDepth =
    arch.transformerDepthMiddle ??
    (typeof arch.transformerDepth === "number"
      ? arch.transformerDepth
      : (arch.transformerDepth[arch.transformerDepth.length - 1] ?? 1));
  transformer("middle_block.1", ch, middleDepth);
  resBlock("middle_block.2", ch, ch);

  block = 0;
  for (let level = levels - 1; level >= 0; level--) {
    const out = (arch.channelMult[level] as number) * mc;
    for (let i = 0; i <= arch.numResBlocks; i++) {
      const skip = skips.pop() as number;
      resBlock(`output_blocks.${block}.0`, ch + skip, out);
      ch = out;
      let index = 1;
      const depth = depthAt(arch, level);
      if (depth > 0) transformer(`output_blocks.${block}.${index++}`, ch, depth);
      if (level > 0 && i === arch.numResBlocks) k.layer(`output_blocks.${block}.${index}.conv`, ch, ch, 3);
      block++;
    }
  }
  k.norm("out.0", mc);
  k.layer("out.2", arch.outChannels, mc, 3);
  return k.list;
}

/** The VAE's tensors (AutoencoderKL: Encoder, Decoder, quant_conv, post_quant_conv; attn_resolutions empty). */
export function vaeTensors(arch: VaeArch, prefix: string = VAE_PREFIX): TensorSpec[] {
  const k = new Keys(prefix);
  const resnet = (key: string, inp: number, out: number) => {
    k.norm(`${key}.norm1`, inp);
    k.layer(`${key}.conv1`, out, inp, 3);
    k.norm(`${key}.norm2`, out);
    k.layer(`${key}.conv2`, out, out, 3);
    if (inp !== out) k.layer(`${key}.nin_shortcut`, out, inp, 1);
  };
  const attention = (key: string, c: number) => {
    k.norm(`${key}.norm`, c);
    for (const name of ["q", "k", "v", "proj_out"]) {
      if (arch.attention === "conv") k.layer(`${key}.${name}`, c, c, 1);
      else k.layer(`${key}.${name}`, c, c);
    }
  };
  const mid = (key: string, c: number) => {
    resnet(`${key}.mid.block_1`, c, c);
    attention(`${key}.mid.attn_1`, c);
    resnet(`${key}.mid.block_2`, c, c);
  };
  const levels = arch.chMult.length;
  const width = (level: number) => arch.ch * (arch.chMult[level] as number);

  k.layer("encoder.conv_in", arch.ch, arch.inChannels, 3);
  let c = arch.ch;
  for (let level = 0; level < levels; level++) {
    for (let j = 0; j < arch.numResBlocks; j++) {
      resnet(`encoder.down.${level}.block.${j}`, c, width(level));
      c = width(level);
    }
    if (level !== levels - 1) k.layer(`encoder.down.${level}.downsample.conv`, c, c, 3);
  }
  mid("encoder", c);
  k.norm("encoder.norm_out", c);
  k.layer("encoder.conv_out", 2 * arch.zChannels, c, 3); // double_z

  c = width(levels - 1);
  k.layer("decoder.conv_in", c, arch.zChannels, 3);
  mid("decoder", c);
  for (let level = levels - 1; level >= 0; level--) {
    for (let j = 0; j <= arch.numResBlocks; j++) {
      resnet(`decoder.up.${level}.block.${j}`, c, width(level));
      c = width(level);
    }
    if (level !== 0) k.layer(`decoder.up.${level}.upsample.conv`, c, c, 3);
  }
  k.norm("decoder.norm_out", c);
  k.layer("decoder.conv_out", arch.outCh, c, 3);

  k.layer("quant_conv", 2 * arch.embedDim, 2 * arch.zChannels, 1);
  k.layer("post_quant_conv", arch.zChannels, arch.embedDim, 1);
  return k.list;
}

/** transformers' CLIPTextModel tensors under `prefix` (which ends in `text_model.`). */
export function hfClipTensors(arch: HfClipArch, prefix: string = HF_CLIP_PREFIX): TensorSpec[] {
  const k = new Keys(prefix);
  const w = arch.width;
  k.add("embeddings.token_embedding.weight", [arch.vocab, w]);
  k.add("embeddings.position_embedding.weight", [arch.positions, w]);
  if (arch.positionIds) k.add("embeddings.position_ids", [1, arch.positions], "I64");
  for (let i = 0; i < arch.layers; i++) {
    const l = `encoder.layers.${i}`;
    for (const p of ["k_proj", "v_proj", "q_proj", "out_proj"]) k.layer(`${l}.self_attn.${p}`, w, w);
    k.norm(`${l}.layer_norm1`, w);
    k.layer(`${l}.mlp.fc1`, arch.intermediate, w);
    k.layer(`${l}.mlp.fc2`, w, arch.intermediate);
    k.norm(`${l}.layer_norm2`, w);
  }
  k.norm("final_layer_norm", w);
  return k.list;
}

/** OpenCLIP text-tower tensors (the CLIP model without `visual`) under `prefix`. */
export function openClipTensors(arch: OpenClipArch, prefix: string = OPENCLIP_PREFIX): TensorSpec[] {
  const k = new Keys(prefix);
  const w = arch.width;
  k.add("positional_embedding", [arch.positions, w]);
  k.add("text_projection", [w, arch.embedDim]);
  if (arch.logitScale) k.add("logit_scale", []);
  for (let i = 0; i < arch.layers; i++) {
    const l = `transformer.resblocks.${i}`;
    k.norm(`${l}.ln_1`, w);
    k.add(`${l}.attn.in_proj_weight`, [3 * w, w]);
    k.add(`${l}.attn.in_proj_bias`, [3 * w]);
    k.layer(`${l}.attn.out_proj`, w, w);
    k.norm(`${l}.ln_2`, w);
    k.layer(`${l}.mlp.c_fc`, arch.mlp, w);
    k.layer(`${l}.mlp.c_proj`, w, arch.mlp);
  }
  k.add("token_embedding.weight", [arch.vocab, w]);
  k.norm("ln_final", w);
  return k.list;
}

/** The text encoders' tensors under their family's prefixes. */
export function textTensors(text: CheckpointArch["text"]): TensorSpec[] {
  if (text.layout === "hf") return hfClipTensors(text);
  if (text.layout === "openclip") return openClipTensors(text);
  return [...hfClipTensors(text.clipL, SDXL_CLIP_L_PREFIX), ...openClipTensors(text.bigG, SDXL_BIGG_PREFIX)];
}

/** Every tensor of the checkpoint: schedule buffers, UNet, VAE, text encoder(s). */
export function ldmTensors(arch: CheckpointArch): TensorSpec[] {
  const buffers: TensorSpec[] = arch.scheduleBuffers
    ? SCHEDULE_BUFFERS.map((key) => ({
        key,
        shape: [(arch.scheduleBuffers as { timesteps: number }).timesteps],
        dtype: "float" as const,
      }))
    : [];
  return [...buffers, ...unetTensors(arch.unet), ...vaeTensors(arch.vae), ...textTensors(arch.text)];
}

/**
 * The SD VAE of v1-inference.yaml, v2-inference-v.yaml and sd_xl_base.yaml alike (`first_stage_config.params.ddconfig`;
 * SDXL's VAE has other weights, not other shapes).
 */
const SD_VAE: VaeArch = {
  ch: 128,
  chMult: [1, 2, 4, 4],
  numResBlocks: 2,
  zChannels: 4,
  embedDim: 4,
  inChannels: 3,
  outCh: 3,
  attention: "conv",
};

export const PRESETS = {
  /**
   * runwayml/stable-diffusion-v1-5 `v1-5-pruned-emaonly.safetensors` (the released file stores F32, 4.27 GB).
   * UNet and VAE: CompVis/stable-diffusion `configs/stable-diffusion/v1-inference.yaml` (model_channels 320,
   * channel_mult [1, 2, 4, 4], num_res_blocks 2, attention_resolutions [4, 2, 1], num_heads 8,
   * transformer_depth 1, context_dim 768; ddconfig ch 128, ch_mult [1, 2, 4, 4], z_channels 4).
   * Text encoder: FrozenCLIPEmbedder = openai/clip-vit-large-patch14's text model (hidden 768, 12 layers,
   * 12 heads, intermediate 3072, vocab 49408, 77 positions), saved with position_ids.
   * 686 UNet + 248 VAE + 197 text-encoder tensors (as the toolkit's lists) + 12 schedule buffers.
   */
  sd15: {
    name: "sd15",
    mirrors: "runwayml v1-5-pruned-emaonly.safetensors (v1-inference.yaml)",
    unet: {
      inChannels: 4,
      outChannels: 4,
      modelChannels: 320,
      channelMult: [1, 2, 4, 4],
      numResBlocks: 2,
      attentionResolutions: [4, 2, 1],
      transformerDepth: 1,
      contextDim: 768,
      useLinearInTransformer: false,
      admInChannels: null,
      heads: { numHeads: 8 },
    },
    vae: SD_VAE,
    text: {
      layout: "hf",
      width: 768,
      layers: 12,
      intermediate: 3072,
      heads: 12,
      vocab: 49408,
      positions: 77,
      positionIds: true,
    },
    scheduleBuffers: { timesteps: 1000 },
    predictionType: "epsilon",
  },
  /**
   * stabilityai/stable-diffusion-2-1 `v2-1_768-ema-pruned.safetensors` (the released file stores F32, 5.2 GB).
   * UNet and VAE: Stability-AI/stablediffusion `configs/stable-diffusion/v2-inference-v.yaml` (parameterization
   * "v", model_channels 320, channel_mult [1, 2, 4, 4], num_res_blocks 2, attention_resolutions [4, 2, 1],
   * num_head_channels 64, use_linear_in_transformer True, transformer_depth 1, context_dim 1024; the same VAE).
   * Text encoder: FrozenOpenCLIPEmbedder(arch "ViT-H-14") — open_clip's ViT-H-14 text tower: width 1024,
   * 16 heads, 24 layers (all saved, although SD 2.x reads the penultimate), mlp 4096, embed_dim 1024,
   * vocab 49408, context 77; plus text_projection and logit_scale.
   * 686 UNet + 248 VAE + 294 text-encoder tensors (as the toolkit's lists) + 12 schedule buffers.
   */
  sd21: {
    name: "sd21",
    mirrors: "stabilityai v2-1_768-ema-pruned.safetensors (v2-inference-v.yaml)",
    unet: {
      inChannels: 4,
      outChannels: 4,
      modelChannels: 320,
      channelMult: [1, 2, 4, 4],
      numResBlocks: 2,
      attentionResolutions: [4, 2, 1],
      transformerDepth: 1,
      contextDim: 1024,
      useLinearInTransformer: true,
      admInChannels: null,
      heads: { numHeadChannels: 64 },
    },
    vae: SD_VAE,
    text: {
      layout: "openclip",
      width: 1024,
      layers: 24,
      heads: 16,
      mlp: 4096,
      vocab: 49408,
      positions: 77,
      embedDim: 1024,
      logitScale: true,
    },
    scheduleBuffers: { timesteps: 1000 },
    predictionType: "v_prediction",
  },
  /**
   * test/fixtures/checkpoints/tiny_sd15.safetensors (its config: tiny_sd15.yaml beside it): the SD 1.x layout
   * at tiny widths — UNet model_channels 32, channel_mult [1, 1, 2, 2] (block_out_channels 32, 32, 64, 64),
   * attention_resolutions [4, 2, 1], context_dim 32; CLIP hidden 32, 3 layers, 4 heads, intermediate 37;
   * VAE ch 32, ch_mult [1, 1, 2, 2]. Like a released SD 1.x file it has position_ids and the schedule buffers,
   * which the fixture lacks (it was converted from a diffusers folder; see test/engine/ldm_layout.test.ts).
   */
  tiny_sd15: {
    name: "tiny_sd15",
    mirrors: "test/fixtures/checkpoints/tiny_sd15.safetensors (tiny_sd15.yaml)",
    unet: {
      inChannels: 4,
      outChannels: 4,
      modelChannels: 32,
      channelMult: [1, 1, 2, 2],
      numResBlocks: 2,
      attentionResolutions: [4, 2, 1],
      transformerDepth: 1,
      contextDim: 32,
      useLinearInTransformer: false,
      admInChannels: null,
      heads: { numHeads: 8 },
    },
    vae: { ...SD_VAE, ch: 32, chMult: [1, 1, 2, 2] },
    text: {
      layout: "hf",
      width: 32,
      layers: 3,
      intermediate: 37,
      heads: 4,
      vocab: 49408,
      positions: 77,
      positionIds: true,
    },
    scheduleBuffers: { timesteps: 1000 },
    predictionType: "epsilon",
  },
  /**
   * stabilityai/stable-diffusion-xl-base-1.0 `sd_xl_base_1.0.safetensors` (the released file stores F16, 6.94 GB).
   * UNet and VAE: Stability-AI/generative-models `configs/inference/sd_xl_base.yaml` (network_config:
   * adm_in_channels 2816, model_channels 320, channel_mult [1, 2, 4], num_res_blocks 2, attention_resolutions
   * [4, 2], transformer_depth [1, 2, 10] — the first unused, level 0 has no attention — and the middle block's
   * depth defaulting to the last, 10; num_head_channels 64, use_linear_in_transformer, context_dim 2048 = 768 +
   * 1280; first_stage_config.ddconfig as SD's). The ADM vector is the pooled bigG embedding (1280) and the
   * 256-wide sinusoids of six time ids (ConcatTimestepEmbedderND outdim 256 for original size, crop and target
   * size, two numbers each): 1280 + 6 × 256 = 2816.
   * Text encoders: FrozenCLIPEmbedder (openai/clip-vit-large-patch14's text model, as SD 1.x's, saved with
   * position_ids) and FrozenOpenCLIPEmbedder2(arch "ViT-bigG-14"): width 1280, 20 heads, 32 layers, mlp 5120,
   * embed_dim 1280, vocab 49408, context 77, with text_projection [1280, 1280] and logit_scale.
   * 1680 UNet + 248 VAE + 197 CLIP-L + 390 bigG tensors = 2515, as the toolkit's SD-XL lists; no schedule buffers
   * (SGM's DiffusionEngine computes its discretization instead of registering LDM's DDPM buffers).
   */
  sdxl: {
    name: "sdxl",
    mirrors: "stabilityai sd_xl_base_1.0.safetensors (sd_xl_base.yaml)",
    unet: {
      inChannels: 4,
      outChannels: 4,
      modelChannels: 320,
      channelMult: [1, 2, 4],
      numResBlocks: 2,
      attentionResolutions: [4, 2],
      transformerDepth: [1, 2, 10],
      transformerDepthMiddle: 10,
      contextDim: 2048,
      useLinearInTransformer: true,
      admInChannels: 2816,
      heads: { numHeadChannels: 64 },
    },
    vae: SD_VAE,
    text: {
      layout: "sdxl",
      clipL: {
        layout: "hf",
        width: 768,
        layers: 12,
        intermediate: 3072,
        heads: 12,
        vocab: 49408,
        positions: 77,
        positionIds: true,
      },
      bigG: {
        layout: "openclip",
        width: 1280,
        layers: 32,
        heads: 20,
        mlp: 5120,
        vocab: 49408,
        positions: 77,
        embedDim: 1280,
        logitScale: true,
      },
    },
    scheduleBuffers: null,
    predictionType: "epsilon",
  },
  /**
   * test/fixtures/checkpoints/tiny_sdxl.safetensors (the tiny random SDXL of the reference set, in the SGM layout):
   * UNet model_channels 32, channel_mult [1, 2, 2] (block_out_channels 32, 64, 64), attention at levels 1 and 2
   * with transformer depth 2 (middle 2), context_dim 56 = 32 + 24, linear projections, label_emb over 80 = 32
   * pooled + 6 × 8 (time embedding 128 = 4 × 32); per-level heads (2, 4, 8), which tests give by the sidecar's
   * unet_attention_heads. Text encoders: CLIP hidden 32, 3 layers, intermediate 37; OpenCLIP width 24, 3 layers,
   * mlp 64, projection 24 → 32. VAE as tiny_sd15's. Like a file converted from a diffusers folder it has no
   * position_ids and no logit_scale (the released SDXL file has both); the test compares it to the fixture exactly.
   */
  tiny_sdxl: {
    name: "tiny_sdxl",
    mirrors: "test/fixtures/checkpoints/tiny_sdxl.safetensors",
    unet: {
      inChannels: 4,
      outChannels: 4,
      modelChannels: 32,
      channelMult: [1, 2, 2],
      numResBlocks: 2,
      attentionResolutions: [4, 2],
      transformerDepth: [0, 2, 2],
      transformerDepthMiddle: 2,
      contextDim: 56,
      useLinearInTransformer: true,
      admInChannels: 80,
      heads: { numHeadsPerLevel: [2, 4, 8] },
    },
    vae: { ...SD_VAE, ch: 32, chMult: [1, 1, 2, 2] },
    text: {
      layout: "sdxl",
      clipL: {
        layout: "hf",
        width: 32,
        layers: 3,
        intermediate: 37,
        heads: 4,
        vocab: 49408,
        positions: 77,
        positionIds: false,
      },
      bigG: {
        layout: "openclip",
        width: 24,
        layers: 3,
        heads: 4,
        mlp: 64,
        vocab: 49408,
        positions: 77,
        embedDim: 32,
        logitScale: false,
      },
    },
    scheduleBuffers: null,
    predictionType: "epsilon",
  },
} as const satisfies Record<string, CheckpointArch>;

export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

export function isPresetName(name: string): name is PresetName {
  return Object.hasOwn(PRESETS, name);
}

/** Elements in a tensor of `shape` (1 for a scalar). */
export function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

export type WeightDtype = "F16" | "F32";

function byteSize(spec: TensorSpec, dtype: WeightDtype): number {
  const bytes = spec.dtype === "I64" ? 8 : dtype === "F16" ? 2 : 4;
  return elementCount(spec.shape) * bytes;
}

/** Parameter count of the float tensors and the bytes they take in `dtype`. */
export function checkpointBytes(tensors: readonly TensorSpec[], dtype: WeightDtype): number {
  return tensors.reduce((n, t) => n + byteSize(t, dtype), 0);
}

/**
 * The spread of a tensor's random values: variance 1/fan_in for matrices and convolutions (activations keep
 * their scale through the layers, so outputs stay finite), 0.05 for vectors and scalars — except the v-prediction
 * probe of a v-prediction preset, which gets a std of 0.15 so the file is detected as the model it mirrors.
 */
function valueStd(spec: TensorSpec, arch: CheckpointArch | null): number {
  if (arch?.predictionType === "v_prediction" && spec.key === V_PREDICTION_PROBE) return 0.15;
  if (spec.shape.length < 2) return 0.05;
  return 1 / Math.sqrt(elementCount(spec.shape.slice(1)));
}

export interface WriteOptions {
  dtype?: WeightDtype;
  seed?: number;
  /** The preset the tensors come from (for the v-prediction probe). */
  arch?: CheckpointArch | null;
  /** Bytes written per write call (the only buffer held: the file is never in memory). */
  chunkBytes?: number;
}

/**
 * Writes a .safetensors file of random weights with the given tensors, streaming it through one fixed-size
 * buffer. Data is laid out as the safetensors library lays it out (wider dtypes first, then by name), so every
 * tensor is aligned to its element size. Values are uniform with the spread `valueStd` gives, drawn from a
 * seeded xorshift32 through a 65536-entry table per spread (fast enough to write gigabytes in seconds).
 */
export async function writeRandomCheckpoint(
  path: string,
  tensors: readonly TensorSpec[],
  options: WriteOptions = {},
): Promise<{ bytes: number; dataOffset: number }> {
  const dtype = options.dtype ?? "F16";
  const chunkBytes = Math.max(8, Math.floor((options.chunkBytes ?? 16 * 1024 * 1024) / 8) * 8);
  const width = (t: TensorSpec) => (t.dtype === "I64" ? 8 : dtype === "F16" ? 2 : 4);
  const ordered = [...tensors].sort((a, b) =>
    width(a) !== width(b) ? width(b) - width(a) : a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
  );
  const header: Record<string, unknown> = {
    __metadata__: { format: "pt", sdx_random_weights: options.arch?.name ?? "custom" },
  };
  let offset = 0;
  for (const t of ordered) {
    const size = byteSize(t, dtype);
    header[t.key] = {
      dtype: t.dtype === "I64" ? "I64" : dtype,
      shape: t.shape,
      data_offsets: [offset, offset + size],
    };
    offset += size;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - ((8 + json.length) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);

  const file = await open(path, "w");
  try {
    await file.write(prefix);
    await file.write(headerBytes);
    const buffer = new ArrayBuffer(chunkBytes);
    const bytes = new Uint8Array(buffer);
    let used = 0;
    const flush = async () => {
      if (used > 0) await file.write(bytes, 0, used);
      used = 0;
    };
    let state = (options.seed ?? 0x5d_c0ff_ee) | 0 || 1;
    const tables = new Map<number, Uint16Array | Uint32Array>();
    const tableFor = (std: number): Uint16Array | Uint32Array => {
      let table = tables.get(std);
      if (!table) {
        const a = std * Math.sqrt(3);
        const values = Float32Array.from({ length: 65536 }, (_, i) => a * ((2 * i + 1) / 65536 - 1));
        table = dtype === "F16" ? floatsToHalfBits(values) : new Uint32Array(values.buffer);
        tables.set(std, table);
      }
      return table;
    };
    for (const t of ordered) {
      const n = elementCount(t.shape);
      if (t.dtype === "I64") {
        // position_ids: 0 … n-1, as transformers' torch.arange(max_position_embeddings).expand((1, -1)).
        for (let i = 0; i < n; i++) {
          if (used + 8 > chunkBytes) await flush();
          new DataView(buffer, used, 8).setBigInt64(0, BigInt(i), true);
          used += 8;
        }
        continue;
      }
      const table = tableFor(valueStd(t, options.arch ?? null));
      const size = dtype === "F16" ? 2 : 4;
      let done = 0;
      while (done < n) {
        if (used === chunkBytes) await flush();
        const count = Math.min(n - done, (chunkBytes - used) / size);
        const out =
          dtype === "F16" ? new Uint16Array(buffer, used, count) : new Uint32Array(buffer, used, count);
        for (let i = 0; i < count; i++) {
          state ^= state << 13;
          state ^= state >>> 17;
          state ^= state << 5;
          out[i] = table[state & 0xffff] as number;
        }
        used += count * size;
        done += count;
      }
    }
    await flush();
  } finally {
    await file.close();
  }
  return { bytes: 8 + headerBytes.length + offset, dataOffset: 8 + headerBytes.length };
}
