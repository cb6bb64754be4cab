/**
 * Linear multistep, after diffusers 0.29.2 `LMSDiscreteScheduler` (A1111's "LMS"): k-diffusion's `sample_lms`
 * (Crowson), an Adams–Bashforth method of order ≤ 4 on the probability-flow ODE dx/dσ = d(x, σ) =
 * (x − D(x; σ))/σ (Karras et al. 2022, eq. 3). The slope is interpolated through the last k evaluations by the
 * Lagrange polynomial in σ and integrated exactly over the step:
 *   x_{i+1} = x_i + Σ_{j<k} c_j·d_{i−j},   c_j = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ,
 *   ℓ_j(τ) = Π_{m<k, m≠j} (τ − σ_{i−m})/(σ_{i−j} − σ_{i−m})
 * with k = min(i + 1, 4) (the first steps have fewer points).
 *
 * diffusers evaluates c_j with `scipy.integrate.quad` (QUADPACK QAGS) on an integrand computed in float32 torch
 * arithmetic. For a polynomial of degree ≤ 3 the first 21-point Gauss–Kronrod estimate already meets QAGS's
 * tolerance (epsrel 1e-4), so quad returns exactly that sum; it is reproduced here node by node (same nodes,
 * weights, float32 integrand and summation order), which gives diffusers' coefficients bit for bit rather than
 * the mathematically exact integral (the two differ by float32 rounding noise only).
 */
import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { type ConfigHead, ConfigReader, readConfigHead } from "./config.ts";
import type { SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { denoise, odeDerivative, SigmaScheduler } from "./sigma_scheduler.ts";
import { interpolatedSchedule, karrasSchedule } from "./sigmas.ts";
import { checkStepCount } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names. */
export interface LMSDiscreteConfig extends ConfigHead {
  use_karras_sigmas: boolean;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** `LMSDiscreteScheduler.__init__` defaults in diffusers 0.29.2. */
export const LMS_DISCRETE_DEFAULTS: Readonly<LMSDiscreteConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  use_karras_sigmas: false,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
});

/** The order diffusers' `step(order=4)` uses by default. */
export const LMS_ORDER = 4;

/** Reads a scheduler config the way `LMSDiscreteScheduler.from_config` does, with the per-request options. */
export function resolveLMSDiscreteConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): LMSDiscreteConfig {
  const r = new ConfigReader(config);
  const d = LMS_DISCRETE_DEFAULTS;
  return {
    ...readConfigHead(r, d),
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
  };
}

// QUADPACK dqk21 (Piessens & de Doncker; 80-digit values by Fullerton), rounded to double: the 21-point
// Kronrod abscissae on (−1, 1) — xgk[1], xgk[3], … are the 10-point Gauss nodes — and the Kronrod weights. The
// Gauss weights only feed QUADPACK's error estimate, which never rejects this integrand's first pass.
const XGK = [
  0.9956571630258081, 0.9739065285171717, 0.9301574913557082, 0.8650633666889845, 0.7808177265864169,
  0.6794095682990244, 0.5627571346686047, 0.4333953941292472, 0.2943928627014602, 0.14887433898163122, 0,
];
const WGK = [
  0.011694638867371874, 0.032558162307964725, 0.054755896574351995, 0.07503967481091996, 0.0931254545836976,
  0.10938715880229764, 0.12349197626206584, 0.13470921731147334, 0.14277593857706009, 0.14773910490133849,
  0.1494455540029169,
];

/**
 * `quad(f, a, b)` as QAGS returns it for a smooth f on its first pass: quad orders the limits (integrating over
 * (min, max) and negating when b < a), then `dqk21`'s Kronrod sum, in its summation order.
 */
function quadKronrod21(f: (tau: number) => number, a: number, b: number): number {
  const flip = b < a;
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  const centr = 0.5 * (lo + hi);
  const hlgth = 0.5 * (hi - lo);
  let resk = (WGK[10] as number) * f(centr);
  for (let j = 1; j <= 5; j++) {
    const absc = hlgth * (XGK[2 * j - 1] as number);
    resk += (WGK[2 * j - 1] as number) * (f(centr - absc) + f(centr + absc));
  }
  for (let j = 1; j <= 5; j++) {
    const absc = hlgth * (XGK[2 * j - 2] as number);
    resk += (WGK[2 * j - 2] as number) * (f(centr - absc) + f(centr + absc));
  }
  const result = resk * hlgth;
  return flip ? -result : result;
}

export class LMSDiscreteScheduler extends SigmaScheduler {
  readonly config: Readonly<LMSDiscreteConfig>;
  /** Slopes d of the last ≤ 4 steps, oldest first. */
  private derivatives: Float32Array[] = [];

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveLMSDiscreteConfig(config, options);
    super(c, c.timestep_spacing);
    this.config = Object.freeze(c);
  }

  /** Timesteps are float32, except with Karras σ, where diffusers keeps `_sigma_to_t`'s float64 values. */
  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    let { timesteps, sigmas } = interpolatedSchedule(c, n, this.trainSigmas);
    if (c.use_karras_sigmas) ({ timesteps, sigmas } = karrasSchedule(sigmas, n, this.trainLogSigmas));
    sigmas.push(0);
    this.resetSteps(timesteps, Float32Array.from(sigmas));
    this.derivatives = [];
  }

  /**
   * c_j = ∫_{σ_i}^{σ_{i+1}} ℓ_j(τ) dτ for the k-point Lagrange basis on σ_i, σ_{i−1}, …, σ_{i−k+1}. The integrand
   * is float32 torch arithmetic on the float64 node τ (rounded to float32 first), as in diffusers.
   */
  private lmsCoefficient(order: number, i: number, j: number): number {
    const s = this.sigmas;
    const basis = (tau: number): number => {
      let prod = 1;
      for (let m = 0; m < order; m++) {
        if (m === j) continue;
        const num = f32(f32(tau) - (s[i - m] as number));
        const den = f32((s[i - j] as number) - (s[i - m] as number));
        prod = f32(prod * f32(num / den));
      }
      return prod;
    };
    return quadKronrod21(basis, s[i] as number, s[i + 1] as number);
  }

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    _generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    const sigma = this.sigmas[i] as number;
    const denoised = denoise(this.config.prediction_type, modelOutput, sample, sigma);
    this.derivatives.push(odeDerivative(sample, denoised, sigma));
    if (this.derivatives.length > LMS_ORDER) this.derivatives.shift();

    const order = Math.min(i + 1, LMS_ORDER);
    const coeffs: number[] = [];
    for (let j = 0; j < order; j++) coeffs.push(f32(this.lmsCoefficient(order, i, j)));
    // Σ_j c_j·d_{i−j}, newest slope first, accumulated from 0 in float32 (Python's sum over tensors).
    const last = this.derivatives.length - 1;
    const prevSample = new Float32Array(sample.length);
    for (let k = 0; k < sample.length; k++) {
      let acc = 0;
      for (let j = 0; j < coeffs.length; j++) {
        const d = this.derivatives[last - j];
        if (d === undefined) break;
        acc = f32(acc + f32((coeffs[j] as number) * (d[k] as number)));
      }
      prevSample[k] = (sample[k] as number) + acc;
    }
    this.steps.advance();
    return { prevSample, predOriginalSample: denoised };
  }
}
