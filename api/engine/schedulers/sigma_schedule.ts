/**
 * The σ machinery that diffusers 0.29.2 copies between its k-diffusion-style samplers (Euler, Euler a, LMS, Heun,
 * DPM2), written once: timestep spacings, σ at (fractional) timesteps by `np.interp`, Karras σ, the inverse map
 * σ → t (`_sigma_to_t`), `index_for_timestep` and the step-index bookkeeping, the input scaling and the data
 * prediction.
 *
 * Notation (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
 * arXiv:2206.00364): the VP training process x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε is rescaled to the variance-exploding
 * form x = x₀ + σ·ε with σ_t = √((1 − ᾱ_t)/ᾱ_t), x = x_t/√ᾱ_t. The probability-flow ODE is then
 *   dx/dσ = (x − D(x; σ))/σ                                                (Karras eq. 3 with σ(t) = t)
 * with the denoiser D = x₀-estimate. The network was trained on x_t = x/√(σ² + 1), hence c_in = 1/√(σ² + 1).
 *
 * Numerics: diffusers builds these schedules with numpy 1.24 (float64, but float32 wherever a float32 array meets
 * a scalar, by numpy 1.x value-based casting) and torch float32; each function below states which it follows.
 * numpy's float32 `log` is its own AVX2/AVX-512F kernel (not the correctly rounded log), reproduced by `npLogF32`.
 */
import type { PredictionType, TimestepSpacing } from "../../../contract/index.ts";
import { bitsOf, f32, fmaF32, fromBits } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { alphasCumprod, type BetaSchedule, betasForAlphaBar, betasFromConfig } from "./betas.ts";
import {
  npArange,
  npLinspace,
  roundHalfEven,
  SchedulerConfigError,
  trainingSigmas,
} from "./schedule_utils.ts";
import type { Scheduler, StepOutput } from "./scheduler.ts";
import { checkSameLength, findTimestepIndex, StepIndex } from "./step_index.ts";

// ---------------------------------------------------------------------------------------------------------------
// numpy float32 log

// numpy's NPY_COEFF_{P,Q}{0..5}_LOGf, as the float32 values the C `f` literals denote.
const LOG_P = [0, 1, 2.112677574157715, 1.480000615119934, 0.3808837831020355, 0.025899792090058327];
const LOG_Q = [
  1, 2.612677574157715, 2.4530060291290283, 0.9864943027496338, 0.15464763343334198, 0.005875095259398222,
];
const LN2_F = f32(Math.LN2);
const SQRT1_2_F = f32(Math.SQRT1_2);
const FLT_MIN = 2 ** -126;

/** c₀ + x·(c₁ + x·(…)) with one fused multiply-add per coefficient, highest first (float32). */
function hornerFma(c: readonly number[], x: number): number {
  let acc = c[c.length - 1] as number;
  for (let k = c.length - 2; k >= 0; k--) acc = fmaF32(acc, x, c[k] as number);
  return acc;
}

/**
 * `np.log` on float32 (numpy 1.24 `simd_log_FLOAT`, the AVX2+FMA3 / AVX-512F kernel that x86 builds dispatch to):
 * x = 2^k·m with m ∈ (√½, √2], log(1 + r) ≈ P(r)/Q(r) (degree-5 minimax), log x = k·ln2 + P/Q; max error 3.83 ulp.
 */
export function npLogF32(value: number): number {
  let x = f32(value);
  if (Number.isNaN(x) || x < 0) return Number.NaN;
  if (x === 0) return Number.NEGATIVE_INFINITY;
  if (x === Number.POSITIVE_INFINITY) return x;
  let bias = 0x7e;
  if (x < FLT_MIN) {
    x = f32(x * 2 ** 100); // subnormals: scale up, correct the exponent
    bias += 100;
  }
  const bits = bitsOf(x);
  let k = (bits >>> 23) - bias;
  let m = fromBits((bits & 0x7fffff) | (126 << 23)); // mantissa in [0.5, 1)
  if (m <= SQRT1_2_F) {
    m = f32(m + m);
    k -= 1;
  }
  const r = f32(m - 1);
  return fmaF32(k, LN2_F, f32(hornerFma(LOG_P, r) / hornerFma(LOG_Q, r)));
}

// ---------------------------------------------------------------------------------------------------------------
// Training schedule

export interface TrainingScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule | "exp";
  trained_betas: readonly number[] | null;
  rescale_betas_zero_snr?: boolean;
}

/**
 * ᾱ_t (float32) as the σ-parameterised samplers build it (the k-diffusion ones here, and DPM-Solver / UniPC).
 * "exp" is `betas_for_alpha_bar(alpha_transform_type="exp")` (Heun only). With a zero terminal SNR, ᾱ_{T−1} = 0
 * would make σ infinite: diffusers pins it to 2⁻²⁴.
 */
export function kAlphasCumprod(c: TrainingScheduleConfig): Float32Array {
  const rescale = c.rescale_betas_zero_snr ?? false;
  let betas: Float32Array;
  if (c.beta_schedule === "exp" && c.trained_betas === null) {
    if (!Number.isInteger(c.num_train_timesteps) || c.num_train_timesteps < 2) {
      throw new SchedulerConfigError(
        `num_train_timesteps must be an integer ≥ 2, got ${c.num_train_timesteps}`,
      );
    }
    betas = betasForAlphaBar(c.num_train_timesteps, 0.999, "exp");
  } else {
    const schedule = c.beta_schedule === "exp" ? "linear" : c.beta_schedule; // trained_betas win anyway
    betas = betasFromConfig({ ...c, beta_schedule: schedule, rescale_betas_zero_snr: rescale });
  }
  const ac = alphasCumprod(betas);
  if (rescale) ac[ac.length - 1] = 2 ** -24;
  return ac;
}

/** σ_t for every training step (float32) and `np.log` of them (numpy's float32 log, see `npLogF32`). */
export function sigmaTables(ac: Float32Array): { sigmas: Float32Array; logSigmas: Float32Array } {
  const sigmas = trainingSigmas(ac);
  return { sigmas, logSigmas: sigmas.map(npLogF32) };
}

// ---------------------------------------------------------------------------------------------------------------
// Timesteps and σ

/**
 * Inference timesteps, largest first, as the float32 values diffusers stores (Lin et al. 2024, "Common Diffusion
 * Noise Schedules and Sample Steps are Flawed", Table 2; float32 and unrounded, unlike the integer `ddpmTimesteps`
 * and `dpmTimesteps`):
 *   linspace: n points evenly over [0, T − 1], fractional (`np.linspace(..., dtype=float32)`, kept unrounded);
 *   leading:  (n − 1 … 0)·⌊T/n⌋ + steps_offset;
 *   trailing: round(T − i·T/n) − 1.
 */
export function spacedTimesteps(
  spacing: TimestepSpacing,
  numTrainTimesteps: number,
  n: number,
  stepsOffset: number,
): number[] {
  const T = numTrainTimesteps;
  if (spacing === "linspace")
    return npLinspace(0, T - 1, n)
      .map(f32)
      .reverse();
  if (spacing === "leading") {
    const ratio = Math.floor(T / n);
    const out: number[] = [];
    for (let i = n - 1; i >= 0; i--) out.push(f32(f32(i * ratio) + stepsOffset));
    return out;
  }
  return npArange(T, 0, -T / n).map((t) => f32(f32(roundHalfEven(t)) - 1));
}

/**
 * The start of `set_timesteps` the k-diffusion samplers share: the spaced timesteps and σ interpolated at them
 * (`interpSigmas`), both largest first.
 */
export function interpolatedSchedule(
  c: { timestep_spacing: TimestepSpacing; num_train_timesteps: number; steps_offset: number },
  n: number,
  table: Float32Array,
): { timesteps: number[]; sigmas: number[] } {
  const timesteps = spacedTimesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);
  return { timesteps, sigmas: interpSigmas(timesteps, table) };
}

/**
 * `use_karras_sigmas`: the schedule's σ replaced by Karras σ (`karrasFromSchedule`), and each timestep by the
 * fractional training step of its σ (`sigmaToTimestep`, float64; the classes cast or round it as diffusers does).
 */
export function karrasSchedule(
  sigmas: readonly number[],
  n: number,
  logTable: Float32Array,
  sigmaMin: number | null = null,
  sigmaMax: number | null = null,
): { timesteps: number[]; sigmas: number[] } {
  const karras = karrasFromSchedule(sigmas, n, sigmaMin, sigmaMax);
  return { timesteps: karras.map((s) => sigmaToTimestep(s, logTable)), sigmas: karras };
}

/**
 * `np.interp(timesteps, arange(T), σ_table)`: σ at fractional timesteps by linear interpolation between the two
 * neighbouring training steps (float64), clamped to the table's ends.
 */
export function interpSigmas(timesteps: readonly number[], table: Float32Array): number[] {
  const last = table.length - 1;
  return timesteps.map((x) => {
    if (Number.isNaN(x)) return x;
    if (x <= 0) return table[0] as number;
    if (x >= last) return table[last] as number;
    const j = Math.floor(x);
    const y0 = table[j] as number;
    if (j === x) return y0;
    const slope = (table[j + 1] as number) - y0;
    return slope * (x - j) + y0;
  });
}

/** Veltkamp–Dekker a·b = p + e exactly. */
function twoProduct(a: number, b: number): [number, number] {
  const p = a * b;
  const ca = 134217729 * a;
  const ah = ca - (ca - a);
  const al = a - ah;
  const cb = 134217729 * b;
  const bh = cb - (cb - b);
  const bl = b - bh;
  return [p, ah * bh - p + ah * bl + al * bh + al * bl];
}

/** x^k for a small positive integer k, correctly rounded (double-double), as libm `pow` nearly always is. */
function powInt(x: number, k: number): number {
  let hi = 1;
  let lo = 0;
  for (let i = 0; i < k; i++) {
    const [p, e] = twoProduct(hi, x);
    const err = e + lo * x;
    hi = p + err;
    lo = err - (hi - p);
  }
  return hi + lo;
}

/**
 * Karras et al. 2022, eq. 5: σ_i = (σ_max^{1/ρ} + i/(n − 1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7, float64.
 * `_convert_to_karras` takes σ_min/σ_max from the interpolated schedule's ends unless the config fixes them
 * (Euler's sigma_min / sigma_max). numpy's `** 7.0` is libm `pow`; JS `**` with an integer exponent multiplies
 * repeatedly (several ulps off), so the power is taken in double-double.
 */
export function karrasFromSchedule(
  inSigmas: readonly number[],
  n: number,
  sigmaMin: number | null = null,
  sigmaMax: number | null = null,
): number[] {
  const rho = 7;
  const lo = sigmaMin ?? (inSigmas[inSigmas.length - 1] as number);
  const hi = sigmaMax ?? (inSigmas[0] as number);
  const minInvRho = lo ** (1 / rho);
  const maxInvRho = hi ** (1 / rho);
  return npLinspace(0, 1, n).map((r) => powInt(maxInvRho + r * (minInvRho - maxInvRho), rho));
}

/** Last index i with logσ ≥ table[i] (0 if none), at most T − 2: `argmax(cumsum(dists >= 0)).clip(max=T−2)`. */
function bracket(logSigma: number, table: Float32Array): number {
  let low = 0;
  for (let i = 0; i < table.length; i++) if (logSigma >= (table[i] as number)) low = i;
  return Math.min(low, table.length - 2);
}

/**
 * `_sigma_to_t` on a float64 σ (Karras schedules): the fractional training step whose log σ matches, by linear
 * interpolation of log σ between the bracketing steps. numpy 1.x value-based casting keeps the float32 table's
 * dtype when the float64 log σ meets it, so the weight w is float32; (1 − w)·i_low + w·i_high then multiplies
 * float32 by int64 arrays, which is float64. Returns that float64 value.
 */
export function sigmaToTimestep(sigma: number, logTable: Float32Array): number {
  const logSigma = f32(Math.log(Math.max(sigma, 1e-10)));
  const lowIdx = bracket(logSigma, logTable);
  const low = logTable[lowIdx] as number;
  const high = logTable[lowIdx + 1] as number;
  const w = Math.min(Math.max(f32(f32(low - logSigma) / f32(low - high)), 0), 1);
  return f32(1 - w) * lowIdx + w * (lowIdx + 1);
}

/**
 * `_sigma_to_t` as KDPM2 calls it on its interpolated σ: σ and the table are torch float32 tensors there, so
 * log σ is numpy's float32 log and every later operation, down to t itself, is a float32 tensor op.
 */
export function sigmaToTimestepF32(sigma: number, logTable: Float32Array): number {
  const logSigma = npLogF32(Math.max(sigma, f32(1e-10)));
  const lowIdx = bracket(logSigma, logTable);
  const low = logTable[lowIdx] as number;
  const high = logTable[lowIdx + 1] as number;
  const w = Math.min(Math.max(f32(f32(low - logSigma) / f32(low - high)), 0), 1);
  return f32(f32(f32(1 - w) * lowIdx) + f32(w * (lowIdx + 1)));
}

/**
 * `index_for_timestep`: where `timestep` sits in the schedule; when it occurs more than once the second
 * occurrence is taken, so that a run started mid-schedule (img2img) does not skip a σ.
 */
export function indexForTimestep(timesteps: readonly number[], timestep: number): number {
  const hit = findTimestepIndex(timesteps, timestep);
  if (hit === undefined) throw new RangeError(`timestep ${timestep} is not in the schedule`);
  return hit;
}

// ---------------------------------------------------------------------------------------------------------------
// Elementwise pieces (float32 tensor arithmetic)

/** √(σ² + 1) as torch computes `(sigma**2 + 1) ** 0.5` on a float32 scalar. */
export function sqrtSigmaSqPlusOne(sigma: number): number {
  return f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
}

/** c_in·x = x/√(σ² + 1): the VE sample x = x₀ + σε brought back to the VP scale the network was trained on. */
export function scaleInput(sample: Float32Array, sigma: number): Float32Array {
  const d = sqrtSigmaSqPlusOne(sigma);
  return sample.map((v) => v / d);
}

/**
 * The denoiser D(x; σ) (the x₀ estimate) from the network output, with Karras' preconditioning (Table 1, VP column
 * in VE form):
 *   ε-prediction: D = x − σ·ε
 *   v-prediction (v = α·ε − σ_VP·x₀, Salimans & Ho 2022): D = c_skip·x + c_out·v with c_skip = 1/(σ² + 1),
 *     c_out = −σ/√(σ² + 1)
 *   sample: D is the output itself.
 */
export function denoise(
  predictionType: PredictionType,
  modelOutput: Float32Array,
  sample: Float32Array,
  sigma: number,
): Float32Array {
  const out = new Float32Array(sample.length);
  if (predictionType === "epsilon") {
    for (let k = 0; k < out.length; k++)
      out[k] = (sample[k] as number) - f32(sigma * (modelOutput[k] as number));
  } else if (predictionType === "v_prediction") {
    const cOut = f32(-sigma / sqrtSigmaSqPlusOne(sigma));
    const skipDiv = f32(f32(sigma * sigma) + 1);
    for (let k = 0; k < out.length; k++) {
      out[k] = f32(f32((modelOutput[k] as number) * cOut) + f32((sample[k] as number) / skipDiv));
    }
  } else {
    out.set(modelOutput);
  }
  return out;
}

/** The ODE slope d = (x − D)/σ of Karras eq. 3 (float32). */
export function odeDerivative(sample: Float32Array, denoised: Float32Array, sigma: number): Float32Array {
  const out = new Float32Array(sample.length);
  for (let k = 0; k < out.length; k++) out[k] = f32((sample[k] as number) - (denoised[k] as number)) / sigma;
  return out;
}

/** x + d·Δσ (float32): one explicit Euler step of the ODE in σ. */
export function eulerUpdate(sample: Float32Array, derivative: Float32Array, dt: number): Float32Array {
  const out = new Float32Array(sample.length);
  for (let k = 0; k < out.length; k++) out[k] = (sample[k] as number) + f32((derivative[k] as number) * dt);
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Shared scheduler state

/**
 * State and bookkeeping common to the five samplers: the σ / timestep schedule, `init_noise_sigma`,
 * `scale_model_input`, and the step index (found from the first timestep seen, or `setBeginIndex`, then advanced
 * by one per `step`).
 */
export abstract class SigmaScheduler implements Scheduler {
  /** ᾱ_t for t = 0…T−1 (float32). */
  readonly alphasCumprod: Float32Array;
  protected readonly trainSigmas: Float32Array;
  protected readonly trainLogSigmas: Float32Array;
  protected timestepSchedule: number[] = [];
  protected sigmaSchedule: Float32Array = new Float32Array(0);
  /** Subclasses call `steps.advance()` at the end of `step`. */
  protected readonly steps = new StepIndex(indexForTimestep);
  private readonly spacing: TimestepSpacing;

  protected constructor(training: TrainingScheduleConfig, spacing: TimestepSpacing) {
    this.alphasCumprod = kAlphasCumprod(training);
    const { sigmas, logSigmas } = sigmaTables(this.alphasCumprod);
    this.trainSigmas = sigmas;
    this.trainLogSigmas = logSigmas;
    this.spacing = spacing;
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput;

  /** Timesteps fed to the UNet, after `setTimesteps` (fractional float32 values for "linspace"). */
  get timesteps(): readonly number[] {
    return this.timestepSchedule;
  }

  /** σ per step plus the final one (float32), after `setTimesteps`. */
  get sigmas(): Float32Array {
    return this.sigmaSchedule;
  }

  get numInferenceSteps(): number | null {
    return this.timestepSchedule.length > 0 ? this.timestepSchedule.length : null;
  }

  /**
   * x_T = σ_max·ε for "linspace" / "trailing" (the VE prior); √(σ_max² + 1) for "leading", whose first timestep
   * is not T − 1 (diffusers' choice, kept for parity). Before `setTimesteps`, σ_max of the training schedule.
   */
  get initNoiseSigma(): number {
    let max = Number.NEGATIVE_INFINITY;
    const sigmas = this.sigmaSchedule.length > 0 ? this.sigmaSchedule : this.trainSigmas;
    for (const s of sigmas) max = Number.isNaN(s) || Number.isNaN(max) ? Number.NaN : Math.max(max, s);
    return this.spacing === "linspace" || this.spacing === "trailing" ? max : sqrtSigmaSqPlusOne(max);
  }

  /** For img2img: the first call uses this index instead of looking its timestep up. */
  setBeginIndex(beginIndex: number): void {
    this.steps.setBegin(beginIndex);
  }

  scaleModelInput(sample: Float32Array, timestep: number): Float32Array {
    return scaleInput(sample, this.inputSigma(this.currentIndex(timestep)));
  }

  /** σ of the point where the network is evaluated at step index i. */
  protected inputSigma(i: number): number {
    return this.sigmaSchedule[i] as number;
  }

  /** Resets the per-run state after a new schedule. */
  protected resetSteps(timesteps: number[], sigmas: Float32Array): void {
    this.timestepSchedule = timesteps;
    this.sigmaSchedule = sigmas;
    this.steps.reset();
  }

  /** The step index, initialised on first use (`_init_step_index`). */
  protected currentIndex(timestep: number): number {
    if (this.timestepSchedule.length === 0) throw new Error("setTimesteps must be called first");
    return this.steps.current(this.timesteps, timestep);
  }

  /** Validates a `step` call and returns the current step index. */
  protected beginStep(modelOutput: Float32Array, timestep: number, sample: Float32Array): number {
    checkSameLength(modelOutput, sample); // before the schedule check here, unlike `checkStepInputs`
    this.currentIndex(timestep);
    return this.steps.forStep(this.timesteps, timestep);
  }
}
