/**
 * DDIM, after diffusers 0.29.2 `DDIMScheduler` (A1111's "DDIM").
 *
 * Paper: Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models" (arXiv:2010.02502).
 *
 * Notation (VP process, discrete training steps t = 0…T−1): x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε. DDIM's generative
 * process (eq. 12) jumps from t to an earlier step t' (here t' = t − ⌊T/n⌋, the "previous timestep"):
 *   x_{t'} = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'} − σ_t²)·ε_θ(x_t, t) + σ_t·z,   z ~ N(0, I)
 *   x̂_0 = (x_t − √(1 − ᾱ_t)·ε_θ(x_t, t)) / √ᾱ_t                         ("predicted x_0")
 * with the family of variances of eq. 16,
 *   σ_t(η) = η·√((1 − ᾱ_{t'})/(1 − ᾱ_t))·√(1 − ᾱ_t/ᾱ_{t'})
 * η = 0 is the deterministic DDIM (an Euler step of the probability-flow ODE in √((1−ᾱ)/ᾱ)), η = 1 is DDPM's
 * ancestral sampler on the sub-sequence. At the last step t' < 0 and ᾱ_{t'} is `final_alpha_cumprod`: 1 with
 * `set_alpha_to_one` (the step lands on x_0 itself), ᾱ_0 otherwise (SD 1.x).
 *
 * Numerics: ᾱ and every coefficient are 0-d float32 tensors in diffusers and each elementwise operation is one
 * float32 operation, reproduced here with `Math.fround` in the same order; `** 0.5` on a float32 tensor is torch's
 * correctly rounded `sqrt`. With that, every step equals diffusers on torch's x86 CPU kernels bit for bit.
 */

import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { alphasCumprod, BETA_SCHEDULES, type BetaSchedule, betasFromConfig } from "./betas.ts";
import {
  ConfigReader,
  npArange,
  npLinspace,
  PREDICTION_TYPES,
  type PredictionType,
  roundHalfEven,
  SchedulerConfigError,
  TIMESTEP_SPACINGS,
  type TimestepSpacing,
} from "./schedule_utils.ts";
import type { Scheduler, SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface DDIMConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  trained_betas: number[] | null;
  clip_sample: boolean;
  set_alpha_to_one: boolean;
  steps_offset: number;
  prediction_type: PredictionType;
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  clip_sample_range: number;
  sample_max_value: number;
  timestep_spacing: TimestepSpacing;
  rescale_betas_zero_snr: boolean;
}

/** `DDIMScheduler.__init__` defaults in diffusers 0.29.2. */
export const DDIM_DEFAULTS: Readonly<DDIMConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  clip_sample: true,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  clip_sample_range: 1.0,
  sample_max_value: 1.0,
  timestep_spacing: "leading",
  rescale_betas_zero_snr: false,
});

/** Reads a scheduler config the way `DDIMScheduler.from_config` does, with the per-request options. */
export function resolveDDIMConfig(config: SchedulerConfig, options: SchedulerOptions = {}): DDIMConfig {
  refuseKarras("DDIM", options);
  const r = new ConfigReader(config);
  const d = DDIM_DEFAULTS;
  const resolved: DDIMConfig = {
    num_train_timesteps: r.integer("num_train_timesteps", d.num_train_timesteps),
    beta_start: r.number("beta_start", d.beta_start),
    beta_end: r.number("beta_end", d.beta_end),
    beta_schedule: r.oneOf("beta_schedule", BETA_SCHEDULES, d.beta_schedule),
    trained_betas: r.numberArray("trained_betas"),
    clip_sample: r.boolean("clip_sample", d.clip_sample),
    set_alpha_to_one: r.boolean("set_alpha_to_one", d.set_alpha_to_one),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    prediction_type: r.oneOf("prediction_type", PREDICTION_TYPES, d.prediction_type),
    thresholding: r.boolean("thresholding", d.thresholding),
    dynamic_thresholding_ratio: r.number("dynamic_thresholding_ratio", d.dynamic_thresholding_ratio),
    clip_sample_range: r.number("clip_sample_range", d.clip_sample_range),
    sample_max_value: r.number("sample_max_value", d.sample_max_value),
    timestep_spacing:
      options.timestepSpacing ?? r.oneOf("timestep_spacing", TIMESTEP_SPACINGS, d.timestep_spacing),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
  };
  refuseThresholding(resolved.thresholding);
  return resolved;
}

// ---------------------------------------------------------------------------------------------------------------
// Pieces shared with the other ᾱ-indexed schedulers (PNDM, LCM)

/** diffusers offers no Karras sigmas for the ᾱ-indexed schedulers (they have no σ schedule to reshape). */
export function refuseKarras(displayName: string, options: SchedulerOptions): void {
  if (options.karrasSigmas) throw new SchedulerConfigError(`${displayName} does not offer Karras sigmas`);
}

/** Dynamic thresholding needs the per-image layout (a quantile over C·H·W) and is for pixel-space models only. */
export function refuseThresholding(thresholding: boolean): void {
  if (thresholding) {
    throw new SchedulerConfigError("thresholding is not supported (it is for pixel-space models)");
  }
}

/**
 * `alphas_cumprod[t]` for an integer timestep as torch indexes a 1-d tensor with an int64 tensor: a negative t
 * counts from the end (diffusers' "trailing" spacing can produce t = −1 when T/n is inexact), anything outside
 * [−T, T) is an error.
 */
export function cumprodAt(alphasCumprod: Float32Array, t: number): number {
  const n = alphasCumprod.length;
  if (!Number.isInteger(t) || t < -n || t >= n) {
    throw new RangeError(`timestep ${t} is outside the ${n} training timesteps`);
  }
  return alphasCumprod[t < 0 ? t + n : t] as number;
}

/**
 * The inference timesteps of DDIM / PNDM, largest first, for the three spacings of Lin et al. 2024, "Common
 * Diffusion Noise Schedules and Sample Steps are Flawed" (arXiv:2305.08891), Table 2:
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
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new RangeError(`numInferenceSteps must be a positive integer, got ${numInferenceSteps}`);
  }
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
      if (withEpsilon) {
        eps = new Float32Array(len);
        for (let k = 0; k < len; k++) {
          eps[k] = f32(sa * (modelOutput[k] as number)) + f32(sb * (sample[k] as number));
        }
      }
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

// ---------------------------------------------------------------------------------------------------------------

export class DDIMScheduler implements Scheduler {
  readonly config: Readonly<DDIMConfig>;
  readonly initNoiseSigma = 1.0;
  /** ᾱ_t for t = 0…T−1 (float32). */
  readonly alphasCumprod: Float32Array;
  /** ᾱ used after the last step (t' < 0): 1 with `set_alpha_to_one`, else ᾱ_0. */
  readonly finalAlphaCumprod: number;
  /** η of eq. 16 (0: deterministic DDIM). */
  readonly eta: number;
  private timestepSchedule: number[] = [];
  private numSteps: number | null = null;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    this.config = Object.freeze(resolveDDIMConfig(config, options));
    const eta = options.eta ?? 0;
    if (!Number.isFinite(eta) || eta < 0) throw new SchedulerConfigError(`eta must be ≥ 0, got ${eta}`);
    this.eta = eta;
    this.alphasCumprod = alphasCumprod(betasFromConfig(this.config));
    this.finalAlphaCumprod = this.config.set_alpha_to_one ? 1 : (this.alphasCumprod[0] as number);
  }

  /** Timesteps fed to the UNet (integers, as diffusers' int64 schedule), after `setTimesteps`. */
  get timesteps(): readonly number[] {
    return this.timestepSchedule;
  }

  get numInferenceSteps(): number | null {
    return this.numSteps;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkInferenceSteps(numInferenceSteps, c.num_train_timesteps);
    this.numSteps = numInferenceSteps;
    this.timestepSchedule = ddpmTimesteps(
      c.timestep_spacing,
      c.num_train_timesteps,
      numInferenceSteps,
      c.steps_offset,
    );
  }

  /** DDIM needs no input scaling: the UNet sees x_t as is. */
  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample;
  }

  /**
   * One DDIM step (eq. 12) from `timestep` to `timestep − ⌊T/n⌋` (diffusers uses this previous timestep for every
   * spacing). With η > 0 the noise z is drawn from `generator` as diffusers' `randn_tensor` does, one normal
   * per latent value, once per step.
   */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput {
    const n = this.numSteps;
    if (n === null) throw new Error("setTimesteps must be called before step");
    if (modelOutput.length !== sample.length) {
      throw new RangeError(`model output has ${modelOutput.length} values, sample has ${sample.length}`);
    }
    const c = this.config;
    const prevTimestep = timestep - Math.floor(c.num_train_timesteps / n);
    const alphaProd = cumprodAt(this.alphasCumprod, timestep);
    const alphaProdPrev =
      prevTimestep >= 0 ? cumprodAt(this.alphasCumprod, prevTimestep) : this.finalAlphaCumprod;

    // x̂_0 and ε̂ of eq. 12 (the "predicted x_0" and the noise it implies), then the optional clip of x̂_0.
    const { x0, eps } = predictOriginal(c.prediction_type, modelOutput, sample, alphaProd, true);
    if (c.clip_sample) clampInPlace(x0, c.clip_sample_range);
    const epsilon = eps as Float32Array;

    // σ_t(η) of eq. 16: σ_t² = (1 − ᾱ_{t'})/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_{t'}), as diffusers' `_get_variance`.
    const betaProd = f32(1 - alphaProd);
    const betaProdPrev = f32(1 - alphaProdPrev);
    const variance = f32(f32(betaProdPrev / betaProd) * f32(1 - f32(alphaProd / alphaProdPrev)));
    const stdDev = f32(f32(this.eta) * f32(Math.sqrt(variance)));

    // x_{t'} = √ᾱ_{t'}·x̂_0 + √(1 − ᾱ_{t'} − σ_t²)·ε̂  (the "direction pointing to x_t"), then + σ_t·z.
    const dirCoef = f32(Math.sqrt(f32(betaProdPrev - f32(stdDev * stdDev))));
    const x0Coef = f32(Math.sqrt(alphaProdPrev));
    const prevSample = new Float32Array(sample.length);
    for (let k = 0; k < prevSample.length; k++) {
      prevSample[k] = f32(x0Coef * (x0[k] as number)) + f32(dirCoef * (epsilon[k] as number));
    }
    if (this.eta > 0) {
      if (!generator) throw new Error("DDIM with eta > 0 needs a generator for its per-step noise");
      const z = generator.randn([sample.length]);
      for (let k = 0; k < prevSample.length; k++) {
        prevSample[k] = (prevSample[k] as number) + f32(stdDev * (z[k] as number));
      }
    }
    return { prevSample, predOriginalSample: x0 };
  }
}
