import { beforeAll, describe, expect, test } from "bun:test";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { SchedulerConfigError } from "../../api/engine/schedulers/config.ts";
import { DDIMScheduler, resolveDDIMConfig } from "../../api/engine/schedulers/ddim.ts";
import { LCMScheduler } from "../../api/engine/schedulers/lcm.ts";
import { PNDMScheduler } from "../../api/engine/schedulers/pndm.ts";
import type { SchedulerConfig, SchedulerOptions } from "../../api/engine/schedulers/scheduler.ts";
import {
  casesOf,
  diffusersConfig,
  expectFixtureCase,
  expectResolvedConfig,
  loadSchedulerFixtures,
  maxAbsDiff,
  type SchedulerFixtureIndex,
  toyModel,
} from "../helpers/scheduler_fixtures.ts";

const f32 = Math.fround;

let index: SchedulerFixtureIndex;

beforeAll(async () => {
  index = await loadSchedulerFixtures();
});

// ---------------------------------------------------------------------------------------------------------------

describe("DDIMScheduler vs diffusers 0.29.2", () => {
  test("the public DDIM cases are present (v-prediction and eta = 1 included)", () => {
    const names = casesOf(index, "DDIMScheduler").map((c) => c.name);
    for (const name of ["ddim_1", "ddim_4", "ddim_20", "ddim_50", "ddim_vpred_20", "ddim_eta1_10"]) {
      expect(names).toContain(name);
    }
  });

  test("every case: timesteps, init_noise_sigma, every prev_sample / pred_original_sample, final sample", async () => {
    for (const c of casesOf(index, "DDIMScheduler")) {
      const eta = c.step_kwargs.eta;
      const options: SchedulerOptions = typeof eta === "number" ? { eta } : {};
      await expectFixtureCase(new DDIMScheduler(diffusersConfig(index, c), options), c);
    }
  });

  test("the resolved config is diffusers' scheduler.config", () => {
    for (const c of casesOf(index, "DDIMScheduler")) {
      const s = new DDIMScheduler(diffusersConfig(index, c));
      expectResolvedConfig(c, new DDIMScheduler(c.config).config, s.config);
    }
  });

  test("SchedulerOptions.timestepSpacing: leading / linspace / trailing timesteps as diffusers computes them", () => {
    // SD 1.5's file (T = 1000, steps_offset 1) says nothing about timestep_spacing, so DDIM's default "leading"
    // applies unless the option overrides it. By hand from DDIMScheduler.set_timesteps:
    //   leading:  (arange(0, n) · (T // n)).round()[::-1] + steps_offset
    //   linspace: linspace(0, T − 1, n).round()[::-1]            (numpy rounds half to even; no steps_offset)
    //   trailing: round(arange(T, 0, −T / n)) − 1                (no steps_offset)
    const base = index.base_config;
    const timesteps = (options: SchedulerOptions, n: number, config: SchedulerConfig = base) => {
      const s = new DDIMScheduler(config, options);
      s.setTimesteps(n);
      return s.timesteps;
    };

    // n = 20: leading = 19·50 + 1 … 0·50 + 1.
    expect(timesteps({}, 20)).toEqual([
      951, 901, 851, 801, 751, 701, 651, 601, 551, 501, 451, 401, 351, 301, 251, 201, 151, 101, 51, 1,
    ]);
    // trailing: arange(1000, 0, −50) = 1000, 950, …, 50, minus 1.
    expect(timesteps({ timestepSpacing: "trailing" }, 20)).toEqual([
      999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 499, 449, 399, 349, 299, 249, 199, 149, 99, 49,
    ]);
    // linspace: i · 999/19 = i · 52.5789…, rounded: 0, 52.58 → 53, 105.16 → 105, 157.74 → 158, … 946.42 → 946, 999.
    const linspace20 = [
      999, 946, 894, 841, 789, 736, 684, 631, 578, 526, 473, 421, 368, 315, 263, 210, 158, 105, 53, 0,
    ];
    expect(timesteps({ timestepSpacing: "linspace" }, 20)).toEqual(linspace20);
    expect(linspace20).toEqual(Array.from({ length: 20 }, (_, i) => Math.round(((19 - i) * 999) / 19)));

    // n = 3: leading 1000 // 3 = 333 → 666, 333, 0 (+1); trailing arange(1000, 0, −333.33…) = 1000, 666.67,
    // 333.33 → 1000, 667, 333 (−1); linspace 0, 499.5, 999 with 499.5 → 500 (half to even).
    expect(timesteps({}, 3)).toEqual([667, 334, 1]);
    expect(timesteps({ timestepSpacing: "trailing" }, 3)).toEqual([999, 666, 332]);
    expect(timesteps({ timestepSpacing: "linspace" }, 3)).toEqual([999, 500, 0]);
    // linspace 0, 249.75, 499.5, 749.25, 999: 499.5 → 500 again (half to even rounds up when 500 is even).
    expect(timesteps({ timestepSpacing: "linspace" }, 5)).toEqual([999, 749, 500, 250, 0]);

    // n = 61, trailing: numpy's arange(1000, 0, −1000/61) has ⌈61.000…01⌉ = 62 elements, the last ≈ 1e−13, so
    // diffusers gets 62 timesteps ending in −1 (torch then reads ᾱ[−1] = ᾱ[999] there).
    const t61 = timesteps({ timestepSpacing: "trailing" }, 61);
    expect(t61.length).toBe(62);
    expect(t61.slice(0, 3)).toEqual([999, 983, 966]);
    expect(t61.at(-1)).toBe(-1);

    // The option wins over the file, and a key in _use_default_values falls back to the class default.
    const trailingFile = { ...base, timestep_spacing: "trailing" } as SchedulerConfig;
    expect(timesteps({}, 3, trailingFile)).toEqual([999, 666, 332]);
    expect(timesteps({ timestepSpacing: "leading" }, 3, trailingFile)).toEqual([667, 334, 1]);
    expect(timesteps({}, 3, { ...trailingFile, _use_default_values: ["timestep_spacing"] })).toEqual([
      667, 334, 1,
    ]);
  });

  test("trailing spacing steps use ᾱ at t and t − ⌊T/n⌋ (diffusers' previous timestep)", () => {
    const s = new DDIMScheduler(index.base_config, { timestepSpacing: "trailing" });
    s.setTimesteps(3); // [999, 666, 332]; previous timesteps 666, 333, −1 (→ final ᾱ = ᾱ_0)
    const x = new Float32Array([0.5, -1.25, 2, 0.125]);
    const eps = new Float32Array([0.1, 0.2, -0.3, 0.05]);
    for (const [t, prev] of [
      [999, 666],
      [666, 333],
      [332, -1],
    ] as const) {
      const out = s.step(eps, t, x);
      const a = s.alphasCumprod[t] as number;
      const ap = prev >= 0 ? (s.alphasCumprod[prev] as number) : (s.alphasCumprod[0] as number);
      x.forEach((v, k) => {
        const e = eps[k] as number;
        const x0 = (v - Math.sqrt(1 - a) * e) / Math.sqrt(a);
        expect(out.predOriginalSample?.[k]).toBeCloseTo(x0, 5);
        expect(out.prevSample[k]).toBeCloseTo(Math.sqrt(ap) * x0 + Math.sqrt(1 - ap) * e, 5);
      });
    }
  });

  test("eta = 0 draws no noise; eta > 0 draws one randn per step and needs a generator", () => {
    const x = new Float32Array(32).map((_, i) => Math.sin(i));
    const eps = x.map((v) => 0.3 * v);
    const g = new TorchGenerator(7, { kernel: "avx2" });
    const ddim = new DDIMScheduler(index.base_config);
    ddim.setTimesteps(10);
    ddim.step(eps, 901, x, g);
    expect(Array.from(g.randn([32]))).toEqual(
      Array.from(new TorchGenerator(7, { kernel: "avx2" }).randn([32])),
    );

    const noisy = new DDIMScheduler(index.base_config, { eta: 0.5 });
    noisy.setTimesteps(10);
    expect(() => noisy.step(eps, 901, x)).toThrow();
    const g1 = new TorchGenerator(7, { kernel: "avx2" });
    const g2 = new TorchGenerator(7, { kernel: "avx2" });
    const det = ddim.step(eps, 901, x).prevSample;
    const sto = noisy.step(eps, 901, x, g1).prevSample;
    const z = g2.randn([32]);
    // x_{t'} = (deterministic part with √(1 − ᾱ_{t'} − σ²)) + σ·z, σ = η·√variance (eq. 16).
    const a = noisy.alphasCumprod[901] as number;
    const ap = noisy.alphasCumprod[801] as number;
    const sigma = 0.5 * Math.sqrt(((1 - ap) / (1 - a)) * (1 - a / ap));
    sto.forEach((v, k) => {
      const x0 = ((x[k] as number) - Math.sqrt(1 - a) * (eps[k] as number)) / Math.sqrt(a);
      const expected =
        Math.sqrt(ap) * x0 + Math.sqrt(1 - ap - sigma ** 2) * (eps[k] as number) + sigma * (z[k] as number);
      expect(v).toBeCloseTo(expected, 5);
      expect(v).not.toBe(det[k]);
    });
    expect(Array.from(g1.randn([16]))).toEqual(Array.from(g2.randn([16]))); // exactly one draw was made
  });

  test("set_alpha_to_one, clip_sample / clip_sample_range, sample prediction, zero terminal SNR", () => {
    const x = new Float32Array([3, -2, 0.5, 1e-3]);
    const eps = new Float32Array([-0.4, 0.9, 0.2, 0]);
    // Last step with ᾱ_{t'} = 1: x_{t'} = x̂_0 exactly.
    const one = new DDIMScheduler({ ...index.base_config, set_alpha_to_one: true });
    one.setTimesteps(4);
    const last = one.step(eps, 1, x);
    expect(Array.from(last.prevSample)).toEqual(Array.from(last.predOriginalSample ?? []));

    const clipped = new DDIMScheduler({ ...index.base_config, clip_sample: true, clip_sample_range: 0.75 });
    clipped.setTimesteps(4);
    const c = clipped.step(eps, 751, x);
    expect(Array.from(c.predOriginalSample ?? []).every((v) => Math.abs(v) <= 0.75)).toBe(true);
    expect(c.predOriginalSample?.[0]).toBe(0.75);
    // DDIM's class default is clip_sample true with range 1 (SD's file turns it off).
    expect(resolveDDIMConfig({}).clip_sample).toBe(true);

    const sample = new DDIMScheduler({ ...index.base_config, prediction_type: "sample" });
    sample.setTimesteps(4);
    const out = sample.step(eps, 751, x);
    expect(Array.from(out.predOriginalSample ?? [])).toEqual(Array.from(eps));

    // Lin et al. 2024: ᾱ_{T−1} = 0, so at t = 999 a v-prediction model's x̂_0 is −v.
    const zsnr = new DDIMScheduler(
      { ...index.base_config, rescale_betas_zero_snr: true, prediction_type: "v_prediction" },
      { timestepSpacing: "trailing" },
    );
    expect(zsnr.alphasCumprod[999]).toBe(0);
    zsnr.setTimesteps(4);
    expect(zsnr.timesteps[0]).toBe(999);
    const z = zsnr.step(eps, 999, x);
    expect(Array.from(z.predOriginalSample ?? [])).toEqual(Array.from(eps).map((v) => 0 - v));
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("PNDMScheduler vs diffusers 0.29.2", () => {
  test("the public PNDM cases are present", () => {
    const names = casesOf(index, "PNDMScheduler").map((c) => c.name);
    for (const name of ["pndm_4", "pndm_20", "pndm_50"]) expect(names).toContain(name);
  });

  test("every case: n + 1 timesteps (duplicated second one), every prev_sample, final sample", async () => {
    for (const c of casesOf(index, "PNDMScheduler")) {
      await expectFixtureCase(new PNDMScheduler(diffusersConfig(index, c)), c);
    }
  });

  test("the resolved config is diffusers' scheduler.config", () => {
    for (const c of casesOf(index, "PNDMScheduler")) {
      const s = new PNDMScheduler(diffusersConfig(index, c));
      expectResolvedConfig(c, new PNDMScheduler(c.config).config, s.config);
    }
  });

  test("PLMS timesteps for each spacing", () => {
    const plms = (options: SchedulerOptions, n: number) => {
      const s = new PNDMScheduler(index.base_config, options);
      s.setTimesteps(n);
      return s.timesteps;
    };
    // _timesteps ascending; the PLMS list is [t_0 … t_{n−2}, t_{n−2}, t_{n−1}] reversed.
    expect(plms({}, 4)).toEqual([751, 501, 501, 251, 1]);
    expect(plms({ timestepSpacing: "trailing" }, 4)).toEqual([999, 749, 749, 499, 249]);
    expect(plms({ timestepSpacing: "linspace" }, 4)).toEqual([999, 666, 666, 333, 0]);
    expect(plms({}, 1)).toEqual([1]);
  });

  test("PRK path (skip_prk_steps false, diffusers' default): timesteps and the Runge–Kutta trajectory", () => {
    const config = { ...index.base_config, skip_prk_steps: false };
    const s = new PNDMScheduler(config);
    expect(new PNDMScheduler({}).config.skip_prk_steps).toBe(false);
    s.setTimesteps(10);
    // Leading: _timesteps = 1, 101, …, 901; the last four a, b, c, d = 601, 701, 801, 901 with h = 100 // 2 = 50
    // give [d, c+h, c+h, c, c, b+h, b+h, b, b, a+h, a+h, a], then PLMS on _timesteps[:-3] reversed = 601 … 1
    // (601 twice: the last RK evaluation ends the step b → a, the first PLMS step evaluates at x_a).
    expect(s.timesteps).toEqual([
      901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1,
    ]);
    expect(() => new PNDMScheduler(config).setTimesteps(3)).toThrow(RangeError);

    // Reference in float64: three RK4 steps through φ (eq. 9, eq. 12), then Adams–Bashforth of order 4 (eq. 13).
    const ac = Array.from(s.alphasCumprod);
    const phi = (x: number[], e: number[], t: number, tp: number) => {
      const a = ac[t] as number;
      const ap = tp >= 0 ? (ac[tp] as number) : (ac[0] as number);
      const denom = a * Math.sqrt(1 - ap) + Math.sqrt(a * (1 - a) * ap);
      return x.map((v, k) => Math.sqrt(ap / a) * v - ((ap - a) * (e[k] as number)) / denom);
    };
    const model = (x: number[], t: number) => x.map((v) => 0.3 * Math.tanh(v) + 0.05 * Math.cos(t / 37));
    const x0 = Array.from(new TorchGenerator(3, { kernel: "avx2" }).randn([16]));
    let x: Float32Array = Float32Array.from(x0);
    s.timesteps.forEach((t) => {
      x = s.step(toyModel(x, t), t, x).prevSample;
    });
    let ref = x0;
    const ets2: number[][] = [];
    const prk = s.timesteps.slice(0, 12);
    for (let i = 0; i < 12; i += 4) {
      const d = prk[i] as number;
      const mid = prk[i + 1] as number;
      const c = prk[i + 3] as number;
      const e1 = model(ref, d);
      const e2 = model(phi(ref, e1, d, mid), mid);
      const e3 = model(phi(ref, e2, d, mid), mid);
      const e4 = model(phi(ref, e3, d, c), c);
      ets2.push(e1);
      ref = phi(
        ref,
        e1.map((v, k) => (v + 2 * (e2[k] as number) + 2 * (e3[k] as number) + (e4[k] as number)) / 6),
        d,
        c,
      );
    }
    for (const t of s.timesteps.slice(12)) {
      ets2.push(model(ref, t));
      const [e3, e2, e1, e0] = ets2.slice(-4) as [number[], number[], number[], number[]];
      const ab = e0.map(
        (v, k) => (55 * v - 59 * (e1[k] as number) + 37 * (e2[k] as number) - 9 * (e3[k] as number)) / 24,
      );
      ref = phi(ref, ab, t, t - 100);
    }
    expect(maxAbsDiff(x, ref)).toBeLessThan(1e-4);
  });

  test("v-prediction: φ turns v into ε = √ᾱ_t·v + √(1 − ᾱ_t)·x_t", () => {
    const x = new Float32Array([0.5, -1.25, 2, 0.125]);
    const v = new Float32Array([0.1, 0.2, -0.3, 0.05]);
    const vp = new PNDMScheduler({ ...index.base_config, prediction_type: "v_prediction" });
    const ep = new PNDMScheduler(index.base_config);
    vp.setTimesteps(4);
    ep.setTimesteps(4);
    const a = vp.alphasCumprod[751] as number;
    const eps = v.map(
      (vv, k) => f32(f32(Math.sqrt(a)) * vv) + f32(f32(Math.sqrt(f32(1 - a))) * (x[k] as number)),
    );
    expect(Array.from(vp.step(v, 751, x).prevSample)).toEqual(Array.from(ep.step(eps, 751, x).prevSample));
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("LCMScheduler vs diffusers 0.29.2", () => {
  test("the public LCM cases are present", () => {
    const names = casesOf(index, "LCMScheduler").map((c) => c.name);
    for (const name of ["lcm_1", "lcm_4", "lcm_8"]) expect(names).toContain(name);
  });

  test("every case: timesteps, every prev_sample and denoised (noise between steps), final sample", async () => {
    for (const c of casesOf(index, "LCMScheduler")) {
      await expectFixtureCase(new LCMScheduler(diffusersConfig(index, c)), c);
    }
  });

  test("the resolved config is diffusers' scheduler.config", () => {
    for (const c of casesOf(index, "LCMScheduler")) {
      const s = new LCMScheduler(diffusersConfig(index, c));
      expectResolvedConfig(c, new LCMScheduler(c.config).config, s.config);
    }
  });

  test("original_inference_steps picks the distillation schedule; timestep_spacing does not change it", () => {
    const timesteps = (config: SchedulerConfig, n: number, options: SchedulerOptions = {}) => {
      const s = new LCMScheduler(config, options);
      s.setTimesteps(n);
      return s.timesteps;
    };
    // k = 1000 // 50 = 20: 999, 979, …, 19; indices ⌊j · 50/4⌋ = 0, 12, 25, 37.
    expect(timesteps(index.base_config, 4)).toEqual([999, 759, 499, 259]);
    expect(timesteps(index.base_config, 4, { timestepSpacing: "trailing" })).toEqual([999, 759, 499, 259]);
    // k = 10: 999, 989, …, 9; indices 0, 25, 50, 75.
    expect(timesteps({ ...index.base_config, original_inference_steps: 100 }, 4)).toEqual([
      999, 749, 499, 249,
    ]);
    expect(() => timesteps(index.base_config, 51)).toThrow(RangeError);
  });

  test("boundary condition: the last step returns c_skip·x_t + c_out·x̂_0 without drawing noise", () => {
    const x = new Float32Array([0.5, -1.25, 2, 0.125]);
    const eps = new Float32Array([0.1, 0.2, -0.3, 0.05]);
    for (const scaling of [10, 1, 0.1]) {
      const s = new LCMScheduler({ ...index.base_config, timestep_scaling: scaling });
      s.setTimesteps(1);
      const t = s.timesteps[0] as number;
      const out = s.step(eps, t, x); // no generator: the last (only) step draws no noise
      const a = s.alphasCumprod[t] as number;
      const st = t * scaling;
      const cSkip = 0.25 / (st * st + 0.25);
      const cOut = st / Math.sqrt(st * st + 0.25);
      x.forEach((v, k) => {
        const x0 = (v - Math.sqrt(1 - a) * (eps[k] as number)) / Math.sqrt(a);
        expect(out.prevSample[k]).toBeCloseTo(cSkip * v + cOut * x0, 4);
      });
      expect(Array.from(out.predOriginalSample ?? [])).toEqual(Array.from(out.prevSample));
    }
    const multi = new LCMScheduler(index.base_config);
    multi.setTimesteps(2);
    expect(() => multi.step(eps, 999, x)).toThrow(); // a noisy step needs the generator
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe("options and refusals", () => {
  test("no Karras sigmas for DDIM / PLMS / LCM (SchedulerConfigError); karrasSigmas false is fine", () => {
    const make = [
      (o: SchedulerOptions) => new DDIMScheduler(index.base_config, o),
      (o: SchedulerOptions) => new PNDMScheduler(index.base_config, o),
      (o: SchedulerOptions) => new LCMScheduler(index.base_config, o),
    ];
    for (const m of make) {
      expect(() => m({ karrasSigmas: true })).toThrow(SchedulerConfigError);
      expect(() => m({ karrasSigmas: false })).not.toThrow();
    }
  });

  test("unsupported settings are refused with a config error", () => {
    const base = index.base_config;
    const refused: (() => unknown)[] = [
      () => new DDIMScheduler({ ...base, thresholding: true }),
      () => new DDIMScheduler({ ...base, prediction_type: "x0" } as unknown as SchedulerConfig),
      () => new DDIMScheduler(base, { eta: -1 }),
      () => new DDIMScheduler(base, { eta: Number.NaN }),
      () => new PNDMScheduler({ ...base, prediction_type: "sample" }),
      () => new PNDMScheduler({ ...base, timestep_spacing: "karras" } as unknown as SchedulerConfig),
      () => new LCMScheduler({ ...base, thresholding: true }),
      () => new LCMScheduler({ ...base, original_inference_steps: 2000 }),
    ];
    for (const r of refused) expect(r).toThrow(SchedulerConfigError);
  });

  test("step bookkeeping and input validation", () => {
    const x = new Float32Array(4);
    for (const s of [
      new DDIMScheduler(index.base_config),
      new PNDMScheduler(index.base_config),
      new LCMScheduler(index.base_config),
    ]) {
      expect(() => s.step(x, 1, x)).toThrow(); // before setTimesteps
      expect(() => s.setTimesteps(0)).toThrow(RangeError);
      expect(() => s.setTimesteps(1001)).toThrow(RangeError);
      s.setTimesteps(4);
      expect(() => s.step(new Float32Array(3), s.timesteps[0] as number, x)).toThrow(RangeError);
      expect(s.scaleModelInput(x, 1)).toBe(x);
      expect(s.initNoiseSigma).toBe(1);
    }
    const ddim = new DDIMScheduler(index.base_config);
    ddim.setTimesteps(4);
    expect(() => ddim.step(x, 1000, x)).toThrow(RangeError);
  });
});
