/**
 * What DPM-Solver++ multistep, DPM-Solver++ singlestep and UniPC share (diffusers copies this code between
 * `DPMSolverMultistepScheduler`, `DPMSolverSinglestepScheduler` and `UniPCMultistepScheduler`): the solver
 * configuration keys, the integer timestep / σ schedule of `set_timesteps`, the (α_t, σ_t, λ_t) of a noise-to-signal
 * ratio, the data prediction x_θ, DPM-Solver++'s first-order step, and the schedule state and step bookkeeping
 * (`DpmFamilyScheduler`, as `SigmaScheduler` is for the k-diffusion samplers; the solvers stay in their files).
 *
 * Notation as in dpmsolver_multistep.ts: the schedule stores s = σ_t/α_t; α_t = 1/√(s² + 1), σ_t = s·α_t,
 * λ_t = log(α_t/σ_t). Every 0-d tensor and elementwise operation is one float32 operation, with torch's SLEEF
 * `log`/`exp` (sleef.ts); the schedule follows numpy float64 where diffusers uses numpy.
 */
import type { PredictionType, TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { type ConfigReader, SchedulerConfigError } from "./config.ts";
import { npArange, npLinspace, roundHalfEven } from "./numpy.ts";
import type { Scheduler, StepOutput } from "./scheduler.ts";
import {
  kAlphasCumprod,
  karrasSigmas,
  logSigmas,
  sigmaToT,
  type TrainingScheduleConfig,
  trainingSigmas,
} from "./sigmas.ts";
import { expf, logf } from "./sleef.ts";
import { checkNoiseInputs, checkStepInputs, StepIndex, type UnknownTimestep } from "./step_index.ts";

// ---------------------------------------------------------------------------------------------------------------
// Configuration

/** DPM-Solver's `solver_type`; diffusers maps the DEIS / UniPC names onto "midpoint". */
export function readDpmSolverType(r: ConfigReader, fallback: "midpoint" | "heun"): "midpoint" | "heun" {
  let solverType = r.string("solver_type", fallback);
  if (solverType === "logrho" || solverType === "bh1" || solverType === "bh2") solverType = "midpoint";
  if (solverType !== "midpoint" && solverType !== "heun") {
    throw new SchedulerConfigError(`solver_type "${solverType}" is not supported; choose midpoint or heun`);
  }
  return solverType;
}

/** DPM-Solver's `solver_order`: 1, 2 or 3. */
export function readDpmSolverOrder(r: ConfigReader, fallback: 1 | 2 | 3): 1 | 2 | 3 {
  const order = r.integer("solver_order", fallback);
  if (order !== 1 && order !== 2 && order !== 3)
    throw new SchedulerConfigError(`solver_order must be 1, 2 or 3, got ${order}`);
  return order;
}

/** "learned" / "learned_range" variance means a 6-channel UNet output (mean and variance), which is not supported. */
export function refuseLearnedVariance(varianceType: string | null): void {
  if (varianceType === "learned" || varianceType === "learned_range") {
    throw new SchedulerConfigError(
      `variance_type "${varianceType}" (a 6-channel UNet output) is not supported`,
    );
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Schedule

/** α_t = 1/√(s² + 1), σ_t = s·α_t from the noise-to-signal ratio s, as float32 tensor ops. */
export function alphaSigma(s: number): [alpha: number, sigma: number] {
  const alpha = f32(1 / f32(Math.sqrt(f32(f32(s * s) + 1))));
  return [alpha, f32(s * alpha)];
}

/** λ = log α − log σ (float32; λ = +∞ at σ = 0, the end of a "zero" final sigma). */
export function lambdaOf(alpha: number, sigma: number): number {
  return f32(logf(alpha) - logf(sigma));
}

/** α, σ and λ of one point of the schedule (float32). */
export interface LambdaPoint {
  alpha: number;
  sigma: number;
  lambda: number;
}

/** The point with noise-to-signal ratio s. */
export function lambdaPoint(s: number): LambdaPoint {
  const [alpha, sigma] = alphaSigma(s);
  return { alpha, sigma, lambda: lambdaOf(alpha, sigma) };
}

/** λ_t of every training step, from α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) (`self.lambda_t`, float32). */
export function trainingLambdas(alphasCumprod: Float32Array): Float32Array {
  return alphasCumprod.map((a) => lambdaOf(f32(Math.sqrt(a)), f32(Math.sqrt(f32(1 - a)))));
}

/**
 * The number of training timesteps left after clipping where λ falls below `lambda_min_clipped` (needed by the
 * cosine schedule, whose λ → −∞): searchsorted over λ in increasing order, with the threshold rounded to float32
 * like the table.
 */
export function unclippedTimesteps(trainLambdas: Float32Array, lambdaMinClipped: number): number {
  const threshold = f32(lambdaMinClipped);
  let clippedIdx = 0;
  for (let i = trainLambdas.length - 1; i >= 0 && (trainLambdas[i] as number) < threshold; i--) clippedIdx++;
  return trainLambdas.length - clippedIdx;
}

/**
 * The n integer timesteps of `set_timesteps`, largest first, over the first `lastTimestep` training steps, for
 * the timestep spacings of Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed",
 * Table 2 (these classes space n + 1 points and drop the last, unlike DDIM):
 *   linspace: round(linspace(0, last − 1, n + 1)) reversed, without its final 0
 *   leading:  (n … 1)·⌊last/(n + 1)⌋ + steps_offset
 *   trailing: round(arange(last, 0, −T/n)) − 1
 */
export function dpmTimesteps(
  spacing: TimestepSpacing,
  numTrainTimesteps: number,
  lastTimestep: number,
  n: number,
  stepsOffset: number,
): number[] {
  if (spacing === "linspace") {
    return npLinspace(0, lastTimestep - 1, n + 1)
      .map(roundHalfEven)
      .reverse()
      .slice(0, -1);
  }
  if (spacing === "leading") {
    const ratio = Math.floor(lastTimestep / (n + 1));
    const out: number[] = [];
    for (let i = n; i >= 1; i--) out.push(i * ratio + stepsOffset);
    return out;
  }
  return npArange(lastTimestep, 0, -numTrainTimesteps / n).map((t) => roundHalfEven(t) - 1);
}

/**
 * σ/α at each timestep (float64, before the final σ is appended), with the timesteps that go with them:
 *   default: the training table at the integer timesteps (np.interp there is the entry itself, clamped);
 *   karras:  Karras et al. 2022, eq. 5 (ρ = 7) between the extreme training sigmas; the timesteps follow the
 *            sigmas (round(`_sigma_to_t`));
 *   luLambdas (DPM-Solver multistep only): uniform steps in log σ (= −λ) between the extremes, the "logSNR"
 *            spacing of DPM-Solver, timesteps again from the sigmas. Karras wins when both are set.
 */
export function dpmSigmas(
  timesteps: number[],
  trainSigmas: Float32Array,
  n: number,
  choice: { karras: boolean; luLambdas?: boolean },
): { timesteps: number[]; sigmas: number[] } {
  const table = trainSigmas;
  if (choice.karras || choice.luLambdas) {
    const logTable = logSigmas(table);
    let sigmas: number[];
    if (choice.karras) {
      sigmas = karrasSigmas(table[0] as number, table[table.length - 1] as number, n);
    } else {
      const hi = logTable[logTable.length - 1] as number;
      const lo = logTable[0] as number;
      sigmas = npLinspace(0, 1, n).map((r) => Math.exp(hi + r * (lo - hi)));
    }
    return { timesteps: sigmas.map((s) => roundHalfEven(sigmaToT(s, logTable))), sigmas };
  }
  return {
    timesteps,
    sigmas: timesteps.map((t) => table[Math.min(Math.max(t, 0), table.length - 1)] as number),
  };
}

/** diffusers' `index_for_timestep` in these classes: a timestep not in the schedule maps to the last index. */
const lastIndexForUnknown: UnknownTimestep = (timesteps) => timesteps.length - 1;

// ---------------------------------------------------------------------------------------------------------------
// Shared scheduler state

/**
 * State and bookkeeping common to the three classes: ᾱ and the training σ/α table, the timestep / σ schedule,
 * `init_noise_sigma` = 1 and the identity `scale_model_input` (the UNet sees x_t as is), and the step index (found
 * from the first timestep seen, or `setBeginIndex`, then advanced by one per `step`).
 */
export abstract class DpmFamilyScheduler implements Scheduler {
  readonly initNoiseSigma = 1.0;
  readonly order = 1;
  /** ᾱ_t for t = 0…T−1 (float32). */
  readonly alphasCumprod: Float32Array;
  /** σ_t/α_t = √((1 − ᾱ_t)/ᾱ_t) for every training step (float32). */
  protected readonly trainSigmas: Float32Array;
  protected timestepSchedule: number[] = [];
  protected sigmaSchedule: Float32Array = new Float32Array(0);
  /** Subclasses call `steps.advance()` at the end of `step`. */
  protected readonly steps = new StepIndex(lastIndexForUnknown);

  /** With a zero terminal SNR, ᾱ_{T−1} = 0 would make σ/α infinite: diffusers pins it to 2⁻²⁴ (`kAlphasCumprod`). */
  protected constructor(training: TrainingScheduleConfig) {
    this.alphasCumprod = kAlphasCumprod(training);
    this.trainSigmas = trainingSigmas(this.alphasCumprod);
  }

  abstract setTimesteps(numInferenceSteps: number): void;
  abstract step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput;

  /** Timesteps fed to the UNet (integers, as diffusers' int64 schedule), after `setTimesteps`. */
  get timesteps(): readonly number[] {
    return this.timestepSchedule;
  }

  /** Noise-to-signal ratio σ_t/α_t per inference step plus the final one (float32), after `setTimesteps`. */
  get sigmas(): Float32Array {
    return this.sigmaSchedule;
  }

  get numInferenceSteps(): number | null {
    return this.timestepSchedule.length > 0 ? this.timestepSchedule.length : null;
  }

  /** For img2img: the first `step` call uses this index instead of looking its timestep up. */
  setBeginIndex(beginIndex: number): void {
    this.steps.setBegin(beginIndex);
  }

  scaleModelInput(sample: Float32Array, _timestep: number): Float32Array {
    return sample;
  }

  /**
   * The forward process q(x_t | x₀) = N(α_t·x₀, σ_t²·I): x_t = α_t·x₀ + σ_t·ε, with α_t = 1/√(s² + 1), σ_t = s·α_t
   * from s = sigmas[i] (`_sigma_to_alpha_sigma_t`, float32) and i from `StepIndex.forAddNoise`.
   */
  addNoise(original: Float32Array, noise: Float32Array, timestep: number): Float32Array {
    checkNoiseInputs(this.timestepSchedule, original, noise);
    const [alpha, sigma] = alphaSigma(
      this.sigmaSchedule[this.steps.forAddNoise(this.timestepSchedule, timestep)] as number,
    );
    const out = new Float32Array(original.length);
    for (let k = 0; k < out.length; k++) {
      out[k] = f32(alpha * (original[k] as number)) + f32(sigma * (noise[k] as number));
    }
    return out;
  }

  /** Stores a new schedule (σ rounded to float32, with the final σ appended) and resets the step index. */
  protected setSchedule(timesteps: number[], sigmas: number[]): void {
    this.sigmaSchedule = Float32Array.from(sigmas);
    this.timestepSchedule = timesteps;
    this.steps.reset();
  }

  /** Validates a `step` call and returns the current step index. */
  protected beginStep(modelOutput: Float32Array, timestep: number, sample: Float32Array): number {
    checkStepInputs(this.numInferenceSteps, modelOutput, sample);
    return this.steps.forStep(this.timestepSchedule, timestep);
  }

  /** α, σ, λ at sigma index j (float32). */
  protected point(j: number): LambdaPoint {
    return lambdaPoint(this.sigmaSchedule[j] as number);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Updates

/**
 * The data prediction x_θ(x_t, t) that DPM-Solver++ (and UniPC with predict_x0) integrates, from whatever the
 * network predicts, at the point with noise-to-signal ratio `s` = σ_t/α_t:
 *   ε-prediction: x_θ = (x_t − σ_t·ε_θ)/α_t
 *   v-prediction (v = α_t·ε − σ_t·x_0, Salimans & Ho 2022): x_θ = α_t·x_t − σ_t·v_θ
 *   sample:       x_θ is the output itself.
 */
export function dataPrediction(
  predictionType: PredictionType,
  s: number,
  modelOutput: Float32Array,
  sample: Float32Array,
): Float32Array {
  const [alpha, sigma] = alphaSigma(s);
  const out = new Float32Array(sample.length);
  switch (predictionType) {
    case "epsilon":
      for (let k = 0; k < out.length; k++) {
        out[k] = f32((sample[k] as number) - f32(sigma * (modelOutput[k] as number))) / alpha;
      }
      break;
    case "v_prediction":
      for (let k = 0; k < out.length; k++) {
        out[k] = f32(alpha * (sample[k] as number)) - f32(sigma * (modelOutput[k] as number));
      }
      break;
    case "sample":
      out.set(modelOutput);
      break;
  }
  return out;
}

/**
 * DPM-Solver++(1), equivalent to DDIM (η = 0), from s to t:
 *   x_t = (σ_t/σ_s)·x_s − α_t·(e^{−h} − 1)·x_θ(x_s, s),  h = λ_t − λ_s.
 */
export function dpmSolverFirstOrderUpdate(
  x0: Float32Array,
  sample: Float32Array,
  t: LambdaPoint,
  s: LambdaPoint,
): Float32Array {
  const h = f32(t.lambda - s.lambda);
  const sampleCoef = f32(t.sigma / s.sigma);
  const x0Coef = f32(t.alpha * f32(expf(-h) - 1));
  const out = new Float32Array(sample.length);
  for (let k = 0; k < out.length; k++) {
    out[k] = f32(sampleCoef * (sample[k] as number)) - f32(x0Coef * (x0[k] as number));
  }
  return out;
}
