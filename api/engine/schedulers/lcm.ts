/**
 * Latent Consistency Model multistep sampling, after diffusers 0.29.2 `LCMScheduler` (A1111's "LCM").
 *
 * Papers: Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models" (arXiv:2303.01469) and Luo et al. 2023,
 * "Latent Consistency Models" (arXiv:2310.04378).
 *
 * A consistency function maps any x_t of a trajectory to its origin: f_θ(x_t, t) = c_skip(t)·x_t + c_out(t)·F_θ(x_t, t)
 * (Consistency Models §3, the boundary-condition parameterisation with c_skip(0) = 1, c_out(0) = 0). LCM takes
 * F_θ = x̂_0, the DDIM x_0 prediction of the distilled UNet, and evaluates the coefficients at the scaled
 * discrete timestep s = t·timestep_scaling with σ_data = 0.5 (diffusers' form):
 *   c_skip = σ_data² / (s² + σ_data²),   c_out = s / √(s² + σ_data²)
 * so that "denoised" = c_skip·x_t + c_out·x̂_0 ≈ x̂_0 for t ≫ 0. Multistep sampling (Consistency Models
 * Algorithm 1, LCM Algorithm 1 in latent space) re-noises the estimate to the next timestep τ with fresh noise:
 *   x_τ = √ᾱ_τ·denoised + √(1 − ᾱ_τ)·z,  z ~ N(0, I)
 * and the last step returns denoised itself (no noise is drawn there, so one-step sampling draws none).
 *
 * Timesteps: the distillation schedule is every k-th training step, k = ⌊T/original_inference_steps⌋
 * (t = k·i − 1 for i = 1…original_inference_steps); n inference steps take the entries at indices
 * ⌊j·len/n⌋, j = 0…n−1, of that schedule from the top. `timestep_spacing` and `steps_offset` are kept in the config
 * (diffusers has them) but, as in diffusers, do not change LCM's timesteps.
 *
 * Numerics: float32 tensors in diffusers' operation order; the noise comes from the generator passed to `step`
 * exactly as diffusers' `randn_tensor` draws it, so trajectories equal diffusers' bit for bit.
 */

import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import {
  AlphaIndexedScheduler,
  checkInferenceSteps,
  clampInPlace,
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
import { StepIndex } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface LCMConfig extends ConfigHead, ThresholdingConfig {
  original_inference_steps: number;
  clip_sample: boolean;
  clip_sample_range: number;
  set_alpha_to_one: boolean;
  steps_offset: number;
  timestep_spacing: TimestepSpacing;
  timestep_scaling: number;
  rescale_betas_zero_snr: boolean;
}

/** `LCMScheduler.__init__` defaults in diffusers 0.29.2 (SD 1.x's schedule, unlike the other classes). */
export const LCM_DEFAULTS: Readonly<LCMConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  trained_betas: null,
  original_inference_steps: 50,
  clip_sample: false,
  clip_sample_range: 1.0,
  set_alpha_to_one: true,
  steps_offset: 0,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  timestep_spacing: "leading",
  timestep_scaling: 10.0,
  rescale_betas_zero_snr: false,
});

/** σ_data of the consistency-model boundary condition (diffusers fixes it at 0.5). */
const SIGMA_DATA = 0.5;

/** Reads a scheduler config the way `LCMScheduler.from_config` does, with the per-request options. */
export function resolveLCMConfig(config: SchedulerConfig, options: SchedulerOptions = {}): LCMConfig {
  refuseKarras("LCM", options);
  const r = new ConfigReader(config);
  const d = LCM_DEFAULTS;
  const resolved: LCMConfig = {
    ...readConfigHead(r, d),
    original_inference_steps: r.integer("original_inference_steps", d.original_inference_steps),
    clip_sample: r.boolean("clip_sample", d.clip_sample),
    clip_sample_range: r.number("clip_sample_range", d.clip_sample_range),
    set_alpha_to_one: r.boolean("set_alpha_to_one", d.set_alpha_to_one),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    ...readThresholding(r, d),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    timestep_scaling: r.number("timestep_scaling", d.timestep_scaling),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
  };
  refuseThresholding(resolved.thresholding);
  const steps = resolved.original_inference_steps;
  if (steps < 1 || steps > resolved.num_train_timesteps) {
    throw new SchedulerConfigError(
      `original_inference_steps must be between 1 and num_train_timesteps (${resolved.num_train_timesteps}), got ${steps}`,
    );
  }
  return resolved;
}

/** `finalAlphaCumprod` (for a previous timestep below 0) is unreachable with LCM's own schedule. */
export class LCMScheduler extends AlphaIndexedScheduler {
  readonly config: Readonly<LCMConfig>;
  /** Unlike diffusers, which fails on it, an unknown first timestep is an error with a message. */
  private readonly steps = new StepIndex((_, timestep) => {
    throw new RangeError(`timestep ${timestep} is not in the LCM schedule`);
  });

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveLCMConfig(config, options);
    super(c, c.set_alpha_to_one);
    this.config = Object.freeze(c);
  }

  /** For img2img: the first `step` call uses this index instead of looking its timestep up. */
  setBeginIndex(beginIndex: number): void {
    this.steps.setBegin(beginIndex);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const n = numInferenceSteps;
    checkInferenceSteps(n, c.num_train_timesteps);
    const original = c.original_inference_steps;
    if (n > original) {
      throw new RangeError(
        `numInferenceSteps ${n} exceeds original_inference_steps ${original}: LCM picks its timesteps from that schedule`,
      );
    }
    // The distillation schedule t = k·i − 1 (i = 1…original), largest first, and n of its entries at the
    // indices ⌊linspace(0, len, n, endpoint=False)⌋ (numpy: j·(len/n) in float64, floored).
    const k = Math.floor(c.num_train_timesteps / original);
    const origin: number[] = [];
    for (let i = original; i >= 1; i--) origin.push(i * k - 1);
    const step = origin.length / n;
    this.timestepSchedule = Array.from({ length: n }, (_, j) => origin[Math.floor(j * step)] as number);
    this.numSteps = n;
    this.steps.reset();
  }

  /**
   * One consistency step at `timestep`: denoised = c_skip·x_t + c_out·x̂_0, then (except at the last step) the
   * re-noising to the next timestep with one draw of N(0, I) per latent value from `generator`.
   * `predOriginalSample` is denoised (the LCM pipeline's output), not the raw x̂_0.
   */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput {
    const n = this.beginStep(modelOutput, sample);
    const i = this.steps.forStep(this.timestepSchedule, timestep);
    const c = this.config;

    const prevTimestep = i + 1 < n ? (this.timestepSchedule[i + 1] as number) : timestep;
    const [alphaProd, alphaProdPrev] = this.alphaProds(timestep, prevTimestep);

    // Boundary-condition scalings at s = t·timestep_scaling (float32: the int64 timestep times a python float).
    // σ_data²/(…) is python's float / tensor, which torch evaluates as reciprocal(…)·σ_data².
    const s = f32(f32(timestep) * f32(c.timestep_scaling));
    const sd2 = SIGMA_DATA * SIGMA_DATA;
    const den = f32(f32(s * s) + sd2);
    const cSkip = f32(f32(1 / den) * sd2);
    const cOut = f32(s / f32(Math.sqrt(den)));

    const { x0 } = predictOriginal(c.prediction_type, modelOutput, sample, alphaProd, false);
    if (c.clip_sample) clampInPlace(x0, c.clip_sample_range);

    const denoised = new Float32Array(sample.length);
    for (let k = 0; k < denoised.length; k++) {
      denoised[k] = f32(cOut * (x0[k] as number)) + f32(cSkip * (sample[k] as number));
    }

    let prevSample: Float32Array;
    if (i !== n - 1) {
      if (!generator) throw new Error("LCM needs a generator for the noise it injects between steps");
      const z = generator.randn([sample.length]);
      const a = f32(Math.sqrt(alphaProdPrev));
      const b = f32(Math.sqrt(f32(1 - alphaProdPrev)));
      prevSample = new Float32Array(sample.length);
      for (let k = 0; k < prevSample.length; k++) {
        prevSample[k] = f32(a * (denoised[k] as number)) + f32(b * (z[k] as number));
      }
    } else {
      prevSample = denoised.slice();
    }
    this.steps.advance();
    return { prevSample, predOriginalSample: denoised };
  }
}
