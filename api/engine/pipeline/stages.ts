/**
 * The stages every Stable Diffusion pipeline shares, numbered as diffusers' StableDiffusionPipeline.__call__
 * and StableDiffusionXLPipeline.__call__ run them: validate the request, tokenize and encode the prompts
 * (each model family's own text stage), timesteps, seeded latents, denoising with classifier-free guidance,
 * decoding and PNG encoding. A pipeline kind (text-to-image, …) is these stages called in its order.
 */
import type { FeedValue, OnnxModel } from "../onnx/runtime.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { createScheduler } from "../schedulers/index.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import { GenerationAborted, GenerationFailed, GenerationInvalid } from "./errors.ts";
import { decodedToRgb, encodePng, hasNonFinite } from "./image.ts";
import { encodeSdPrompts } from "./stable_diffusion.ts";
import { encodeXlPrompts } from "./stable_diffusion_xl.ts";
import type {
  EncodedPrompts,
  GeneratedImage,
  GenerateHooks,
  GenerateInput,
  PipelineComponents,
  PromptConditioning,
  RgbPixels,
  StepEvent,
} from "./types.ts";
import { type Chw, decodeTiled, needsTiling } from "./vae_tiling.ts";

function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The latent shape of a request and whether guidance runs. */
export interface LatentShape {
  batch: number;
  latentH: number;
  latentW: number;
  /** Values in one image's latents (4 · h · w). */
  latentSize: number;
  doCfg: boolean;
}

/** Stage 1: the service checks requests against the model; the engine still never runs a shape the graphs cannot take. */
export function validate(components: PipelineComponents, input: GenerateInput): LatentShape {
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

/**
 * Stages 2–3: tokenize and encode the prompts, with one text encoder for SD 1.x/2.x (`stable_diffusion.ts`),
 * two plus added conditions for SDXL (`stable_diffusion_xl.ts`).
 */
export async function encodePrompts(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  hooks: GenerateHooks,
): Promise<EncodedPrompts> {
  const enterTextEncoder = async () => hooks.enterStage?.("text_encoder");
  return components.xl
    ? await encodeXlPrompts(
        components,
        components.xl,
        input,
        shape.doCfg,
        components.capabilities.longPrompts,
        enterTextEncoder,
      )
    : await encodeSdPrompts(components, input, shape.doCfg, enterTextEncoder);
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
export function prepareSchedulers(components: PipelineComponents, input: GenerateInput): Scheduler[] {
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
export function seededLatents(
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

/** How a pipeline kind changes the denoising loop. */
export interface DenoiseOptions {
  /** The timesteps to run (image-to-image: the end of the schedule); default: the whole schedule. */
  timesteps?: readonly number[];
  /**
   * Channels fed to the UNet after the scaled latents, per image (inpainting models: mask ‖ masked-image
   * latents, `[k, h, w]` flat); the same for the unconditional and conditional rows.
   */
  extraChannels?: Float32Array[];
  /** Called after each step with its index and the new latents; returns the latents to go on with. */
  afterStep?(stepIndex: number, latents: Float32Array[]): Float32Array[];
}

/**
 * Stage 6: denoise with classifier-free guidance, ε = ε_u + s·(ε_c − ε_u) (Ho & Salimans 2022, eq. 6). The
 * unconditional and conditional passes share one UNet call ([uncond × batch, cond × batch], diffusers' order)
 * when their conditionings have the same length; prompts of different chunk counts run as two calls, as
 * AUTOMATIC1111 does by default rather than padding the shorter one. SDXL's pooled text embeds and time ids
 * go with each row as the UNet's `text_embeds` and `time_ids` inputs. After a step that `hooks.previews` finds
 * due, it previews the latents as they go on (after `afterStep`: inpainting's blend).
 */
export async function denoise(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  text: EncodedPrompts,
  schedulers: Scheduler[],
  generators: TorchGenerator[],
  initial: Float32Array[],
  hooks: GenerateHooks,
  options: DenoiseOptions = {},
): Promise<Float32Array[]> {
  const { batch, latentH, latentW, latentSize, doCfg } = shape;
  const extra = options.extraChannels ?? null;
  const extraSize = extra ? (extra[0] as Float32Array).length : 0;
  const channels = 4 + extraSize / (latentH * latentW);
  const rowSize = latentSize + extraSize;
  const cond = perImage(text.cond, batch);
  const uncond = doCfg && text.uncond ? perImage(text.uncond, batch) : null;
  const joint = uncond !== null && uncond.seqLen === cond.seqLen ? joinConditioning(uncond, cond) : null;
  const unet = async (t: number, sample: Float32Array, rows: number, c: BatchConditioning) => {
    const feeds: Record<string, FeedValue> = {
      sample: { data: sample, dims: [rows, channels, latentH, latentW] },
      timestep: { data: [t], dims: [] },
      encoder_hidden_states: { data: c.states, dims: [rows, c.seqLen, c.width] },
    };
    if (components.unetLora) Object.assign(feeds, components.unetLora);
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
  const timesteps = options.timesteps ?? first.timesteps;
  let latents = initial;
  // One buffer for the whole run: per row the scaled latents (then any extra channels, which stay put),
  // written twice ([uncond, cond] rows) for a joint CFG call.
  const unetInput = new Float32Array((joint ? 2 : 1) * batch * rowSize);
  const batchInput = unetInput.subarray(0, batch * rowSize);
  if (extra) {
    for (let i = 0; i < batch; i++) {
      unetInput.set(extra[i] as Float32Array, i * rowSize + latentSize);
      if (joint) unetInput.set(extra[i] as Float32Array, (batch + i) * rowSize + latentSize);
    }
  }
  const previews = hooks.previews;
  await hooks.enterStage?.("unet");
  for (let stepIndex = 0; stepIndex < timesteps.length; stepIndex++) {
    if (hooks.signal?.aborted) throw new GenerationAborted("generation cancelled");
    const t = timesteps[stepIndex] as number;
    for (let i = 0; i < batch; i++) {
      const scaled = (schedulers[i] as Scheduler).scaleModelInput(latents[i] as Float32Array, t);
      unetInput.set(scaled, i * rowSize);
      if (joint) unetInput.set(scaled, (batch + i) * rowSize);
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
    if (options.afterStep) latents = options.afterStep(stepIndex, latents);
    const event: StepEvent = { step: stepIndex + 1, total: timesteps.length, timestep: t };
    if (previews?.due(event)) event.previews = await previews.make(latents, latentH, latentW);
    hooks.onStep?.(event);
  }
  return latents;
}

/**
 * Stage 7: x = D(z / scaling_factor), the whole batch at once, one image at a time (VAE slicing), or tile by
 * tile (VAE tiling, when the latents exceed one tile).
 */
export async function decodeLatents(
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

/**
 * Stage 8: each decoded image, once `assertFiniteDecode` passes it, to 8-bit RGB (then `composite`, when given)
 * and a PNG with its infotext.
 */
export async function encodePngs(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  decoded: Float32Array[],
  composite?: (rgb: RgbPixels) => Promise<RgbPixels>,
): Promise<GeneratedImage[]> {
  const images: GeneratedImage[] = [];
  for (let i = 0; i < shape.batch; i++) {
    const image = decoded[i] as Float32Array;
    assertFiniteDecode(image, i, components.vaeDecoder);
    const rgb: RgbPixels = {
      data: decodedToRgb(image, 0, input.width, input.height),
      width: input.width,
      height: input.height,
    };
    const final = composite ? await composite(rgb) : rgb;
    const parameters = input.pngParameters?.[i];
    const pngText: Record<string, string> = parameters === undefined ? {} : { parameters };
    images.push({
      seed: input.seeds[i] as number,
      png: await encodePng(final.data, final.width, final.height, pngText),
    });
  }
  return images;
}
