/**
 * AUTOMATIC1111's hires fix on diffusers' pipelines: text-to-image at width × height stopped at the latents,
 * an upscale, and image-to-image at the hires size from the upscaled result with a fresh generator of the same
 * seed. Progress and previews count both passes' steps.
 */
import { createScheduler } from "../schedulers/index.ts";
import type { Scheduler } from "../schedulers/scheduler.ts";
import { GenerationInvalid } from "./errors.ts";
import { decodedToRgb, resizeRgb } from "./image.ts";
import { type ImageStart, imageToLatents } from "./image_to_image.ts";
import { upscaleLatents } from "./latent_upscale.ts";
import { finish } from "./output.ts";
import { decodeLatents } from "./stages.ts";
import { strengthSchedule } from "./strength.ts";
import { textToLatents } from "./text_to_image.ts";
import type {
  GenerateHooks,
  GenerateInput,
  GenerateOutput,
  HiresInput,
  PipelineComponents,
  StepEvent,
} from "./types.ts";

/** Denoising steps the second pass runs (int(steps · strength) of its schedule, as image-to-image). */
export function secondPassSteps(
  components: PipelineComponents,
  input: GenerateInput,
  hires: HiresInput,
): number {
  const scheduler: Scheduler = createScheduler(
    input.scheduler,
    components.schedulerConfig,
    input.schedulerOptions,
  );
  scheduler.setTimesteps(hires.steps);
  return strengthSchedule(scheduler, hires.steps, hires.strength).timesteps.length;
}

/** One pass's hooks with its steps numbered over the whole run: the step events and the previews' schedule. */
function renumbered(hooks: GenerateHooks, number: (e: StepEvent) => StepEvent): GenerateHooks {
  const { previews } = hooks;
  return {
    ...hooks,
    onStep: (e) => hooks.onStep?.(number(e)),
    ...(previews ? { previews: { ...previews, due: (e: StepEvent) => previews.due(number(e)) } } : {}),
  };
}

export async function generateHires(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const hires = input.hires;
  if (!hires) throw new GenerationInvalid("the hires fix needs its second-pass settings");
  const secondInput: GenerateInput = {
    ...input,
    width: hires.width,
    height: hires.height,
    numSteps: hires.steps,
    image: null,
    hires: null,
  };
  const secondSteps = secondPassSteps(components, secondInput, hires);

  // Pass 1: text-to-image at width × height, latents out.
  const first = await textToLatents(
    components,
    input,
    renumbered(hooks, (e) => ({ ...e, total: e.total + secondSteps })),
  );
  const firstSteps = first.timesteps.length;

  // Upscale: the latents themselves (bilinear or nearest), or decoded pixels resized with Lanczos-3.
  const { latentH, latentW } = first.shape;
  const outH = hires.height / components.vaeScaleFactor;
  const outW = hires.width / components.vaeScaleFactor;
  let start: ImageStart;
  if (hires.upscaler === "lanczos") {
    const { decoded } = await decodeLatents(components, input, first.shape, first.latents, hooks);
    const rgb: Uint8Array[] = [];
    for (const image of decoded) {
      const small = {
        data: decodedToRgb(image, 0, input.width, input.height),
        width: input.width,
        height: input.height,
      };
      rgb.push((await resizeRgb(small, hires.width, hires.height)).data);
    }
    start = { kind: "pixels", rgb };
  } else {
    const mode = hires.upscaler === "latent" ? "bilinear" : "nearest";
    start = {
      kind: "latents",
      latents: first.latents.map((z) => upscaleLatents(z, 4, latentH, latentW, outH, outW, mode)),
    };
  }

  // Pass 2: image-to-image at the hires size, a fresh generator per image with the same seed.
  const second = await imageToLatents(
    components,
    secondInput,
    start,
    hires.strength,
    renumbered(hooks, (e) => ({ ...e, step: firstSteps + e.step, total: firstSteps + e.total })),
  );
  const output = await finish(
    components,
    secondInput,
    { ...second, times: { ...second.times, start: first.times.start } },
    hooks,
    { hiresTimesteps: second.timesteps },
  );
  return { ...output, timesteps: first.timesteps };
}
