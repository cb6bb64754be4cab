/**
 * Image-to-image, step for step as diffusers' StableDiffusionImg2ImgPipeline.__call__ (SD 1.x/2.x) and
 * StableDiffusionXLImg2ImgPipeline.__call__ (SDXL): the text-to-image stages, with the schedule cut by `strength`
 * and the denoising started from the picture's latents noised to the first timestep kept. The hires fix's second
 * pass starts here too, from upscaled latents instead of a picture.
 */
import { TorchGenerator } from "../rng/torch_generator.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import { GenerationInvalid } from "./errors.ts";
import { blankInpaintingChannels } from "./inpaint.ts";
import { type Denoised, finish } from "./output.ts";
import { denoise, encodePrompts, type LatentShape, prepareSchedulers, validate } from "./stages.ts";
import { startSchedulers } from "./strength.ts";
import type { GenerateHooks, GenerateInput, GenerateOutput, PipelineComponents } from "./types.ts";
import { encodeMoments, rgbToSample, sampleLatents } from "./vae_encode.ts";

/** What the denoising starts from: a picture (one for the batch, or one per image), or latents per image. */
export type ImageStart = { kind: "pixels"; rgb: Uint8Array[] } | { kind: "latents"; latents: Float32Array[] };

/**
 * The clean latents of each image: the picture encoded and sampled with the image's generator (its first draw,
 * diffusers' `retrieve_latents(vae.encode(image), generator)`), or the given latents as they are (a 4-channel
 * tensor passed as `image`: no encoding, no scaling, no draw).
 */
export async function imageLatents(
  components: PipelineComponents,
  input: GenerateInput,
  shape: LatentShape,
  generators: TorchGenerator[],
  start: ImageStart,
  hooks: GenerateHooks,
): Promise<Float32Array[]> {
  if (start.kind === "latents") return start.latents;
  const moments: Float32Array[] = [];
  for (const rgb of start.rgb) {
    const sample = rgbToSample(rgb, input.width, input.height);
    moments.push(await encodeMoments(components, sample, input.width, input.height, hooks));
  }
  const latentShape = [4, shape.latentH, shape.latentW] as const;
  return generators.map((g, i) =>
    sampleLatents((moments[i] ?? moments[0]) as Float32Array, g, components.vaeScalingFactor, latentShape),
  );
}

/** Stages 1–6 of image-to-image, from `start`, with `strength` of `input.numSteps` steps. */
export async function imageToLatents(
  components: PipelineComponents,
  input: GenerateInput,
  start: ImageStart,
  strength: number,
  hooks: GenerateHooks = {},
): Promise<Denoised> {
  const t0 = performance.now();

  // 1. Validate.
  const shape = validate(components, input);

  // 2–3. Tokenize and encode.
  const text = await encodePrompts(components, input, shape, hooks);
  const encoded = performance.now();

  // 4. Timesteps: the full schedule, then the part strength keeps.
  const schedulers = prepareSchedulers(components, input);
  const { timesteps } = startSchedulers(components, schedulers, input.numSteps, strength);

  // 5. Latents: x₀ from the picture (generator draw 1), noise (draw 2), x_t = add_noise(x₀, noise, t_first) —
  //    without init_noise_sigma, unlike text-to-image.
  const generators = input.seeds.map((seed) => new TorchGenerator(seed, { kernel: "avx2" }));
  const clean = await imageLatents(components, input, shape, generators, start, hooks);
  const initial = generators.map((g, i) => {
    const noise = g.randn([1, 4, shape.latentH, shape.latentW]);
    return (schedulers[i] as Scheduler).addNoise(clean[i] as Float32Array, noise, timesteps[0] as number);
  });

  // 6. Denoise with classifier-free guidance over the kept timesteps (an inpainting model repaints everything).
  const extraChannels = await blankInpaintingChannels(components, input, shape, hooks);
  const latents = await denoise(components, input, shape, text, schedulers, generators, initial, hooks, {
    timesteps,
    ...(extraChannels ? { extraChannels } : {}),
  });
  return { shape, text, latents, timesteps, times: { start: t0, encoded, denoised: performance.now() } };
}

export async function generateFromImage(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const image = input.image;
  if (!image) throw new GenerationInvalid("image-to-image needs an init image");
  // 1–6.
  const run = await imageToLatents(
    components,
    input,
    { kind: "pixels", rgb: [image.rgb] },
    image.strength,
    hooks,
  );
  // 7. Decode; 8. Encode PNG.
  return finish(components, input, run, hooks);
}
