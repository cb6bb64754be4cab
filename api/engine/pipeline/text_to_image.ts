/**
 * Text-to-image, step for step as diffusers' StableDiffusionPipeline.__call__ (SD 1.x/2.x) and
 * StableDiffusionXLPipeline.__call__ (SDXL): the shared stages of `stages.ts` in order, with AUTOMATIC1111's
 * prompt conventions (75-token chunks, attention weights) unless the request asks for diffusers' literal
 * prompts. Components are passed in; nothing here reaches for globals.
 */
import { TorchGenerator } from "../rng/torch_generator.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import { GenerationAborted } from "./errors.ts";
import {
  decodeLatents,
  denoise,
  encodePngs,
  encodePrompts,
  prepareSchedulers,
  seededLatents,
  validate,
} from "./stages.ts";
import type { GenerateHooks, GenerateInput, GenerateOutput, PipelineComponents } from "./types.ts";

export async function generate(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const t0 = performance.now();

  // 1. Validate.
  const shape = validate(components, input);

  // 2–3. Tokenize and encode.
  const text = await encodePrompts(components, input, shape, hooks);
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

  // 8. Encode PNG.
  const images = await encodePngs(components, input, shape, decoded);
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
