/**
 * The pipeline's shared types: a loaded model's components and capabilities, what a generation takes, and
 * what its stages report and return. Types only; the stages, the loader and each model family's text stage
 * import them from here.
 */
import type {
  ExecutionProvider,
  HiresUpscaler,
  MaskedContent,
  PreviewMethod,
  PromptSyntax,
  SchedulerName,
} from "../../../contract/index.ts";
import type { AttentionVariant } from "../checkpoint/attention_variant.ts";
import type { CheckpointBuild, PipelineFiles } from "../checkpoint/build.ts";
import type { WeightResidency } from "../checkpoint/weight_residency.ts";
import type { FinalLayerNorm } from "../onnx/final_layer_norm.ts";
import type { FeedValue, OnnxModel } from "../onnx/runtime.ts";
import type { Conditioning } from "../prompt/encode.ts";
import type { SchedulerConfig, SchedulerOptions } from "../schedulers/scheduler.ts";
import type { ClipTokenizer, PromptEmbedding } from "../tokenizer/clip.ts";
import type { FusedFolderUNet } from "./folder_attention.ts";
import type { TileGeometry } from "./vae_tiling.ts";

/** What a loaded model can do, for checks made before a request reaches the engine. */
export interface ModelCapabilities {
  /** Deepest `clip_skip` (A1111 counting) the text encoder allows; 1 when it cannot skip layers. */
  clipSkipMax: number;
  /** Why clip skip is unavailable, when it is. */
  clipSkipUnavailable: string | null;
  /** Whether the UNet takes conditioning longer than 77 tokens (several prompt chunks). */
  longPrompts: boolean;
  /** The UNet's fixed batch size, or null when its batch axis is dynamic. */
  unetBatch: number | null;
  /** SDXL: the empty-negative-prompt rule of its model_index.json; absent or null for SD 1.x/2.x. */
  xl?: { forceZerosForEmptyPrompt: boolean } | null;
  /** Channels the UNet's `sample` input takes: 4, or 9 for inpainting models (latents ‖ mask ‖ masked-image latents). */
  unetInChannels: number;
  /** Whether the model has a VAE encoder (needed to start from an image). */
  vaeEncoder: boolean;
}

export interface LoadOptions {
  /**
   * How the UNet computes attention: for a checkpoint, in the graphs sdx builds; for an ONNX folder, "fused"
   * rewrites its UNet's attentions into MultiHeadAttention (pipeline/folder_attention.ts).
   * Default: DEFAULT_ATTENTION (fused) on every provider.
   */
  attention?: AttentionVariant;
  /**
   * The precision checkpoint graphs compute in. Default: float16 on CUDA, float32 elsewhere; the host asks for
   * float16 on WebGPU when the adapter computes it (shader-f16).
   */
  precision?: "float32" | "float16";
  /**
   * Which float16 weights of a checkpoint's float32 graphs onnxruntime keeps as float32 (checkpoint/weight_residency.ts).
   * Default: "lean" on the CPU, "folded" on GPUs.
   */
  residency?: WeightResidency;
}

export interface PipelineComponents {
  files: PipelineFiles;
  /** For a single-file checkpoint: whether its graphs were built now or reused from the cache. */
  checkpointGraphs: { reused: boolean; buildMs: number } | null;
  /** For an ONNX folder loaded with fused attention: how many of its UNet's attentions were fused. */
  folderAttention: FusedFolderUNet | null;
  /** For a single-file checkpoint: what adapter graphs (LoRA, embeddings) are built from; null for ONNX folders. */
  checkpoint: CheckpointBuild | null;
  /** The adapter set whose weights the text encoder and UNet sessions hold ("" = the checkpoint's own). */
  adapterKey: string;
  /**
   * The LoRA branch feeds of every UNet run once the UNet session is the LoRA-ready graph (unet.lora.onnx): the
   * current set's factors, zero rank for the layers it leaves alone; null while it is the checkpoint's plain graph.
   */
  unetLora: Record<string, FeedValue> | null;
  /** Where each session's graph is, so a released session can be created again (null: no VAE encoder). */
  paths: Record<Exclude<Stage, "vae_encoder">, string> & { vae_encoder: string | null };
  provider: ExecutionProvider;
  tokenizer: ClipTokenizer;
  textEncoder: OnnxModel;
  unet: OnnxModel;
  vaeDecoder: OnnxModel;
  /** Created on first use (image-to-image), and released with the other sessions. */
  vaeEncoder: OnnxModel | null;
  schedulerConfig: SchedulerConfig;
  /** Latents are divided by this before decoding (0.18215 for SD 1.x/2.x). */
  vaeScalingFactor: number;
  /** Pixels per latent cell (8). */
  vaeScaleFactor: number;
  tileGeometry: TileGeometry;
  /** The text encoder's final layer norm, applied to an earlier layer's states for clip skip. */
  finalLayerNorm: FinalLayerNorm | null;
  /** Number of transformer layers whose outputs the text encoder exposes (`hidden_states.1…L`). */
  textEncoderLayers: number;
  /** SDXL's second text encoder and added conditions; null for SD 1.x/2.x. */
  xl: XlComponents | null;
  capabilities: ModelCapabilities;
}

/** SDXL's own components and facts, beside the shared ones (text_encoder, unet, vae_decoder). */
export interface XlComponents {
  tokenizer2: ClipTokenizer;
  textEncoder2: OnnxModel;
  /** Where text_encoder_2's graph is, so a released session can be created again. */
  textEncoder2Path: string;
  /** Transformer layers each encoder exposes as `hidden_states.1…L` (encoder 1, encoder 2). */
  layers: readonly [number, number];
  /** model_index.json's `force_zeros_for_empty_prompt` (true for SDXL base). */
  forceZerosForEmptyPrompt: boolean;
  /** Width of the pooled embedding the UNet's `text_embeds` input takes (encoder 2's projection_dim). */
  pooledWidth: number;
}

export interface GenerateInput {
  prompt: string;
  /** null: no negative prompt (the unconditional branch encodes ""), as in diffusers. */
  negativePrompt: string | null;
  promptSyntax: PromptSyntax;
  /**
   * Textual-inversion embeddings in load order: their names in the prompts become added token ids (≥ the
   * vocabulary size), which the text encoders read from token-embedding tables extended in the same order.
   */
  embeddings?: readonly PromptEmbedding[];
  /** One seed per image; image i is drawn from its own generator seeded with seeds[i]. */
  seeds: readonly number[];
  width: number;
  height: number;
  numSteps: number;
  guidanceScale: number;
  scheduler: SchedulerName;
  schedulerOptions: SchedulerOptions;
  /**
   * A1111 counting: 1 = the last layer (SD 1.x/2.x) — for SDXL, whose default is the penultimate layer,
   * k reads hidden_states[-(k + 1)] of both encoders (diffusers' clip_skip k − 1).
   */
  clipSkip: number;
  /** SDXL: the second encoder's prompt; null or "" = the prompt (diffusers' `prompt_2 or prompt`). */
  prompt2?: string | null;
  /** SDXL: the second encoder's negative prompt; null or "" = the negative prompt. */
  negativePrompt2?: string | null;
  /** SDXL micro-conditioning in diffusers' order, [height, width]; null = [height, width] of the image. */
  originalSize?: readonly [number, number] | null;
  /** SDXL micro-conditioning [top, left]; null = [0, 0]. */
  cropsCoordsTopLeft?: readonly [number, number] | null;
  /** SDXL micro-conditioning [height, width]; null = [height, width] of the image. */
  targetSize?: readonly [number, number] | null;
  /** Decode the batch one image at a time (lower peak memory, same pixels). */
  vaeSlicing: boolean;
  /** Decode in overlapping tiles when the latents exceed one tile (diffusers' enable_vae_tiling). */
  vaeTiling: boolean;
  /** Per image: the text stored in its PNG's `parameters` chunk (AUTOMATIC1111 infotext). */
  pngParameters?: readonly string[];
  /** Image-to-image and inpainting; absent or null for text-to-image. */
  image?: ImageInput | null;
  /** The hires fix's second pass; absent or null for one pass. */
  hires?: HiresInput | null;
  /** LoRAs, embeddings and a VAE file; absent or null: none. */
  adapters?: AdapterInput | null;
  /** Live previews of the latents while they denoise; absent or null: none. */
  preview?: PreviewInput | null;
}

/** Live previews: one per image after every `every`-th step of the whole run (hires: both passes) and after the last. */
export interface PreviewInput {
  every: number;
  method: PreviewMethod;
  /** taesd: the tiny autoencoder's decoder weights (the vae_approx models folder); null for approx. */
  decoderPath: string | null;
}

/** The adapter files a generation uses (resolved, usable, of the model's family). */
export interface AdapterInput {
  /** The LoRA-and-embedding set the text encoder and UNet weights must hold ("": none). */
  key: string;
  loras: { name: string; path: string; weight: number }[];
  /** Embeddings whose names the prompts use, expanded to their vectors by the tokenizer. */
  embeddings: { name: string; path: string }[];
  /** A VAE file instead of the model's own; null: its own. */
  vae: { name: string; path: string } | null;
}

/** A rectangle of an image in pixels; x2 and y2 exclusive (PIL's box). */
export interface CropRegion {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

/** 8-bit interleaved RGB pixels. */
export interface RgbPixels {
  data: Uint8Array;
  width: number;
  height: number;
}

/** 8-bit single-channel pixels (a mask: 255 = repaint). */
export interface GrayPixels {
  data: Uint8Array;
  width: number;
  height: number;
}

/** What image-to-image starts from, already decoded and at the generation's width × height. */
export interface ImageInput {
  /** The init image, RGB at width × height. */
  rgb: Uint8Array;
  /** In (0, 1]: the sampler runs int(numSteps · strength) steps of its schedule (diffusers' get_timesteps). */
  strength: number;
  /** Inpainting: one byte per pixel at width × height, ≥ 128 repaints (diffusers binarizes at 0.5); null: img2img. */
  mask: Uint8Array | null;
  /** What the repainted region starts from (AUTOMATIC1111's inpainting_fill); "original" is diffusers'. */
  maskedContent: MaskedContent;
  /**
   * After decoding, each image is composited over `rgb` through `mask` (255 = generated), the generated
   * image first resized into `region` when only the masked area was inpainted; null: the decoded image as is.
   */
  overlay: { image: RgbPixels; mask: Uint8Array; region: CropRegion | null } | null;
}

/** AUTOMATIC1111's hires fix: a second, image-to-image pass at width × height from the upscaled first pass. */
export interface HiresInput {
  upscaler: HiresUpscaler;
  width: number;
  height: number;
  strength: number;
  /** The second pass's schedule length. */
  steps: number;
}

export interface StepEvent {
  step: number;
  total: number;
  timestep: number;
  /** The previews made after this step (one per image), when the request asks for them and the step is due. */
  previews?: PreviewImage[];
}

/** A preview of one image's latents: a PNG of width × height. */
export interface PreviewImage {
  /** Index of the image in the batch. */
  image: number;
  width: number;
  height: number;
  png: Uint8Array;
}

/** Makes a run's previews: which steps get them (numbered over the whole run) and the pictures. */
export interface Previewer {
  due(event: StepEvent): boolean;
  make(latents: readonly Float32Array[], latentH: number, latentW: number): Promise<PreviewImage[]>;
}

/** The stages that hold a model component's weights. */
export type Stage = "text_encoder" | "unet" | "vae_decoder" | "vae_encoder";

export interface GenerateHooks {
  onStep?(event: StepEvent): void;
  /** Live previews (runPipeline sets it from `GenerateInput.preview`); absent: none, and the loop skips them. */
  previews?: Previewer;
  signal?: AbortSignal;
  /** Called before each stage runs, so a caller can move weights (model CPU offload). */
  enterStage?(stage: Stage): Promise<void>;
}

export interface GeneratedImage {
  seed: number;
  png: Uint8Array;
}

export interface PromptReport {
  /** Text tokens (without start, end and padding tokens). */
  tokens: number;
  /** 77-token rows the text encoder read. */
  chunks: number;
  /** Tokens cut off (diffusers syntax only). */
  truncatedTokens: number;
}

/** What the SDXL text stage did beyond the shared report. */
export interface XlReport {
  prompt2: PromptReport;
  negativePrompt2: PromptReport;
  /** The unconditional embeddings were zeros (no negative prompt, force_zeros_for_empty_prompt). */
  zeroUncond: boolean;
  /** The micro-conditioning fed as `time_ids`. */
  timeIds: number[];
}

/** One prompt's conditioning for the UNet, before it is repeated for each image of the batch. */
export interface PromptConditioning {
  /** Text-encoder states `[1, T, D]`. */
  embeds: Conditioning;
  /** SDXL's added conditions: pooled `text_embeds` `[P]` and `time_ids` `[6]`; null for SD 1.x/2.x. */
  added: { textEmbeds: Float32Array; timeIds: Float32Array } | null;
}

/** The text stage's result: the conditional and (with guidance) unconditional conditioning. */
export interface EncodedPrompts {
  cond: PromptConditioning;
  uncond: PromptConditioning | null;
  prompt: PromptReport;
  negativePrompt: PromptReport;
  xl?: XlReport;
}

export interface GenerateOutput {
  images: GeneratedImage[];
  prompt: PromptReport;
  negativePrompt: PromptReport;
  /** SDXL only. */
  xl?: XlReport;
  /** The timesteps the sampler ran (the first pass's with the hires fix). */
  timesteps: number[];
  /** The hires fix's second-pass timesteps. */
  hiresTimesteps?: number[];
  /** What putting the request's adapters in place cost (sessions created, ms); absent when nothing changed. */
  adapterCost?: { sessionsCreated: number; ms: number };
  /** LoRA keys no layer took, and the like: one sentence each. */
  adapterWarnings?: string[];
  /** Tiles decoded per image when tiled decoding ran, else 0. */
  vaeTiles: number;
  timings: { encodeMs: number; denoiseMs: number; decodeMs: number; pngMs: number; totalMs: number };
}
