/**
 * The training noise schedule of a VP diffusion model: β_t for t = 0…T−1 and ᾱ_t = ∏_{s≤t} (1 − β_s), computed
 * in float32 the way diffusers does with torch on CPU, so that every later quantity (σ_t, λ_t, timesteps chosen
 * by σ) starts from bit-identical numbers.
 */
import { f32, fmaF32 } from "../rng/float32.ts";
import { SchedulerConfigError } from "./config.ts";
import type { BetaSchedule } from "./scheduler.ts";

export interface BetaScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  trained_betas: readonly number[] | null;
  rescale_betas_zero_snr: boolean;
}

/** Float32 lanes of torch's AVX2 `Vectorized<float>`; the CPU linspace kernel writes two vectors per iteration. */
const VEC = 8;

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` on CPU (ATen RangeFactoriesKernel, AVX2 build):
 * step = (end − start)/(steps − 1) in float; the first half counts up from `start`, the second half down from
 * `end`; contiguous output goes through the vectorised path, whose lane k of a vector starting at index i is
 * base(i) + k·step. The compiler fused the multiply-adds (base = start + step·i is one rounding), which is why
 * `fmaF32` is used. This matches torch's ᾱ for SD's schedule bit for bit (plain float32 evaluation does not).
 */
export function torchLinspaceF32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 0) return out;
  const s = f32(start);
  const e = f32(end);
  if (steps === 1) {
    out[0] = s;
    return out;
  }
  const step = f32(f32(e - s) / f32(steps - 1));
  const halfway = Math.floor(steps / 2);
  const at = (i: number): number => (i < halfway ? fmaF32(step, i, s) : fmaF32(-step, steps - i - 1, e));
  let i = 0;
  for (; i <= steps - 2 * VEC; i += 2 * VEC) {
    for (let v = i; v < i + 2 * VEC; v += VEC) {
      const base = at(v);
      for (let k = 0; k < VEC; k++) out[v + k] = fmaF32(k, step, base);
    }
  }
  for (; i < steps; i++) out[i] = at(i);
  return out;
}

/**
 * `betas_for_alpha_bar` (Nichol & Dhariwal 2021, "Improved DDPM", eq. 17): β_t = min(1 − ᾱ(t+1/T)/ᾱ(t/T), 0.999)
 * with ᾱ(t) = cos²((t + 0.008)/1.008 · π/2) ("cosine") or exp(−12t) ("exp"), in float64, then stored as float32.
 */
export function betasForAlphaBar(
  n: number,
  maxBeta = 0.999,
  transform: "cosine" | "exp" = "cosine",
): Float32Array {
  const alphaBar =
    transform === "cosine"
      ? (t: number) => Math.cos((((t + 0.008) / 1.008) * Math.PI) / 2) ** 2
      : (t: number) => Math.exp(t * -12);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), maxBeta);
  return out;
}

/** `torch.cumprod(1 − β, dim=0)` for float32 β: torch's CPU kernel accumulates in double and stores float32. */
export function alphasCumprod(betas: Float32Array): Float32Array {
  const out = new Float32Array(betas.length);
  let acc = 1;
  for (let i = 0; i < betas.length; i++) {
    acc *= f32(1 - (betas[i] as number));
    out[i] = acc;
  }
  return out;
}

/**
 * Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed" (arXiv:2305.08891, Algorithm 1):
 * shift and scale √ᾱ so that √ᾱ_T = 0 (zero terminal SNR) while √ᾱ_0 is kept, then recover β. float32 as torch.
 */
export function rescaleZeroTerminalSnr(betas: Float32Array): Float32Array {
  const n = betas.length;
  const sqrtAbar = alphasCumprod(betas).map(Math.sqrt);
  const first = sqrtAbar[0] as number;
  const last = sqrtAbar[n - 1] as number;
  const scale = f32(first / f32(first - last));
  const abar = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const shifted = f32((sqrtAbar[i] as number) - last);
    const scaled = f32(shifted * scale);
    abar[i] = scaled * scaled;
  }
  const out = new Float32Array(n);
  out[0] = 1 - (abar[0] as number);
  for (let i = 1; i < n; i++) out[i] = 1 - f32((abar[i] as number) / (abar[i - 1] as number));
  return out;
}

/** β_t in float32 for a scheduler config, as every diffusers DDPM-family scheduler builds `self.betas`. */
export function betasFromConfig(config: BetaScheduleConfig): Float32Array {
  const n = config.num_train_timesteps;
  if (!Number.isInteger(n) || n < 2)
    throw new SchedulerConfigError(`num_train_timesteps must be an integer ≥ 2, got ${n}`);
  let betas: Float32Array;
  if (config.trained_betas !== null) {
    if (config.trained_betas.length !== n) {
      throw new SchedulerConfigError(
        `trained_betas has ${config.trained_betas.length} values, expected ${n}`,
      );
    }
    betas = Float32Array.from(config.trained_betas);
  } else if (config.beta_schedule === "linear") {
    betas = torchLinspaceF32(config.beta_start, config.beta_end, n);
  } else if (config.beta_schedule === "scaled_linear") {
    // Latent-diffusion schedule: linear in √β, then squared (tensor ** 2 is x·x in float32).
    betas = torchLinspaceF32(config.beta_start ** 0.5, config.beta_end ** 0.5, n).map((x) => x * x);
  } else {
    betas = betasForAlphaBar(n);
  }
  return config.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(betas) : betas;
}
