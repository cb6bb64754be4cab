/**
 * The img2img / inpainting side of the sampler contract (`order`, `setBeginIndex`, `addNoise`) against the pipeline
 * runs of diffusers 0.29.2 recorded in test/fixtures/cases: the truncated schedule `timesteps[tStart·order:]`, the
 * initial latents `add_noise(image_latents, noise, timesteps[tStart])`, and inpainting's per-step blend
 * `add_noise(image_latents, noise, timesteps[i+1])` after step i. Every comparison is bit for bit.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { createScheduler, SCHEDULERS } from "../../api/engine/schedulers/index.ts";
import type { Scheduler, SchedulerConfig } from "../../api/engine/schedulers/scheduler.ts";
import type { SchedulerName, TimestepSpacing } from "../../contract/index.ts";
import { FIXTURES, TINY_SD15, TINY_SDXL } from "../helpers/fixtures.ts";
import { parsePythonJson } from "../helpers/scheduler_fixtures.ts";

const f32 = Math.fround;

interface StrengthToTimesteps {
  t_start: number;
  timesteps_run: number[];
  begin_index: number | null;
}

interface PipelineCase {
  sdx_request: {
    scheduler_type: SchedulerName;
    karras_sigmas: boolean;
    timestep_spacing: TimestepSpacing;
    num_steps: number;
    strength?: number;
    hires?: { strength: number; steps: number };
  };
  timesteps_full_schedule?: number[];
  scheduler_order?: number;
  strength_to_timesteps?: StrengthToTimesteps;
  /** img2img_sdxl's record of `get_timesteps` (keys are the expressions diffusers evaluated). */
  img2img?: Record<string, unknown>;
  pass2?: { timesteps_full_schedule: number[]; strength_to_timesteps: StrengthToTimesteps };
}

const schedulerConfig = async (model: string): Promise<SchedulerConfig> =>
  (await Bun.file(join(model, "scheduler", "scheduler_config.json")).json()) as SchedulerConfig;
const SD15_CONFIG = await schedulerConfig(TINY_SD15);
const SDXL_CONFIG = await schedulerConfig(TINY_SDXL);

function caseNames(suite: string): string[] {
  return readdirSync(join(FIXTURES, "cases", suite), { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}

async function loadCase(
  suite: string,
  name: string,
): Promise<{ c: PipelineCase; tensor: (key: string) => Float32Array; has: (key: string) => boolean }> {
  const dir = join(FIXTURES, "cases", suite, name);
  const c = parsePythonJson(await Bun.file(join(dir, "case.json")).text()) as PipelineCase;
  const tensors = await loadSafetensors(join(dir, "tensors.safetensors"));
  const tensor = (key: string): Float32Array => {
    const t = tensors.get(key);
    if (!t) throw new Error(`${suite}/${name}: no tensor ${key}`);
    return t.data;
  };
  return { c, tensor, has: (key) => tensors.has(key) };
}

/** `Class.from_config(<model's scheduler_config.json>, **overrides)` as the case's request asks for it. */
function schedulerFor(c: PipelineCase, config: SchedulerConfig): Scheduler {
  const r = c.sdx_request;
  return createScheduler(r.scheduler_type, config, {
    karrasSigmas: r.karras_sigmas,
    timestepSpacing: r.timestep_spacing,
  });
}

/**
 * diffusers' `get_timesteps` (img2img / inpaint / SDXL img2img, 0.29.2): init = min(⌊n·strength⌋, n) (a float64
 * product, truncated), t_start = max(n − init, 0), and the UNet runs `timesteps[t_start·order:]`.
 */
function img2imgSchedule(s: Scheduler, n: number, strength: number): { tStart: number; timesteps: number[] } {
  const init = Math.min(Math.trunc(n * strength), n);
  const tStart = Math.max(n - init, 0);
  return { tStart, timesteps: s.timesteps.slice(tStart * s.order) };
}

/** Exact equality of two float32 tensors, reported as the largest |Δ| and its position. */
function expectBitExact(actual: Float32Array, expected: Float32Array): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  let at = -1;
  for (let k = 0; k < actual.length; k++) {
    const d = Math.abs((actual[k] as number) - (expected[k] as number));
    if (!(d <= worst)) {
      worst = d;
      at = k;
    }
  }
  expect({ maxAbsDiff: worst, at }).toEqual({ maxAbsDiff: 0, at: -1 });
}

/** The pipeline's scheduler set-up: full schedule, truncation, then `set_begin_index(t_start·order)` if it exists. */
function startImg2img(
  c: PipelineCase,
  config: SchedulerConfig,
  n: number,
  strength: number,
  useBeginIndex: boolean,
): { s: Scheduler; tStart: number; timesteps: number[] } {
  const s = schedulerFor(c, config);
  s.setTimesteps(n);
  const { tStart, timesteps } = img2imgSchedule(s, n, strength);
  if (useBeginIndex) s.setBeginIndex?.(tStart * s.order);
  return { s, tStart, timesteps };
}

describe("img2img_sd15: schedule truncation and initial latents", () => {
  for (const name of caseNames("img2img_sd15")) {
    test(name, async () => {
      const { c, tensor } = await loadCase("img2img_sd15", name);
      const r = c.sdx_request;
      const st = c.strength_to_timesteps as StrengthToTimesteps;
      const { s, tStart, timesteps } = startImg2img(c, SD15_CONFIG, r.num_steps, r.strength as number, true);

      expect([...s.timesteps]).toEqual((c.timesteps_full_schedule as number[]).map(f32));
      expect(s.order).toBe(c.scheduler_order as number);
      expect(tStart).toBe(st.t_start);
      expect(timesteps).toEqual(st.timesteps_run.map(f32));
      // diffusers calls set_begin_index exactly where the class has it.
      expect(s.setBeginIndex === undefined).toBe(st.begin_index === null);

      const initial = s.addNoise(tensor("image_latents"), tensor("noise"), timesteps[0] as number);
      expectBitExact(initial, tensor("initial_latents"));
    });
  }
});

describe("img2img_sdxl: no set_begin_index, the σ index comes from the timestep value", () => {
  for (const name of caseNames("img2img_sdxl")) {
    test(name, async () => {
      const { c, tensor } = await loadCase("img2img_sdxl", name);
      const r = c.sdx_request;
      const rec = c.img2img as Record<string, unknown>;
      const { s, tStart, timesteps } = startImg2img(c, SDXL_CONFIG, r.num_steps, r.strength as number, false);

      expect([...s.timesteps]).toEqual((c.timesteps_full_schedule as number[]).map(f32));
      expect(tStart).toBe(rec["t_start = num_inference_steps - init_timestep"] as number);
      expect(timesteps).toEqual(
        (rec["timesteps_used (scheduler.timesteps[t_start*order:])"] as number[]).map(f32),
      );

      const initial = s.addNoise(tensor("image_latents"), tensor("noise"), timesteps[0] as number);
      expectBitExact(initial, tensor("initial_latents"));
    });
  }
});

describe("hires_sd15: the second pass is img2img on the upscaled latents", () => {
  for (const name of caseNames("hires_sd15")) {
    test(name, async () => {
      const { c, tensor } = await loadCase("hires_sd15", name);
      const hires = c.sdx_request.hires as { strength: number; steps: number };
      const pass2 = c.pass2 as NonNullable<PipelineCase["pass2"]>;
      const { s, tStart, timesteps } = startImg2img(c, SD15_CONFIG, hires.steps, hires.strength, true);

      expect([...s.timesteps]).toEqual(pass2.timesteps_full_schedule.map(f32));
      expect(tStart).toBe(pass2.strength_to_timesteps.t_start);
      expect(timesteps).toEqual(pass2.strength_to_timesteps.timesteps_run.map(f32));

      const initial = s.addNoise(tensor("upscaled_latents"), tensor("pass2.noise"), timesteps[0] as number);
      expectBitExact(initial, tensor("pass2.initial_latents"));
    });
  }
});

describe("inpaint_sd15: initial latents and the per-step blend", () => {
  for (const name of caseNames("inpaint_sd15")) {
    test(name, async () => {
      const { c, tensor, has } = await loadCase("inpaint_sd15", name);
      const r = c.sdx_request;
      const strength = r.strength as number;
      const st = c.strength_to_timesteps as StrengthToTimesteps;
      const { s, tStart, timesteps } = startImg2img(c, SD15_CONFIG, r.num_steps, strength, true);
      expect(tStart).toBe(st.t_start);
      expect(timesteps).toEqual(st.timesteps_run.map(f32));
      expect(s.setBeginIndex === undefined).toBe(st.begin_index === null);

      const noise = tensor("noise");
      if (strength === 1) {
        // is_strength_max: pure noise times init_noise_sigma, no add_noise.
        const sigma = f32(s.initNoiseSigma);
        expectBitExact(
          noise.map((v) => v * sigma),
          tensor("initial_latents"),
        );
      } else {
        expectBitExact(
          s.addNoise(tensor("image_latents"), noise, timesteps[0] as number),
          tensor("initial_latents"),
        );
      }

      // The 4-channel pipeline blends after every step but the last with add_noise at timesteps[i+1], which the
      // σ-indexed classes read at the step index `step` has just advanced. `step` only has to advance the index
      // here: a zero model output stands in for the UNet.
      if (!has("blend_init_latents_proper")) return; // a 9-channel UNet does not blend
      const blend = tensor("blend_init_latents_proper");
      const imageLatents = tensor("image_latents");
      const perStep = imageLatents.length;
      const generator = new TorchGenerator(0, { kernel: "avx2" });
      let sample = tensor("initial_latents");
      for (let i = 0; i < timesteps.length - 1; i++) {
        const t = timesteps[i] as number;
        sample = s.step(new Float32Array(perStep), t, sample, generator).prevSample;
        const proper = s.addNoise(imageLatents, noise, timesteps[i + 1] as number);
        expectBitExact(proper, blend.subarray(i * perStep, (i + 1) * perStep));
      }
    });
  }
});

describe("order, setBeginIndex and addNoise on every sampler", () => {
  const ORDER: Record<SchedulerName, number> = {
    ddim: 1,
    pndm: 1,
    lms: 1,
    euler: 1,
    euler_a: 1,
    heun: 2,
    dpm2: 2,
    "dpmsolver++": 1,
    "dpmsolver++_sde": 1,
    dpmsolver_singlestep: 1,
    unipc: 1,
    lcm: 1,
  };
  /** diffusers 0.29.2's DDIMScheduler and PNDMScheduler have no `set_begin_index`. */
  const WITHOUT_BEGIN_INDEX = new Set<SchedulerName>(["ddim", "pndm"]);

  const names = Object.keys(SCHEDULERS) as SchedulerName[];
  test("the table holds the twelve samplers", () => {
    expect(names.sort()).toEqual((Object.keys(ORDER) as SchedulerName[]).sort());
  });

  const x0 = Float32Array.from({ length: 16 }, (_, k) => f32(Math.sin(k + 1) * 0.7));
  const eps = Float32Array.from({ length: 16 }, (_, k) => f32(Math.cos(3 * k + 0.5) * 1.3));

  for (const name of names) {
    test(name, () => {
      const s = createScheduler(name, SD15_CONFIG);
      expect(s.order).toBe(ORDER[name]);
      expect(typeof s.addNoise).toBe("function");
      expect(s.setBeginIndex === undefined).toBe(WITHOUT_BEGIN_INDEX.has(name));

      // Starting at the begin index and looking the first timestep up agree (for Heun and DPM2 too: index
      // tStart·order of their doubled schedule holds σ_tStart and is where the lookup lands).
      const n = 10;
      const strength = 0.55;
      s.setTimesteps(n);
      const { tStart, timesteps } = img2imgSchedule(s, n, strength);
      expect(tStart).toBe(5);
      expect(timesteps.length).toBe(s.timesteps.length - tStart * ORDER[name]);
      const t0 = timesteps[0] as number;
      const lookedUp = s.addNoise(x0, eps, t0);
      s.setBeginIndex?.(tStart * s.order);
      expectBitExact(s.addNoise(x0, eps, t0), lookedUp);
      expect(() => s.addNoise(x0, eps.subarray(1), t0)).toThrow(RangeError);
    });
  }

  test("with a begin index, addNoise reads the begin index before the first step, then the step index", () => {
    const s = createScheduler("euler", SD15_CONFIG);
    s.setTimesteps(10);
    s.setBeginIndex?.(4);
    const x0 = new Float32Array([0]);
    const one = new Float32Array([1]);
    const sigmas = (s as unknown as { sigmas: Float32Array }).sigmas;
    // Whatever timestep is passed: the index wins over the value, as in diffusers.
    expect(s.addNoise(x0, one, s.timesteps[0] as number)[0]).toBe(sigmas[4] as number);
    const t = s.timesteps[4] as number;
    s.step(new Float32Array(1), t, new Float32Array(1), new TorchGenerator(0));
    expect(s.addNoise(x0, one, s.timesteps[0] as number)[0]).toBe(sigmas[5] as number);
  });

  test("ᾱ-indexed classes read ᾱ at the timestep value: √ᾱ_t·x₀ + √(1−ᾱ_t)·ε", () => {
    for (const name of ["ddim", "pndm", "lcm"] as const) {
      const s = createScheduler(name, SD15_CONFIG);
      const a = (s as unknown as { alphasCumprod: Float32Array }).alphasCumprod[601] as number;
      const expected = x0.map(
        (v, k) => f32(f32(Math.sqrt(a)) * v) + f32(f32(Math.sqrt(f32(1 - a))) * (eps[k] as number)),
      );
      expectBitExact(s.addNoise(x0, eps, 601), expected);
    }
  });
});
