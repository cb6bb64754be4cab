/**
 * Pieces shared by the ᾱ-indexed schedulers (DDIM, PNDM, LCM): they step between integer training timesteps and
 * read ᾱ_t there, with no σ schedule. Everything is float32 in diffusers' operation order. `AlphaIndexedScheduler`
 * holds their common state, as `SigmaScheduler` does for the k-diffusion samplers; the algorithms stay in their files.
 */
import type { PredictionType, TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { alphasCumprod, type BetaScheduleConfig, betasFromConfig } from "./betas.ts";
import { SchedulerConfigError } from "./config.ts";
import { npArange, npLinspace, roundHalfEven } from "./numpy.ts";
import type { Scheduler, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { checkNoiseLength, checkStepCount, checkStepInputs } from "./step_index.ts";

/** diffusers offers no Karras sigmas for the ᾱ-indexed schedulers (they have no σ schedule to reshape). */
export function refuseKarras(displayName: string, options: SchedulerOptions): void {
  if (options.karrasSigmas) throw new SchedulerConfigError(`${displayName} does not offer Karras sigmas`);
}

/**
 * `alphas_cumprod[t]` for an integer timestep as torch indexes a 1-d tensor with an int64 tensor: a negative t
 * counts from the end (diffusers' "trailing" spacing can produce t = −1 when T/n is inexact), anything outside
 * [−T, T) is an error.
 */
function cumprodAt(alphasCumprod: Float32Array, t: number): number {
  const n = alphasCumprod.length;
  if (!Number.isInteger(t) || t < -n || t >= n) {
    throw new RangeError(`timestep ${t} is outside the ${n} training timesteps`);
  }
  return alphasCumprod[t < 0 ? t + n : t] as number;
}

/**
 * The inference timesteps of DDIM / PNDM, largest first, for the three spacings of Lin et al. 2024, "Common
 * Diffusion Noise Schedules and Sample Steps are Flawed" (arXiv:2305.08891), Table 2 (integers, n points; not
 * shared with `spacedTimesteps` (float32, fractional linspace) or `dpmTimesteps` (n + 1 points), which differ):
 *   linspace: round(linspace(0, T−1, n)), reversed
 *   leading:  (n−1…0)·⌊T/n⌋ + steps_offset
 *   trailing: round(arange(T, 0, −T/n)) − 1 (numpy's float arange, which yields n + 1 values when T/n is inexact)
 */
export function ddpmTimesteps(
  spacing: TimestepSpacing,
  numTrainTimesteps: number,
  numInferenceSteps: number,
  stepsOffset: number,
): number[] {
  const T = numTrainTimesteps;
  const n = numInferenceSteps;
  if (spacing === "linspace")
    return npLinspace(0, T - 1, n)
      .map(roundHalfEven)
      .reverse();
  if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) out.push(i * ratio + stepsOffset);
    return out;
  }
  return npArange(T, 0, -T / n).map((t) => roundHalfEven(t) - 1);
}

/** Checks the step count the way diffusers' `set_timesteps` does (1 ≤ n ≤ T). */
export function checkInferenceSteps(numInferenceSteps: number, numTrainTimesteps: number): void {
  checkStepCount(numInferenceSteps);
  if (numInferenceSteps > numTrainTimesteps) {
    throw new RangeError(
      `numInferenceSteps ${numInferenceSteps} exceeds the ${numTrainTimesteps} training timesteps`,
    );
  }
}

/** `torch.clamp(x, −r, r)` with the bound rounded to float32 like torch's scalar bounds. */
export function clampInPlace(x: Float32Array, range: number): void {
  const r = f32(range);
  for (let k = 0; k < x.length; k++) x[k] = Math.min(Math.max(x[k] as number, -r), r);
}

/**
 * x̂_0 and ε̂ from the network output at ᾱ_t (float32, diffusers' operation order):
 *   ε-prediction:  x̂_0 = (x_t − √(1−ᾱ_t)·ε_θ)/√ᾱ_t,  ε̂ = ε_θ
 *   v-prediction (v = √ᾱ·ε − √(1−ᾱ)·x_0, Salimans & Ho 2022, "Progressive Distillation", §4):
 *                  x̂_0 = √ᾱ_t·x_t − √(1−ᾱ_t)·v_θ,  ε̂ = √ᾱ_t·v_θ + √(1−ᾱ_t)·x_t
 *   sample:        x̂_0 = output,  ε̂ = (x_t − √ᾱ_t·x̂_0)/√(1−ᾱ_t)
 * `withEpsilon` false skips ε̂ (LCM needs only x̂_0).
 */
export function predictOriginal(
  predictionType: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  alphaProd: number,
  withEpsilon: boolean,
): { x0: Float32Array; eps: Float32Array | null } {
  const sa = f32(Math.sqrt(alphaProd));
  const sb = f32(Math.sqrt(f32(1 - alphaProd)));
  const len = sample.length;
  const x0 = new Float32Array(len);
  let eps: Float32Array | null = null;
  switch (predictionType) {
    case "epsilon":
      for (let k = 0; k < len; k++) {
        x0[k] = f32((sample[k] as number) - f32(sb * (modelOutput[k] as number))) / sa;
      }
      if (withEpsilon) eps = modelOutput;
      break;
    case "v_prediction":
      for (let k = 0; k < len; k++) {
        x0[k] = f32(sa * (sample[k] as number)) - f32(sb * (modelOutput[k] as number));
      }
      if (withEpsilon) eps = vToEpsilon(modelOutput, sample, alphaProd);
      break;
    case "sample":
      x0.set(modelOutput);
      if (withEpsilon) {
        eps = new Float32Array(len);
        for (let k = 0; k < len; k++) {
          eps[k] = f32((sample[k] as number) - f32(sa * (x0[k] as number))) / sb;
        }
      }
      break;
  }
  return { x0, eps };
}

/** ε̂ = √ᾱ_t·v_θ + √(1−ᾱ_t)·x_t from a v-prediction (float32). */
export function vToEpsilon(modelOutput: Float32Array, sample: Float32Array, alphaProd: number): Float32Array {
  const sa = f32(Math.sqrt(alphaProd));
  const sb = f32(Math.sqrt(f32(1 - alphaProd)));
  const eps = new Float32Array(sample.length);
  for (let k = 0; k < eps.length; k++) {
    eps[k] = f32(sa * (modelOutput[k] as number)) + f32(sb * (sample[k] as number));
  }
  return eps;
}

// ---------------------------------------------------------------------------------------------------------------
// Shared scheduler state

/**
 * State common to DDIM, PNDM and LCM: ᾱ_t, the ᾱ used past the end, the integer timesteps, `init_noise_sigma` = 1
 * and the identity `scale_model_input` (the UNet sees x_t as is).
 */
export abstract class AlphaIndexedScheduler implements Scheduler {
  readonly initNoiseSigma = 1.0;
  /** PNDM's extra PRK/PLMS evaluation lives in its timestep list, not in `order` (1 for all three, as in diffusers). */
  readonly order = 1;
  /** ᾱ_t for t = 0…T−1 (float32). */
  readonly alphasCumprod: Float32Array;
  /** ᾱ used when the previous timestep is below 0 (`final_alpha_cumprod`): 1 with `set_alpha_to_one`, else ᾱ_0. */
  readonly finalAlphaCumprod: number;
  protected timestepSchedule: number[] = [];
  /** The n of the last `setTimesteps` (PNDM and trailing DDIM feed the UNet more timesteps than that). */
  protected numSteps: number | null = null;

  protected constructor(betas: BetaScheduleConfig, setAlphaToOne: boolean) {
    this.alphasCumprod = alphasCumprod(betasFromConfig(betas));
    this.finalAlphaCumprod = setAlphaToOne ? 1 : (this.alphasCumprod[0] as number);
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput;

  /** Timesteps fed to the UNet (integers, as diffusers' int64 schedule), after `setTimesteps`. */
  get timesteps(): readonly number[] {
    return this.timestepSchedule;
  }

  get numInferenceSteps(): number | null {
    return this.numSteps;
  }

  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample;
  }

  /**
   * The DDPM forward process q(x_t | x₀) = N(√ᾱ_t·x₀, (1 − ᾱ_t)·I) (Ho et al. 2020, eq. 4):
   * x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, read at the integer timestep itself (no step index), float32 in torch's order.
   */
  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    checkNoiseLength(original, noise);
    const alphaProd = cumprodAt(this.alphasCumprod, timestep);
    const sa = f32(Math.sqrt(alphaProd));
    const sb = f32(Math.sqrt(f32(1 - alphaProd)));
    const out = new Float32Array(original.length);
    for (let k = 0; k < out.length; k++) {
      out[k] = f32(sa * (original[k] as number)) + f32(sb * (noise[k] as number));
    }
    return out;
  }

  /** Validates a `step` call (a schedule is set, the sizes match) and returns the step count n. */
  protected beginStep(modelOutput: Float32Array, sample: Float32Array): number {
    checkStepInputs(this.numSteps, modelOutput, sample);
    return this.numSteps;
  }

  /** ᾱ_t and ᾱ_{t_prev} of a step, the latter `finalAlphaCumprod` when t_prev < 0. */
  protected alphaProds(timestep: number, prevTimestep: number): [alphaProd: number, alphaProdPrev: number] {
    const alphaProd = cumprodAt(this.alphasCumprod, timestep);
    const alphaProdPrev =
      prevTimestep >= 0 ? cumprodAt(this.alphasCumprod, prevTimestep) : this.finalAlphaCumprod;
    return [alphaProd, alphaProdPrev];
  }
}
