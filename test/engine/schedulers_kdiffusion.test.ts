import { beforeAll, describe, expect, test } from "bun:test";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { SchedulerConfigError } from "../../api/engine/schedulers/config.ts";
import { EulerDiscreteScheduler, resolveEulerDiscreteConfig } from "../../api/engine/schedulers/euler.ts";
import {
  EulerAncestralDiscreteScheduler,
  resolveEulerAncestralDiscreteConfig,
} from "../../api/engine/schedulers/euler_ancestral.ts";
import { HeunDiscreteScheduler } from "../../api/engine/schedulers/heun.ts";
import { KDPM2DiscreteScheduler } from "../../api/engine/schedulers/kdpm2.ts";
import { LMSDiscreteScheduler } from "../../api/engine/schedulers/lms.ts";
import { npLogF32 } from "../../api/engine/schedulers/numpy.ts";
import type { SchedulerConfig, SchedulerOptions } from "../../api/engine/schedulers/scheduler.ts";
import { indexForTimestep, type SigmaScheduler } from "../../api/engine/schedulers/sigma_scheduler.ts";
import { interpSigmas, karrasFromSchedule, spacedTimesteps } from "../../api/engine/schedulers/sigmas.ts";
import {
  casesOf,
  diffusersConfig,
  diffusersConfigWithout,
  expectFixtureCase,
  expectResolvedConfig,
  loadSchedulerFixtures,
  runFixtureTrajectory,
  type SchedulerFixtureCase,
  type SchedulerFixtureIndex,
} from "../helpers/scheduler_fixtures.ts";

const f32 = Math.fround;

type KScheduler = SigmaScheduler & { readonly config: Readonly<Record<string, unknown>> };

/** The five classes of this file: how each is built from a config (diffusers' `Class.from_config`). */
const CLASSES: Record<string, (config: SchedulerConfig, options?: SchedulerOptions) => KScheduler> = {
  EulerDiscreteScheduler: (config, options) => new EulerDiscreteScheduler(config, options),
  EulerAncestralDiscreteScheduler: (config, options) => new EulerAncestralDiscreteScheduler(config, options),
  LMSDiscreteScheduler: (config, options) => new LMSDiscreteScheduler(config, options),
  HeunDiscreteScheduler: (config, options) => new HeunDiscreteScheduler(config, options),
  KDPM2DiscreteScheduler: (config, options) => new KDPM2DiscreteScheduler(config, options),
};

function build(c: SchedulerFixtureCase, config: SchedulerConfig, options?: SchedulerOptions): KScheduler {
  const make = CLASSES[c.class];
  if (!make) throw new Error(`no class ${c.class}`);
  return make(config, options);
}

let index: SchedulerFixtureIndex;
const config = (c: SchedulerFixtureCase): SchedulerConfig => diffusersConfig(index, c);

beforeAll(async () => {
  index = await loadSchedulerFixtures();
});

describe("k-diffusion samplers vs diffusers 0.29.2 (every fixture case)", () => {
  const expectedCases: Record<string, string[]> = {
    EulerDiscreteScheduler: [
      "euler_1",
      "euler_4",
      "euler_20",
      "euler_30",
      "euler_vpred_20",
      "euler_leading_20",
      "euler_karras_20",
    ],
    EulerAncestralDiscreteScheduler: ["euler_a_4", "euler_a_20", "euler_a_30"],
    LMSDiscreteScheduler: ["lms_4", "lms_20", "lms_30"],
    HeunDiscreteScheduler: ["heun_4", "heun_20"],
    KDPM2DiscreteScheduler: ["kdpm2_4", "kdpm2_20"],
  };

  for (const cls of Object.keys(CLASSES)) {
    test(`${cls}: timesteps, sigmas, init_noise_sigma and the whole trajectory`, async () => {
      const cases = casesOf(index, cls);
      // The public split holds at least these cases; any other split's cases of the class are run the same way.
      if (index.split === "public") {
        for (const name of expectedCases[cls] ?? []) expect(cases.map((c) => c.name)).toContain(name);
      }
      for (const c of cases) await expectFixtureCase(build(c, config(c)), c);
    });
  }

  test("the full resolved config (with _use_default_values) builds the same scheduler as base + overrides", () => {
    for (const c of index.cases.filter((x) => x.class in CLASSES)) {
      const fromResolved = build(c, c.config);
      expectResolvedConfig(c, fromResolved.config, build(c, config(c)).config);
      fromResolved.setTimesteps(c.num_inference_steps);
      expect(fromResolved.timesteps).toEqual(c.timesteps);
    }
  });
});

describe("per-request options", () => {
  test("karrasSigmas equals use_karras_sigmas from the config, and the option wins", async () => {
    const karras = index.cases.filter((c) => c.class in CLASSES && c.from_config_overrides.use_karras_sigmas);
    expect(karras.length).toBeGreaterThan(0);
    for (const c of karras) {
      const plain = diffusersConfigWithout(index, c, "use_karras_sigmas");
      const viaOption = build(c, plain, { karrasSigmas: true });
      const r = await runFixtureTrajectory(viaOption, c);
      expect(viaOption.timesteps).toEqual(c.timesteps);
      expect(r.finalErr).toBeLessThanOrEqual(1e-5);
      const off = build(c, config(c), { karrasSigmas: false });
      off.setTimesteps(c.num_inference_steps);
      expect(off.timesteps).not.toEqual(c.timesteps);
    }
  });

  test("timestepSpacing overrides the config (from_config(..., timestep_spacing=...))", async () => {
    for (const c of index.cases.filter(
      (x) => x.class in CLASSES && x.from_config_overrides.timestep_spacing,
    )) {
      const s = build(c, diffusersConfigWithout(index, c, "timestep_spacing"), {
        timestepSpacing: c.from_config_overrides.timestep_spacing as "leading",
      });
      const r = await runFixtureTrajectory(s, c);
      expect(s.timesteps).toEqual(c.timesteps);
      expect(s.initNoiseSigma).toBe(c.init_noise_sigma);
      expect(r.finalErr).toBeLessThanOrEqual(1e-5);
    }
  });

  test("Euler a has no Karras sigmas in diffusers 0.29.2: the option is refused", () => {
    expect(() => new EulerAncestralDiscreteScheduler(index.base_config, { karrasSigmas: true })).toThrow(
      SchedulerConfigError,
    );
    // A config key it does not know is ignored, as diffusers' from_config ignores unexpected keys.
    const s = new EulerAncestralDiscreteScheduler({ ...index.base_config, use_karras_sigmas: true });
    expect("use_karras_sigmas" in s.config).toBe(false);
    expect(
      resolveEulerAncestralDiscreteConfig(index.base_config, { karrasSigmas: false }).timestep_spacing,
    ).toBe("linspace");
  });
});

describe("schedules", () => {
  test("Euler with one step and linspace spacing gives timesteps [0.0] and starts from σ at t = 0", () => {
    const s = new EulerDiscreteScheduler(index.base_config);
    s.setTimesteps(1);
    expect(s.timesteps).toEqual([0]);
    expect(s.sigmas.length).toBe(2);
    expect(s.sigmas[1]).toBe(0);
    expect(s.initNoiseSigma).toBe(s.sigmas[0] as number);
  });

  test("timestep spacings (Lin et al. 2024, Table 2) and class defaults", () => {
    expect(spacedTimesteps("linspace", 1000, 4, 1)).toEqual([999, 666, 333, 0]);
    expect(spacedTimesteps("leading", 1000, 4, 1)).toEqual([751, 501, 251, 1]);
    expect(spacedTimesteps("trailing", 1000, 4, 1)).toEqual([999, 749, 499, 249]);
    expect(spacedTimesteps("trailing", 1000, 3, 0)).toEqual([999, 666, 332]);
    const linspace20 = spacedTimesteps("linspace", 1000, 20, 0);
    expect(linspace20[1]).toBe(f32(999 - 999 / 19)); // fractional, float32
    expect(resolveEulerDiscreteConfig(index.base_config).timestep_spacing).toBe("linspace");
    const heun = new HeunDiscreteScheduler({});
    expect(heun.config).toMatchObject({ beta_start: 0.00085, beta_end: 0.012, beta_schedule: "linear" });
  });

  test("trailing spacing: init_noise_sigma is σ_max, the trajectory runs to σ = 0", () => {
    for (const make of Object.values(CLASSES)) {
      const s = make({ ...index.base_config, timestep_spacing: "trailing" });
      s.setTimesteps(5);
      expect(s.timesteps[0]).toBe(999);
      expect(s.initNoiseSigma).toBe(s.sigmas[0] as number);
      expect(s.sigmas[s.sigmas.length - 1]).toBe(0);
    }
  });

  test("np.interp at fractional timesteps, Karras σ and the float32 log of numpy", () => {
    const table = Float32Array.from([1, 2, 4, 8]);
    expect(interpSigmas([3, 2.5, 0.25, -1, 7], table)).toEqual([8, 6, 1.25, 1, 8]);
    const k = karrasFromSchedule([10, 5, 0.1], 5);
    expect(k[0]).toBeCloseTo(10, 12);
    expect(k[4]).toBeCloseTo(0.1, 12);
    for (let i = 1; i < 5; i++) expect(k[i] as number).toBeLessThan(k[i - 1] as number);
    // numpy's SIMD float32 log is not the correctly rounded one: log(3.3f) = 1.1939225f (correct: 1.1939224f).
    expect(npLogF32(3.3)).toBe(1.193922519683838);
    expect(f32(Math.log(f32(3.3)))).toBe(1.1939224004745483);
    expect(npLogF32(0.5)).toBe(f32(-Math.LN2));
    expect(npLogF32(0)).toBe(Number.NEGATIVE_INFINITY);
    expect(npLogF32(-1)).toBeNaN();
    expect(npLogF32(1e-40)).toBeCloseTo(Math.log(1e-40), 4);
  });

  test("Heun and DPM2 interleave 2n − 1 evaluations", () => {
    const heun = new HeunDiscreteScheduler(index.base_config);
    heun.setTimesteps(3);
    expect(heun.timesteps).toEqual([999, 499.5, 499.5, 0, 0]);
    expect(heun.sigmas.length).toBe(6);
    const dpm2 = new KDPM2DiscreteScheduler(index.base_config);
    dpm2.setTimesteps(3);
    expect(dpm2.timesteps.length).toBe(5);
    expect(dpm2.timesteps[2]).toBe(499.5);
    // σ_mid is the geometric mean of its neighbours.
    const mid = dpm2.sigmasInterpol[1] as number;
    expect(mid).toBeCloseTo(Math.sqrt((dpm2.sigmas[0] as number) * (dpm2.sigmas[1] as number)), 4);
    expect(dpm2.sigmasInterpol[0]).toBeNaN();
  });
});

describe("stepping", () => {
  test("index_for_timestep takes the second occurrence; unknown timesteps are refused", () => {
    expect(indexForTimestep([999, 500, 500, 0], 500)).toBe(2);
    expect(indexForTimestep([999, 500, 500, 0], 999)).toBe(0);
    expect(() => indexForTimestep([999, 500], 3)).toThrow(RangeError);
  });

  test("state across the two stages: the second evaluation restarts from the stored x_i", () => {
    // With ε-prediction the slope (x − D)/σ is ε itself; a constant ε makes both stages agree, so the full step
    // is x_i + (σ_{i+1} − σ_i)·ε whatever sample the second evaluation sees.
    const x = new Float32Array([0.5, -1, 2, 0]);
    const eps = new Float32Array([0.1, 0.2, -0.3, 0]);
    for (const s of [
      new HeunDiscreteScheduler(index.base_config),
      new KDPM2DiscreteScheduler(index.base_config),
    ]) {
      s.setTimesteps(2);
      expect(s.stateInFirstOrder).toBe(true);
      const half = s.step(eps, s.timesteps[0] as number, x).prevSample;
      expect(s.stateInFirstOrder).toBe(false);
      const full = s.step(eps, s.timesteps[1] as number, half).prevSample;
      expect(s.stateInFirstOrder).toBe(true);
      const sigma0 = s.sigmas[0] as number;
      const sigma1 = s.sigmas[1] as number;
      full.forEach((v, k) => {
        expect(v).toBeCloseTo((x[k] as number) + (sigma1 - sigma0) * (eps[k] as number), 4);
      });
    }
  });

  test("Euler draws noise every step (advancing the generator), Euler a needs a generator", () => {
    const s = new EulerDiscreteScheduler(index.base_config);
    s.setTimesteps(2);
    const g = new TorchGenerator(7, { kernel: "avx2" });
    const x = new Float32Array(16).fill(1);
    s.step(new Float32Array(16), s.timesteps[0] as number, x, g);
    const afterOne = g.randn([16]);
    const g2 = new TorchGenerator(7, { kernel: "avx2" });
    g2.randn([16]);
    expect(Array.from(afterOne)).toEqual(Array.from(g2.randn([16])));

    const a = new EulerAncestralDiscreteScheduler(index.base_config);
    a.setTimesteps(2);
    expect(() => a.step(new Float32Array(16), a.timesteps[0] as number, x)).toThrow();
  });

  test("Euler with churn adds noise (s_churn > 0), otherwise ε-prediction at σ → 0 returns the denoised sample", () => {
    const x = new Float32Array(16).map((_, i) => i / 8 - 1);
    const eps = new Float32Array(16).fill(0.1);
    const plain = new EulerDiscreteScheduler(index.base_config);
    plain.setTimesteps(1);
    const out = plain.step(eps, 0, x, new TorchGenerator(1, { kernel: "avx2" }));
    expect(Array.from(out.prevSample)).toEqual(Array.from(out.predOriginalSample ?? []));
    const churned = new EulerDiscreteScheduler(index.base_config, {}, { sChurn: 10 });
    churned.setTimesteps(4);
    const g = new TorchGenerator(1, { kernel: "avx2" });
    const a = churned.step(eps, churned.timesteps[0] as number, x, g).prevSample;
    plain.setTimesteps(4);
    const b = plain.step(
      eps,
      plain.timesteps[0] as number,
      x,
      new TorchGenerator(1, { kernel: "avx2" }),
    ).prevSample;
    expect(Array.from(a)).not.toEqual(Array.from(b));
  });

  test("LMS coefficients are the integrals of the Lagrange basis (they sum to σ_{i+1} − σ_i)", () => {
    const s = new LMSDiscreteScheduler(index.base_config);
    s.setTimesteps(6);
    const x = new Float32Array(4);
    let sample: Float32Array = x;
    s.timesteps.forEach((t) => {
      // A constant slope d = 1 everywhere: then x_{i+1} − x_i = Σ c_j.
      const denoisedIsXMinusSigma = new Float32Array(4).fill(1);
      const before = sample;
      sample = s.step(denoisedIsXMinusSigma, t, before).prevSample;
    });
    // x_n − x_0 = Σ_i (σ_{i+1} − σ_i) = −σ_0, to float32 rounding.
    expect(sample[0] as number).toBeCloseTo(-(s.sigmas[0] as number), 4);
  });

  test("validation: step before setTimesteps, too many steps, length mismatch, refused settings", () => {
    const s = new EulerDiscreteScheduler(index.base_config);
    expect(() => s.step(new Float32Array(4), 999, new Float32Array(4))).toThrow();
    s.setTimesteps(1);
    const g = new TorchGenerator(1, { kernel: "avx2" });
    expect(() => s.step(new Float32Array(3), 0, new Float32Array(4), g)).toThrow(RangeError);
    s.step(new Float32Array(4), 0, new Float32Array(4), g);
    expect(() => s.step(new Float32Array(4), 0, new Float32Array(4), g)).toThrow();
    expect(() => s.setTimesteps(0)).toThrow(RangeError);
    const refused: [string, Record<string, unknown>][] = [
      ["EulerDiscreteScheduler", { prediction_type: "x0" }],
      ["EulerDiscreteScheduler", { interpolation_type: "cubic" }],
      ["EulerAncestralDiscreteScheduler", { prediction_type: "sample" }],
      ["KDPM2DiscreteScheduler", { prediction_type: "sample" }],
      ["LMSDiscreteScheduler", { beta_schedule: "cosine" }],
      ["HeunDiscreteScheduler", { timestep_spacing: "even" }],
    ];
    for (const [cls, extra] of refused) {
      const make = CLASSES[cls] as (config: SchedulerConfig) => KScheduler;
      expect(() => make({ ...index.base_config, ...extra } as SchedulerConfig)).toThrow(SchedulerConfigError);
    }
    // Heun also knows the "exp" β schedule.
    const heun = new HeunDiscreteScheduler(Object.fromEntries([["beta_schedule", "exp"]]) as SchedulerConfig);
    heun.setTimesteps(4);
    expect(heun.sigmas.every((v) => Number.isFinite(v))).toBe(true);
  });
});
