/**
 * Euler, after diffusers 0.29.2 `EulerDiscreteScheduler` (A1111's "Euler"): Algorithm 2 of Karras et al. 2022,
 * "Elucidating the Design Space of Diffusion-Based Generative Models" (arXiv:2206.00364), i.e. the explicit Euler
 * method on the probability-flow ODE dx/dσ = (x − D(x; σ))/σ, with its optional "churn" (stochastic σ increase).
 * The σ machinery is shared with the other k-diffusion samplers (sigmas.ts, sigma_scheduler.ts).
 *
 * Numerics: the schedule follows numpy (float64, float32 where diffusers casts), every elementwise step is one
 * float32 torch op, rounded in the same order as diffusers.
 */
import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import { torchLinspaceF32 } from "./betas.ts";
import { type ConfigHead, ConfigReader, type FinalSigmasType, readConfigHead } from "./config.ts";
import { npLogF32 } from "./numpy.ts";
import type { SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";
import { denoise, eulerUpdate, odeDerivative, SigmaScheduler } from "./sigma_scheduler.ts";
import { finalSigma, interpSigmas, karrasSchedule, spacedTimesteps } from "./sigmas.ts";
import { expf, logf } from "./sleef.ts";
import { checkStepCount } from "./step_index.ts";

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface EulerDiscreteConfig extends ConfigHead {
  interpolation_type: "linear" | "log_linear";
  use_karras_sigmas: boolean;
  sigma_min: number | null;
  sigma_max: number | null;
  timestep_spacing: TimestepSpacing;
  timestep_type: "discrete" | "continuous";
  steps_offset: number;
  rescale_betas_zero_snr: boolean;
  final_sigmas_type: FinalSigmasType;
}

/** `EulerDiscreteScheduler.__init__` defaults in diffusers 0.29.2. */
export const EULER_DISCRETE_DEFAULTS: Readonly<EulerDiscreteConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  prediction_type: "epsilon",
  interpolation_type: "linear",
  use_karras_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_spacing: "linspace",
  timestep_type: "discrete",
  steps_offset: 0,
  rescale_betas_zero_snr: false,
  final_sigmas_type: "zero",
});

/** Reads a scheduler config the way `EulerDiscreteScheduler.from_config` does, with the per-request options. */
export function resolveEulerDiscreteConfig(
  config: SchedulerConfig,
  options: SchedulerOptions = {},
): EulerDiscreteConfig {
  const r = new ConfigReader(config);
  const d = EULER_DISCRETE_DEFAULTS;
  const optionalNumber = (key: string): number | null => (r.present.has(key) ? r.number(key, 0) : null);
  return {
    ...readConfigHead(r, d),
    interpolation_type: r.oneOf(
      "interpolation_type",
      ["linear", "log_linear"] as const,
      d.interpolation_type,
    ),
    use_karras_sigmas: r.karrasSigmas(options.karrasSigmas, d.use_karras_sigmas),
    sigma_min: optionalNumber("sigma_min"),
    sigma_max: optionalNumber("sigma_max"),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    timestep_type: r.oneOf("timestep_type", ["discrete", "continuous"] as const, d.timestep_type),
    steps_offset: r.integer("steps_offset", d.steps_offset),
    rescale_betas_zero_snr: r.boolean("rescale_betas_zero_snr", d.rescale_betas_zero_snr),
    final_sigmas_type: r.finalSigmasType(d.final_sigmas_type),
  };
}

/**
 * The stochastic part of Karras Algorithm 2 (`step(s_churn, s_tmin, s_tmax, s_noise)` in diffusers): at
 * σ ∈ [s_tmin, s_tmax] the sample is first pushed up to σ̂ = σ(1 + γ), γ = min(s_churn/N, √2 − 1), by adding
 * fresh noise of variance σ̂² − σ². The defaults (s_churn = 0) give the deterministic Euler sampler.
 */
export interface EulerChurn {
  sChurn: number;
  sTmin: number;
  sTmax: number;
  sNoise: number;
}

export const EULER_CHURN_DEFAULTS: Readonly<EulerChurn> = Object.freeze({
  sChurn: 0,
  sTmin: 0,
  sTmax: Number.POSITIVE_INFINITY,
  sNoise: 1,
});

export class EulerDiscreteScheduler extends SigmaScheduler {
  readonly config: Readonly<EulerDiscreteConfig>;
  readonly churn: Readonly<EulerChurn>;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}, churn: Partial<EulerChurn> = {}) {
    const c = resolveEulerDiscreteConfig(config, options);
    super(c, c.timestep_spacing);
    this.config = Object.freeze(c);
    this.churn = Object.freeze({ ...EULER_CHURN_DEFAULTS, ...churn });
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    checkStepCount(numInferenceSteps);
    const n = numInferenceSteps;
    const table = this.trainSigmas;
    let timesteps = spacedTimesteps(c.timestep_spacing, c.num_train_timesteps, n, c.steps_offset);

    let sigmas: number[];
    if (c.interpolation_type === "linear") {
      sigmas = interpSigmas(timesteps, table);
    } else {
      // Uniform in log σ from σ_max to σ_min (n + 1 points, diffusers' torch.linspace(...).exp()); note that
      // diffusers still appends the final σ, so the last step ends at σ_min and one σ is never used.
      const hi = npLogF32(table[table.length - 1] as number);
      const lo = npLogF32(table[0] as number);
      sigmas = Array.from(torchLinspaceF32(hi, lo, n + 1), expf);
    }
    if (c.use_karras_sigmas) {
      const karras = karrasSchedule(sigmas, n, this.trainLogSigmas, c.sigma_min, c.sigma_max);
      sigmas = karras.sigmas;
      timesteps = karras.timesteps.map(f32);
    }
    sigmas.push(finalSigma(c.final_sigmas_type, this.alphasCumprod));
    const sigmas32 = Float32Array.from(sigmas);

    if (c.timestep_type === "continuous" && c.prediction_type === "v_prediction") {
      // EDM-style conditioning c_noise = ¼·ln σ (Karras Table 1) instead of a training timestep.
      timesteps = Array.from(sigmas32.subarray(0, sigmas32.length - 1), (s) => f32(f32(0.25) * logf(s)));
    }
    this.resetSteps(timesteps, sigmas32);
  }

  /**
   * Karras Algorithm 2, one step from σ_i to σ_{i+1}:
   *   σ̂ = σ_i(1 + γ);  x̂ = x + √(σ̂² − σ_i²)·S_noise·z   (only when γ > 0)
   *   d = (x̂ − D(x̂; σ̂))/σ̂;  x_{i+1} = x̂ + (σ_{i+1} − σ̂)·d
   * diffusers draws z every step, even when γ = 0 and z is unused, which advances the generator.
   */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    generator?: TorchGenerator,
  ): StepOutput {
    const i = this.beginStep(modelOutput, timestep, sample);
    const { sChurn, sTmin, sTmax, sNoise } = this.churn;
    const sigma = this.sigmas[i] as number;
    const gamma =
      f32(sTmin) <= sigma && sigma <= f32(sTmax)
        ? Math.min(sChurn / (this.sigmas.length - 1), 2 ** 0.5 - 1)
        : 0;
    if (gamma > 0 && generator === undefined) throw new Error("Euler with s_churn > 0 needs a generator");
    const noise = generator?.randn([sample.length]);
    const sigmaHat = f32(sigma * f32(gamma + 1));

    let x = sample;
    if (gamma > 0 && noise) {
      const scale = f32(Math.sqrt(f32(f32(sigmaHat * sigmaHat) - f32(sigma * sigma))));
      const sN = f32(sNoise);
      x = sample.map((v, k) => v + f32(f32((noise[k] as number) * sN) * scale));
    }
    // diffusers uses σ̂ for ε-prediction but σ for the v-prediction preconditioning (equal unless γ > 0).
    const type = this.config.prediction_type;
    const denoised = denoise(type, modelOutput, x, type === "epsilon" ? sigmaHat : sigma);
    const dt = f32((this.sigmas[i + 1] as number) - sigmaHat);
    const prevSample = eulerUpdate(x, odeDerivative(x, denoised, sigmaHat), dt);
    this.steps.advance();
    return { prevSample, predOriginalSample: denoised };
  }
}
