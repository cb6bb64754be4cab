/**
 * What diffusers 0.29.2's k-diffusion-style samplers (Euler, Euler a, LMS, Heun, DPM2) share beyond their σ
 * schedules (sigmas.ts), written once: `index_for_timestep` and the step-index bookkeeping, the input scaling, the
 * data prediction and the Euler update, and their common state (`SigmaScheduler`).
 *
 * In the variance-exploding form x = x₀ + σ·ε of Karras et al. 2022 (arXiv:2206.00364; see sigmas.ts) the
 * probability-flow ODE is
 *   dx/dσ = (x − D(x; σ))/σ                                                (Karras eq. 3 with σ(t) = t)
 * with the denoiser D = x₀-estimate. The network was trained on x_t = x/√(σ² + 1), hence c_in = 1/√(σ² + 1).
 */
import type { PredictionType, TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import type { Scheduler, StepOutput } from "./scheduler.ts";
import { kAlphasCumprod, sigmaTables, type TrainingScheduleConfig } from "./sigmas.ts";
import { checkNoiseInputs, checkSameLength, findTimestepIndex, StepIndex } from "./step_index.ts";

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
  /** UNet calls per step; Heun and DPM2 evaluate twice and say 2. */
  readonly order: number = 1;
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

  /**
   * The forward process in VE form, x_σ = x₀ + σ·ε (float32 `original + noise * sigma`), at σ = sigmas[i] with i
   * from `StepIndex.forAddNoise` (for Heun / DPM2 an index into their doubled schedule, like diffusers').
   */
  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    checkNoiseInputs(this.timestepSchedule, original, noise);
    const sigma = this.sigmaSchedule[this.steps.forAddNoise(this.timestepSchedule, timestep)] as number;
    const out = new Float32Array(original.length);
    for (let k = 0; k < out.length; k++) out[k] = (original[k] as number) + f32((noise[k] as number) * sigma);
    return out;
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
