/**
 * One short generation right after a model loads, so that the first request is not the slow one: onnxruntime
 * allocates its arenas and plans memory on a session's first run for each input shape, and on CUDA cuDNN
 * benchmarks its convolution algorithms per shape (cudnnConvAlgoSearch EXHAUSTIVE) and the attention kernels
 * are chosen. The warm-up runs the normal `generate()` at the model's default size with classifier-free
 * guidance (so the UNet sees the batch of 2 that a one-image request gives it) for a couple of steps, and
 * decodes, so the text encoder(s), UNet and VAE decoder all run once at the shapes a default request uses.
 */
import { GENERATE_DEFAULTS, type SchedulerName } from "../../../contract/index.ts";
import { generate } from "./text_to_image.ts";
import type { GenerateHooks, GenerateOutput, PipelineComponents } from "./types.ts";

export interface WarmUpOptions {
  /**
   * Image size, px (square). Default: the model's native size as its files give it (the VAE's sample size: 512
   * for SD 1.x, 768 for SD 2.x 768-v, 1024 for SDXL); the model host may pass the entry's `nativeSize`.
   */
  size?: number;
  /** Denoising steps (default 2: the UNet's shapes are the same at every step). */
  steps?: number;
  /** Default: the API's default, guidance on, so the UNet runs at the batch of 2 a one-image request uses. */
  guidanceScale?: number;
  scheduler?: SchedulerName;
  signal?: AbortSignal;
}

export interface WarmUpResult {
  /** Wall time of the warm-up generation, ms. */
  ms: number;
  width: number;
  height: number;
  steps: number;
  timings: GenerateOutput["timings"];
}

/** Runs one short generation through `generate()` and returns how long it took. */
export async function warmUp(
  components: PipelineComponents,
  options: WarmUpOptions = {},
): Promise<WarmUpResult> {
  const size = options.size ?? components.files.vae.sampleSize;
  const steps = options.steps ?? 2;
  const hooks: GenerateHooks = options.signal ? { signal: options.signal } : {};
  const started = performance.now();
  const out = await generate(
    components,
    {
      prompt: "a photograph of a lighthouse on a cliff",
      negativePrompt: null,
      promptSyntax: GENERATE_DEFAULTS.prompt_syntax,
      seeds: [0],
      width: size,
      height: size,
      numSteps: steps,
      guidanceScale: options.guidanceScale ?? GENERATE_DEFAULTS.guidance_scale,
      scheduler: options.scheduler ?? "euler",
      schedulerOptions: {},
      clipSkip: GENERATE_DEFAULTS.clip_skip,
      vaeSlicing: false,
      vaeTiling: false,
    },
    hooks,
  );
  return { ms: performance.now() - started, width: size, height: size, steps, timings: out.timings };
}
