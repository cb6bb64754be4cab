/**
 * Text-to-image for Stable Diffusion 1.x/2.x, step for step as diffusers' StableDiffusionPipeline.__call__.
 * Components are passed in; nothing here reaches for globals.
 */
import { join } from "node:path";
import type { ModelEntry } from "../model_folder.ts";
import { type ExecutionProvider, OnnxModel } from "../onnx/runtime.ts";
import { TorchGenerator } from "../rng/torch_generator.ts";
import { createScheduler, type SchedulerName } from "../schedulers/index.ts";
import type { Scheduler, SchedulerConfig } from "../schedulers/scheduler.ts";
import { ClipTokenizer } from "../tokenizer/clip.ts";
import { decodedToRgb, encodePng, hasNonFinite } from "./image.ts";

export interface PipelineComponents {
  tokenizer: ClipTokenizer;
  textEncoder: OnnxModel;
  unet: OnnxModel;
  vaeDecoder: OnnxModel;
  schedulerConfig: SchedulerConfig;
  /** Latents are divided by this before decoding (0.18215 for SD 1.x/2.x). */
  vaeScalingFactor: number;
  /** Pixels per latent cell (8). */
  vaeScaleFactor: number;
}

export interface GenerateInput {
  prompt: string;
  /** null: no negative prompt (the unconditional branch encodes ""), as in diffusers. */
  negativePrompt: string | null;
  /** One seed per image; image i is drawn from its own generator seeded with seeds[i]. */
  seeds: readonly number[];
  width: number;
  height: number;
  numSteps: number;
  guidanceScale: number;
  scheduler: SchedulerName;
  karrasSigmas: boolean;
  /** Decode the batch one image at a time (lower peak memory, same pixels). */
  vaeSlicing: boolean;
}

export interface StepEvent {
  step: number;
  total: number;
  timestep: number;
}

export interface GenerateHooks {
  onStep?(event: StepEvent): void;
  signal?: AbortSignal;
}

export interface GeneratedImage {
  seed: number;
  png: Uint8Array;
}

export interface GenerateOutput {
  images: GeneratedImage[];
  /** Prompt length in CLIP tokens (without BOS/EOS) and whether it was cut to fit the encoder. */
  promptTokens: number;
  promptTruncated: boolean;
  negativePromptTokens: number;
  negativePromptTruncated: boolean;
  timesteps: number[];
  timings: { encodeMs: number; denoiseMs: number; decodeMs: number; pngMs: number; totalMs: number };
}

export class GenerationAborted extends Error {
  override name = "GenerationAborted";
}

export class GenerationFailed extends Error {
  override name = "GenerationFailed";
}

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const file = Bun.file(path);
  return (await file.exists()) ? ((await file.json()) as Record<string, unknown>) : {};
}

/** Opens the ONNX sessions and reads tokenizer and scheduler configuration of an optimum ONNX folder. */
export async function loadOnnxPipeline(
  entry: ModelEntry,
  provider: ExecutionProvider,
): Promise<PipelineComponents> {
  const dir = entry.path;
  const [tokenizer, textEncoder, unet, vaeDecoder] = await Promise.all([
    ClipTokenizer.fromDir(join(dir, "tokenizer")),
    OnnxModel.load(join(dir, "text_encoder/model.onnx"), { provider }),
    OnnxModel.load(join(dir, "unet/model.onnx"), { provider }),
    OnnxModel.load(join(dir, "vae_decoder/model.onnx"), { provider }),
  ]);
  const schedulerConfig = (await readJsonObject(
    join(dir, "scheduler/scheduler_config.json"),
  )) as SchedulerConfig;
  const vaeConfig = await readJsonObject(join(dir, "vae_decoder/config.json"));
  const vaeBlocks = Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 4;
  return {
    tokenizer,
    textEncoder,
    unet,
    vaeDecoder,
    schedulerConfig,
    vaeScalingFactor: typeof vaeConfig.scaling_factor === "number" ? vaeConfig.scaling_factor : 0.18215,
    vaeScaleFactor: 2 ** (vaeBlocks - 1),
  };
}

export async function releasePipeline(components: PipelineComponents): Promise<void> {
  await Promise.all([
    components.textEncoder.release(),
    components.unet.release(),
    components.vaeDecoder.release(),
  ]);
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

  // 1. Validate: the engine trusts the service's checks but never runs on a shape the UNet cannot take.
  const batch = input.seeds.length;
  const { vaeScaleFactor } = components;
  if (batch < 1) throw new GenerationFailed("at least one seed is required");
  if (input.width % vaeScaleFactor !== 0 || input.height % vaeScaleFactor !== 0) {
    throw new GenerationFailed(`width and height must be multiples of ${vaeScaleFactor}`);
  }
  const latentH = input.height / vaeScaleFactor;
  const latentW = input.width / vaeScaleFactor;
  const latentShape = [1, 4, latentH, latentW];
  const latentSize = 4 * latentH * latentW;
  const doCfg = input.guidanceScale > 1;

  // 2. Tokenize: pad to the encoder's 77 positions; longer prompts are cut, as diffusers does.
  const cond = components.tokenizer.encodePadded(input.prompt);
  const uncond = components.tokenizer.encodePadded(input.negativePrompt ?? "");
  const seqLen = cond.ids.length;

  // 3. Encode: one text-encoder call for [uncond, cond] (or cond alone without guidance).
  const idRows = doCfg ? [uncond.ids, cond.ids] : [cond.ids];
  const encoded = await components.textEncoder.run(
    { input_ids: { data: idRows.flat(), dims: [idRows.length, seqLen] } },
    ["last_hidden_state"],
  );
  const hidden = encoded.last_hidden_state as { data: Float32Array; dims: number[] };
  const width = hidden.dims[2] as number;
  const rowSize = seqLen * width;
  // UNet conditioning in diffusers' CFG order: [uncond × batch, cond × batch].
  const rows = doCfg ? 2 * batch : batch;
  const encoderHiddenStates = new Float32Array(rows * rowSize);
  for (let i = 0; i < batch; i++) {
    if (doCfg) {
      encoderHiddenStates.set(hidden.data.subarray(0, rowSize), i * rowSize);
      encoderHiddenStates.set(hidden.data.subarray(rowSize, 2 * rowSize), (batch + i) * rowSize);
    } else {
      encoderHiddenStates.set(hidden.data.subarray(0, rowSize), i * rowSize);
    }
  }
  const tEncoded = performance.now();

  // 4. Timesteps: one scheduler per image, so stochastic samplers draw each image's noise from its own seed.
  const schedulers: Scheduler[] = input.seeds.map(() =>
    createScheduler(input.scheduler, components.schedulerConfig, { karrasSigmas: input.karrasSigmas }),
  );
  for (const s of schedulers) s.setTimesteps(input.numSteps);
  const first = schedulers[0] as Scheduler;
  const timesteps = [...first.timesteps];

  // 5. Seeded latents: torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) · init_noise_sigma,
  // bit for bit as torch draws it on x86 CPUs with AVX2 (the kernel the diffusers references ran on).
  const generators = input.seeds.map((seed) => new TorchGenerator(seed, { kernel: "avx2" }));
  let latents: Float32Array[] = generators.map((g) => {
    const noise = g.randn(latentShape);
    const sigma = first.initNoiseSigma;
    if (sigma !== 1)
      for (let j = 0; j < noise.length; j++) noise[j] = Math.fround((noise[j] as number) * sigma);
    return noise;
  });

  // 6. Denoise with classifier-free guidance: ε = ε_u + s·(ε_c − ε_u) (Ho & Salimans 2022, eq. 6).
  const unetInput = new Float32Array(rows * latentSize);
  for (let stepIndex = 0; stepIndex < timesteps.length; stepIndex++) {
    checkAborted();
    const t = timesteps[stepIndex] as number;
    for (let i = 0; i < batch; i++) {
      const scaled = (schedulers[i] as Scheduler).scaleModelInput(latents[i] as Float32Array, t);
      unetInput.set(scaled, i * latentSize);
      if (doCfg) unetInput.set(scaled, (batch + i) * latentSize);
    }
    const out = await components.unet.run(
      {
        sample: { data: unetInput, dims: [rows, 4, latentH, latentW] },
        timestep: { data: [t], dims: [] },
        encoder_hidden_states: { data: encoderHiddenStates, dims: [rows, seqLen, width] },
      },
      ["out_sample"],
    );
    const noisePred = (out.out_sample as { data: Float32Array }).data;
    latents = latents.map((sample, i) => {
      let eps = noisePred.subarray(i * latentSize, (i + 1) * latentSize);
      if (doCfg) {
        const epsCond = noisePred.subarray((batch + i) * latentSize, (batch + i + 1) * latentSize);
        const guided = new Float32Array(latentSize);
        const s = input.guidanceScale;
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

  // 7. Decode: x = D(z / scaling_factor).
  const scaledLatents = latents.map((z) => z.map((v) => Math.fround(v / components.vaeScalingFactor)));
  const decodedImages: Float32Array[] = [];
  const chunks = input.vaeSlicing ? scaledLatents.map((z) => [z]) : [scaledLatents];
  const imageSize = 3 * input.width * input.height;
  for (const chunk of chunks) {
    const data = new Float32Array(chunk.length * latentSize);
    for (const [i, z] of chunk.entries()) data.set(z, i * latentSize);
    const out = await components.vaeDecoder.run(
      { latent_sample: { data, dims: [chunk.length, 4, latentH, latentW] } },
      ["sample"],
    );
    const sample = (out.sample as { data: Float32Array }).data;
    for (let i = 0; i < chunk.length; i++)
      decodedImages.push(sample.slice(i * imageSize, (i + 1) * imageSize));
  }
  const tDecoded = performance.now();

  // 8. Encode PNG; a non-finite decode is an error, never a black image.
  const images: GeneratedImage[] = [];
  for (let i = 0; i < batch; i++) {
    const decoded = decodedImages[i] as Float32Array;
    if (hasNonFinite(decoded)) throw new GenerationFailed(`image ${i} decoded to NaN or infinite values`);
    const rgb = decodedToRgb(decoded, 0, input.width, input.height);
    images.push({ seed: input.seeds[i] as number, png: await encodePng(rgb, input.width, input.height) });
  }
  const tDone = performance.now();

  return {
    images,
    promptTokens: cond.tokenCount,
    promptTruncated: cond.truncated,
    negativePromptTokens: uncond.tokenCount,
    negativePromptTruncated: uncond.truncated,
    timesteps,
    timings: {
      encodeMs: tEncoded - t0,
      denoiseMs: tDenoised - tEncoded,
      decodeMs: tDecoded - tDenoised,
      pngMs: tDone - tDecoded,
      totalMs: tDone - t0,
    },
  };
}
