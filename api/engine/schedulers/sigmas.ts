/**
 * σ space, written once for the samplers that work in it: the k-diffusion family (Euler, Euler a, LMS, Heun,
 * DPM2; sigma_scheduler.ts) and the DPM family (DPM-Solver++ multistep and singlestep, UniPC; dpm_common.ts).
 * Here: ᾱ and σ for every training step, the timestep spacings and σ at (fractional) timesteps by `np.interp`,
 * the final σ, Karras σ (`_convert_to_karras`) and the inverse map σ → t (`_sigma_to_t`).
 *
 * Notation (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
 * arXiv:2206.00364): the VP training process x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε is rescaled to the variance-exploding
 * form x = x₀ + σ·ε with σ_t = √((1 − ᾱ_t)/ᾱ_t), x = x_t/√ᾱ_t (σ is the noise-to-signal ratio of the VP process).
 *
 * Numerics: diffusers builds these schedules with numpy 1.24 (float64, but float32 wherever a float32 array meets
 * a scalar, by numpy 1.x value-based casting) and torch float32; each function below states which it follows.
 * Where diffusers' two families compute the same quantity differently (log σ, Karras σ, σ → t), both versions are
 * kept side by side: each is the one its family's fixtures match bit for bit.
 */
import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import { alphasCumprod, betasForAlphaBar, betasFromConfig } from "./betas.ts";
import { type FinalSigmasType, SchedulerConfigError } from "./config.ts";
import { npArange, npLinspace, npLogF32, roundHalfEven } from "./numpy.ts";
import type { BetaSchedule } from "./scheduler.ts";

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

/** σ_t = √((1 − ᾱ_t)/ᾱ_t) for every training step, in float32 as torch computes it. */
export function trainingSigmas(alphasCumprod: Float32Array): Float32Array {
  const out = new Float32Array(alphasCumprod.length);
  for (let i = 0; i < out.length; i++) {
    const a = alphasCumprod[i] as number;
    out[i] = Math.sqrt(f32(f32(1 - a) / a));
  }
  return out;
}

/**
 * The σ appended after the last inference step: 0 for "zero", or σ at t = 0 for "sigma_min", computed as diffusers
 * does, `((1 − ᾱ_0)/ᾱ_0) ** 0.5` in numpy float64 over the float32 ratio.
 */
export function finalSigma(type: FinalSigmasType, alphasCumprod: Float32Array): number {
  const a0 = alphasCumprod[0] as number;
  return type === "sigma_min" ? Math.sqrt(f32(f32(1 - a0) / a0)) : 0;
}

// ---------------------------------------------------------------------------------------------------------------
// log σ: numpy's float32 log (k-diffusion family), float64 log of the float32 σ (DPM family)

/** σ_t for every training step (float32) and `np.log` of them (numpy's float32 log, see `npLogF32`). */
export function sigmaTables(ac: Float32Array): { sigmas: Float32Array; logSigmas: Float32Array } {
  const sigmas = trainingSigmas(ac);
  return { sigmas, logSigmas: sigmas.map(npLogF32) };
}

/**
 * `np.log` of the float32 training sigmas (a float32 array), as the DPM family uses it. Kept apart from
 * `sigmaTables`, whose numpy-SIMD float32 log the k-diffusion samplers need: each matches its fixtures.
 */
export function logSigmas(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => Math.log(s));
}

// ---------------------------------------------------------------------------------------------------------------
// Timesteps and σ of the k-diffusion family

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

// ---------------------------------------------------------------------------------------------------------------
// Karras σ: double-double power (k-diffusion family), JS `**` (DPM family)

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

/**
 * Karras et al. 2022 ("Elucidating the Design Space…", eq. 5): σ_i = (σ_max^{1/ρ} + i/(n−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ
 * with ρ = 7, in float64, from the largest to the smallest training sigma. The DPM family's; not merged with
 * `karrasFromSchedule` (double-double power), since swapping the power evaluation could move the last float64 bit.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number, rho = 7): number[] {
  const ramp = npLinspace(0, 1, n);
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}

// ---------------------------------------------------------------------------------------------------------------
// σ → t (`_sigma_to_t`): float32 weight (k-diffusion family), all float32 (DPM2's midpoints),
// float64 weight (DPM family)

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
 * `_sigma_to_t` as the DPM family needs it (float64 weight; the k-diffusion classes use `sigmaToTimestep`, whose
 * float32 weight matches their fixtures): the fractional training timestep whose log σ matches, by linear
 * interpolation of log σ between the two bracketing training steps. numpy 1.x promotion is reproduced: the float64 log σ meets the float32
 * table as float32 when locating the bracket, and as float64 in the interpolation weight.
 */
export function sigmaToT(sigma: number, logSigmaTable: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const logSigma32 = f32(logSigma); // log_sigma - log_sigmas[:, None] is a float32 array under numpy 1.x
  const n = logSigmaTable.length;
  // argmax of cumsum(dists >= 0): the last index where the float32 difference is non-negative (0 if none).
  let count = 0;
  let best = 0;
  let lowIdx = 0;
  for (let i = 0; i < n; i++) {
    if (logSigma32 >= (logSigmaTable[i] as number)) count++;
    if (count > best) {
      best = count;
      lowIdx = i;
    }
  }
  lowIdx = Math.min(lowIdx, n - 2);
  const highIdx = lowIdx + 1;
  const low = logSigmaTable[lowIdx] as number;
  const high = logSigmaTable[highIdx] as number;
  let w = (low - logSigma) / f32(low - high);
  w = Math.min(Math.max(w, 0), 1);
  return (1 - w) * lowIdx + w * highIdx;
}
