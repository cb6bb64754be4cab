/**
 * The last stages every pipeline kind shares: decode the denoised latents (stage 7), composite inpainting results
 * over their init image where the request asks for it, and encode PNGs with their infotext (stage 8).
 */
import { GenerationAborted } from "./errors.ts";
import { pasteBack } from "./inpaint_area.ts";
import { decodeLatents, encodePngs, type LatentShape } from "./stages.ts";
import type {
  EncodedPrompts,
  GenerateHooks,
  GenerateInput,
  GenerateOutput,
  PipelineComponents,
  RgbPixels,
} from "./types.ts";

/** What a pipeline kind hands to `finish`: its final latents and what it did to get them. */
export interface Denoised {
  shape: LatentShape;
  text: EncodedPrompts;
  latents: Float32Array[];
  /** The timesteps the sampler ran. */
  timesteps: number[];
  /** performance.now() at the start, after the prompts were encoded, after denoising. */
  times: { start: number; encoded: number; denoised: number };
}

/** Stages 7–8: decode, composite (inpainting overlay), PNG; the output of a generation. */
export async function finish(
  components: PipelineComponents,
  input: GenerateInput,
  run: Denoised,
  hooks: GenerateHooks,
  extra: Pick<GenerateOutput, "hiresTimesteps"> = {},
): Promise<GenerateOutput> {
  if (hooks.signal?.aborted) throw new GenerationAborted("generation cancelled");
  const { decoded, vaeTiles } = await decodeLatents(components, input, run.shape, run.latents, hooks);
  const tDecoded = performance.now();
  const overlay = input.image?.overlay ?? null;
  const composite = overlay
    ? (rgb: RgbPixels) =>
        pasteBack(overlay.image, rgb, overlay.region, {
          data: overlay.mask,
          width: overlay.image.width,
          height: overlay.image.height,
        })
    : undefined;
  const images = await encodePngs(components, input, run.shape, decoded, composite);
  const tDone = performance.now();
  const { text, times } = run;
  return {
    images,
    prompt: text.prompt,
    negativePrompt: text.negativePrompt,
    ...(text.xl ? { xl: text.xl } : {}),
    timesteps: run.timesteps,
    ...extra,
    vaeTiles,
    timings: {
      encodeMs: times.encoded - times.start,
      denoiseMs: times.denoised - times.encoded,
      decodeMs: tDecoded - times.denoised,
      pngMs: tDone - tDecoded,
      totalMs: tDone - times.start,
    },
  };
}
