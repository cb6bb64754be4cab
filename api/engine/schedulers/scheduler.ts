import type { PredictionType, TimestepSpacing } from "../../../contract/index.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";

/** diffusers' training β schedules (Heun also reads "exp"). */
export const BETA_SCHEDULES = ["linear", "scaled_linear", "squaredcos_cap_v2"] as const;
export type BetaSchedule = (typeof BETA_SCHEDULES)[number];

/**
 * The one contract every sampler implements, after diffusers' SchedulerMixin:
 * `setTimesteps` once per generation, then for each timestep `scaleModelInput` → UNet → `step`.
 * Latents are flat Float32Arrays in NCHW order; a scheduler never sees the shape except through its length.
 */
export interface Scheduler {
  /** Timesteps to feed the UNet, in order, after `setTimesteps`. */
  readonly timesteps: readonly number[];
  /** Standard deviation of the initial noise: latents = randn · initNoiseSigma. */
  readonly initNoiseSigma: number;
  /** diffusers' `order`: UNet calls per step (2 for Heun and DPM2, else 1); img2img keeps timesteps[tStart * order:]. */
  readonly order: number;
  /** diffusers' `set_begin_index` (img2img/inpaint); undefined on classes that lack it in diffusers 0.29.2 (DDIM, PNDM). */
  setBeginIndex?(beginIndex: number): void;
  /** diffusers' `add_noise(original_samples, noise, timesteps=tensor([timestep]))` for one sample, with the class's own index rules and float32 arithmetic. */
  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array;
  setTimesteps(numInferenceSteps: number): void;
  scaleModelInput(sample: Float32Array, timestep: number): Float32Array;
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput;
}

export interface StepOutput {
  prevSample: Float32Array;
  /** The model's estimate of the clean sample x₀ when the algorithm computes one. */
  predOriginalSample?: Float32Array;
}

/**
 * `scheduler/scheduler_config.json` as diffusers reads it. Only keys present in the file are set here:
 * like diffusers' `from_config`, a scheduler class applies its own default for every key the file lacks
 * (e.g. `timestep_spacing` is "leading" for DDIM but "linspace" for DPM-Solver when the file is silent).
 */
export interface SchedulerConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: BetaSchedule;
  trained_betas?: number[] | null;
  prediction_type?: PredictionType;
  timestep_spacing?: TimestepSpacing;
  steps_offset?: number;
  [key: string]: unknown;
}

/** Per-request choices that override the model's config. */
export interface SchedulerOptions {
  /** Karras et al. (2022) sigmas, for the samplers that offer them (diffusers' `use_karras_sigmas`). */
  karrasSigmas?: boolean;
  /** Overrides the config's `timestep_spacing` (diffusers' `from_config(config, timestep_spacing=...)`). */
  timestepSpacing?: TimestepSpacing;
  /** DDIM's η, diffusers' `step(..., eta=η)`: 0 is deterministic DDIM, 1 adds DDPM-like noise each step. */
  eta?: number;
}
