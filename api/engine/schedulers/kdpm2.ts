/**
 * DPM2, after diffusers 0.29.2 `KDPM2DiscreteScheduler` (A1111's "DPM2"): k-diffusion's `sample_dpm_2`
 * (Crowson), the second-order midpoint method of Karras et al. 2022 ("Elucidating the Design Space…", Algorithm 1
 * variant) / DPM-Solver-2 (Lu et al. 2022, arXiv:2206.00927, Algorithm 1 with r = ½ in log σ) on the
 * probability-flow ODE dx/dσ = d(x, σ) = (x − D(x; σ))/σ:
 *   σ_mid = exp(½(log σ_i + log σ_{i+1})) = √(σ_i·σ_{i+1})                   (midpoint in log σ)
 *   x̃ = x_i + (σ_mid − σ_i)·d(x_i, σ_i)                                      (Euler half step)
 *   x_{i+1} = x_i + (σ_{i+1} − σ_i)·d(x̃, σ_mid)                              (full step with the midpoint slope)
 * The last step, to σ = 0, is a plain Euler step (σ_mid = 0), so n steps cost 2n − 1 network evaluations; the
 * midpoint evaluations get the fractional training timestep of σ_mid, interleaved: t_0, t_mid1, t_1, t_mid2, …
 */
import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { type ConfigHead, ConfigReader, readConfigHead } from "./config.ts";
import { roundHalfEven } from "./numpy.ts";
import type { BetaSchedule, SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { denoise, eulerUpdate, odeDerivative, SigmaScheduler } from "./sigma_scheduler.ts";
import { interpolatedSchedule, karrasSchedule, sigmaToTimestepF32 } from "./sigmas.ts";
import { expf, logf } from "./sleef.ts";
import { checkStepCount } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names. */
export interface KDPM2DiscreteConfig extends ConfigHead<BetaSchedule, "epsilon" | "v_prediction"> {
  use_karras_sigmas: boolean;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** `KDPM2DiscreteScheduler.__init__` defaults in diffusers 0.29.2 (note the SD β range as default). */
export const KDPM2_DISCRETE_DEFAULTS: Readonly<KDPM2DiscreteConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "linear",
  trained_betas: null,
  use_karras_sigmas: false,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
});

/** Reads a scheduler config the way `KDPM2DiscreteScheduler.from_config` does, with the per-request options. */
export function resolveKDPM2DiscreteConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): KDPM2DiscreteConfig {
  const r = new ConfigReader(config);
  const d = KDPM2_DISCRETE_DEFAULTS;
  return {
    // diffusers raises NotImplementedError for "sample" in `step`; refused here when the config is read.
    ...readConfigHead(r, d, { predictionTypes: ["epsilon", "v_prediction"] }),
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
  };
}

/** `cat([a[:1], a[1:].repeat_interleave(2), a[-1:]])`. */
function interleaveWithEnds(a: Float32Array): Float32Array {
  const out = [a[0] as number];
  for (const v of a.subarray(1)) out.push(v, v);
  out.push(a[a.length - 1] as number);
  return Float32Array.from(out);
}

export class KDPM2DiscreteScheduler extends SigmaScheduler {
  override readonly order = 2;
  readonly config: Readonly<KDPM2DiscreteConfig>;
  /** σ_mid per step index, laid out like `sigmas` (float32; entry 0 is NaN, as in diffusers). */
  private sigmaInterpolSchedule: Float32Array = new Float32Array(0);
  /** x_i, kept from the half step for the full step. */
  private pendingSample: Float32Array | null = null;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveKDPM2DiscreteConfig(config, options);
    super(c, c.timestep_spacing);
    this.config = Object.freeze(c);
  }

  /** σ_mid per step index (diffusers' `sigmas_interpol`), after `setTimesteps`. */
  get sigmasInterpol(): Float32Array {
    return this.sigmaInterpolSchedule;
  }

  /** Whether the next `step` is the half step (diffusers' `state_in_first_order`). */
  get stateInFirstOrder(): boolean {
    return this.pendingSample === null;
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    let { timesteps, sigmas } = interpolatedSchedule(c, n, this.trainSigmas);
    if (c.use_karras_sigmas) {
      const karras = karrasSchedule(sigmas, n, this.trainLogSigmas);
      sigmas = karras.sigmas;
      timesteps = karras.timesteps.map(roundHalfEven); // float64, rounded to whole timesteps (np.round, half to even)
    }
    sigmas.push(0);
    const s32 = Float32Array.from(sigmas);

    // σ_mid,i = exp(lerp(log σ_i, log σ_{i−1}, ½)) over the rolled table (torch float32: SLEEF log / exp, and
    // lerp's w ≥ ½ branch end − (end − start)·(1 − w)). Entry 0 pairs σ_0 with the final 0 (NaN), the last
    // entry pairs 0 with σ_{n−1} (0).
    const interpol = s32.map((s, i) => {
      const start = logf(s);
      const end = logf(s32[(i + s32.length - 1) % s32.length] as number);
      return expf(f32(end - f32(f32(end - start) * 0.5)));
    });
    const midTimesteps = Array.from(interpol, (s) => sigmaToTimestepF32(s, this.trainLogSigmas));

    const schedule: number[] = [timesteps[0] as number];
    for (let k = 1; k < n; k++) schedule.push(midTimesteps[k] as number, timesteps[k] as number);
    this.resetSteps(schedule, interleaveWithEnds(s32));
    this.sigmaInterpolSchedule = interleaveWithEnds(interpol);
    this.pendingSample = null;
  }

  /** The half step evaluates the network at σ_i, the full step at σ_mid. */
  protected override inputSigma(i: number): number {
    return (this.pendingSample === null ? this.sigmas[i] : this.sigmaInterpolSchedule[i]) as number;
  }

  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    _generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    const pending = this.pendingSample;
    const first = pending === null;
    const sigma = this.sigmas[first ? i : i - 1] as number;
    const sigmaMid = this.sigmaInterpolSchedule[first ? i + 1 : i] as number;
    const sigmaNext = this.sigmas[first ? i + 1 : i] as number;

    const sigmaInput = first ? sigma : sigmaMid;
    const denoised = denoise(this.config.prediction_type, modelOutput, sample, sigmaInput);
    const derivative = odeDerivative(sample, denoised, sigmaInput);
    let prevSample: Float32Array;
    if (pending === null) {
      this.pendingSample = sample;
      prevSample = eulerUpdate(sample, derivative, f32(sigmaMid - sigma));
    } else {
      this.pendingSample = null;
      prevSample = eulerUpdate(pending, derivative, f32(sigmaNext - sigma));
    }
    this.steps.advance();
    return { prevSample };
  }
}
