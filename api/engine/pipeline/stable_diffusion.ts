/**
 * Text-to-image for Stable Diffusion 1.x/2.x, step for step as diffusers' StableDiffusionPipeline.__call__,
 * with AUTOMATIC1111's prompt conventions (75-token chunks, attention weights) unless the request asks for
 * diffusers' literal prompts. Components are passed in; nothing here reaches for globals.
 */
import { join } from "node:path";
import { type PipelineFiles, prepareCheckpoint } from "../checkpoint/build.ts";
import type { ModelEntry } from "../model_folder.ts";
import { type FinalLayerNorm, findFinalLayerNorm, layerNorm } from "../onnx/final_layer_norm.ts";
import { type ExecutionProvider, OnnxModel } from "../onnx/runtime.ts";
import { type PromptSyntax, type TokenizedPrompt, tokenizePrompt } from "../prompt/chunks.ts";
import { encodePrompt } from "../prompt/encode.ts";
import { TorchGenerator } from "../rng/torch_generator.ts";
import { createScheduler, type SchedulerName } from "../schedulers/index.ts";
import type { Scheduler, SchedulerConfig, SchedulerOptions } from "../schedulers/scheduler.ts";
import { ClipTokenizer } from "../tokenizer/clip.ts";
import { decodedToRgb, encodePng, hasNonFinite } from "./image.ts";
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
  /** A1111 counting: 1 = the last layer. */
  clipSkip: number;
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

export interface GenerateOutput {
  images: GeneratedImage[];
  prompt: PromptReport;
  negativePrompt: PromptReport;
  timesteps: number[];
  /** Tiles decoded per image when tiled decoding ran, else 0. */
  vaeTiles: number;
  timings: { encodeMs: number; denoiseMs: number; decodeMs: number; pngMs: number; totalMs: number };
}

export class GenerationAborted extends Error {
  override name = "GenerationAborted";
}

export class GenerationFailed extends Error {
  override name = "GenerationFailed";
}

/** The request cannot run on this model (a client error, not an engine failure). */
export class GenerationInvalid extends Error {
  override name = "GenerationInvalid";
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const file = Bun.file(path);
  return (await file.exists()) ? ((await file.json()) as Record<string, unknown>) : {};
}

const HIDDEN_STATE = /^hidden_states\.(\d+)$/;

/** The files of an optimum ONNX folder (model_index.json, text_encoder/, unet/, vae_decoder/, …). */
export async function onnxFolderFiles(dir: string): Promise<PipelineFiles> {
  const vaeConfig = await readJsonObject(join(dir, "vae_decoder/config.json"));
  const vaeEncoder = join(dir, "vae_encoder/model.onnx");
  return {
    textEncoder: join(dir, "text_encoder/model.onnx"),
    unet: join(dir, "unet/model.onnx"),
    vaeDecoder: join(dir, "vae_decoder/model.onnx"),
    vaeEncoder: (await Bun.file(vaeEncoder).exists()) ? vaeEncoder : null,
    tokenizerDir: join(dir, "tokenizer"),
    schedulerConfig: (await readJsonObject(join(dir, "scheduler/scheduler_config.json"))) as SchedulerConfig,
    vae: {
      scalingFactor: typeof vaeConfig.scaling_factor === "number" ? vaeConfig.scaling_factor : 0.18215,
      blocks: Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 4,
      sampleSize: typeof vaeConfig.sample_size === "number" ? vaeConfig.sample_size : 512,
    },
  };
}

/**
 * Opens the ONNX sessions of a model: an optimum ONNX folder as it is, a single-file checkpoint through the
 * graphs sdx builds for it (cached beside it).
 */
export async function loadOnnxPipeline(
  entry: ModelEntry,
  provider: ExecutionProvider,
): Promise<PipelineComponents> {
  // On CUDA the checkpoint's text encoder and UNet compute in float16, as diffusers runs SD on GPUs.
  const precision = provider === "cuda" ? "float16" : "float32";
  const built = entry.format === "safetensors" ? await prepareCheckpoint(entry.path, { precision }) : null;
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

  const hiddenIndices = [...textEncoder.outputs.keys()]
    .map((name) => Number(HIDDEN_STATE.exec(name)?.[1] ?? Number.NaN))
    .filter((n) => Number.isInteger(n));
  const textEncoderLayers = hiddenIndices.length > 0 ? Math.max(...hiddenIndices) : 0;
  const finalLayerNorm = textEncoderLayers > 0 ? await findFinalLayerNorm(textEncoderPath) : null;
  const clipSkipUnavailable =
    textEncoderLayers === 0
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
    capabilities: {
      clipSkipMax: clipSkipUnavailable === null ? textEncoderLayers : 1,
      clipSkipUnavailable,
      longPrompts: sequence === null,
      unetBatch: unet.fixedDim("sample", 0),
    },
  };
}

export async function releasePipeline(components: PipelineComponents): Promise<void> {
  await Promise.all([
    components.textEncoder.release(),
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

export async function generate(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const t0 = performance.now();
  const checkAborted = () => {
    if (hooks.signal?.aborted) throw new GenerationAborted("generation cancelled");
  };

  // 1. Validate: the service checks requests against the model; the engine still never runs a shape the
  //    graphs cannot take.
  const batch = input.seeds.length;
  const { vaeScaleFactor, capabilities } = components;
  if (batch < 1) throw new GenerationFailed("at least one seed is required");
  if (input.width % vaeScaleFactor !== 0 || input.height % vaeScaleFactor !== 0) {
    throw new GenerationInvalid(`width and height must be multiples of ${vaeScaleFactor}`);
  }
  if (input.clipSkip > capabilities.clipSkipMax) {
    throw new GenerationInvalid(
      `clip_skip ${input.clipSkip} is not available: ${capabilities.clipSkipUnavailable ?? `the text encoder has ${capabilities.clipSkipMax} layers`}`,
    );
  }
  const latentH = input.height / vaeScaleFactor;
  const latentW = input.width / vaeScaleFactor;
  const latentSize = 4 * latentH * latentW;
  const doCfg = input.guidanceScale > 1;

  // 2. Tokenize: A1111 chunks of 75 tokens with attention weights, or diffusers' literal 77-token cut.
  const cond = tokenizePrompt(components.tokenizer, input.prompt, input.promptSyntax);
  const uncond = tokenizePrompt(components.tokenizer, input.negativePrompt ?? "", input.promptSyntax);
  if (!capabilities.longPrompts && (cond.chunks.length > 1 || (doCfg && uncond.chunks.length > 1))) {
    throw new GenerationInvalid(
      'this model\'s UNet takes exactly 77 text tokens, so prompts over 75 tokens or with BREAK cannot be encoded in chunks; shorten the prompt or send prompt_syntax "diffusers" to cut it',
    );
  }

  // 3. Encode: each chunk through the text encoder, weighted, concatenated along the sequence.
  await hooks.enterStage?.("text_encoder");
  //    Clip skip applies to both prompts in AUTOMATIC1111; diffusers' encode_prompt applies it to the prompt only
  //    and encodes the negative prompt from the last layer, so the diffusers syntax does the same.
  const encodeRows = textEncoderFor(components, input.clipSkip);
  const encodeUncondRows = input.promptSyntax === "diffusers" ? textEncoderFor(components, 1) : encodeRows;
  const condEmbeds = await encodePrompt(encodeRows, cond);
  const uncondEmbeds = doCfg ? await encodePrompt(encodeUncondRows, uncond) : null;
  const width = condEmbeds.dims[2];
  // The UNet's text conditioning, one row per image: [cond × batch] and [uncond × batch].
  const repeat = (embeds: { data: Float32Array; dims: [1, number, number] }) => {
    const rowSize = embeds.dims[1] * width;
    const out = new Float32Array(batch * rowSize);
    for (let i = 0; i < batch; i++) out.set(embeds.data, i * rowSize);
    return { data: out, seqLen: embeds.dims[1] };
  };
  const condStates = repeat(condEmbeds);
  const uncondStates = uncondEmbeds ? repeat(uncondEmbeds) : null;
  const tEncoded = performance.now();

  // 4. Timesteps: one scheduler per image, so stochastic samplers draw each image's noise from its own seed.
  const schedulers: Scheduler[] = input.seeds.map(() =>
    createScheduler(input.scheduler, components.schedulerConfig, input.schedulerOptions),
  );
  for (const s of schedulers) s.setTimesteps(input.numSteps);
  const first = schedulers[0] as Scheduler;
  const timesteps = [...first.timesteps];

  // 5. Seeded latents: torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) · init_noise_sigma,
  //    bit for bit as torch draws it on x86 CPUs with AVX2 (the kernel the diffusers references ran on).
  const generators = input.seeds.map((seed) => new TorchGenerator(seed, { kernel: "avx2" }));
  let latents: Float32Array[] = generators.map((g) => {
    const noise = g.randn([1, 4, latentH, latentW]);
    const sigma = first.initNoiseSigma;
    if (sigma !== 1)
      for (let j = 0; j < noise.length; j++) noise[j] = Math.fround((noise[j] as number) * sigma);
    return noise;
  });

  // 6. Denoise with classifier-free guidance: ε = ε_u + s·(ε_c − ε_u) (Ho & Salimans 2022, eq. 6). The
  //    unconditional and conditional passes share one UNet call ([uncond × batch, cond × batch], diffusers'
  //    order) when their conditionings have the same length; prompts of different chunk counts run as two
  //    calls, as AUTOMATIC1111 does by default rather than padding the shorter one.
  const together = uncondStates !== null && uncondStates.seqLen === condStates.seqLen;
  const joint = together ? concat(uncondStates.data, condStates.data) : null;
  const unet = async (
    t: number,
    sample: Float32Array,
    rows: number,
    states: Float32Array,
    seqLen: number,
  ) => {
    const out = await components.unet.runBatched(
      {
        sample: { data: sample, dims: [rows, 4, latentH, latentW] },
        timestep: { data: [t], dims: [] },
        encoder_hidden_states: { data: states, dims: [rows, seqLen, width] },
      },
      ["sample", "encoder_hidden_states"],
      rows,
      ["out_sample"],
    );
    return (out.out_sample as { data: Float32Array }).data;
  };
  const batchInput = new Float32Array(batch * latentSize);
  await hooks.enterStage?.("unet");
  for (let stepIndex = 0; stepIndex < timesteps.length; stepIndex++) {
    checkAborted();
    const t = timesteps[stepIndex] as number;
    for (let i = 0; i < batch; i++) {
      batchInput.set(
        (schedulers[i] as Scheduler).scaleModelInput(latents[i] as Float32Array, t),
        i * latentSize,
      );
    }
    let noisePred: Float32Array;
    if (uncondStates === null) {
      noisePred = await unet(t, batchInput, batch, condStates.data, condStates.seqLen);
    } else if (joint) {
      noisePred = await unet(t, concat(batchInput, batchInput), 2 * batch, joint, condStates.seqLen);
    } else {
      const u = await unet(t, batchInput, batch, uncondStates.data, uncondStates.seqLen);
      const c = await unet(t, batchInput, batch, condStates.data, condStates.seqLen);
      noisePred = concat(u, c);
    }
    latents = latents.map((sample, i) => {
      let eps = noisePred.subarray(i * latentSize, (i + 1) * latentSize);
      if (doCfg) {
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
  checkAborted();
  const tDenoised = performance.now();

  // 7. Decode: x = D(z / scaling_factor), the whole batch at once, one image at a time (VAE slicing), or
  //    tile by tile (VAE tiling, when the latents exceed one tile).
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
  const tDecoded = performance.now();

  // 8. Encode PNG; a non-finite decode is an error, never a black image.
  const images: GeneratedImage[] = [];
  for (let i = 0; i < batch; i++) {
    const image = decoded[i] as Float32Array;
    if (hasNonFinite(image)) throw new GenerationFailed(`image ${i} decoded to NaN or infinite values`);
    const rgb = decodedToRgb(image, 0, input.width, input.height);
    const parameters = input.pngParameters?.[i];
    const text: Record<string, string> = parameters === undefined ? {} : { parameters };
    images.push({
      seed: input.seeds[i] as number,
      png: await encodePng(rgb, input.width, input.height, text),
    });
  }
  const tDone = performance.now();

  return {
    images,
    prompt: report(cond),
    negativePrompt: report(uncond),
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
