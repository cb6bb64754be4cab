/**
 * UniPC, after diffusers 0.29.2 `UniPCMultistepScheduler` (defaults: `solver_type: "bh2"`, `solver_order: 2`,
 * `predict_x0: true`, corrector on every step).
 *
 * Paper: Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of Diffusion Models"
 * (arXiv:2302.04867).
 *
 * Notation as in dpmsolver_multistep.ts: α_t = 1/√(s² + 1), σ_t = s·α_t for the noise-to-signal ratio s = σ/α,
 * λ_t = log(α_t/σ_t). With `predict_x0` the solver integrates the data prediction x_θ (the DPM-Solver++ form),
 *   x_t = (σ_t/σ_s)·x_s + σ_t·∫_{λ_s}^{λ_t} e^λ x_θ dλ,
 * otherwise the noise prediction ε_θ (the DPM-Solver form). Write h = λ_t − λ_s, hh = −h for x_θ (hh = h for
 * ε_θ), φ₁(x) = (e^x − 1)/x, and hφ₁ = e^{hh} − 1 = hh·φ₁(hh), the first-order weight.
 *
 * UniP-p (the predictor) is the first-order step plus a combination of the divided differences of the last
 * p − 1 model outputs, D_m = (x_θ(s_m) − x_θ(s))/r_m with r_m = (λ_{s_m} − λ_s)/h:
 *   x_t = (σ_t/σ_s)·x_s − α_t·hφ₁·x_θ(s) − α_t·B(h)·Σ_m ρ_m·D_m
 * UniC-p (the corrector), once the model has been evaluated at the predicted x_t, redoes the same step from s
 * with one more difference, the fresh D_t = x_θ(t) − x_θ(s) (r = 1):
 *   x_t^c = (σ_t/σ_s)·x_s − α_t·hφ₁·x_θ(s) − α_t·B(h)·(Σ_m ρ^c_m·D_m + ρ^c_t·D_t)
 * which raises the order of accuracy by one at no extra model evaluation. The weights ρ solve the order
 * conditions R·ρ = g of the paper's B(h) formulation: R_{ik} = r_k^{i−1}, and
 *   g_i = i!·φ_{i+1}(hh)·hh/B(h)   with φ_{k+1}(x) = (φ_k(x) − 1/k!)/x,
 * B(h) = hh ("bh1", suggested for unconditional sampling under 10 steps) or e^{hh} − 1 ("bh2", otherwise; the
 * default). For the smallest systems diffusers uses the constant ρ = ½ instead (UniP-2 and UniC-1).
 *
 * Per step (diffusers' order of operations): the model output at x_t becomes x_θ(t); unless disabled for this step,
 * UniC corrects x_t with it (using the previous step's start point and order); then UniP predicts the next x from
 * the corrected x_t. `lower_order_final` lowers the order of the last steps; the first steps warm up from order 1.
 *
 * Numerics: each 0-d tensor and elementwise operation is one float32 operation as torch does it, with torch's
 * SLEEF `log`/`expm1` (sleef.ts). The ρ come from `torch.linalg.solve` on float32 (LAPACK `sgetrf`/`sgetrs`),
 * reproduced by `torchSolve` below, including torch's choice to factor Aᵀ for a contiguous A. The sums over m
 * are `einsum`s, accumulated in order. With that, every step equals diffusers bit for bit on the fixtures.
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
import { alphaSigma, DpmFamilyScheduler, dataPrediction, dpmSigmas, dpmTimesteps } from "./dpm_common.ts";
import type { SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { finalSigma } from "./sigmas.ts";
import { expm1f } from "./sleef.ts";
import { checkStepCount } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface UniPCMultistepConfig extends ConfigHead, ThresholdingConfig {
  solver_order: number;
  predict_x0: boolean;
  solver_type: "bh1" | "bh2";
  lower_order_final: boolean;
  disable_corrector: number[];
  solver_p: null;
  use_karras_sigmas: boolean;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  final_sigmas_type: FinalSigmasType;
  rescale_betas_zero_snr: boolean;
}

/** `UniPCMultistepScheduler.__init__` defaults in diffusers 0.29.2. */
export const UNIPC_MULTISTEP_DEFAULTS: Readonly<UniPCMultistepConfig> = Object.freeze({
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
  predict_x0: true,
  solver_type: "bh2",
  lower_order_final: true,
  disable_corrector: [],
  solver_p: null,
  use_karras_sigmas: false,
  timestep_spacing: "linspace",
  steps_offset: 0,
  final_sigmas_type: "zero",
  rescale_betas_zero_snr: false,
});

/** Reads a scheduler config the way `UniPCMultistepScheduler.from_config` does, with the per-request options. */
export function resolveUniPCMultistepConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): UniPCMultistepConfig {
  const r = new ConfigReader(config);
  const d = UNIPC_MULTISTEP_DEFAULTS;

  // diffusers maps the DPM-Solver solver names onto bh2.
  let solverType = r.string("solver_type", d.solver_type);
  if (solverType === "midpoint" || solverType === "heun" || solverType === "logrho") solverType = "bh2";
  if (solverType !== "bh1" && solverType !== "bh2") {
    throw new SchedulerConfigError(`solver_type "${solverType}" is not supported; choose bh1 or bh2`);
  }
  const order = r.integer("solver_order", d.solver_order);
  if (order < 1) throw new SchedulerConfigError(`solver_order must be at least 1, got ${order}`);
  const disable = r.numberArray("disable_corrector") ?? [];
  if (!disable.every(Number.isInteger)) {
    throw new SchedulerConfigError("disable_corrector must list step indices (integers)");
  }
  if (r.present.has("solver_p")) {
    throw new SchedulerConfigError("solver_p (an external predictor scheduler) is not supported");
  }

  const resolved: UniPCMultistepConfig = {
    ...readConfigHead(r, d),
    solver_order: order,
    ...readThresholding(r, d),
    predict_x0: r.boolean("predict_x0", d.predict_x0),
    solver_type: solverType,
    lower_order_final: r.boolean("lower_order_final", d.lower_order_final),
    disable_corrector: [...disable],
    solver_p: null,
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    timestep_spacing: r.timestepSpacing(timestepSpacingOption(options), d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    final_sigmas_type: r.finalSigmasType(d.final_sigmas_type),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
  };
  refuseThresholding(resolved.thresholding);
  // At a zero final sigma λ = +∞: only the data-prediction first-order step has a finite limit there. diffusers
  // 0.29.2 accepts these settings and returns inf/NaN samples (0·∞ in the ε form, r = −0 in a higher order).
  if (resolved.final_sigmas_type === "zero" && !resolved.predict_x0) {
    throw new SchedulerConfigError(
      'predict_x0 false needs final_sigmas_type "sigma_min" (a zero final sigma gives NaN)',
    );
  }
  if (resolved.final_sigmas_type === "zero" && !resolved.lower_order_final && resolved.solver_order > 1) {
    throw new SchedulerConfigError(
      'lower_order_final false needs final_sigmas_type "sigma_min" (a zero final sigma gives inf)',
    );
  }
  return resolved;
}

/**
 * `torch.linalg.solve(A, b)` for a small float32 system on CPU (torch 1.13 with reference LAPACK): LU with
 * partial pivoting (`sgetrf`: first largest |pivot|, subdiagonal scaled by the float32 reciprocal of the pivot,
 * a_ij −= l_ik·u_kj in k order), then `sgetrs`. For a contiguous (row-major) A torch factors Aᵀ = P·L·U — the
 * same memory read column-major — and solves Uᵀy = b, Lᵀz = y, x = P·z (`sgetrs('T')`); otherwise it factors
 * A = P·L·U and solves L·y = Pᵀb, U·x = y. Every operation is one float32 rounding.
 */
export function torchSolve(
  A: readonly (readonly number[])[],
  b: readonly number[],
  contiguous: boolean,
): number[] {
  const n = b.length;
  const lu = A.map((row, i) =>
    row.map((_, j) => f32((contiguous ? (A[j] as number[])[i] : row[j]) as number)),
  );
  const at = (i: number, j: number): number => (lu[i] as number[])[j] as number;
  const set = (i: number, j: number, v: number): void => {
    (lu[i] as number[])[j] = v;
  };
  const piv = new Array<number>(n);
  for (let k = 0; k < n; k++) {
    let p = k;
    for (let i = k + 1; i < n; i++) if (Math.abs(at(i, k)) > Math.abs(at(p, k))) p = i;
    piv[k] = p;
    if (p !== k) [lu[k], lu[p]] = [lu[p] as number[], lu[k] as number[]];
    const pivot = at(k, k);
    if (pivot !== 0) {
      const scaleByReciprocal = Math.abs(pivot) >= 2 ** -126;
      const rec = f32(1 / pivot);
      for (let i = k + 1; i < n; i++) set(i, k, f32(scaleByReciprocal ? at(i, k) * rec : at(i, k) / pivot));
    }
    for (let j = k + 1; j < n; j++) {
      for (let i = k + 1; i < n; i++) set(i, j, f32(at(i, j) - f32(at(i, k) * at(k, j))));
    }
  }
  const x = b.map(f32);
  if (contiguous) {
    for (let i = 0; i < n; i++) {
      let t = x[i] as number;
      for (let k = 0; k < i; k++) t = f32(t - f32(at(k, i) * (x[k] as number)));
      x[i] = f32(t / at(i, i));
    }
    for (let i = n - 1; i >= 0; i--) {
      let t = x[i] as number;
      for (let k = i + 1; k < n; k++) t = f32(t - f32(at(k, i) * (x[k] as number)));
      x[i] = t;
    }
    for (let k = n - 1; k >= 0; k--) {
      const p = piv[k] as number;
      if (p !== k) [x[k], x[p]] = [x[p] as number, x[k] as number];
    }
  } else {
    for (let k = 0; k < n; k++) {
      const p = piv[k] as number;
      if (p !== k) [x[k], x[p]] = [x[p] as number, x[k] as number];
    }
    for (let k = 0; k < n; k++) {
      const xk = x[k] as number;
      if (xk === 0) continue;
      for (let i = k + 1; i < n; i++) x[i] = f32((x[i] as number) - f32(xk * at(i, k)));
    }
    for (let k = n - 1; k >= 0; k--) {
      if (x[k] === 0) continue;
      const xk = f32((x[k] as number) / at(k, k));
      x[k] = xk;
      for (let i = 0; i < k; i++) x[i] = f32((x[i] as number) - f32(xk * at(i, k)));
    }
  }
  return x;
}

/** `torch.pow` of a float32 value by a small integer exponent (0 → 1, 1 → x, 2 → x·x, 3 → x·x·x as torch does). */
function powF32(x: number, e: number): number {
  if (e === 0) return 1;
  if (e === 1) return x;
  if (e === 2) return f32(x * x);
  if (e === 3) return f32(f32(x * x) * x);
  return f32(x ** e); // solver orders ≥ 5 only; torch's SLEEF powf may differ in the last bit
}

/** The B(h) step coefficients shared by UniP and UniC. */
interface BhCoefficients {
  /** hφ₁ = e^{hh} − 1. */
  hPhi1: number;
  /** B(h): hh ("bh1") or e^{hh} − 1 ("bh2"). */
  bh: number;
  /** R_{ik} = r_k^{i−1}, i = 1…p (rows), over r_1…r_{p−1} and r = 1. */
  R: number[][];
  /** g_i = i!·φ_{i+1}(hh)·hh/B(h), i = 1…p. */
  g: number[];
}

function bhCoefficients(hh: number, rks: readonly number[], solverType: "bh1" | "bh2"): BhCoefficients {
  const p = rks.length;
  const hPhi1 = expm1f(hh);
  let hPhiK = f32(f32(hPhi1 / hh) - 1);
  let factorial = 1;
  const bh = solverType === "bh1" ? hh : expm1f(hh);
  const R: number[][] = [];
  const g: number[] = [];
  for (let i = 1; i <= p; i++) {
    R.push(rks.map((r) => powF32(r, i - 1)));
    g.push(f32(f32(hPhiK * factorial) / bh));
    factorial *= i + 1;
    hPhiK = f32(f32(hPhiK / hh) - f32(1 / factorial));
  }
  return { hPhi1, bh, R, g };
}

export class UniPCMultistepScheduler extends DpmFamilyScheduler {
  readonly config: Readonly<UniPCMultistepConfig>;
  /** Converted model outputs (x_θ, or ε_θ without predict_x0) of the last `solver_order` steps, oldest first. */
  private modelOutputs: (Float32Array | null)[];
  private lowerOrderNums = 0;
  /** The predictor's start point x_s and order of the previous step, which the corrector revisits. */
  private lastSample: Float32Array | null = null;
  private lastOrder = 1;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveUniPCMultistepConfig(config, options);
    super(c);
    this.config = Object.freeze(c);
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    const T = c.num_train_timesteps; // no λ clipping in UniPC
    const { timesteps, sigmas } = dpmSigmas(
      dpmTimesteps(c.timestep_spacing, T, T, n, c.steps_offset),
      this.trainSigmas,
      n,
      { karras: c.use_karras_sigmas },
    );
    // UniPC's "sigma_min" final sigma with Karras sigmas is the last Karras sigma itself (a zero-length last step).
    const karrasSigmaMin = c.use_karras_sigmas && c.final_sigmas_type === "sigma_min";
    sigmas.push(
      karrasSigmaMin
        ? (sigmas[sigmas.length - 1] as number)
        : finalSigma(c.final_sigmas_type, this.alphasCumprod),
    );
    this.setSchedule(timesteps, sigmas);
    this.modelOutputs = new Array<Float32Array | null>(c.solver_order).fill(null);
    this.lowerOrderNums = 0;
    this.lastSample = null;
    this.lastOrder = 1;
  }

  /** Corrects the current x_t with the new model output (UniC), then predicts the next one (UniP). */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    _generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    const c = this.config;
    const n = this.timestepSchedule.length;

    const useCorrector = i > 0 && !c.disable_corrector.includes(i - 1) && this.lastSample !== null;
    const converted = this.convertModelOutput(modelOutput, sample, i);
    let x = sample;
    if (useCorrector) x = this.correct(converted, this.lastSample as Float32Array, x, this.lastOrder, i);

    this.modelOutputs.shift();
    this.modelOutputs.push(converted);

    // Order of this step: warm up from 1, and with lower_order_final never reach past the end of the schedule.
    const cap = c.lower_order_final ? Math.min(c.solver_order, n - i) : c.solver_order;
    const order = Math.min(cap, this.lowerOrderNums + 1);
    this.lastOrder = order;
    this.lastSample = x;
    const prevSample = this.predict(x, order, i);
    if (this.lowerOrderNums < c.solver_order) this.lowerOrderNums++;
    this.steps.advance();
    return c.predict_x0 ? { prevSample, predOriginalSample: converted.slice() } : { prevSample };
  }

  /**
   * The quantity UniPC integrates: x_θ with predict_x0 (see `dataPrediction`), else the noise prediction
   *   ε-prediction: ε_θ itself;  sample: ε = (x_t − α_t·x_θ)/σ_t;  v-prediction: ε = α_t·v_θ + σ_t·x_t.
   */
  private convertModelOutput(modelOutput: Float32Array, sample: Float32Array, i: number): Float32Array {
    const s = this.sigmas[i] as number;
    if (this.config.predict_x0) return dataPrediction(this.config.prediction_type, s, modelOutput, sample);
    const [alpha, sigma] = alphaSigma(s);
    const out = new Float32Array(sample.length);
    switch (this.config.prediction_type) {
      case "epsilon":
        out.set(modelOutput);
        break;
      case "sample":
        for (let k = 0; k < out.length; k++) {
          out[k] = f32((sample[k] as number) - f32(alpha * (modelOutput[k] as number))) / sigma;
        }
        break;
      case "v_prediction":
        for (let k = 0; k < out.length; k++) {
          out[k] = f32(alpha * (modelOutput[k] as number)) + f32(sigma * (sample[k] as number));
        }
        break;
    }
    return out;
  }

  private modelOutput(back: number): Float32Array {
    return this.modelOutputs[this.modelOutputs.length - 1 - back] as Float32Array;
  }

  /**
   * The first-order part shared by UniP and UniC, (σ_t/σ_s)·x_s − α_t·hφ₁·m_s for x_θ
   * ((α_t/α_s)·x_s − σ_t·hφ₁·m_s for ε_θ), and the weight α_t·B(h) (σ_t·B(h)) of the correction sum.
   */
  private baseCoefficients(
    t: { alpha: number; sigma: number },
    s: { alpha: number; sigma: number },
    hPhi1: number,
    bh: number,
  ): { sampleCoef: number; outputCoef: number; resCoef: number } {
    if (this.config.predict_x0) {
      return {
        sampleCoef: f32(t.sigma / s.sigma),
        outputCoef: f32(t.alpha * hPhi1),
        resCoef: f32(t.alpha * bh),
      };
    }
    return {
      sampleCoef: f32(t.alpha / s.alpha),
      outputCoef: f32(t.sigma * hPhi1),
      resCoef: f32(t.sigma * bh),
    };
  }

  /**
   * UniP-p from x_s (s = sigma index i) to sigma index i + 1, with the divided differences
   * D_m = (m_{s_m} − m_s)/r_m of the p − 1 previous outputs (s_m = i − m) and ρ solving the (p − 1)×(p − 1)
   * leading block of R·ρ = g (ρ = ½ for p = 2):
   *   x_t = (σ_t/σ_s)·x_s − α_t·hφ₁·m_s − α_t·B(h)·Σ_m ρ_m·D_m
   */
  private predict(x: Float32Array, order: number, i: number): Float32Array {
    const t = this.point(i + 1);
    const s = this.point(i);
    const h = f32(t.lambda - s.lambda);
    const m0 = this.modelOutput(0);
    const rks: number[] = [];
    const diffs: Float32Array[] = [];
    for (let m = 1; m < order; m++) {
      const rk = f32(f32(this.point(i - m).lambda - s.lambda) / h);
      rks.push(rk);
      diffs.push(this.divided(this.modelOutput(m), m0, rk));
    }
    rks.push(1);
    const hh = this.config.predict_x0 ? -h : h;
    const { hPhi1, bh, R, g } = bhCoefficients(hh, rks, this.config.solver_type);
    let rhos: number[] = [];
    if (diffs.length > 0) {
      if (order === 2) rhos = [0.5];
      else {
        const k = order - 1;
        rhos = torchSolve(
          R.slice(0, k).map((row) => row.slice(0, k)),
          g.slice(0, k),
          false, // R[:-1, :-1] is a strided view, not contiguous
        );
      }
    }
    const { sampleCoef, outputCoef, resCoef } = this.baseCoefficients(t, s, hPhi1, bh);
    const out = new Float32Array(x.length);
    for (let k = 0; k < out.length; k++) {
      const base = f32(f32(sampleCoef * (x[k] as number)) - f32(outputCoef * (m0[k] as number)));
      if (diffs.length === 0) {
        out[k] = base;
        continue;
      }
      let res = 0;
      for (let m = 0; m < diffs.length; m++) {
        res = f32(res + f32((rhos[m] as number) * ((diffs[m] as Float32Array)[k] as number)));
      }
      out[k] = base - f32(resCoef * res);
    }
    return out;
  }

  /**
   * UniC-p: redo the previous step from x_s (sigma index i − 1, `lastSample`) to x_t (index i) with the fresh
   * model output m_t: the p − 1 older differences plus D_t = m_t − m_s, ρ^c solving the full p×p system
   * R·ρ = g (ρ = ½ for p = 1):
   *   x_t^c = (σ_t/σ_s)·x_s − α_t·hφ₁·m_s − α_t·B(h)·(Σ_m ρ^c_m·D_m + ρ^c_t·D_t)
   */
  private correct(
    modelT: Float32Array,
    lastSample: Float32Array,
    thisSample: Float32Array,
    order: number,
    i: number,
  ): Float32Array {
    const t = this.point(i);
    const s = this.point(i - 1);
    const h = f32(t.lambda - s.lambda);
    const m0 = this.modelOutput(0);
    const rks: number[] = [];
    const diffs: Float32Array[] = [];
    for (let m = 1; m < order; m++) {
      const rk = f32(f32(this.point(i - (m + 1)).lambda - s.lambda) / h);
      rks.push(rk);
      diffs.push(this.divided(this.modelOutput(m), m0, rk));
    }
    rks.push(1);
    const hh = this.config.predict_x0 ? -h : h;
    const { hPhi1, bh, R, g } = bhCoefficients(hh, rks, this.config.solver_type);
    const rhos = order === 1 ? [0.5] : torchSolve(R, g, true); // torch.stack(R) is contiguous
    const rhoT = rhos[rhos.length - 1] as number;
    const { sampleCoef, outputCoef, resCoef } = this.baseCoefficients(t, s, hPhi1, bh);
    const out = new Float32Array(thisSample.length);
    for (let k = 0; k < out.length; k++) {
      const a = m0[k] as number;
      const base = f32(f32(sampleCoef * (lastSample[k] as number)) - f32(outputCoef * a));
      const dT = f32((modelT[k] as number) - a);
      let res = f32(rhoT * dT);
      if (diffs.length > 0) {
        let sum = 0;
        for (let m = 0; m < diffs.length; m++) {
          sum = f32(sum + f32((rhos[m] as number) * ((diffs[m] as Float32Array)[k] as number)));
        }
        res = f32(sum + res);
      }
      out[k] = base - f32(resCoef * res);
    }
    return out;
  }

  /** (m_i − m_0)/r_k, elementwise. */
  private divided(mi: Float32Array, m0: Float32Array, rk: number): Float32Array {
    const out = new Float32Array(m0.length);
    for (let k = 0; k < out.length; k++) out[k] = f32((mi[k] as number) - (m0[k] as number)) / rk;
    return out;
  }
}
