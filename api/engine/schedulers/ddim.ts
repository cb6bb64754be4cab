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

import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import {
  AlphaIndexedScheduler,
  checkInferenceSteps,
  clampInPlace,
  ddpmTimesteps,
  predictOriginal,
  refuseKarras,
} from "./alpha_indexed.ts";
import {
  type ConfigHead,
  ConfigReader,
  readConfigHead,
  readThresholding,
  refuseThresholding,
  SchedulerConfigError,
  type ThresholdingConfig,
} from "./config.ts";
import type { SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface DDIMConfig extends ConfigHead, ThresholdingConfig {
  clip_sample: boolean;
  set_alpha_to_one: boolean;
  steps_offset: number;
  clip_sample_range: number;
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
    ...readConfigHead(r, d),
    clip_sample: r.boolean("clip_sample", d.clip_sample),
    set_alpha_to_one: r.boolean("set_alpha_to_one", d.set_alpha_to_one),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    ...readThresholding(r, d),
    clip_sample_range: r.number("clip_sample_range", d.clip_sample_range),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
  };
  refuseThresholding(resolved.thresholding);
  return resolved;
}

/** The ᾱ used after the last step (t' < 0) is `finalAlphaCumprod`: ᾱ_{t'} = 1 lands on x̂_0 itself. */
export class DDIMScheduler extends AlphaIndexedScheduler {
  readonly config: Readonly<DDIMConfig>;
  /** η of eq. 16 (0: deterministic DDIM). */
  readonly eta: number;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveDDIMConfig(config, options);
    const eta = options.eta ?? 0;
    if (!Number.isFinite(eta) || eta < 0) throw new SchedulerConfigError(`eta must be ≥ 0, got ${eta}`);
    super(c, c.set_alpha_to_one);
    this.config = Object.freeze(c);
    this.eta = eta;
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
    const n = this.beginStep(modelOutput, sample);
    const c = this.config;
    const [alphaProd, alphaProdPrev] = this.alphaProds(
      timestep,
      timestep - Math.floor(c.num_train_timesteps / n),
    );

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
