/**
 * DPM-Solver++ multistep, after diffusers 0.29.2 `DPMSolverMultistepScheduler` (A1111's "DPM++ 2M" with
 * `algorithm_type: "dpmsolver++"`, `solver_order: 2`; "DPM++ 2M SDE" with `algorithm_type: "sde-dpmsolver++"`).
 *
 * Papers: Lu et al. 2022a, "DPM-Solver" (arXiv:2206.00927) and Lu et al. 2022b, "DPM-Solver++: Fast Solver for
 * Guided Sampling of Diffusion Probabilistic Models" (arXiv:2211.01095).
 *
 * Notation (VP process, discrete training steps t = 0…T−1):
 *   x_t = α_t·x_0 + σ_t·ε,  α_t = √ᾱ_t,  σ_t = √(1 − ᾱ_t)   (forward marginal q(x_t | x_0))
 *   λ_t = log(α_t / σ_t)                                     (half log-SNR, decreasing in t)
 *   x_θ(x_t, t) = (x_t − σ_t·ε_θ(x_t, t)) / α_t              (data prediction from the noise prediction)
 * diffusers stores the schedule as the noise-to-signal ratio s = σ_t/α_t and recovers α_t = 1/√(s² + 1),
 * σ_t = s·α_t, so one sigma table serves Karras / Lu / uniform timestep choices alike.
 *
 * DPM-Solver++ integrates the diffusion ODE written for the data prediction model exactly in its linear part
 * (the variation-of-constants solution in λ; DPM-Solver derives the same for the noise prediction model):
 *   x_t = (σ_t/σ_s)·x_s + σ_t·∫_{λ_s}^{λ_t} e^λ · x̂_θ(x̂_λ, λ) dλ
 * and approximates x̂_θ along λ by a polynomial through the last k model evaluations (k = solver order).
 * With h = λ_t − λ_s, a constant x̂_θ gives the first-order step (identical to DDIM):
 *   x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x_θ(x_s, s)
 *
 * "sde-dpmsolver++" solves the reverse-time SDE instead of the probability-flow ODE, in the same data-prediction
 * form (SDE-DPM-Solver++(2M), as k-diffusion's `sample_dpmpp_2m_sde` behind A1111's sampler). Its linear part
 * is again solved exactly; with x̂_θ frozen the variation-of-constants solution over [λ_s, λ_t] is
 *   x_t = (σ_t/σ_s)·e^{−h}·x_s + α_t·(1 − e^{−2h})·x_θ + σ_t·√(1 − e^{−2h})·z,   z ~ N(0, I)
 * (the DDPM posterior step, DDIM with η = 1; cf. the exact VP solutions of Cui et al. 2023, "Elucidating the
 * Solution Space of Extended Reverse-Time SDE", arXiv:2309.06169), and the 2M correction of the ODE solver is
 * carried over with the SDE's weight 1 − e^{−2h} on the backward difference.
 *
 * Numerics: every quantity is rounded to float32 where torch holds it in a float32 tensor (the sigma table,
 * α, σ, λ, h, r and the step coefficients are 0-d float32 tensors in diffusers; every elementwise op is one
 * float32 operation), and torch's own float32 `log`/`exp` (SLEEF, see sleef.ts) are used for λ and e^{−h}.
 * With that, every step equals diffusers on torch's x86 CPU kernels bit for bit (all fixture trajectories).
 * Only the float64 numpy side (Karras / Lu sigmas, `_sigma_to_t`) uses `Math.*`, which can differ from numpy in
 * the last float64 bit; that moves a timestep only if it sits within ~1e-12 of a rounding boundary.
 */

import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import {
  type ConfigHead,
  ConfigReader,
  type FinalSigmasType,
  readConfigHead,
  readThresholding,
  refuseThresholding,
  SchedulerConfigError,
  type ThresholdingConfig,
  timestepSpacingOption,
} from "./config.ts";
import {
  DpmFamilyScheduler,
  dataPrediction,
  dpmSigmas,
  dpmSolverFirstOrderUpdate,
  dpmTimesteps,
  type LambdaPoint,
  readDpmSolverOrder,
  readDpmSolverType,
  refuseLearnedVariance,
  trainingLambdas,
  unclippedTimesteps,
} from "./dpm_common.ts";
import type { SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { finalSigma } from "./sigmas.ts";
import { expf } from "./sleef.ts";
import { checkStepCount } from "./step_index.ts";

export const DPM_ALGORITHM_TYPES = ["dpmsolver++", "sde-dpmsolver++"] as const;
export type DpmAlgorithmType = (typeof DPM_ALGORITHM_TYPES)[number];

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface DPMSolverMultistepConfig extends ConfigHead, ThresholdingConfig {
  solver_order: 1 | 2 | 3;
  algorithm_type: DpmAlgorithmType;
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_lu_lambdas: boolean;
  final_sigmas_type: FinalSigmasType;
  lambda_min_clipped: number;
  variance_type: string | null;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
}

/** `DPMSolverMultistepScheduler.__init__` defaults in diffusers 0.29.2. */
export const DPM_SOLVER_MULTISTEP_DEFAULTS: Readonly<DPMSolverMultistepConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  solver_order: 2,
  prediction_type: "epsilon",
  thresholding: false,
  dynamic_thresholding_ratio: 0.995,
  sample_max_value: 1.0,
  algorithm_type: "dpmsolver++",
  solver_type: "midpoint",
  lower_order_final: true,
  euler_at_final: false,
  use_karras_sigmas: false,
  use_lu_lambdas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: Number.NEGATIVE_INFINITY,
  variance_type: null,
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
});

/** Reads a scheduler config the way `DPMSolverMultistepScheduler.from_config` does, with the per-request options. */
export function resolveDPMSolverMultistepConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): DPMSolverMultistepConfig {
  const r = new ConfigReader(config);
  const d = DPM_SOLVER_MULTISTEP_DEFAULTS;

  // diffusers maps the algorithm / solver names of other multistep families onto its own.
  let algorithm = r.string("algorithm_type", d.algorithm_type);
  if (algorithm === "deis") algorithm = "dpmsolver++";
  if (algorithm === "dpmsolver" || algorithm === "sde-dpmsolver") {
    throw new SchedulerConfigError(
      `algorithm_type "${algorithm}" (deprecated in diffusers) is not supported`,
    );
  }
  if (!(DPM_ALGORITHM_TYPES as readonly string[]).includes(algorithm)) {
    throw new SchedulerConfigError(
      `algorithm_type "${algorithm}" is unknown; supported: ${DPM_ALGORITHM_TYPES.join(", ")}`,
    );
  }
  const solverType = readDpmSolverType(r, d.solver_type);
  const order = readDpmSolverOrder(r, d.solver_order);

  const resolved: DPMSolverMultistepConfig = {
    ...readConfigHead(r, d),
    solver_order: order,
    ...readThresholding(r, d),
    algorithm_type: algorithm as DpmAlgorithmType,
    solver_type: solverType,
    lower_order_final: r.boolean("lower_order_final", d.lower_order_final),
    euler_at_final: r.boolean("euler_at_final", d.euler_at_final),
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    use_lu_lambdas: r.boolean("use_lu_lambdas", d.use_lu_lambdas),
    final_sigmas_type: r.finalSigmasType(d.final_sigmas_type),
    lambda_min_clipped: r.number("lambda_min_clipped", d.lambda_min_clipped),
    variance_type: r.string("variance_type", null),
    timestep_spacing: r.timestepSpacing(timestepSpacingOption(options), d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
  };
  if (resolved.algorithm_type === "sde-dpmsolver++" && resolved.solver_order === 3) {
    // diffusers 0.29.2 has no third-order SDE update (its third-order branch leaves x_t unset and fails).
    throw new SchedulerConfigError('solver_order 3 is not available with algorithm_type "sde-dpmsolver++"');
  }
  // Dynamic thresholding needs the per-image layout (a quantile over C·H·W per batch item) and is meant for
  // pixel-space models only; latent diffusion never enables it.
  refuseThresholding(resolved.thresholding);
  refuseLearnedVariance(resolved.variance_type);
  return resolved;
}

export class DPMSolverMultistepScheduler extends DpmFamilyScheduler {
  readonly config: Readonly<DPMSolverMultistepConfig>;
  private readonly trainLambdas: Float32Array;
  /** x_θ of the last `solver_order` steps, oldest first. */
  private modelOutputs: (Float32Array | null)[];
  private lowerOrderNums = 0;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveDPMSolverMultistepConfig(config, options);
    super(c);
    this.config = Object.freeze(c);
    this.trainLambdas = trainingLambdas(this.alphasCumprod);
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    const lastTimestep = unclippedTimesteps(this.trainLambdas, c.lambda_min_clipped);
    const { timesteps, sigmas } = dpmSigmas(
      dpmTimesteps(c.timestep_spacing, c.num_train_timesteps, lastTimestep, n, c.steps_offset),
      this.trainSigmas,
      n,
      { karras: c.use_karras_sigmas, luLambdas: c.use_lu_lambdas },
    );
    sigmas.push(finalSigma(c.final_sigmas_type, this.alphasCumprod));
    this.setSchedule(timesteps, sigmas);
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
  }

  /**
   * One solver step from the model output at `timestep`. The SDE variant draws its noise z from `generator`
   * (one `randn` of the sample's size per step, as diffusers' `randn_tensor(model_output.shape, generator)`).
   */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    const c = this.config;
    const n = this.timestepSchedule.length;

    // Algorithm 2 starts with a first-order step (no history yet). diffusers also lowers the order of the last
    // steps when there are fewer than 15 (stability), and with a zero final sigma the last step is always first
    // order: λ = +∞ there, so h = ∞ and only the e^{−h} → 0 limit of the first-order update is defined.
    const lowerOrderFinal =
      i === n - 1 && (c.euler_at_final || (c.lower_order_final && n < 15) || c.final_sigmas_type === "zero");
    const lowerOrderSecond = i === n - 2 && c.lower_order_final && n < 15;

    const x0 = dataPrediction(c.prediction_type, this.sigmas[i] as number, modelOutput, sample);
    this.modelOutputs.shift();
    this.modelOutputs.push(x0);

    let noise: Float32Array | null = null;
    if (c.algorithm_type === "sde-dpmsolver++") {
      if (!generator) throw new Error('algorithm_type "sde-dpmsolver++" needs a generator for its noise');
      noise = generator.randn([sample.length]);
    }

    let prevSample: Float32Array;
    if (c.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) {
      prevSample = noise
        ? this.sdeFirstOrderUpdate(x0, sample, noise, i)
        : dpmSolverFirstOrderUpdate(x0, sample, this.point(i + 1), this.point(i));
    } else if (c.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) {
      prevSample = noise ? this.sdeSecondOrderUpdate(sample, noise, i) : this.secondOrderUpdate(sample, i);
    } else {
      prevSample = this.thirdOrderUpdate(sample, i);
    }
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.steps.advance();
    return { prevSample, predOriginalSample: x0.slice() };
  }

  /**
   * What a 2M update at step i needs: the last two x_θ (m0 newest), the points t = i + 1 and s0 = i,
   * h = λ_t − λ_{s0} and 1/r₀, r₀ = h₀/h with h₀ = λ_{s0} − λ_{s1}.
   */
  private secondOrderTerms(i: number): {
    m0: Float32Array;
    m1: Float32Array;
    t: LambdaPoint;
    s0: LambdaPoint;
    h: number;
    invR0: number;
  } {
    const m0 = this.modelOutputs[this.modelOutputs.length - 1] as Float32Array;
    const m1 = this.modelOutputs[this.modelOutputs.length - 2] as Float32Array;
    const t = this.point(i + 1);
    const s0 = this.point(i);
    const s1 = this.point(i - 1);
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    return { m0, m1, t, s0, h, invR0: f32(1 / r0) };
  }

  /**
   * DPM-Solver++(2M), Algorithm 2 of DPM-Solver++: a multistep (Adams–Bashforth-like) second-order update that
   * reuses the previous step's x_θ instead of an extra model call. With h = λ_t − λ_{s0}, h₀ = λ_{s0} − λ_{s1},
   * r₀ = h₀/h, D₀ = x_θ(s0) and the backward difference D₁ = (x_θ(s0) − x_θ(s1))/r₀ ≈ h·dx_θ/dλ:
   *   midpoint: x_t = (σ_t/σ_{s0})·x_{s0} − α_t(e^{−h} − 1)·D₀ − ½·α_t(e^{−h} − 1)·D₁
   *     (Algorithm 2 in its "(1 + 1/(2r))·x_θ(s0) − 1/(2r)·x_θ(s1)" form)
   *   heun:     x_t = (σ_t/σ_{s0})·x_{s0} − α_t(e^{−h} − 1)·D₀ + α_t((e^{−h} − 1)/h + 1)·D₁
   *     (the exact integral of the linear interpolant, as in DPM-Solver's second-order Taylor term)
   */
  private secondOrderUpdate(sample: Float32Array, i: number): Float32Array {
    const { m0, m1, t, s0, h, invR0 } = this.secondOrderTerms(i);
    const sampleCoef = f32(t.sigma / s0.sigma);
    const expm1 = f32(expf(-h) - 1);
    const d0Coef = f32(t.alpha * expm1);
    const d1Coef =
      this.config.solver_type === "midpoint" ? f32(0.5 * d0Coef) : f32(t.alpha * f32(f32(expm1 / h) + 1));
    const midpoint = this.config.solver_type === "midpoint";
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const a = m0[k] as number;
      const d1 = f32(invR0 * f32(a - (m1[k] as number)));
      const base = f32(f32(sampleCoef * (sample[k] as number)) - f32(d0Coef * a));
      out[k] = midpoint ? base - f32(d1Coef * d1) : base + f32(d1Coef * d1);
    }
    return out;
  }

  /**
   * SDE-DPM-Solver++(1), the exact solution of the linear part of the reverse SDE with x_θ frozen over the step:
   *   x_t = (σ_t/σ_s)·e^{−h}·x_s + α_t·(1 − e^{−2h})·x_θ(x_s, s) + σ_t·√(1 − e^{−2h})·z
   * (DDIM with η = 1). At a zero final sigma, e^{−h} = 0 and σ_t = 0: the result is x_θ itself.
   */
  private sdeFirstOrderUpdate(
    x0: Float32Array,
    sample: Float32Array,
    noise: Float32Array,
    i: number,
  ): Float32Array {
    const t = this.point(i + 1);
    const s = this.point(i);
    const h = f32(t.lambda - s.lambda);
    const oneMinusE2h = f32(1 - expf(f32(-2 * h)));
    const sampleCoef = f32(f32(t.sigma / s.sigma) * expf(-h));
    const x0Coef = f32(t.alpha * oneMinusE2h);
    const noiseCoef = f32(t.sigma * f32(Math.sqrt(oneMinusE2h)));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const drift = f32(f32(sampleCoef * (sample[k] as number)) + f32(x0Coef * (x0[k] as number)));
      out[k] = drift + f32(noiseCoef * (noise[k] as number));
    }
    return out;
  }

  /**
   * SDE-DPM-Solver++(2M): the first-order SDE step plus the backward-difference term D₁ = (x_θ(s0) − x_θ(s1))/r₀
   * of the 2M update, weighted for the SDE (h = λ_t − λ_{s0}, r₀ = (λ_{s0} − λ_{s1})/h):
   *   midpoint: … + ½·α_t(1 − e^{−2h})·D₁
   *   heun:     … + α_t((1 − e^{−2h})/(−2h) + 1)·D₁
   *     (the exact integral of the linear interpolant against the SDE's kernel 2α_t·e^{−2(λ_t − λ)} dλ)
   */
  private sdeSecondOrderUpdate(sample: Float32Array, noise: Float32Array, i: number): Float32Array {
    const { m0, m1, t, s0, h, invR0 } = this.secondOrderTerms(i);
    const oneMinusE2h = f32(1 - expf(f32(-2 * h)));
    const sampleCoef = f32(f32(t.sigma / s0.sigma) * expf(-h));
    const d0Coef = f32(t.alpha * oneMinusE2h);
    const d1Coef =
      this.config.solver_type === "midpoint"
        ? f32(0.5 * d0Coef)
        : f32(t.alpha * f32(f32(oneMinusE2h / f32(-2 * h)) + 1));
    const noiseCoef = f32(t.sigma * f32(Math.sqrt(oneMinusE2h)));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const a = m0[k] as number;
      const d1 = f32(invR0 * f32(a - (m1[k] as number)));
      const x = f32(f32(f32(sampleCoef * (sample[k] as number)) + f32(d0Coef * a)) + f32(d1Coef * d1));
      out[k] = x + f32(noiseCoef * (noise[k] as number));
    }
    return out;
  }

  /**
   * DPM-Solver++(3M): the multistep third-order update (the data-prediction counterpart of DPM-Solver-3's
   * Taylor terms, as in diffusers). With r₀ = h₀/h, r₁ = h₁/h and backward differences
   *   D1₀ = (x_θ(s0) − x_θ(s1))/r₀, D1₁ = (x_θ(s1) − x_θ(s2))/r₁,
   *   D₁ = D1₀ + r₀/(r₀ + r₁)·(D1₀ − D1₁) ≈ h·x_θ',  D₂ = (D1₀ − D1₁)/(r₀ + r₁) ≈ ½h²·x_θ'':
   *   x_t = (σ_t/σ_{s0})·x_{s0} − α_t(e^{−h} − 1)·D₀ + α_t((e^{−h} − 1)/h + 1)·D₁ − α_t((e^{−h} − 1 + h)/h² − ½)·D₂
   */
  private thirdOrderUpdate(sample: Float32Array, i: number): Float32Array {
    const len = this.modelOutputs.length;
    const m0 = this.modelOutputs[len - 1] as Float32Array;
    const m1 = this.modelOutputs[len - 2] as Float32Array;
    const m2 = this.modelOutputs[len - 3] as Float32Array;
    const t = this.point(i + 1);
    const s0 = this.point(i);
    const s1 = this.point(i - 1);
    const s2 = this.point(i - 2);
    const h = f32(t.lambda - s0.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const h1 = f32(s1.lambda - s2.lambda);
    const r0 = f32(h0 / h);
    const r1 = f32(h1 / h);
    const invR0 = f32(1 / r0);
    const invR1 = f32(1 / r1);
    const r01 = f32(r0 + r1);
    const mix = f32(r0 / r01);
    const invR01 = f32(1 / r01);
    const sampleCoef = f32(t.sigma / s0.sigma);
    const expm1 = f32(expf(-h) - 1);
    const c0 = f32(t.alpha * expm1);
    const c1 = f32(t.alpha * f32(f32(expm1 / h) + 1));
    const c2 = f32(t.alpha * f32(f32(f32(expm1 + h) / f32(h * h)) - 0.5));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const a = m0[k] as number;
      const b = m1[k] as number;
      const d10 = f32(invR0 * f32(a - b));
      const d11 = f32(invR1 * f32(b - (m2[k] as number)));
      const diff = f32(d10 - d11);
      const d1 = f32(d10 + f32(mix * diff));
      const d2 = f32(invR01 * diff);
      const x = f32(f32(f32(sampleCoef * (sample[k] as number)) - f32(c0 * a)) + f32(c1 * d1));
      out[k] = x - f32(c2 * d2);
    }
    return out;
  }
}
