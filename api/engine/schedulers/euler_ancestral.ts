/**
 * Euler ancestral, after diffusers 0.29.2 `EulerAncestralDiscreteScheduler` (A1111's "Euler a"): k-diffusion's
 * `sample_euler_ancestral` (Crowson), the ancestral sampler of Ho et al. 2020 written in σ form: an Euler step of
 * the probability-flow ODE down to σ_down, then fresh noise of standard deviation σ_up, where σ_down² + σ_up² =
 * σ_{i+1}² and σ_up is the DDPM posterior standard deviation (Song et al. 2021, "Denoising Diffusion Implicit
 * Models", eq. 16 with η = 1, in VE variables):
 *   σ_up = √(σ_{i+1}²·(σ_i² − σ_{i+1}²)/σ_i²),   σ_down = √(σ_{i+1}² − σ_up²)
 *   x_{i+1} = x + (σ_down − σ_i)·(x − D(x; σ_i))/σ_i + σ_up·z,   z ~ N(0, I) from the step's generator.
 * diffusers 0.29.2 has no Karras option for this class (it only arrives in later releases).
 */
import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { type ConfigHead, ConfigReader, readConfigHead, SchedulerConfigError } from "./config.ts";
import type { BetaSchedule, SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { denoise, eulerUpdate, odeDerivative, SigmaScheduler } from "./sigma_scheduler.ts";
import { interpolatedSchedule } from "./sigmas.ts";
import { checkStepCount } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names. */
export interface EulerAncestralDiscreteConfig extends ConfigHead<BetaSchedule, "epsilon" | "v_prediction"> {
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
}

/** `EulerAncestralDiscreteScheduler.__init__` defaults in diffusers 0.29.2. */
export const EULER_ANCESTRAL_DISCRETE_DEFAULTS: Readonly<EulerAncestralDiscreteConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  timestep_spacing: "linspace",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
});

/** Reads a scheduler config the way `EulerAncestralDiscreteScheduler.from_config` does. */
export function resolveEulerAncestralDiscreteConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): EulerAncestralDiscreteConfig {
  if (options.karrasSigmas) {
    throw new SchedulerConfigError("Euler a has no Karras sigmas in diffusers 0.29.2 (no use_karras_sigmas)");
  }
  const r = new ConfigReader(config);
  const d = EULER_ANCESTRAL_DISCRETE_DEFAULTS;
  return {
    // diffusers raises NotImplementedError for "sample" in `step`; refused here when the config is read.
    ...readConfigHead(r, d, { predictionTypes: ["epsilon", "v_prediction"] }),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
  };
}

export class EulerAncestralDiscreteScheduler extends SigmaScheduler {
  readonly config: Readonly<EulerAncestralDiscreteConfig>;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolveEulerAncestralDiscreteConfig(config, options);
    super(c, c.timestep_spacing);
    this.config = Object.freeze(c);
  }

  setTimesteps(numInferenceSteps: number): void {
    checkStepCount(numInferenceSteps);
    const { timesteps, sigmas } = interpolatedSchedule(this.config, numInferenceSteps, this.trainSigmas);
    sigmas.push(0);
    this.resetSteps(timesteps, Float32Array.from(sigmas));
  }

  /** One ancestral step; draws `generator.randn` once per call, as diffusers does, also on the last step. */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    if (generator === undefined) throw new Error("Euler a needs the generator to draw its per-step noise");
    const sigmaFrom = this.sigmas[i] as number;
    const sigmaTo = this.sigmas[i + 1] as number;
    const denoised = denoise(this.config.prediction_type, modelOutput, sample, sigmaFrom);

    const fromSq = f32(sigmaFrom * sigmaFrom);
    const toSq = f32(sigmaTo * sigmaTo);
    const sigmaUp = f32(Math.sqrt(f32(f32(toSq * f32(fromSq - toSq)) / fromSq)));
    const sigmaDown = f32(Math.sqrt(f32(toSq - f32(sigmaUp * sigmaUp))));
    const dt = f32(sigmaDown - sigmaFrom);

    const prevSample = eulerUpdate(sample, odeDerivative(sample, denoised, sigmaFrom), dt);
    const noise = generator.randn([sample.length]);
    for (let k = 0; k < sample.length; k++) {
      prevSample[k] = (prevSample[k] as number) + f32((noise[k] as number) * sigmaUp);
    }
    this.steps.advance();
    return { prevSample, predOriginalSample: denoised };
  }
}
