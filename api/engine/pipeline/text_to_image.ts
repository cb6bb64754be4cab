/**
 * Text-to-image, step for step as diffusers' StableDiffusionPipeline.__call__ (SD 1.x/2.x) and
 * StableDiffusionXLPipeline.__call__ (SDXL): the shared stages of `stages.ts` in order, with AUTOMATIC1111's
 * prompt conventions (75-token chunks, attention weights) unless the request asks for diffusers' literal
 * prompts. Components are passed in; nothing here reaches for globals.
 */
import { TorchGenerator } from "../rng/torch_generator.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import { blankInpaintingChannels } from "./inpaint.ts";
import { type Denoised, finish } from "./output.ts";
import { denoise, encodePrompts, prepareSchedulers, seededLatents, validate } from "./stages.ts";
import type { GenerateHooks, GenerateInput, GenerateOutput, PipelineComponents } from "./types.ts";

/** Stages 1–6: from the prompt to denoised latents (the hires fix's first pass stops here). */
export async function textToLatents(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<Denoised> {
  const start = performance.now();

  // 1. Validate.
  const shape = validate(components, input);

  // 2–3. Tokenize and encode.
  const text = await encodePrompts(components, input, shape, hooks);
  const encoded = performance.now();

  // 4. Timesteps.
  const schedulers = prepareSchedulers(components, input);
  const first = schedulers[0] as Scheduler;
  const timesteps = [...first.timesteps];

  // 5. Seeded latents.
  const generators = input.seeds.map((seed) => new TorchGenerator(seed, { kernel: "avx2" }));
  const initial = seededLatents(generators, shape, first.initNoiseSigma);

  // 6. Denoise with classifier-free guidance.
  const extraChannels = await blankInpaintingChannels(components, input, shape, hooks);
  const latents = await denoise(components, input, shape, text, schedulers, generators, initial, hooks, {
    ...(extraChannels ? { extraChannels } : {}),
  });
  return { shape, text, latents, timesteps, times: { start, encoded, denoised: performance.now() } };
}

export async function generate(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  // 1–6.
  const run = await textToLatents(components, input, hooks);
  // 7. Decode; 8. Encode PNG.
  return finish(components, input, run, hooks);
}
