/**
 * How a `scheduler/scheduler_config.json` becomes constructor arguments, as diffusers' `ConfigMixin.from_config`
 * does it: the keys the file sets, per-request overrides, typed reads that fall back to the class defaults, and the
 * checks of settings and options that this implementation refuses.
 */
import {
  PREDICTION_TYPES,
  type PredictionType,
  TIMESTEP_SPACINGS,
  type TimestepSpacing,
} from "../../../contract/index.ts";
import {
  BETA_SCHEDULES,
  type BetaSchedule,
  type SchedulerConfig,
  type SchedulerOptions,
} from "./scheduler.ts";

export const FINAL_SIGMAS_TYPES = ["zero", "sigma_min"] as const;
export type FinalSigmasType = (typeof FINAL_SIGMAS_TYPES)[number];

export class SchedulerConfigError extends Error {
  override name = "SchedulerConfigError";
}

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
 * The keys every class's config shares: the training schedule it starts with (in diffusers' order) and what the
 * network predicts. `S` and `P` narrow `beta_schedule` and `prediction_type` to the values the class takes.
 */
export interface ConfigHead<S extends string = BetaSchedule, P extends PredictionType = PredictionType> {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: S;
  trained_betas: number[] | null;
  prediction_type: P;
}

/**
 * Reads those keys, falling back to the class defaults `d`; `accepted` lists the values the class takes where they
 * differ from diffusers' lists (Heun adds the "exp" β schedule; some classes refuse "sample" prediction).
 */
export function readConfigHead<S extends string = BetaSchedule, P extends PredictionType = PredictionType>(
  r: ConfigReader,
  d: Omit<ConfigHead<S, P>, "trained_betas">,
  accepted: { betaSchedules?: readonly S[]; predictionTypes?: readonly P[] } = {},
): ConfigHead<S, P> {
  const betaSchedules = accepted.betaSchedules ?? (BETA_SCHEDULES as unknown as readonly S[]);
  const predictionTypes = accepted.predictionTypes ?? (PREDICTION_TYPES as unknown as readonly P[]);
  return {
    num_train_timesteps: r.integer("num_train_timesteps", d.num_train_timesteps),
    beta_start: r.number("beta_start", d.beta_start),
    beta_end: r.number("beta_end", d.beta_end),
    beta_schedule: r.oneOf("beta_schedule", betaSchedules, d.beta_schedule),
    trained_betas: r.numberArray("trained_betas"),
    prediction_type: r.oneOf("prediction_type", predictionTypes, d.prediction_type),
  };
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

/** The dynamic-thresholding keys of DDIM, LCM and the DPM family (read for the config, refused when on). */
export interface ThresholdingConfig {
  thresholding: boolean;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
}

/** Reads those keys, falling back to the class defaults `d`; `refuseThresholding` then checks the first. */
export function readThresholding(r: ConfigReader, d: ThresholdingConfig): ThresholdingConfig {
  return {
    thresholding: r.boolean("thresholding", d.thresholding),
    dynamic_thresholding_ratio: r.number("dynamic_thresholding_ratio", d.dynamic_thresholding_ratio),
    sample_max_value: r.number("sample_max_value", d.sample_max_value),
  };
}

/** Dynamic thresholding needs the per-image layout (a quantile over C·H·W) and is for pixel-space models only. */
export function refuseThresholding(thresholding: boolean): void {
  if (thresholding) {
    throw new SchedulerConfigError("thresholding is not supported (it is for pixel-space models)");
  }
}
