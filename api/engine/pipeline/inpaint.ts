/**
 * Inpainting, step for step as diffusers' StableDiffusionInpaintPipeline.__call__: image-to-image timesteps and
 * latents, plus the mask. An inpainting model (9-channel UNet) reads the mask and the masked picture's latents
 * beside its latents at every step; an ordinary model (4 channels) has the kept region put back, noised to the
 * next timestep, after every step. AUTOMATIC1111's "masked content" choices change the latents the repainted
 * region starts from.
 */
import { TorchGenerator } from "../rng/torch_generator.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import { GenerationInvalid } from "./errors.ts";
import { type Denoised, finish } from "./output.ts";
import { denoise, encodePrompts, type LatentShape, prepareSchedulers, validate } from "./stages.ts";
import { startSchedulers } from "./strength.ts";
import type {
  GenerateHooks,
  GenerateInput,
  GenerateOutput,
  ImageInput,
  PipelineComponents,
} from "./types.ts";
import { encodeMoments, rgbToSample, sampleLatents } from "./vae_encode.ts";

/**
 * The mask as diffusers' mask processor leaves it (do_binarize): v/255 < 0.5 → 0, else 1, i.e. gray ≥ 128
 * repaints; one value per pixel.
 */
export function binarizeMask(mask: Uint8Array): Float32Array {
  return Float32Array.from(mask, (v) => (v >= 128 ? 1 : 0));
}

/** F.interpolate(mask, size=(H/8, W/8)) with mode "nearest" at the exact factor f: pixel (f·i, f·j). */
export function latentMask(
  mask: Float32Array,
  width: number,
  shape: LatentShape,
  factor: number,
): Float32Array {
  const out = new Float32Array(shape.latentH * shape.latentW);
  for (let i = 0; i < shape.latentH; i++) {
    for (let j = 0; j < shape.latentW; j++)
      out[i * shape.latentW + j] = mask[i * factor * width + j * factor] as number;
  }
  return out;
}

/** The picture with the repainted pixels zeroed in [−1, 1] (mid-gray): init · (mask < 0.5). */
function maskedSample(sample: Float32Array, mask: Float32Array): Float32Array {
  const plane = mask.length;
  const out = new Float32Array(sample.length);
  for (let k = 0; k < sample.length; k++)
    out[k] = (mask[k % plane] as number) < 0.5 ? (sample[k] as number) : 0;
  return out;
}

/**
 * An inpainting model asked for text-to-image, or for image-to-image without a mask, repaints everything: mask 1
 * everywhere and the latents of a mid-gray picture as the masked image, as AUTOMATIC1111's
 * txt2img_image_conditioning does (with the encoder's mean rather than a sample, so no generator is drawn
 * from). null for ordinary models.
 */
export async function blankInpaintingChannels(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  hooks: GenerateHooks,
): Promise<Float32Array[] | null> {
  if (components.capabilities.unetInChannels !== 9) return null;
  const { latentH, latentW, latentSize } = shape;
  const gray = new Float32Array(3 * input.width * input.height);
  const moments = await encodeMoments(components, gray, input.width, input.height, hooks);
  const plane = latentH * latentW;
  const channels = new Float32Array(plane + latentSize).fill(1);
  const scale = Math.fround(components.vaeScalingFactor);
  for (let k = 0; k < latentSize; k++) channels[plane + k] = Math.fround(scale * (moments[k] as number));
  return input.seeds.map(() => channels);
}

/**
 * AUTOMATIC1111's latent "masked content": latent_noise puts fresh noise from the image's seed (a generator of
 * its own, so diffusers' draw order is untouched) in the repainted region, latent_nothing zeros.
 */
function fillLatents(
  clean: Float32Array,
  mask: Float32Array,
  content: ImageInput["maskedContent"],
  seed: number,
  shape: LatentShape,
): Float32Array {
  if (content !== "latent_noise" && content !== "latent_nothing") return clean;
  const noise =
    content === "latent_noise"
      ? new TorchGenerator(seed, { kernel: "avx2" }).randn([1, 4, shape.latentH, shape.latentW])
      : null;
  const plane = mask.length;
  return clean.map((v, k) => ((mask[k % plane] as number) >= 0.5 ? (noise ? (noise[k] as number) : 0) : v));
}

/** Stages 1–6 of inpainting. */
export async function inpaintToLatents(
  components: PipelineComponents,
  input: GenerateInput,
  image: ImageInput & { mask: Uint8Array },
  hooks: GenerateHooks = {},
): Promise<Denoised> {
  const t0 = performance.now();

  // 1. Validate.
  const shape = validate(components, input);
  const nine = components.capabilities.unetInChannels === 9;

  // 2–3. Tokenize and encode.
  const text = await encodePrompts(components, input, shape, hooks);
  const encoded = performance.now();

  // 4. Timesteps, as image-to-image.
  const schedulers = prepareSchedulers(components, input);
  const { timesteps } = startSchedulers(components, schedulers, input.numSteps, image.strength);
  const full = image.strength >= 1;

  // 5. Pictures and mask: the init picture's moments (skipped by an inpainting model at full strength, which
  //    starts from pure noise), the masked picture's, and the mask at latent resolution.
  const { width, height } = input;
  const sample = rgbToSample(image.rgb, width, height);
  const mask = binarizeMask(image.mask);
  const small = latentMask(mask, width, shape, components.vaeScaleFactor);
  const initMoments = !nine || !full ? await encodeMoments(components, sample, width, height, hooks) : null;
  const maskedMoments = await encodeMoments(components, maskedSample(sample, mask), width, height, hooks);

  // Per image, one generator in diffusers' order: [init picture ε] → [noise] → [masked picture ε] → steps.
  const latentShape = [4, shape.latentH, shape.latentW] as const;
  const scaling = components.vaeScalingFactor;
  const generators = input.seeds.map((seed) => new TorchGenerator(seed, { kernel: "avx2" }));
  const clean: (Float32Array | null)[] = [];
  const noises: Float32Array[] = [];
  const initial: Float32Array[] = [];
  const extra: Float32Array[] = [];
  for (const [i, g] of generators.entries()) {
    const scheduler = schedulers[i] as Scheduler;
    const x0 = initMoments
      ? fillLatents(
          sampleLatents(initMoments, g, scaling, latentShape),
          small,
          image.maskedContent,
          input.seeds[i] as number,
          shape,
        )
      : null;
    const noise = g.randn([1, 4, shape.latentH, shape.latentW]);
    // Full strength is pure noise · init_noise_sigma (unlike image-to-image, which still adds x₀).
    initial.push(
      full || x0 === null
        ? noise.map((v) => Math.fround(v * scheduler.initNoiseSigma))
        : scheduler.addNoise(x0, noise, timesteps[0] as number),
    );
    const masked = sampleLatents(maskedMoments, g, scaling, latentShape);
    clean.push(x0);
    noises.push(noise);
    // The 9-channel UNet's extra input: [mask (1), masked-picture latents (4)].
    if (nine) {
      const channels = new Float32Array(small.length + masked.length);
      channels.set(small, 0);
      channels.set(masked, small.length);
      extra.push(channels);
    }
  }

  // 6. Denoise. 4 channels: after step i the kept region becomes x₀ noised to timesteps[i + 1] (x₀ itself after
  //    the last step): x = (1 − m)·add_noise(x₀, noise, t_{i+1}) + m·x.
  const blend = (stepIndex: number, latents: Float32Array[]) =>
    latents.map((x, i) => {
      const x0 = clean[i] as Float32Array;
      const next = timesteps[stepIndex + 1];
      const proper =
        next === undefined ? x0 : (schedulers[i] as Scheduler).addNoise(x0, noises[i] as Float32Array, next);
      const plane = small.length;
      return x.map((v, k) => {
        const m = small[k % plane] as number;
        return Math.fround(Math.fround((1 - m) * (proper[k] as number)) + Math.fround(m * v));
      });
    });
  const latents = await denoise(components, input, shape, text, schedulers, generators, initial, hooks, {
    timesteps,
    ...(nine ? { extraChannels: extra } : { afterStep: blend }),
  });
  return { shape, text, latents, timesteps, times: { start: t0, encoded, denoised: performance.now() } };
}

export async function generateInpainting(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const image = input.image;
  if (!image?.mask) throw new GenerationInvalid("inpainting needs an init image and a mask");
  // 1–6.
  const run = await inpaintToLatents(components, input, { ...image, mask: image.mask }, hooks);
  // 7. Decode; 8. Encode PNG (and composite over the init image where asked).
  return finish(components, input, run, hooks);
}
