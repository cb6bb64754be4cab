/**
 * The scheduler fixture harness (test/fixtures/schedulers, README §3), shared by the scheduler tests: the index,
 * the diffusers way of building a case's config, the oracle's toy model, and one trajectory run compared tensor by
 * tensor with what diffusers 0.29.2 recorded.
 */
import { expect } from "bun:test";
import { join } from "node:path";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { withOverrides } from "../../api/engine/schedulers/config.ts";
import type { Scheduler, SchedulerConfig } from "../../api/engine/schedulers/scheduler.ts";
import { tanhf } from "../../api/engine/schedulers/sleef.ts";

export const SCHEDULER_FIXTURES = join(import.meta.dir, "..", "fixtures", "schedulers");

const f32 = Math.fround;

/** The largest deviation a tensor may show from diffusers' (the trajectories match bit for bit in practice). */
export const TOLERANCE = 1e-5;

export interface SchedulerFixtureCase {
  name: string;
  class: string;
  config: SchedulerConfig;
  from_config_overrides: SchedulerConfig;
  num_inference_steps: number;
  seed: number;
  step_kwargs: Record<string, unknown>;
  generator_passed_to_step: boolean;
  timesteps: number[];
  sigmas: number[] | null;
  init_noise_sigma: number;
  num_model_evals: number;
  tensors_file: string;
  /** The extra per-step tensor recorded for the case ("pred_original_sample", "denoised"), if any. */
  aux_output: string | null;
}

export interface SchedulerFixtureIndex {
  split: string;
  base_config: SchedulerConfig;
  alphas_cumprod_sd15: number[];
  cases: SchedulerFixtureCase[];
}

/** The index is written by Python's json, which spells non-finite floats as bare Infinity / -Infinity / NaN. */
export function parsePythonJson(text: string): unknown {
  const tag = "\u0000pyfloat:";
  let out = "";
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if (inString) {
      out += ch;
      if (ch === "\\") out += text[++i] ?? "";
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') inString = true;
    const token = /^(-?Infinity|NaN)/.exec(text.slice(i, i + 9));
    if (token) {
      out += JSON.stringify(tag + token[0]);
      i += token[0].length - 1;
      continue;
    }
    out += ch;
  }
  return JSON.parse(out, (_key, value: unknown) =>
    typeof value === "string" && value.startsWith(tag) ? Number(value.slice(tag.length)) : value,
  );
}

export async function loadSchedulerFixtures(): Promise<SchedulerFixtureIndex> {
  const text = await Bun.file(join(SCHEDULER_FIXTURES, "schedulers_index.json")).text();
  return parsePythonJson(text) as SchedulerFixtureIndex;
}

export function casesOf(index: SchedulerFixtureIndex, cls: string): SchedulerFixtureCase[] {
  return index.cases.filter((c) => c.class === cls);
}

/** base_config + from_config_overrides, i.e. `Class.from_config(base_config, **overrides)` (only present keys). */
export function diffusersConfig(index: SchedulerFixtureIndex, c: SchedulerFixtureCase): SchedulerConfig {
  return withOverrides(index.base_config, c.from_config_overrides);
}

/** The same without one override, for passing that setting as a `SchedulerOptions` field instead. */
export function diffusersConfigWithout(
  index: SchedulerFixtureIndex,
  c: SchedulerFixtureCase,
  key: string,
): SchedulerConfig {
  const { [key]: _, ...overrides } = c.from_config_overrides;
  return withOverrides(index.base_config, overrides);
}

/** The oracle's toy model: eps = 0.3·tanh(x) + 0.05·cos(t/37), tanh and the sum in float32, cos in float64. */
export function toyModel(x: Float32Array, t: number): Float32Array {
  const c = f32(0.05 * Math.cos(t / 37.0));
  const k = f32(0.3);
  return x.map((v) => f32(k * tanhf(v)) + c);
}

/** Runs a scheduler on the toy model from a fixed start (no fixture); returns the final sample. */
export function runToy(s: Scheduler, n: number, seed = 3): Float32Array {
  s.setTimesteps(n);
  let x = new TorchGenerator(seed, { kernel: "avx2" }).randn([64]);
  for (const t of s.timesteps) x = s.step(toyModel(x, t), t, x).prevSample;
  return x;
}

/** max |a − b| (a NaN counts as infinitely far), asserting equal lengths. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[i] as number));
    m = Number.isNaN(d) ? Number.POSITIVE_INFINITY : Math.max(m, d);
  }
  return m;
}

/** Deviations from diffusers at one evaluation: UNet input, toy-model output, prev_sample, the aux tensor. */
export interface StepErrors {
  timestep: number;
  input: number;
  output: number;
  prev: number;
  aux: number;
}

export interface Trajectory {
  timesteps: readonly number[];
  noiseErr: number;
  initialSampleErr: number;
  inputErr: number;
  outputErr: number;
  prevErr: number;
  auxErr: number;
  finalErr: number;
  steps: StepErrors[];
}

/**
 * The fixture procedure (README §3) for one case: set_timesteps, the initial noise from the case's seed (torch's
 * CPU generator, AVX2 kernel as on the oracle's machine) times init_noise_sigma, then scale → toy model → step over
 * every timestep, with stochastic steps drawing from that same generator. Every intermediate tensor is compared with
 * diffusers'; the deviations are returned for the caller to judge.
 */
export async function runFixtureTrajectory(
  scheduler: Scheduler,
  c: SchedulerFixtureCase,
): Promise<Trajectory> {
  const tensors = await loadSafetensors(join(SCHEDULER_FIXTURES, c.tensors_file));
  const get = (key: string): Float32Array => {
    const t = tensors.get(key);
    if (!t) throw new Error(`${c.tensors_file}: no ${key}`);
    return t.data;
  };
  scheduler.setTimesteps(c.num_inference_steps);
  expect(scheduler.timesteps.length).toBe(c.num_model_evals);
  const g = new TorchGenerator(c.seed, { kernel: "avx2" });
  const noise = g.randn([1, 4, 8, 8]);
  const n = noise.length;
  const refInput = get("model_input");
  const refOutput = get("model_output");
  const refPrev = get("prev_sample");
  const refAux = c.aux_output === null ? null : get(c.aux_output);
  let sample: Float32Array = noise.map((v) => v * scheduler.initNoiseSigma);
  const initialSampleErr = maxAbsDiff(sample, get("initial_sample"));
  const steps: StepErrors[] = [];
  scheduler.timesteps.forEach((t, i) => {
    const ref = (a: Float32Array) => a.subarray(i * n, (i + 1) * n);
    const x = scheduler.scaleModelInput(sample, t);
    const input = maxAbsDiff(x, ref(refInput));
    const eps = toyModel(x, t);
    const output = maxAbsDiff(eps, ref(refOutput));
    const out = scheduler.step(eps, t, sample, c.generator_passed_to_step ? g : undefined);
    sample = out.prevSample;
    const prev = maxAbsDiff(sample, ref(refPrev));
    let aux = 0;
    if (refAux) {
      expect(out.predOriginalSample).toBeDefined();
      aux = maxAbsDiff(out.predOriginalSample as Float32Array, ref(refAux));
    }
    steps.push({ timestep: t, input, output, prev, aux });
  });
  const worst = (key: "input" | "output" | "prev" | "aux") => steps.reduce((m, s) => Math.max(m, s[key]), 0);
  return {
    timesteps: scheduler.timesteps,
    noiseErr: maxAbsDiff(noise, get("initial_noise")),
    initialSampleErr,
    inputErr: worst("input"),
    outputErr: worst("output"),
    prevErr: worst("prev"),
    auxErr: worst("aux"),
    finalErr: maxAbsDiff(sample, get("final_sample")),
    steps,
  };
}

/** σ per step (the final one included) within float32 rounding of diffusers'. */
export function expectSigmas(actual: Float32Array, expected: number[] | null): void {
  expect(expected).not.toBeNull();
  const ref = expected as number[];
  expect(actual.length).toBe(ref.length);
  ref.forEach((s, i) => {
    expect(Math.abs((actual[i] as number) - s)).toBeLessThanOrEqual(1e-6 * Math.abs(s));
  });
}

/**
 * A trajectory agrees with the case: timesteps, init_noise_sigma, the σ schedule (or its absence, for the
 * ᾱ-indexed classes), the initial noise and sample exactly, and every tensor of every step within `TOLERANCE`.
 */
export function expectMatchesFixture(scheduler: Scheduler, c: SchedulerFixtureCase, r: Trajectory): void {
  expect(r.timesteps).toEqual(c.timesteps);
  expect(scheduler.initNoiseSigma).toBe(c.init_noise_sigma);
  const sigmas = (scheduler as { sigmas?: Float32Array }).sigmas;
  if (sigmas === undefined)
    expect(c.sigmas).toBeNull(); // DDIM, PNDM, LCM have no σ schedule
  else expectSigmas(sigmas, c.sigmas);
  expect(r.noiseErr).toBe(0);
  expect(r.initialSampleErr).toBe(0);
  r.steps.forEach((s, i) => {
    expect(s.input).toBeLessThanOrEqual(TOLERANCE);
    expect(s.output).toBeLessThanOrEqual(TOLERANCE);
    if (s.prev > TOLERANCE) {
      throw new Error(`${c.name}: step ${i} (t = ${s.timestep}) prev_sample off by ${s.prev}`);
    }
  });
  const report = `${c.name}: input ${r.inputErr}, output ${r.outputErr}, prev ${r.prevErr}, aux ${r.auxErr}, final ${r.finalErr}`;
  if (r.prevErr > TOLERANCE || r.finalErr > TOLERANCE || r.auxErr > TOLERANCE) throw new Error(report);
  expect(r.inputErr).toBeLessThanOrEqual(TOLERANCE);
  expect(r.outputErr).toBeLessThanOrEqual(TOLERANCE);
  expect(r.prevErr).toBeLessThanOrEqual(TOLERANCE);
  expect(r.auxErr).toBeLessThanOrEqual(TOLERANCE);
  expect(r.finalErr).toBeLessThanOrEqual(TOLERANCE);
}

/**
 * The case's full saved config (`c.config`, with `_use_default_values`) and base + overrides resolve to the same
 * config, and every resolved key has the value diffusers' `scheduler.config` shows.
 */
export function expectResolvedConfig(c: SchedulerFixtureCase, fromSaved: object, fromBase: object): void {
  expect(fromSaved).toEqual(fromBase);
  for (const [key, value] of Object.entries(fromSaved)) expect(c.config[key]).toEqual(value);
}

/** `runFixtureTrajectory` + `expectMatchesFixture`. */
export async function expectFixtureCase(scheduler: Scheduler, c: SchedulerFixtureCase): Promise<Trajectory> {
  const r = await runFixtureTrajectory(scheduler, c);
  expectMatchesFixture(scheduler, c, r);
  return r;
}
