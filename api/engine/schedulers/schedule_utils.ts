/**
 * Shared pieces of the diffusers schedulers: how a `scheduler_config.json` becomes constructor arguments
 * (`ConfigMixin.from_config`), numpy's float64 `linspace` / `arange` / `round`, and
 * the sigma-space helpers that diffusers copies between schedulers (`_convert_to_karras`, `_sigma_to_t`).
 * Everything reproduces the exact float64 / float32 operation order of diffusers 0.29.2 on numpy 1.x and torch.
 */
import { TIMESTEP_SPACINGS, type TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { SchedulerConfig, SchedulerOptions } from "./scheduler.ts";

export const FINAL_SIGMAS_TYPES = ["zero", "sigma_min"] as const;
export type FinalSigmasType = (typeof FINAL_SIGMAS_TYPES)[number];

export class SchedulerConfigError extends Error {
  override name = "SchedulerConfigError";
}

// ---------------------------------------------------------------------------------------------------------------
// Configuration

/**
 * The keys that `from_config` would hand to the constructor: keys listed in `_use_default_values` were not in
 * the original file (the class default was used when it was saved), so they are dropped and the new class applies
 * its own default; `null` reads as "absent" too. Private `_…` keys never reach a constructor.
 */
export function presentConfigKeys(config: SchedulerConfig): Map<string, unknown> {
  const defaulted = Array.isArray(config._use_default_values)
    ? new Set(config._use_default_values as unknown[])
    : null;
  const out = new Map<string, unknown>();
  for (const [key, value] of Object.entries(config)) {
    if (key.startsWith("_") || value === null || value === undefined) continue;
    if (defaulted?.has(key)) continue;
    out.set(key, value);
  }
  return out;
}

/** `Class.from_config(config, **overrides)`: the overrides win over the file, including keys it marks as defaulted. */
export function withOverrides(config: SchedulerConfig, overrides: Record<string, unknown>): SchedulerConfig {
  const out: SchedulerConfig = {};
  for (const [key, value] of presentConfigKeys(config)) out[key] = value;
  for (const [key, value] of Object.entries(overrides)) out[key] = value;
  return out;
}

/** Typed reads of the present keys, falling back to the class default and rejecting values of the wrong kind. */
export class ConfigReader {
  readonly present: Map<string, unknown>;

  constructor(config: SchedulerConfig) {
    this.present = presentConfigKeys(config);
  }

  number(key: string, fallback: number): number {
    const v = this.present.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== "number" || Number.isNaN(v))
      throw new SchedulerConfigError(`${key} must be a number, got ${String(v)}`);
    return v;
  }

  integer(key: string, fallback: number): number {
    const v = this.number(key, fallback);
    if (!Number.isInteger(v)) throw new SchedulerConfigError(`${key} must be an integer, got ${v}`);
    return v;
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.present.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== "boolean")
      throw new SchedulerConfigError(`${key} must be true or false, got ${String(v)}`);
    return v;
  }

  string(key: string, fallback: string): string;
  string(key: string, fallback: null): string | null;
  string(key: string, fallback: string | null): string | null {
    const v = this.present.get(key);
    if (v === undefined) return fallback;
    if (typeof v !== "string") throw new SchedulerConfigError(`${key} must be a string, got ${String(v)}`);
    return v;
  }

  oneOf<T extends string>(key: string, allowed: readonly T[], fallback: T): T {
    const v = this.string(key, fallback);
    if (!(allowed as readonly string[]).includes(v)) {
      throw new SchedulerConfigError(`${key} "${v}" is not supported; choose one of ${allowed.join(", ")}`);
    }
    return v as T;
  }

  numberArray(key: string): number[] | null {
    const v = this.present.get(key);
    if (v === undefined) return null;
    if (!Array.isArray(v) || !v.every((x) => typeof x === "number")) {
      throw new SchedulerConfigError(`${key} must be an array of numbers`);
    }
    return v as number[];
  }

  /**
   * `timestep_spacing`, unless the request overrides it (`from_config(config, timestep_spacing=...)`): with an
   * override the file's value is not even read.
   */
  timestepSpacing(override: TimestepSpacing | undefined, fallback: TimestepSpacing): TimestepSpacing {
    return override ?? this.oneOf("timestep_spacing", TIMESTEP_SPACINGS, fallback);
  }

  /** `use_karras_sigmas`, unless the request overrides it (`SchedulerOptions.karrasSigmas`). */
  karrasSigmas(override: boolean | undefined, fallback: boolean): boolean {
    return override ?? this.boolean("use_karras_sigmas", fallback);
  }

  /** `final_sigmas_type`: the σ after the last step, 0 ("zero") or σ at t = 0 ("sigma_min"). */
  finalSigmasType(fallback: FinalSigmasType): FinalSigmasType {
    return this.oneOf("final_sigmas_type", FINAL_SIGMAS_TYPES, fallback);
  }
}

/**
 * `SchedulerOptions.timestepSpacing`, checked (it may come from an untyped request). Only the DPM-Solver and
 * UniPC classes check it; the others pass an unknown spacing through unchecked, as they always have.
 */
export function timestepSpacingOption(options: SchedulerOptions): TimestepSpacing | undefined {
  const v = options.timestepSpacing;
  if (v === undefined) return undefined;
  if (!(TIMESTEP_SPACINGS as readonly string[]).includes(v)) {
    throw new SchedulerConfigError(
      `timestep spacing "${String(v)}" is not supported; choose one of ${TIMESTEP_SPACINGS.join(", ")}`,
    );
  }
  return v;
}

/** Dynamic thresholding needs the per-image layout (a quantile over C·H·W) and is for pixel-space models only. */
export function refuseThresholding(thresholding: boolean): void {
  if (thresholding) {
    throw new SchedulerConfigError("thresholding is not supported (it is for pixel-space models)");
  }
}

/** The check at the top of every `setTimesteps`: a whole number of steps, at least one. */
export function checkStepCount(numInferenceSteps: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new RangeError(`numInferenceSteps must be a positive integer, got ${numInferenceSteps}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// numpy

/** numpy's `round` / `np.around`: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `np.linspace(start, stop, num)` in float64 (numpy 1.x: `arange(num) * step + start`, last element = stop). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  const div = num - 1;
  const delta = stop - start;
  const out = new Array<number>(num);
  if (div <= 0) {
    for (let i = 0; i < num; i++) out[i] = i * delta + start;
    return out;
  }
  const step = delta / div;
  for (let i = 0; i < num; i++) out[i] = (step === 0 ? (i / div) * delta : i * step) + start;
  if (num > 1) out[num - 1] = stop;
  return out;
}

/**
 * `np.arange(start, stop, step)` with a float step: length ⌈(stop − start) / step⌉, element i = start + i·δ where
 * δ = (start + step) − start, as numpy's `DOUBLE_fill` recomputes it.
 */
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(length);
  if (length === 0) return out;
  out[0] = start;
  if (length === 1) return out;
  const second = start + step;
  out[1] = second;
  const delta = second - start;
  for (let i = 2; i < length; i++) out[i] = start + i * delta;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Sigma space (σ = √((1 − ᾱ)/ᾱ), the noise-to-signal ratio of the VP process)

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

/**
 * `np.log` of the float32 training sigmas (a float32 array), as the DPM family uses it. Kept apart from
 * `sigmaTables` in sigma_schedule.ts, whose numpy-SIMD float32 log the k-diffusion samplers need: each matches its fixtures.
 */
export function logSigmas(sigmas: Float32Array): Float32Array {
  return sigmas.map((s) => Math.log(s));
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
