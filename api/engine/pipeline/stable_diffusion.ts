/**
 * Text-to-image for Stable Diffusion 1.x/2.x, step for step as diffusers' StableDiffusionPipeline.__call__,
 * and for SDXL as StableDiffusionXLPipeline.__call__ (its text encoding and added conditions live in
 * `stable_diffusion_xl.ts`; timesteps, latents, denoising and decoding are the shared stages below), with
 * AUTOMATIC1111's prompt conventions (75-token chunks, attention weights) unless the request asks for
 * diffusers' literal prompts. Components are passed in; nothing here reaches for globals.
 */

import { join } from "node:path";
import type { ExecutionProvider, PromptSyntax, SchedulerName } from "../../../contract/index.ts";
import { type AttentionVariant, attentionForProvider } from "../checkpoint/attention_variant.ts";
import { type PipelineFiles, prepareCheckpoint } from "../checkpoint/build.ts";
import type { ModelEntry } from "../model_folder.ts";
import { type FinalLayerNorm, findFinalLayerNorm, layerNorm } from "../onnx/final_layer_norm.ts";
import { type FeedValue, OnnxModel } from "../onnx/runtime.ts";
import { type TokenizedPrompt, tokenizePrompt } from "../prompt/chunks.ts";
import { type Conditioning, encodePrompt } from "../prompt/encode.ts";
import { TorchGenerator } from "../rng/torch_generator.ts";
import { createScheduler } from "../schedulers/index.ts";
import type { Scheduler, SchedulerConfig, SchedulerOptions } from "../schedulers/scheduler.ts";
import { ClipTokenizer } from "../tokenizer/clip.ts";
import { GenerationAborted, GenerationFailed, GenerationInvalid } from "./errors.ts";
import { decodedToRgb, encodePng, hasNonFinite } from "./image.ts";
import {
  encodeXlPrompts,
  exposedLayers,
  loadXlComponents,
  type XlComponents,
  xlClipSkipMax,
} from "./stable_diffusion_xl.ts";
import { type Chw, decodeTiled, needsTiling, type TileGeometry } from "./vae_tiling.ts";

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
}

export interface LoadOptions {
  /**
   * How the UNet graphs sdx builds from a checkpoint compute attention (ONNX folders bring their own graphs).
   * Default: fused (MultiHeadAttention) on CUDA, plain on the CPU.
   */
  attention?: AttentionVariant;
}

export interface PipelineComponents {
  files: PipelineFiles;
  /** For a single-file checkpoint: whether its graphs were built now or reused from the cache. */
  checkpointGraphs: { reused: boolean; buildMs: number } | null;
  /** Where each session's graph is, so a released session can be created again. */
  paths: Record<Stage, string>;
  provider: ExecutionProvider;
  tokenizer: ClipTokenizer;
  textEncoder: OnnxModel;
  unet: OnnxModel;
  vaeDecoder: OnnxModel;
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

export interface GenerateInput {
  prompt: string;
  /** null: no negative prompt (the unconditional branch encodes ""), as in diffusers. */
  negativePrompt: string | null;
  promptSyntax: PromptSyntax;
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
}

export interface StepEvent {
  step: number;
  total: number;
  timestep: number;
}

/** The three stages that hold a model component's weights. */
export type Stage = "text_encoder" | "unet" | "vae_decoder";

export interface GenerateHooks {
  onStep?(event: StepEvent): void;
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
  timesteps: number[];
  /** Tiles decoded per image when tiled decoding ran, else 0. */
  vaeTiles: number;
  timings: { encodeMs: number; denoiseMs: number; decodeMs: number; pngMs: number; totalMs: number };
}

export { GenerationAborted, GenerationFailed, GenerationInvalid } from "./errors.ts";

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const file = Bun.file(path);
  return (await file.exists()) ? ((await file.json()) as Record<string, unknown>) : {};
}

/** The files of an optimum ONNX folder (model_index.json, text_encoder/, unet/, vae_decoder/, …). */
export async function onnxFolderFiles(dir: string): Promise<PipelineFiles> {
  const vaeConfig = await readJsonObject(join(dir, "vae_decoder/config.json"));
  const vaeEncoder = join(dir, "vae_encoder/model.onnx");
  const index = await readJsonObject(join(dir, "model_index.json"));
  return {
    textEncoder: join(dir, "text_encoder/model.onnx"),
    unet: join(dir, "unet/model.onnx"),
    vaeDecoder: join(dir, "vae_decoder/model.onnx"),
    vaeEncoder: (await Bun.file(vaeEncoder).exists()) ? vaeEncoder : null,
    tokenizerDir: join(dir, "tokenizer"),
    xl: /XL/.test(String(index._class_name))
      ? {
          textEncoder2: join(dir, "text_encoder_2/model.onnx"),
          tokenizer2Dir: join(dir, "tokenizer_2"),
          forceZerosForEmptyPrompt: index.force_zeros_for_empty_prompt !== false,
        }
      : null,
    schedulerConfig: (await readJsonObject(join(dir, "scheduler/scheduler_config.json"))) as SchedulerConfig,
    vae: {
      scalingFactor: typeof vaeConfig.scaling_factor === "number" ? vaeConfig.scaling_factor : 0.18215,
      blocks: Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 4,
      sampleSize: typeof vaeConfig.sample_size === "number" ? vaeConfig.sample_size : 512,
    },
  };
}

/**
 * Opens the ONNX sessions of a model: an optimum ONNX folder as it is (with text_encoder_2 and tokenizer_2
 * for SDXL), a single-file checkpoint through the graphs sdx builds for it (cached beside it).
 */
export async function loadOnnxPipeline(
  entry: ModelEntry,
  provider: ExecutionProvider,
  options: LoadOptions = {},
): Promise<PipelineComponents> {
  // On CUDA the checkpoint's text encoder and UNet compute in float16, as diffusers runs SD on GPUs.
  const precision = provider === "cuda" ? "float16" : "float32";
  const attention = options.attention ?? attentionForProvider(provider);
  const built =
    entry.format === "safetensors" ? await prepareCheckpoint(entry.path, { precision, attention }) : null;
  const files = built ? built.files : await onnxFolderFiles(entry.path);
  const paths: Record<Stage, string> = {
    text_encoder: files.textEncoder,
    unet: files.unet,
    vae_decoder: files.vaeDecoder,
  };
  const textEncoderPath = paths.text_encoder;
  const [tokenizer, textEncoder, unet, vaeDecoder] = await Promise.all([
    ClipTokenizer.fromDir(files.tokenizerDir),
    OnnxModel.load(paths.text_encoder, { provider }),
    OnnxModel.load(paths.unet, { provider }),
    OnnxModel.load(paths.vae_decoder, { provider }),
  ]);
  const schedulerConfig = files.schedulerConfig;
  const vaeScaleFactor = 2 ** (files.vae.blocks - 1);
  const sampleTile = files.vae.sampleSize;
  let xl: XlComponents | null = null;
  if (files.xl) {
    try {
      xl = await loadXlComponents(files.xl, provider, textEncoder, unet);
    } catch (e) {
      await Promise.all([textEncoder.release(), unet.release(), vaeDecoder.release()]);
      throw e;
    }
  }

  const textEncoderLayers = exposedLayers(textEncoder);
  // SDXL reads hidden states without the final layer norm, so only SD 1.x/2.x needs it.
  const finalLayerNorm =
    xl === null && textEncoderLayers > 0 ? await findFinalLayerNorm(textEncoderPath) : null;
  const clipSkipUnavailable =
    xl !== null
      ? null
      : textEncoderLayers === 0
        ? "its ONNX text encoder exports no hidden_states.* outputs (re-export with output_hidden_states)"
        : finalLayerNorm === null
          ? "the final layer norm of its text encoder could not be found in the graph"
          : null;
  const sequence = unet.fixedDim("encoder_hidden_states", 1);
  return {
    files,
    checkpointGraphs: built ? { reused: built.reused, buildMs: built.buildMs } : null,
    paths,
    provider,
    tokenizer,
    textEncoder,
    unet,
    vaeDecoder,
    schedulerConfig,
    vaeScalingFactor: files.vae.scalingFactor,
    vaeScaleFactor,
    tileGeometry: { sampleTile, latentTile: Math.floor(sampleTile / vaeScaleFactor), overlap: 0.25 },
    finalLayerNorm,
    textEncoderLayers,
    xl,
    capabilities: {
      clipSkipMax: xl !== null ? xlClipSkipMax(xl) : clipSkipUnavailable === null ? textEncoderLayers : 1,
      clipSkipUnavailable,
      longPrompts: sequence === null,
      unetBatch: unet.fixedDim("sample", 0),
      xl: xl ? { forceZerosForEmptyPrompt: xl.forceZerosForEmptyPrompt } : null,
    },
  };
}

export async function releasePipeline(components: PipelineComponents): Promise<void> {
  await Promise.all([
    components.textEncoder.release(),
    components.xl?.textEncoder2.release(),
    components.unet.release(),
    components.vaeDecoder.release(),
  ]);
}

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function report(prompt: TokenizedPrompt): PromptReport {
  return { tokens: prompt.tokenCount, chunks: prompt.chunks.length, truncatedTokens: prompt.truncatedTokens };
}

/**
 * The text encoder as the prompt encoder sees it: 77-token rows in, hidden states out — the last layer after
 * the final layer norm, or for clip skip k the output of layer L+1−k passed through that same norm
 * (diffusers: final_layer_norm(hidden_states[-(clip_skip + 1)]) with clip_skip = k − 1).
 */
function textEncoderFor(components: PipelineComponents, clipSkip: number) {
  const { textEncoder, finalLayerNorm, textEncoderLayers } = components;
  const output = clipSkip > 1 ? `hidden_states.${textEncoderLayers + 1 - clipSkip}` : "last_hidden_state";
  return async (rows: number[][]): Promise<{ data: Float32Array; dims: [number, number, number] }> => {
    const seq = rows[0]?.length ?? 77;
    const result = await textEncoder.runBatched(
      { input_ids: { data: rows.flat(), dims: [rows.length, seq] } },
      ["input_ids"],
      rows.length,
      [output],
    );
    const states = result[output] as { data: Float32Array; dims: number[] };
    const dims: [number, number, number] = [rows.length, seq, states.dims[2] as number];
    if (clipSkip > 1 && finalLayerNorm) return { data: layerNorm(states.data, dims, finalLayerNorm), dims };
    return { data: states.data, dims };
  };
}

/** The latent shape of a request and whether guidance runs. */
interface LatentShape {
  batch: number;
  latentH: number;
  latentW: number;
  /** Values in one image's latents (4 · h · w). */
  latentSize: number;
  doCfg: boolean;
}

/** Stage 1: the service checks requests against the model; the engine still never runs a shape the graphs cannot take. */
function validate(components: PipelineComponents, input: GenerateInput): LatentShape {
  const batch = input.seeds.length;
  const { vaeScaleFactor, capabilities } = components;
  if (batch < 1) throw new GenerationFailed("at least one seed is required");
  if (input.width % vaeScaleFactor !== 0 || input.height % vaeScaleFactor !== 0) {
    throw new GenerationInvalid(`width and height must be multiples of ${vaeScaleFactor}`);
  }
  if (input.clipSkip > capabilities.clipSkipMax) {
    throw new GenerationInvalid(
      `clip_skip ${input.clipSkip} is not available: ${capabilities.clipSkipUnavailable ?? (components.xl ? `SDXL's text encoders allow 1 to ${capabilities.clipSkipMax}` : `the text encoder has ${capabilities.clipSkipMax} layers`)}`,
    );
  }
  const latentH = input.height / vaeScaleFactor;
  const latentW = input.width / vaeScaleFactor;
  return { batch, latentH, latentW, latentSize: 4 * latentH * latentW, doCfg: input.guidanceScale > 1 };
}

/** Stages 2–3 for SD 1.x/2.x: one text encoder, the last layer after its final layer norm (or clip skip). */
async function encodeSdPrompts(
  components: PipelineComponents,
  input: GenerateInput,
  doCfg: boolean,
  enterTextEncoder: () => Promise<void>,
): Promise<EncodedPrompts> {
  // 2. Tokenize: A1111 chunks of 75 tokens with attention weights, or diffusers' literal 77-token cut.
  const cond = tokenizePrompt(components.tokenizer, input.prompt, input.promptSyntax);
  const uncond = tokenizePrompt(components.tokenizer, input.negativePrompt ?? "", input.promptSyntax);
  if (
    !components.capabilities.longPrompts &&
    (cond.chunks.length > 1 || (doCfg && uncond.chunks.length > 1))
  ) {
    throw new GenerationInvalid(
      'this model\'s UNet takes exactly 77 text tokens, so prompts over 75 tokens or with BREAK cannot be encoded in chunks; shorten the prompt or send prompt_syntax "diffusers" to cut it',
    );
  }

  // 3. Encode: each chunk through the text encoder, weighted, concatenated along the sequence.
  await enterTextEncoder();
  //    Clip skip applies to both prompts in AUTOMATIC1111; diffusers' encode_prompt applies it to the prompt only
  //    and encodes the negative prompt from the last layer, so the diffusers syntax does the same.
  const encodeRows = textEncoderFor(components, input.clipSkip);
  const encodeUncondRows = input.promptSyntax === "diffusers" ? textEncoderFor(components, 1) : encodeRows;
  const condEmbeds = await encodePrompt(encodeRows, cond);
  const uncondEmbeds = doCfg ? await encodePrompt(encodeUncondRows, uncond) : null;
  return {
    cond: { embeds: condEmbeds, added: null },
    uncond: uncondEmbeds ? { embeds: uncondEmbeds, added: null } : null,
    prompt: report(cond),
    negativePrompt: report(uncond),
  };
}

/** A prompt's conditioning repeated for each image of the batch: the UNet's feeds for `batch` rows. */
interface BatchConditioning {
  states: Float32Array;
  seqLen: number;
  width: number;
  textEmbeds: Float32Array | null;
  timeIds: Float32Array | null;
}

function repeatRows(values: Float32Array, batch: number): Float32Array {
  const out = new Float32Array(batch * values.length);
  for (let i = 0; i < batch; i++) out.set(values, i * values.length);
  return out;
}

function perImage(prompt: PromptConditioning, batch: number): BatchConditioning {
  return {
    states: repeatRows(prompt.embeds.data, batch),
    seqLen: prompt.embeds.dims[1],
    width: prompt.embeds.dims[2],
    textEmbeds: prompt.added ? repeatRows(prompt.added.textEmbeds, batch) : null,
    timeIds: prompt.added ? repeatRows(prompt.added.timeIds, batch) : null,
  };
}

/** [uncond × batch, cond × batch] as one set of feeds (diffusers' CFG order). */
function joinConditioning(a: BatchConditioning, b: BatchConditioning): BatchConditioning {
  const both = (x: Float32Array | null, y: Float32Array | null) => (x && y ? concat(x, y) : null);
  return {
    states: concat(a.states, b.states),
    seqLen: a.seqLen,
    width: a.width,
    textEmbeds: both(a.textEmbeds, b.textEmbeds),
    timeIds: both(a.timeIds, b.timeIds),
  };
}

/** Stage 4: one scheduler per image, so stochastic samplers draw each image's noise from its own seed. */
function prepareSchedulers(components: PipelineComponents, input: GenerateInput): Scheduler[] {
  const schedulers: Scheduler[] = input.seeds.map(() =>
    createScheduler(input.scheduler, components.schedulerConfig, input.schedulerOptions),
  );
  for (const s of schedulers) s.setTimesteps(input.numSteps);
  return schedulers;
}

/**
 * Stage 5: torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) · init_noise_sigma, bit for
 * bit as torch draws it on x86 CPUs with AVX2 (the kernel the diffusers references ran on).
 */
function seededLatents(
  generators: TorchGenerator[],
  shape: LatentShape,
  initNoiseSigma: number,
): Float32Array[] {
  return generators.map((g) => {
    const noise = g.randn([1, 4, shape.latentH, shape.latentW]);
    if (initNoiseSigma !== 1)
      for (let j = 0; j < noise.length; j++) noise[j] = Math.fround((noise[j] as number) * initNoiseSigma);
    return noise;
  });
}

/**
 * Stage 6: denoise with classifier-free guidance, ε = ε_u + s·(ε_c − ε_u) (Ho & Salimans 2022, eq. 6). The
 * unconditional and conditional passes share one UNet call ([uncond × batch, cond × batch], diffusers' order)
 * when their conditionings have the same length; prompts of different chunk counts run as two calls, as
 * AUTOMATIC1111 does by default rather than padding the shorter one. SDXL's pooled text embeds and time ids
 * go with each row as the UNet's `text_embeds` and `time_ids` inputs.
 */
async function denoise(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  text: EncodedPrompts,
  schedulers: Scheduler[],
  generators: TorchGenerator[],
  initial: Float32Array[],
  hooks: GenerateHooks,
): Promise<Float32Array[]> {
  const { batch, latentH, latentW, latentSize, doCfg } = shape;
  const cond = perImage(text.cond, batch);
  const uncond = doCfg && text.uncond ? perImage(text.uncond, batch) : null;
  const joint = uncond !== null && uncond.seqLen === cond.seqLen ? joinConditioning(uncond, cond) : null;
  const unet = async (t: number, sample: Float32Array, rows: number, c: BatchConditioning) => {
    const feeds: Record<string, FeedValue> = {
      sample: { data: sample, dims: [rows, 4, latentH, latentW] },
      timestep: { data: [t], dims: [] },
      encoder_hidden_states: { data: c.states, dims: [rows, c.seqLen, c.width] },
    };
    const batched = ["sample", "encoder_hidden_states"];
    if (c.textEmbeds && c.timeIds) {
      feeds.text_embeds = { data: c.textEmbeds, dims: [rows, c.textEmbeds.length / rows] };
      feeds.time_ids = { data: c.timeIds, dims: [rows, c.timeIds.length / rows] };
      batched.push("text_embeds", "time_ids");
    }
    const out = await components.unet.runBatched(feeds, batched, rows, ["out_sample"]);
    return (out.out_sample as { data: Float32Array }).data;
  };
  const first = schedulers[0] as Scheduler;
  const timesteps = first.timesteps;
  let latents = initial;
  // One buffer for the whole run: the scaled latents, written twice ([uncond, cond] rows) for a joint CFG call.
  const unetInput = new Float32Array((joint ? 2 : 1) * batch * latentSize);
  const batchInput = unetInput.subarray(0, batch * latentSize);
  await hooks.enterStage?.("unet");
  for (let stepIndex = 0; stepIndex < timesteps.length; stepIndex++) {
    if (hooks.signal?.aborted) throw new GenerationAborted("generation cancelled");
    const t = timesteps[stepIndex] as number;
    for (let i = 0; i < batch; i++) {
      const scaled = (schedulers[i] as Scheduler).scaleModelInput(latents[i] as Float32Array, t);
      unetInput.set(scaled, i * latentSize);
      if (joint) unetInput.set(scaled, (batch + i) * latentSize);
    }
    let noisePred: Float32Array;
    if (uncond === null) {
      noisePred = await unet(t, batchInput, batch, cond);
    } else if (joint) {
      noisePred = await unet(t, unetInput, 2 * batch, joint);
    } else {
      noisePred = concat(await unet(t, batchInput, batch, uncond), await unet(t, batchInput, batch, cond));
    }
    latents = latents.map((sample, i) => {
      let eps = noisePred.subarray(i * latentSize, (i + 1) * latentSize);
      if (uncond !== null) {
        const epsCond = noisePred.subarray((batch + i) * latentSize, (batch + i + 1) * latentSize);
        const s = input.guidanceScale;
        // A fresh array: multistep samplers keep earlier model outputs.
        const guided = new Float32Array(latentSize);
        for (let j = 0; j < latentSize; j++) {
          const u = eps[j] as number;
          guided[j] = Math.fround(u + Math.fround(s * Math.fround((epsCond[j] as number) - u)));
        }
        eps = guided;
      }
      return (schedulers[i] as Scheduler).step(eps, t, sample, generators[i]).prevSample;
    });
    hooks.onStep?.({ step: stepIndex + 1, total: timesteps.length, timestep: t });
  }
  return latents;
}

/**
 * Stage 7: x = D(z / scaling_factor), the whole batch at once, one image at a time (VAE slicing), or tile by
 * tile (VAE tiling, when the latents exceed one tile).
 */
async function decodeLatents(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  latents: Float32Array[],
  hooks: GenerateHooks,
): Promise<{ decoded: Float32Array[]; vaeTiles: number }> {
  const { latentH, latentW } = shape;
  const { vaeScaleFactor } = components;
  const scaled = latents.map((z) => z.map((v) => Math.fround(v / components.vaeScalingFactor)));
  const imageSize = 3 * input.width * input.height;
  const decodeBatch = async (zs: Float32Array[], h: number, w: number): Promise<Float32Array> => {
    const data = new Float32Array(zs.length * 4 * h * w);
    for (const [i, z] of zs.entries()) data.set(z, i * 4 * h * w);
    const out = await components.vaeDecoder.runBatched(
      { latent_sample: { data, dims: [zs.length, 4, h, w] } },
      ["latent_sample"],
      zs.length,
      ["sample"],
    );
    return (out.sample as { data: Float32Array }).data;
  };
  const decoded: Float32Array[] = [];
  let vaeTiles = 0;
  await hooks.enterStage?.("vae_decoder");
  if (input.vaeTiling && needsTiling(latentH, latentW, components.tileGeometry)) {
    for (const z of scaled) {
      const decodeTile = async (tile: Chw): Promise<Chw> => ({
        data: await decodeBatch([tile.data], tile.h, tile.w),
        c: 3,
        h: tile.h * vaeScaleFactor,
        w: tile.w * vaeScaleFactor,
      });
      const { image, tiles } = await decodeTiled(
        { data: z, c: 4, h: latentH, w: latentW },
        components.tileGeometry,
        decodeTile,
      );
      decoded.push(image.data);
      vaeTiles = tiles;
    }
  } else {
    const groups = input.vaeSlicing ? scaled.map((z) => [z]) : [scaled];
    for (const group of groups) {
      const sample = await decodeBatch(group, latentH, latentW);
      for (let i = 0; i < group.length; i++) decoded.push(sample.slice(i * imageSize, (i + 1) * imageSize));
    }
  }
  return { decoded, vaeTiles };
}

/**
 * A non-finite decode is an error, never a black image. A float16 VAE decoder graph is the usual cause: SDXL's
 * VAE overflows in half precision, which is why diffusers upcasts it to float32 (`force_upcast`); an ONNX
 * folder's graph precision is fixed, so the message names the ways out.
 */
export function assertFiniteDecode(
  image: Float32Array,
  index: number,
  vaeDecoder: Pick<OnnxModel, "inputs">,
): void {
  if (!hasNonFinite(image)) return;
  const half = vaeDecoder.inputs.get("latent_sample")?.type === "float16";
  throw new GenerationFailed(
    half
      ? `image ${index} decoded to NaN or infinite values: the VAE decoder graph computes in float16, where SDXL's VAE overflows (diffusers upcasts it to float32); use a VAE decoder exported in float32, or the fp16-fix VAE (madebyollin/sdxl-vae-fp16-fix) exported to ONNX, in vae_decoder/`
      : `image ${index} decoded to NaN or infinite values`,
  );
}

export async function generate(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const t0 = performance.now();

  // 1. Validate.
  const shape = validate(components, input);

  // 2–3. Tokenize and encode: one text encoder for SD 1.x/2.x, two plus added conditions for SDXL.
  const enterTextEncoder = async () => hooks.enterStage?.("text_encoder");
  const text = components.xl
    ? await encodeXlPrompts(
        components,
        components.xl,
        input,
        shape.doCfg,
        components.capabilities.longPrompts,
        enterTextEncoder,
      )
    : await encodeSdPrompts(components, input, shape.doCfg, enterTextEncoder);
  const tEncoded = performance.now();

  // 4. Timesteps.
  const schedulers = prepareSchedulers(components, input);
  const first = schedulers[0] as Scheduler;
  const timesteps = [...first.timesteps];

  // 5. Seeded latents.
  const generators = input.seeds.map((seed) => new TorchGenerator(seed, { kernel: "avx2" }));
  const initial = seededLatents(generators, shape, first.initNoiseSigma);

  // 6. Denoise with classifier-free guidance.
  const latents = await denoise(components, input, shape, text, schedulers, generators, initial, hooks);
  if (hooks.signal?.aborted) throw new GenerationAborted("generation cancelled");
  const tDenoised = performance.now();

  // 7. Decode.
  const { decoded, vaeTiles } = await decodeLatents(components, input, shape, latents, hooks);
  const tDecoded = performance.now();

  // 8. Encode PNG; a non-finite decode is an error, never a black image.
  const images: GeneratedImage[] = [];
  for (let i = 0; i < shape.batch; i++) {
    const image = decoded[i] as Float32Array;
    assertFiniteDecode(image, i, components.vaeDecoder);
    const rgb = decodedToRgb(image, 0, input.width, input.height);
    const parameters = input.pngParameters?.[i];
    const pngText: Record<string, string> = parameters === undefined ? {} : { parameters };
    images.push({
      seed: input.seeds[i] as number,
      png: await encodePng(rgb, input.width, input.height, pngText),
    });
  }
  const tDone = performance.now();

  return {
    images,
    prompt: text.prompt,
    negativePrompt: text.negativePrompt,
    ...(text.xl ? { xl: text.xl } : {}),
    timesteps,
    vaeTiles,
    timings: {
      encodeMs: tEncoded - t0,
      denoiseMs: tDenoised - tEncoded,
      decodeMs: tDecoded - tDenoised,
      pngMs: tDone - tDecoded,
      totalMs: tDone - t0,
    },
  };
}
