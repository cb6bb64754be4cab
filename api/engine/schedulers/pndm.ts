/**
 * PNDM / PLMS, after diffusers 0.29.2 `PNDMScheduler` (A1111's "PLMS"; the scheduler SD 1.x ships with).
 *
 * Paper: Liu, Ren, Lin & Zhao 2022, "Pseudo Numerical Methods for Diffusion Models on Manifolds"
 * (arXiv:2202.09778). A pseudo numerical method splits a step into a gradient part, which estimates the noise ε'
 * to use, and the transfer part φ of eq. 9, which moves x_t to x_{t−δ} along the DDIM path for that ε':
 *   φ(x_t, ε', t, t−δ) = √(ᾱ_{t−δ}/ᾱ_t)·x_t − (ᾱ_{t−δ} − ᾱ_t) / (ᾱ_t·√(1 − ᾱ_{t−δ}) + √(ᾱ_t(1 − ᾱ_t)ᾱ_{t−δ}))·ε'
 * Gradient parts:
 *   pseudo Runge–Kutta (eq. 12, "PRK"): four evaluations per step, at t, t−δ/2 (twice) and t−δ, through φ,
 *     ε' = (ε₁ + 2ε₂ + 2ε₃ + ε₄)/6;
 *   pseudo linear multistep (eq. 13, "PLMS"): the Adams–Bashforth combination of the last four evaluations,
 *     ε' = (55ε_t − 59ε_{t−δ} + 37ε_{t−2δ} − 9ε_{t−3δ})/24, one evaluation per step.
 * F-PNDM (Algorithm 2) starts with three PRK steps to fill the history (`skip_prk_steps: false`, diffusers'
 * default). With `skip_prk_steps: true` (every SD config) diffusers follows crowsonkb's PLMS for latent diffusion
 * instead: a pseudo improved-Euler (Heun) first step (ε' = (ε(x_t, t) + ε(x_{t−δ}, t−δ))/2, so the second
 * timestep is evaluated twice and n steps cost n + 1 model calls), then Adams–Bashforth of order 2, 3 and 4:
 *   (3ε₀ − ε₁)/2,  (23ε₀ − 16ε₁ + 5ε₂)/12,  (55ε₀ − 59ε₁ + 37ε₂ − 9ε₃)/24.
 * With v-prediction the combined output is turned into ε inside φ: ε = √ᾱ_t·v + √(1 − ᾱ_t)·x_t.
 *
 * Numerics: float32 throughout, in diffusers' operation order (python float coefficients such as 1/6 and 1/24
 * become float32 scalars); every step equals diffusers on torch's x86 CPU kernels bit for bit.
 */

import type { TimestepSpacing } from "../../../contract/index.ts";
import { f32 } from "../rng/float32.ts";
import type { TorchGenerator } from "../rng/torch_generator.ts";
import {
  AlphaIndexedScheduler,
  checkInferenceSteps,
  ddpmTimesteps,
  refuseKarras,
  vToEpsilon,
} from "./alpha_indexed.ts";
import { type ConfigHead, ConfigReader, readConfigHead } from "./config.ts";
import type { BetaSchedule, SchedulerConfig, SchedulerOptions, StepOutput } from "./scheduler.ts";

/** The resolved configuration, with diffusers' key names (what `scheduler.config` shows in diffusers). */
export interface PNDMConfig extends ConfigHead<BetaSchedule, "epsilon" | "v_prediction"> {
  skip_prk_steps: boolean;
  set_alpha_to_one: boolean;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** `PNDMScheduler.__init__` defaults in diffusers 0.29.2. */
export const PNDM_DEFAULTS: Readonly<PNDMConfig> = Object.freeze({
  num_train_timesteps: 1000,
  beta_start: 0.0001,
  beta_end: 0.02,
  beta_schedule: "linear",
  trained_betas: null,
  skip_prk_steps: false,
  set_alpha_to_one: false,
  prediction_type: "epsilon",
  timestep_spacing: "leading",
  steps_offset: 0,
});

/** The order of the multistep method, hence the number of PRK steps that F-PNDM runs first (minus one). */
const PNDM_ORDER = 4;

/** Reads a scheduler config the way `PNDMScheduler.from_config` does, with the per-request options. */
export function resolvePNDMConfig(config: SchedulerConfig, options: SchedulerOptions = {}): PNDMConfig {
  refuseKarras("PLMS", options);
  const r = new ConfigReader(config);
  const d = PNDM_DEFAULTS;
  return {
    // diffusers' PNDM step raises for "sample"; refused here when the config is read.
    ...readConfigHead(r, d, { predictionTypes: ["epsilon", "v_prediction"] }),
    skip_prk_steps: r.boolean("skip_prk_steps", d.skip_prk_steps),
    set_alpha_to_one: r.boolean("set_alpha_to_one", d.set_alpha_to_one),
    timestep_spacing: r.timestepSpacing(options.timestepSpacing, d.timestep_spacing),
    steps_offset: r.integer("steps_offset", d.steps_offset),
  };
}

/** `timesteps` lists the PRK evaluations first; `finalAlphaCumprod` is used after the last step (t − δ < 0). */
export class PNDMScheduler extends AlphaIndexedScheduler {
  readonly config: Readonly<PNDMConfig>;
  private prkTimesteps: number[] = [];
  private plmsTimesteps: number[] = [];

  /** Model outputs kept for the multistep formula (raw network outputs, oldest first, at most four). */
  private ets: Float32Array[] = [];
  /** Steps taken since `setTimesteps` (diffusers' `counter`). */
  private counter = 0;
  /** PRK: the running (ε₁ + 2ε₂ + 2ε₃)/6 of the current step; null where diffusers holds the python int 0. */
  private curModelOutput: Float32Array | null = null;
  /** x_t at the start of the current PRK step / the first PLMS step. */
  private curSample: Float32Array | null = null;

  constructor(config: SchedulerConfig, options: SchedulerOptions = {}) {
    const c = resolvePNDMConfig(config, options);
    // PNDM has no zero-terminal-SNR option in diffusers 0.29.2 (the key is ignored by from_config).
    super({ ...c, rescale_betas_zero_snr: false }, c.set_alpha_to_one);
    this.config = Object.freeze(c);
  }

  setTimesteps(numInferenceSteps: number): void {
    const c = this.config;
    const T = c.num_train_timesteps;
    const n = numInferenceSteps;
    checkInferenceSteps(n, T);
    // diffusers' `_timesteps`, in increasing order.
    const base = ddpmTimesteps(c.timestep_spacing, T, n, c.steps_offset).reverse();

    if (c.skip_prk_steps) {
      // [t_0 … t_{n−2}, t_{n−2}, t_{n−1}] reversed: the second-largest timestep appears twice (improved Euler).
      this.prkTimesteps = [];
      this.plmsTimesteps = [...base.slice(0, -1), ...base.slice(-2, -1), ...base.slice(-1)].reverse();
    } else {
      if (base.length < PNDM_ORDER) {
        throw new RangeError(
          `PNDM with Runge–Kutta warm-up steps needs at least ${PNDM_ORDER} steps, got ${n}`,
        );
      }
      // The last four timesteps a < b < c < d, each with its half step h = ⌊⌊T/n⌋/2⌋, give the three PRK steps
      // d → c, c → b, b → a with their evaluations [d, c+h, c+h, c, c, b+h, b+h, b, b, a+h, a+h, a].
      const half = Math.floor(Math.floor(T / n) / 2);
      const tiled: number[] = [];
      for (const t of base.slice(-PNDM_ORDER)) tiled.push(t, t + half);
      const doubled = tiled.slice(0, -1).flatMap((t) => [t, t]);
      this.prkTimesteps = doubled.slice(1, -1).reverse();
      this.plmsTimesteps = base.slice(0, -3).reverse();
    }
    this.timestepSchedule = [...this.prkTimesteps, ...this.plmsTimesteps];
    this.numSteps = n;
    this.ets = [];
    this.counter = 0;
    this.curModelOutput = null;
    this.curSample = null;
  }

  /** One PRK or PLMS evaluation step; deterministic, the generator is not used. */
  step(
    modelOutput: Float32Array,
    timestep: number,
    sample: Float32Array,
    _generator?: TorchGenerator,
  ): StepOutput {
    this.beginStep(modelOutput, sample);
    const prevSample =
      this.counter < this.prkTimesteps.length && !this.config.skip_prk_steps
        ? this.stepPrk(modelOutput, timestep, sample)
        : this.stepPlms(modelOutput, timestep, sample);
    this.counter++;
    return { prevSample };
  }

  /**
   * Pseudo Runge–Kutta (eq. 12). Evaluation j = counter mod 4 of the current step from t (= prk_timesteps at the
   * step's first evaluation): every evaluation moves the step's starting sample x_t by φ with the newest ε to
   * t − δ/2 (j = 0, 1) or t − δ (j = 2), and the fourth applies φ(x_t, (ε₁ + 2ε₂ + 2ε₃ + ε₄)/6, t, t − δ).
   */
  private stepPrk(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const n = this.numSteps as number;
    const diffToPrev = this.counter % 2 ? 0 : Math.floor(Math.floor(this.config.num_train_timesteps / n) / 2);
    const prevTimestep = timestep - diffToPrev;
    const t = this.prkTimesteps[Math.floor(this.counter / 4) * 4] as number;
    const j = this.counter % 4;
    let eps = modelOutput;
    if (j === 0) {
      this.curModelOutput = scaled(modelOutput, 1 / 6);
      this.ets.push(modelOutput.slice());
      this.curSample = sample.slice();
    } else if (j === 1 || j === 2) {
      const acc = this.curModelOutput as Float32Array;
      const third = f32(1 / 3);
      for (let k = 0; k < acc.length; k++)
        acc[k] = (acc[k] as number) + f32(third * (modelOutput[k] as number));
    } else {
      const acc = this.curModelOutput as Float32Array;
      const sixth = f32(1 / 6);
      eps = new Float32Array(acc.length);
      for (let k = 0; k < acc.length; k++)
        eps[k] = (acc[k] as number) + f32(sixth * (modelOutput[k] as number));
      this.curModelOutput = null;
    }
    return this.prevSampleOf(this.curSample ?? sample, t, prevTimestep, eps);
  }

  /**
   * Pseudo linear multistep (eq. 13), with crowsonkb's warm-up when the PRK steps are skipped: the first step is
   * plain φ with ε(x_t, t); the second call (same timestep t − δ) redoes that step from x_t with the improved-Euler
   * average; later calls use Adams–Bashforth of the highest order the history allows (2, 3, then 4).
   */
  private stepPlms(modelOutput: Float32Array, timestep: number, sample: Float32Array): Float32Array {
    const n = this.numSteps as number;
    if (!this.config.skip_prk_steps && this.ets.length < 3) {
      throw new Error("PNDM runs its linear multistep steps only after the Runge–Kutta steps");
    }
    const delta = Math.floor(this.config.num_train_timesteps / n);
    let prevTimestep = timestep - delta;
    let t = timestep;
    if (this.counter !== 1) {
      this.ets = this.ets.slice(-3);
      this.ets.push(modelOutput.slice());
    } else {
      prevTimestep = timestep;
      t = timestep + delta;
    }

    const e = this.ets;
    const len = modelOutput.length;
    let x = sample;
    let eps: Float32Array;
    const at = (i: number, k: number) => (e[e.length - i] as Float32Array)[k] as number;
    if (e.length === 1 && this.counter === 0) {
      eps = modelOutput;
      this.curSample = sample.slice();
    } else if (e.length === 1 && this.counter === 1) {
      // Improved Euler: average the slopes at both ends, then redo the step from x_t.
      eps = new Float32Array(len);
      for (let k = 0; k < len; k++) eps[k] = f32((modelOutput[k] as number) + at(1, k)) / 2;
      x = this.curSample ?? sample;
      this.curSample = null;
    } else if (e.length === 2) {
      eps = new Float32Array(len);
      for (let k = 0; k < len; k++) eps[k] = f32(f32(3 * at(1, k)) - at(2, k)) / 2;
    } else if (e.length === 3) {
      eps = new Float32Array(len);
      for (let k = 0; k < len; k++) {
        const s = f32(f32(f32(23 * at(1, k)) - f32(16 * at(2, k))) + f32(5 * at(3, k)));
        eps[k] = s / 12;
      }
    } else {
      eps = new Float32Array(len);
      const c = f32(1 / 24);
      for (let k = 0; k < len; k++) {
        const s1 = f32(f32(55 * at(1, k)) - f32(59 * at(2, k)));
        const s2 = f32(f32(s1 + f32(37 * at(3, k))) - f32(9 * at(4, k)));
        eps[k] = c * s2;
      }
    }
    return this.prevSampleOf(x, t, prevTimestep, eps);
  }

  /** The transfer part φ(x_t, ε', t, t_prev) of eq. 9 (`_get_prev_sample`), float32 in diffusers' order. */
  private prevSampleOf(
    sample: Float32Array,
    timestep: number,
    prevTimestep: number,
    modelOutput: Float32Array,
  ): Float32Array {
    const [alphaProd, alphaProdPrev] = this.alphaProds(timestep, prevTimestep);
    const betaProd = f32(1 - alphaProd);
    const betaProdPrev = f32(1 - alphaProdPrev);
    const len = sample.length;
    const eps =
      this.config.prediction_type === "v_prediction"
        ? vToEpsilon(modelOutput, sample, alphaProd)
        : modelOutput;

    // √(ᾱ_{t−δ}/ᾱ_t), and the ε' denominator ᾱ_t·√(1 − ᾱ_{t−δ}) + √(ᾱ_t(1 − ᾱ_t)ᾱ_{t−δ}).
    const sampleCoef = f32(Math.sqrt(f32(alphaProdPrev / alphaProd)));
    const denom = f32(
      f32(alphaProd * f32(Math.sqrt(betaProdPrev))) +
        f32(Math.sqrt(f32(f32(alphaProd * betaProd) * alphaProdPrev))),
    );
    const diff = f32(alphaProdPrev - alphaProd);
    const out = new Float32Array(len);
    for (let k = 0; k < len; k++) {
      out[k] = f32(sampleCoef * (sample[k] as number)) - f32(f32(diff * (eps[k] as number)) / denom);
    }
    return out;
  }
}

/** `python_float * tensor`: the scalar is rounded to float32, then one float32 multiply per element. */
function scaled(x: Float32Array, s: number): Float32Array {
  const c = f32(s);
  return x.map((v) => c * v);
}
