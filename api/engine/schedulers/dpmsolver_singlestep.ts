/**
 * DPM-Solver++ singlestep, after diffusers 0.29.2 `DPMSolverSinglestepScheduler` (`algorithm_type: "dpmsolver++"`,
 * `solver_order: 2` by default). AUTOMATIC1111 has no sampler that matches it exactly: diffusers' docs list it for
 * A1111's "DPM++ SDE", which is a stochastic sampler, and call "DPM++ 2S a" only "very similar".
 *
 * Papers: Lu et al. 2022a, "DPM-Solver" (arXiv:2206.00927) and Lu et al. 2022b, "DPM-Solver++" (arXiv:2211.01095).
 * Notation as in dpmsolver_multistep.ts: α_t = 1/√(s² + 1), σ_t = s·α_t for the noise-to-signal ratio s = σ/α,
 * λ_t = log(α_t/σ_t), x_θ the data prediction, and the exact linear part
 *   x_t = (σ_t/σ_s)·x_s + σ_t·∫_{λ_s}^{λ_t} e^λ · x̂_θ(x̂_λ, λ) dλ.
 *
 * A singlestep solver of order k spends k model evaluations on one big step s → t: it takes a first-order step to
 * an intermediate point, evaluates the model there and so on, then jumps from s again using every evaluation
 * (Algorithm 1 of DPM-Solver++, "DPM-Solver++(2S)"; DPM-Solver-3 for k = 3). diffusers spreads these
 * evaluations over its timestep list: the order list (`get_order_list`, e.g. 1, 2, 1, 2, …) says whether an entry
 * starts a big step (order 1: a plain first-order step from the saved start point) or finishes one (order k:
 * the update from the saved start point using the last k data predictions). With `lower_order_final` the
 * schedule ends in lower orders so that the last big step does not overshoot the final sigma.
 *
 * Numerics: as in dpmsolver_multistep.ts, every 0-d tensor and elementwise operation is one float32 operation,
 * with torch's SLEEF `log`/`exp` (sleef.ts), so each step equals diffusers on torch's x86 CPU kernels bit for bit.
 */

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
} from "./config.ts";
import {
  DpmFamilyScheduler,
  dataPrediction,
  dpmSigmas,
  dpmSolverFirstOrderUpdate,
  dpmTimesteps,
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

/** The resolved configuration, with diffusers' key names (the constructor arguments of diffusers' class). */
export interface DPMSolverSinglestepConfig extends ConfigHead, ThresholdingConfig {
  solver_order: 1 | 2 | 3;
  algorithm_type: "dpmsolver++";
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  use_karras_sigmas: boolean;
  final_sigmas_type: FinalSigmasType;
  lambda_min_clipped: number;
  variance_type: string | null;
}

/** `DPMSolverSinglestepScheduler.__init__` defaults in diffusers 0.29.2 (note: `lower_order_final` is false). */
export const DPM_SOLVER_SINGLESTEP_DEFAULTS: Readonly<DPMSolverSinglestepConfig> = Object.freeze({
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
  lower_order_final: false,
  use_karras_sigmas: false,
  final_sigmas_type: "zero",
  lambda_min_clipped: Number.NEGATIVE_INFINITY,
  variance_type: null,
});

/**
 * Reads a scheduler config the way `DPMSolverSinglestepScheduler.from_config` does, with the per-request options.
 * The class has no `timestep_spacing` (its timesteps are always "linspace"; a config's key is ignored, as in
 * diffusers), so a request for another spacing is refused rather than silently dropped.
 */
export function resolveDPMSolverSinglestepConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): DPMSolverSinglestepConfig {
  const r = new ConfigReader(config);
  const d = DPM_SOLVER_SINGLESTEP_DEFAULTS;

  if (options.timestepSpacing !== undefined && options.timestepSpacing !== "linspace") {
    throw new SchedulerConfigError(
      `DPM-Solver singlestep has no timestep spacing option (always "linspace"), got "${String(options.timestepSpacing)}"`,
    );
  }
  let algorithm = r.string("algorithm_type", d.algorithm_type);
  if (algorithm === "deis") algorithm = "dpmsolver++";
  if (algorithm !== "dpmsolver++") {
    // "dpmsolver"/"sde-dpmsolver" are deprecated in diffusers; "sde-dpmsolver++" has no singlestep update in 0.29.2.
    throw new SchedulerConfigError(
      `algorithm_type "${algorithm}" is not supported by DPM-Solver singlestep; supported: dpmsolver++`,
    );
  }
  const solverType = readDpmSolverType(r, d.solver_type);
  const order = readDpmSolverOrder(r, d.solver_order);

  const resolved: DPMSolverSinglestepConfig = {
    ...readConfigHead(r, d),
    solver_order: order,
    ...readThresholding(r, d),
    algorithm_type: "dpmsolver++",
    solver_type: solverType,
    lower_order_final: r.boolean("lower_order_final", d.lower_order_final),
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    final_sigmas_type: r.finalSigmasType(d.final_sigmas_type),
    lambda_min_clipped: r.number("lambda_min_clipped", d.lambda_min_clipped),
    variance_type: r.string("variance_type", null),
  };
  refuseThresholding(resolved.thresholding);
  refuseLearnedVariance(resolved.variance_type);
  return resolved;
}

/**
 * `get_order_list`: the solver order of every entry of an n-step schedule. Without `lowerOrderFinal` it is the
 * pattern 1, 2, (3), 1, 2, (3), … (n must then be a multiple of the order); with it, the tail is shortened so that
 * the schedule ends on a first-order step (order 2: …, 1, 2, 1, 1 for even n; order 3: …, 1, 2, 1 for n ≡ 0 mod 3).
 */
export function dpmSinglestepOrderList(n: number, order: 1 | 2 | 3, lowerOrderFinal: boolean): number[] {
  const repeat = (pattern: number[], times: number): number[] => {
    const out: number[] = [];
    for (let i = 0; i < times; i++) out.push(...pattern);
    return out;
  };
  if (order === 1) return repeat([1], n);
  const pattern = order === 2 ? [1, 2] : [1, 2, 3];
  const k = Math.floor(n / order);
  if (!lowerOrderFinal) return repeat(pattern, k);
  if (order === 2) return n % 2 === 0 ? [...repeat(pattern, k - 1), 1, 1] : [...repeat(pattern, k), 1];
  if (n % 3 === 0) return [...repeat(pattern, k - 1), 1, 2, 1];
  return n % 3 === 1 ? [...repeat(pattern, k), 1] : [...repeat(pattern, k), 1, 2];
}

export class DPMSolverSinglestepScheduler extends DpmFamilyScheduler {
  readonly config: Readonly<DPMSolverSinglestepConfig>;
  /**
   * `lower_order_final` in effect. diffusers' `set_timesteps` switches it on for good (`register_to_config`) when the
   * step count is not a multiple of the order or the final sigma is zero, so it usually reads true.
   */
  private lowerOrderFinalNow: boolean;
  private orders: number[] = [];
  private readonly trainLambdas: Float32Array;
  /** x_θ of the last `solver_order` steps, oldest first (null where none yet). */
  private modelOutputs: (Float32Array | null)[];
  /** x_s, the start point of the current big step (saved at its first-order entry). */
  private startSample: Float32Array | null = null;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveDPMSolverSinglestepConfig(config, options);
    super(c); // no rescale_betas_zero_snr in this class (diffusers 0.29.2)
    this.config = Object.freeze(c);
    this.lowerOrderFinalNow = c.lower_order_final;
    this.trainLambdas = trainingLambdas(this.alphasCumprod);
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
  }

  /** The solver order of each step (diffusers' `order_list`), after `setTimesteps`. */
  get orderList(): readonly number[] {
    return this.orders;
  }

  /** Whether the schedule ends in lower orders; may have been switched on by `setTimesteps`, as in diffusers. */
  get lowerOrderFinal(): boolean {
    return this.lowerOrderFinalNow;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    // Always "linspace" (the class has no timestep_spacing), over the steps left after λ clipping.
    const lastTimestep = unclippedTimesteps(this.trainLambdas, c.lambda_min_clipped);
    const { timesteps, sigmas } = dpmSigmas(
      dpmTimesteps("linspace", c.num_train_timesteps, lastTimestep, n, 0),
      this.trainSigmas,
      n,
      { karras: c.use_karras_sigmas },
    );
    sigmas.push(finalSigma(c.final_sigmas_type, this.alphasCumprod));

    // The schedule is stored before the order check below, the step index reset only once it passes.
    this.sigmaSchedule = Float32Array.from(sigmas);
    this.timestepSchedule = timesteps;
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
    this.startSample = null;
    // An uneven step count cannot end on a full big step, and a zero final sigma allows only a first-order last
    // step (λ = +∞ there); diffusers then turns lower_order_final on permanently.
    if (!this.lowerOrderFinalNow && (n % c.solver_order !== 0 || c.final_sigmas_type === "zero")) {
      this.lowerOrderFinalNow = true;
    }
    const orders = dpmSinglestepOrderList(n, c.solver_order, this.lowerOrderFinalNow);
    if (sigmas[n] === 0 && orders[n - 1] !== 1) {
      // Order 3 with n ≡ 2 (mod 3) ends on a second-order step into σ = 0, where λ = +∞ makes r₀ = 0 and the
      // update infinite (diffusers 0.29.2 returns inf there); only a first-order step has a finite limit.
      throw new SchedulerConfigError(
        `solver_order ${c.solver_order} with a zero final sigma cannot take ${n} steps (use a step count ≢ 2 mod 3)`,
      );
    }
    this.orders = orders;
    this.steps.reset();
  }

  /** One entry of the schedule: a first-order step that starts a big step, or the update that completes one. */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    _generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);

    const x0 = dataPrediction(this.config.prediction_type, this.sigmas[i] as number, modelOutput, sample);
    this.modelOutputs.shift();
    this.modelOutputs.push(x0);

    // Started mid-schedule (img2img), a big step may lack its earlier evaluations: lower its order.
    let order = this.orders[i] as number;
    while (this.modelOutputs[this.modelOutputs.length - order] === null) order--;
    if (order === 1) this.startSample = sample;
    const start = this.startSample as Float32Array;

    let prevSample: Float32Array;
    if (order === 1) prevSample = dpmSolverFirstOrderUpdate(x0, start, this.point(i + 1), this.point(i));
    else if (order === 2) prevSample = this.secondOrderUpdate(start, i);
    else prevSample = this.thirdOrderUpdate(start, i);
    this.steps.advance();
    return { prevSample, predOriginalSample: x0.slice() };
  }

  private modelOutput(back: number): Float32Array {
    return this.modelOutputs[this.modelOutputs.length - 1 - back] as Float32Array;
  }

  /**
   * DPM-Solver++(2S), Algorithm 1 of DPM-Solver++: the big step s1 → t (x_{s1} the saved start point) after a
   * first-order step to the intermediate point s0. With h = λ_t − λ_{s1}, r₀ = (λ_{s0} − λ_{s1})/h,
   * D₀ = x_θ(s1) and D₁ = (x_θ(s0) − x_θ(s1))/r₀ ≈ h·dx_θ/dλ:
   *   midpoint: x_t = (σ_t/σ_{s1})·x_{s1} − α_t(e^{−h} − 1)·D₀ − ½·α_t(e^{−h} − 1)·D₁
   *     (the paper's "(1 − 1/(2r))·x_θ(s1) + 1/(2r)·x_θ(s0)" with the model at the midpoint-like s0)
   *   heun:     x_t = (σ_t/σ_{s1})·x_{s1} − α_t(e^{−h} − 1)·D₀ + α_t((e^{−h} − 1)/h + 1)·D₁
   *     (the exact integral of the linear interpolant of x_θ in λ)
   */
  private secondOrderUpdate(sample: Float32Array, i: number): Float32Array {
    const m0 = this.modelOutput(0);
    const m1 = this.modelOutput(1);
    const t = this.point(i + 1);
    const s0 = this.point(i);
    const s1 = this.point(i - 1);
    const h = f32(t.lambda - s1.lambda);
    const h0 = f32(s0.lambda - s1.lambda);
    const r0 = f32(h0 / h);
    const invR0 = f32(1 / r0);
    const sampleCoef = f32(t.sigma / s1.sigma);
    const expm1 = f32(expf(-h) - 1);
    const d0Coef = f32(t.alpha * expm1);
    const midpoint = this.config.solver_type === "midpoint";
    const d1Coef = midpoint ? f32(0.5 * d0Coef) : f32(t.alpha * f32(f32(expm1 / h) + 1));
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const b = m1[k] as number;
      const d1 = f32(invR0 * f32((m0[k] as number) - b));
      const base = f32(f32(sampleCoef * (sample[k] as number)) - f32(d0Coef * b));
      out[k] = midpoint ? base - f32(d1Coef * d1) : base + f32(d1Coef * d1);
    }
    return out;
  }

  /**
   * The singlestep third-order update (DPM-Solver-3, Lu et al. 2022a, Algorithm 2, here in data-prediction form and
   * with the schedule's own intermediate points instead of r₁ = 1/3, r₂ = 2/3), from the saved start point s2 with
   * evaluations at s1 and s0.
   * With h = λ_t − λ_{s2}, r₀ = (λ_{s0} − λ_{s2})/h, r₁ = (λ_{s1} − λ_{s2})/h, D₀ = x_θ(s2) and the divided
   * differences D1₀ = (x_θ(s1) − x_θ(s2))/r₁, D1₁ = (x_θ(s0) − x_θ(s2))/r₀:
   *   midpoint: x_t = (σ_t/σ_{s2})·x_{s2} − α_t(e^{−h} − 1)·D₀ + α_t((e^{−h} − 1)/h + 1)·D1₁
   *     (Algorithm 2's final update: the slope from the last intermediate point only)
   *   heun:     the quadratic fit through all three, with D₁ = (r₀·D1₀ − r₁·D1₁)/(r₀ − r₁) ≈ h·x_θ' and
   *             D₂ = 2(D1₁ − D1₀)/(r₀ − r₁) ≈ h²·x_θ'':
   *     x_t = (σ_t/σ_{s2})·x_{s2} − α_t(e^{−h} − 1)·D₀ + α_t((e^{−h} − 1)/h + 1)·D₁
   *           − α_t((e^{−h} − 1 + h)/h² − ½)·D₂
   */
  private thirdOrderUpdate(sample: Float32Array, i: number): Float32Array {
    const m0 = this.modelOutput(0);
    const m1 = this.modelOutput(1);
    const m2 = this.modelOutput(2);
    const t = this.point(i + 1);
    const s0 = this.point(i);
    const s1 = this.point(i - 1);
    const s2 = this.point(i - 2);
    const h = f32(t.lambda - s2.lambda);
    const h0 = f32(s0.lambda - s2.lambda);
    const h1 = f32(s1.lambda - s2.lambda);
    const r0 = f32(h0 / h);
    const r1 = f32(h1 / h);
    const invR0 = f32(1 / r0);
    const invR1 = f32(1 / r1);
    const rDiff = f32(r0 - r1);
    const sampleCoef = f32(t.sigma / s2.sigma);
    const expm1 = f32(expf(-h) - 1);
    const c0 = f32(t.alpha * expm1);
    const c1 = f32(t.alpha * f32(f32(expm1 / h) + 1));
    const c2 = f32(t.alpha * f32(f32(f32(expm1 + h) / f32(h * h)) - 0.5));
    const heun = this.config.solver_type === "heun";
    const out = new Float32Array(sample.length);
    for (let k = 0; k < out.length; k++) {
      const a = m0[k] as number;
      const b = m1[k] as number;
      const z = m2[k] as number;
      const d10 = f32(invR1 * f32(b - z));
      const d11 = f32(invR0 * f32(a - z));
      const base = f32(f32(sampleCoef * (sample[k] as number)) - f32(c0 * z));
      if (heun) {
        const d1 = f32(f32(f32(r0 * d10) - f32(r1 * d11)) / rDiff);
        const d2 = f32(f32(2 * f32(d11 - d10)) / rDiff);
        out[k] = f32(base + f32(c1 * d1)) - f32(c2 * d2);
      } else {
        out[k] = base + f32(c1 * d11);
      }
    }
    return out;
  }
}
