/**
 * Heun, after diffusers 0.29.2 `HeunDiscreteScheduler` (A1111's "Heun"): Algorithm 1 of Karras et al. 2022,
 * "Elucidating the Design Space of Diffusion-Based Generative Models" (arXiv:2206.00364), the explicit trapezoidal
 * (Heun, 2nd-order Runge–Kutta) method on dx/dσ = d(x, σ) = (x − D(x; σ))/σ:
 *   x̃ = x_i + (σ_{i+1} − σ_i)·d(x_i, σ_i)                                    (Euler predictor)
 *   x_{i+1} = x_i + (σ_{i+1} − σ_i)·½(d(x_i, σ_i) + d(x̃, σ_{i+1}))           (trapezoidal corrector)
 * The last step, to σ = 0, is the Euler predictor alone (d is undefined at σ = 0), so n steps cost 2n − 1 network
 * evaluations. diffusers exposes each evaluation as its own `step`: the timesteps are t_0, t_1, t_1, t_2, t_2, …
 * and the σ table σ_0, σ_1, σ_1, …, σ_{n−1}, σ_{n−1}, 0; the predictor stores d, Δσ and x_i for the corrector.
 */
import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { type ConfigHead, ConfigReader, readConfigHead } from "./config.ts";
import {
  BETA_SCHEDULES,
  type BetaSchedule,
  type SchedulerConfig,
  type SchedulerOptions,
  type StepOutput,
} from "./scheduler.ts";
import { denoise, eulerUpdate, odeDerivative, SigmaScheduler } from "./sigma_scheduler.ts";
import { interpolatedSchedule, karrasSchedule } from "./sigmas.ts";
import { checkStepCount } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names. */
export interface HeunDiscreteConfig extends ConfigHead<BetaSchedule | "exp"> {
  use_karras_sigmas: boolean;
  clip_sample: boolean;
  clip_sample_range: number;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** `HeunDiscreteScheduler.__init__` defaults in diffusers 0.29.2 (note the SD β range as default). */
export const HEUN_DISCRETE_DEFAULTS: Readonly<HeunDiscreteConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  use_karras_sigmas: false,
  clip_sample: false,
  clip_sample_range: 1.0,
  timestep_spacing: "linspace",
  steps_offset: 0,
});

/** Reads a scheduler config the way `HeunDiscreteScheduler.from_config` does, with the per-request options. */
export function resolveHeunDiscreteConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): HeunDiscreteConfig {
  const r = new ConfigReader(config);
  const d = HEUN_DISCRETE_DEFAULTS;
  return {
    ...readConfigHead(r, d, { betaSchedules: [...BETA_SCHEDULES, "exp"] }),
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    clip_sample: r.boolean("clip_sample", d.clip_sample),
    clip_sample_range: r.number("clip_sample_range", d.clip_sample_range),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
  };
}

/** Repeats every element but the first twice: `cat([a[:1], a[1:].repeat_interleave(2)])`. */
function interleaveTail<T>(a: readonly T[]): T[] {
  const out: T[] = a.slice(0, 1);
  for (const v of a.slice(1)) out.push(v, v);
  return out;
}

export class HeunDiscreteScheduler extends SigmaScheduler {
  override readonly order = 2;
  readonly config: Readonly<HeunDiscreteConfig>;
  /** Predictor state between the two evaluations of a step: d(x_i, σ_i), Δσ and x_i. */
  private pending: { derivative: Float32Array; dt: number; sample: Float32Array } | null = null;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveHeunDiscreteConfig(config, options);
    super(c, c.timestep_spacing);
    this.config = Object.freeze(c);
  }

  /** Whether the next `step` is a predictor (diffusers' `state_in_first_order`). */
  get stateInFirstOrder(): boolean {
    return this.pending === null;
  }

  /**
   * 2n − 1 timesteps t_0, t_1, t_1, …, t_{n−1}, t_{n−1} and 2n σ (σ_0, σ_1, σ_1, …, σ_{n−1}, σ_{n−1}, 0). Timesteps
   * are float32, except with Karras σ, where diffusers keeps `_sigma_to_t`'s float64 values.
   */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    let { timesteps, sigmas } = interpolatedSchedule(c, n, this.trainSigmas);
    if (c.use_karras_sigmas) ({ timesteps, sigmas } = karrasSchedule(sigmas, n, this.trainLogSigmas));
    const inner = Array.from(Float32Array.from(sigmas));
    const table = [...interleaveTail(inner), 0];
    this.resetSteps(interleaveTail(timesteps), Float32Array.from(table));
    this.pending = null;
  }

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    _generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    const c = this.config;
    const pending = this.pending;
    // Predictor at index i: σ_i → σ_{i+1}. Corrector at index i: the pair (σ_{i−1}, σ_i) of the predictor.
    const sigma = this.sigmas[pending === null ? i : i - 1] as number;
    const sigmaNext = this.sigmas[pending === null ? i + 1 : i] as number;

    // The network was evaluated at σ_i (predictor) or at σ_{i+1} on x̃ (corrector).
    let denoised = denoise(c.prediction_type, modelOutput, sample, pending === null ? sigma : sigmaNext);
    if (c.clip_sample) {
      const r = f32(c.clip_sample_range);
      denoised = denoised.map((v) => Math.min(Math.max(v, -r), r));
    }

    let prevSample: Float32Array;
    if (pending === null) {
      const derivative = odeDerivative(sample, denoised, sigma);
      const dt = f32(sigmaNext - sigma);
      this.pending = { derivative, dt, sample };
      prevSample = eulerUpdate(sample, derivative, dt);
    } else {
      const d2 = odeDerivative(sample, denoised, sigmaNext);
      const mean = d2.map((v, k) => f32((pending.derivative[k] as number) + v) / 2);
      this.pending = null;
      prevSample = eulerUpdate(pending.sample, mean, pending.dt);
    }
    this.steps.advance();
    return { prevSample };
  }
}
