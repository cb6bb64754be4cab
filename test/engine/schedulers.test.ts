import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { alphasCumprod, betasFromConfig, torchLinspaceF32 } from "../../api/engine/schedulers/betas.ts";
import { SchedulerConfigError } from "../../api/engine/schedulers/config.ts";
import {
  DPMSolverMultistepScheduler,
  resolveDPMSolverMultistepConfig,
} from "../../api/engine/schedulers/dpmsolver_multistep.ts";
import { createScheduler, SCHEDULERS } from "../../api/engine/schedulers/index.ts";
import type { SchedulerConfig } from "../../api/engine/schedulers/scheduler.ts";
import { expf, expm1f, logf, tanhf } from "../../api/engine/schedulers/sleef.ts";
import { SCHEDULER_NAMES } from "../../contract/index.ts";
import {
  diffusersConfig,
  diffusersConfigWithout,
  expectFixtureCase,
  expectResolvedConfig,
  loadSchedulerFixtures,
  runFixtureTrajectory,
  SCHEDULER_FIXTURES,
  type SchedulerFixtureCase,
  type SchedulerFixtureIndex,
  toyModel,
} from "../helpers/scheduler_fixtures.ts";

const f32 = Math.fround;

/** SD 1.x's training schedule. */
const SD15_BETAS = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  trained_betas: null,
  rescale_betas_zero_snr: false,
} as const;

let index: SchedulerFixtureIndex;
let dpmCases: SchedulerFixtureCase[] = [];
let sdeCases: SchedulerFixtureCase[] = [];

beforeAll(async () => {
  index = await loadSchedulerFixtures();
  const multistep = index.cases.filter((c) => c.class === "DPMSolverMultistepScheduler");
  dpmCases = multistep.filter((c) => c.config.algorithm_type === "dpmsolver++");
  sdeCases = multistep.filter((c) => c.config.algorithm_type === "sde-dpmsolver++");
});

describe("noise schedule (betas.ts)", () => {
  test("SD 1.x scaled_linear ᾱ equals diffusers/torch bit for bit", () => {
    const ac = alphasCumprod(betasFromConfig(SD15_BETAS));
    expect(Array.from(ac)).toEqual(index.alphas_cumprod_sd15);
  });

  test("torch.linspace endpoints and symmetry", () => {
    const l = torchLinspaceF32(0.1, 0.9, 1000);
    expect(l[0]).toBe(f32(0.1));
    expect(l[999]).toBe(f32(0.9));
    expect(Array.from(torchLinspaceF32(0, 1, 5))).toEqual([0, 0.25, 0.5, 0.75, 1]);
    expect(Array.from(torchLinspaceF32(3, 7, 1))).toEqual([3]);
  });

  test("other schedules are well formed", () => {
    const base = { num_train_timesteps: 1000, beta_start: 0.0001, beta_end: 0.02, trained_betas: null };
    for (const schedule of ["linear", "scaled_linear", "squaredcos_cap_v2"] as const) {
      const betas = betasFromConfig({ ...base, beta_schedule: schedule, rescale_betas_zero_snr: false });
      expect(betas.length).toBe(1000);
      expect(betas.every((b) => b > 0 && b < 1)).toBe(true);
      const zsnr = alphasCumprod(
        betasFromConfig({ ...base, beta_schedule: schedule, rescale_betas_zero_snr: true }),
      );
      expect(zsnr[999]).toBe(0); // zero terminal SNR
    }
    const trained = betasFromConfig({
      ...base,
      beta_schedule: "linear",
      trained_betas: [0.1, 0.2],
      num_train_timesteps: 2,
      rescale_betas_zero_snr: false,
    });
    expect(Array.from(trained)).toEqual([f32(0.1), f32(0.2)]);
  });
});

describe("torch float32 elementwise math (sleef.ts)", () => {
  test("tanhf reproduces every model_output of the oracle's toy model bit for bit", async () => {
    let checked = 0;
    for (const c of index.cases) {
      if (c.timesteps.length !== c.num_model_evals) continue;
      const tensors = await loadSafetensors(join(SCHEDULER_FIXTURES, c.tensors_file));
      const input = tensors.get("model_input")?.data as Float32Array;
      const output = tensors.get("model_output")?.data as Float32Array;
      const n = input.length / c.num_model_evals;
      c.timesteps.forEach((t, i) => {
        const eps = toyModel(input.subarray(i * n, (i + 1) * n), t);
        expect(Array.from(eps)).toEqual(Array.from(output.subarray(i * n, (i + 1) * n)));
        checked += n;
      });
    }
    expect(checked).toBeGreaterThan(50_000);
  });

  test("expf / logf / tanhf: within one ulp of the correctly rounded value, IEEE special cases", () => {
    const ulp = (x: number) => {
      const a = Math.abs(f32(x));
      return f32(a * (1 + 2 ** -23)) - a || 2 ** -149;
    };
    for (let i = 0; i < 20_000; i++) {
      const x = f32(Math.exp((i / 20_000) * 40 - 20));
      expect(Math.abs(logf(x) - Math.log(x))).toBeLessThanOrEqual(ulp(Math.log(x)));
      const y = f32((i / 20_000) * 40 - 20);
      expect(Math.abs(expf(y) - Math.exp(y))).toBeLessThanOrEqual(ulp(Math.exp(y)));
      expect(Math.abs(tanhf(y / 4) - Math.tanh(y / 4))).toBeLessThanOrEqual(ulp(Math.tanh(y / 4)));
    }
    expect(logf(0)).toBe(Number.NEGATIVE_INFINITY);
    expect(logf(1)).toBe(0);
    expect(logf(-1)).toBeNaN();
    expect(logf(Number.POSITIVE_INFINITY)).toBe(Number.POSITIVE_INFINITY);
    expect(logf(1e-40)).toBeCloseTo(Math.log(1e-40), 4);
    expect(expf(0)).toBe(1);
    expect(expf(Number.NEGATIVE_INFINITY)).toBe(0);
    expect(expf(200)).toBe(Number.POSITIVE_INFINITY);
    expect(tanhf(0)).toBe(0);
    expect(Object.is(tanhf(-0), -0)).toBe(true);
    expect(tanhf(20)).toBe(1);
    expect(tanhf(-20)).toBe(-1);
  });

  test("expm1f: within one ulp of the correctly rounded value, its own range limits and IEEE special cases", () => {
    const ulp = (x: number) => {
      const a = Math.abs(f32(x));
      return f32(a * (1 + 2 ** -23)) - a || 2 ** -149;
    };
    for (let i = 0; i < 20_000; i++) {
      const y = f32((i / 20_000) * 40 - 20);
      expect(Math.abs(expm1f(y) - Math.expm1(y))).toBeLessThanOrEqual(ulp(Math.expm1(y)));
      const tiny = f32(y * 1e-6);
      expect(Math.abs(expm1f(tiny) - Math.expm1(tiny))).toBeLessThanOrEqual(ulp(Math.expm1(tiny)));
    }
    expect(expm1f(0)).toBe(0);
    expect(Object.is(expm1f(-0), -0)).toBe(true);
    expect(expm1f(Number.NEGATIVE_INFINITY)).toBe(-1);
    expect(expm1f(-17)).toBe(-1);
    expect(expm1f(Number.POSITIVE_INFINITY)).toBe(Number.POSITIVE_INFINITY);
    expect(expm1f(89)).toBe(Number.POSITIVE_INFINITY);
    expect(expm1f(Number.NaN)).toBeNaN();
  });
});

describe("DPMSolverMultistepScheduler (dpmsolver++) vs diffusers 0.29.2", () => {
  test("the fixture has DPM++ 2M cases; every multistep case is covered by the dpmsolver++ or SDE tests", () => {
    expect(dpmCases.length).toBeGreaterThan(0);
    const multistep = index.cases.filter((c) => c.class === "DPMSolverMultistepScheduler");
    expect(dpmCases.length + sdeCases.length).toBe(multistep.length);
  });

  test("every case: timesteps, sigmas, init_noise_sigma and the whole trajectory", async () => {
    for (const c of dpmCases) {
      const scheduler =
        c.config.solver_order === 2
          ? createScheduler("dpmsolver++", diffusersConfig(index, c))
          : new DPMSolverMultistepScheduler(diffusersConfig(index, c)); // e.g. DPM++ 3M: not a table entry
      expect(scheduler).toBeInstanceOf(DPMSolverMultistepScheduler);
      await expectFixtureCase(scheduler, c);
    }
  });

  test("Karras sigmas from SchedulerOptions equal use_karras_sigmas from the config; the option wins", async () => {
    for (const c of dpmCases.filter((x) => x.from_config_overrides.use_karras_sigmas === true)) {
      const config = diffusersConfigWithout(index, c, "use_karras_sigmas");
      const viaOption = await runFixtureTrajectory(
        createScheduler("dpmsolver++", config, { karrasSigmas: true }),
        c,
      );
      expect(viaOption.timesteps).toEqual(c.timesteps);
      expect(viaOption.finalErr).toBeLessThanOrEqual(1e-5);
      const overridden = createScheduler("dpmsolver++", diffusersConfig(index, c), { karrasSigmas: false });
      overridden.setTimesteps(c.num_inference_steps);
      expect(overridden.timesteps).not.toEqual(c.timesteps);
    }
  });

  test("the full resolved config (with _use_default_values) builds the same scheduler as base + overrides", () => {
    for (const c of dpmCases) {
      const fromResolved = new DPMSolverMultistepScheduler(c.config);
      const fromBase = new DPMSolverMultistepScheduler(diffusersConfig(index, c));
      expectResolvedConfig(c, fromResolved.config, fromBase.config);
      fromResolved.setTimesteps(c.num_inference_steps);
      expect(fromResolved.timesteps).toEqual(c.timesteps);
    }
  });

  test("class defaults apply to keys the config lacks: timestep_spacing linspace unless the file says leading", () => {
    const base = index.base_config; // SD 1.5 file: steps_offset 1, no timestep_spacing
    const linspace = new DPMSolverMultistepScheduler(base);
    expect(linspace.config.timestep_spacing).toBe("linspace");
    expect(linspace.config.prediction_type).toBe("epsilon");
    linspace.setTimesteps(20);
    expect(linspace.timesteps.slice(0, 4)).toEqual([999, 949, 899, 849]);
    expect(linspace.timesteps.at(-1)).toBe(50);

    const leading = new DPMSolverMultistepScheduler({ ...base, timestep_spacing: "leading" });
    leading.setTimesteps(20);
    // step_ratio = 1000 // 21 = 47, timesteps = 20·47 … 1·47, + steps_offset
    expect(leading.timesteps).toEqual(Array.from({ length: 20 }, (_, i) => (20 - i) * 47 + 1));

    // A key listed in _use_default_values was not in the original file: the class default wins again.
    const saved = new DPMSolverMultistepScheduler({
      ...base,
      timestep_spacing: "leading",
      _use_default_values: ["timestep_spacing"],
    });
    expect(saved.config.timestep_spacing).toBe("linspace");

    const trailing = new DPMSolverMultistepScheduler({ ...base, timestep_spacing: "trailing" });
    trailing.setTimesteps(20);
    expect(trailing.timesteps).toEqual(Array.from({ length: 20 }, (_, i) => 999 - 50 * i));
  });

  test('SchedulerOptions.timestepSpacing "trailing" overrides the config: round(arange(T, 0, −T/n)) − 1', () => {
    // diffusers: np.arange(last_timestep, 0, -num_train_timesteps / n).round().astype(int64) - 1 (numpy values).
    const expected: Record<number, number[]> = {
      3: [999, 666, 332],
      7: [999, 856, 713, 570, 428, 285, 142],
      20: Array.from({ length: 20 }, (_, i) => 999 - 50 * i),
      30: [
        999, 966, 932, 899, 866, 832, 799, 766, 732, 699, 666, 632, 599, 566, 532, 499, 466, 432, 399, 366,
        332, 299, 266, 232, 199, 166, 132, 99, 66, 32,
      ],
    };
    const ac = alphasCumprod(betasFromConfig(SD15_BETAS));
    for (const algorithm of ["dpmsolver++", "sde-dpmsolver++"]) {
      // The file says "leading" (as SDXL's does); the request's spacing wins, like from_config(..., timestep_spacing=).
      const config: SchedulerConfig = {
        ...index.base_config,
        timestep_spacing: "leading",
        algorithm_type: algorithm,
      };
      for (const [n, timesteps] of Object.entries(expected)) {
        const s = new DPMSolverMultistepScheduler(config, { timestepSpacing: "trailing" });
        expect(s.config.timestep_spacing).toBe("trailing");
        s.setTimesteps(Number(n));
        expect(s.timesteps).toEqual(timesteps);
        // Sigmas are the training σ/α at those timesteps, plus the zero final sigma.
        expect(Array.from(s.sigmas)).toEqual([
          ...timesteps.map((t) => f32(Math.sqrt(f32(f32(1 - (ac[t] as number)) / (ac[t] as number))))),
          0,
        ]);
      }
    }
    const viaTable = createScheduler("dpmsolver++", index.base_config, { timestepSpacing: "trailing" });
    viaTable.setTimesteps(7);
    expect(viaTable.timesteps).toEqual(expected[7] as number[]);
    // Without the option the config (or the class default, linspace) decides.
    const plain = createScheduler("dpmsolver++", index.base_config);
    plain.setTimesteps(7);
    expect(plain.timesteps).not.toEqual(expected[7] as number[]);
    expect(
      () => new DPMSolverMultistepScheduler(index.base_config, { timestepSpacing: "bogus" as "trailing" }),
    ).toThrow(SchedulerConfigError);
  });

  test("first-order steps at the end, step bookkeeping and input validation", () => {
    const s = new DPMSolverMultistepScheduler(index.base_config);
    expect(() => s.step(new Float32Array(4), 999, new Float32Array(4))).toThrow();
    s.setTimesteps(2);
    const x = new Float32Array([0.5, -1, 2, 0]);
    const eps = new Float32Array([0.1, 0.2, -0.3, 0]);
    const out = s.step(eps, s.timesteps[0] as number, x);
    expect(out.predOriginalSample).toBeDefined();
    // The last step lands on σ = 0 (final_sigmas_type "zero"): its result is the data prediction x_θ itself,
    // x_θ = (x − σ_t·ε)/α_t with σ_t/α_t = sigmas[1].
    expect(s.sigmas[2]).toBe(0);
    const last = s.step(eps, s.timesteps[1] as number, out.prevSample);
    expect(Array.from(last.prevSample)).toEqual(Array.from(last.predOriginalSample ?? []));
    const alpha = 1 / Math.sqrt((s.sigmas[1] as number) ** 2 + 1);
    last.prevSample.forEach((v, i) => {
      const expected =
        ((out.prevSample[i] as number) - (s.sigmas[1] as number) * alpha * (eps[i] as number)) / alpha;
      expect(v).toBeCloseTo(expected, 5);
    });
    expect(() => s.step(eps, 0, x)).toThrow();
    expect(() => s.step(new Float32Array(3), 0, x)).toThrow(RangeError);
    expect(s.scaleModelInput(x, 999)).toBe(x);
  });

  test("unsupported settings are refused with a config error", () => {
    const refused: Record<string, unknown>[] = [
      { algorithm_type: "dpmsolver" },
      { algorithm_type: "sde-dpmsolver" },
      { algorithm_type: "sde-dpmsolver++", solver_order: 3 }, // diffusers has no third-order SDE update
      { algorithm_type: "bogus" },
      { thresholding: true },
      { variance_type: "learned_range" },
      { prediction_type: "x0" },
      { solver_order: 4 },
      { steps_offset: "1" },
      { beta_schedule: "cosine" },
    ];
    for (const extra of refused) {
      const config = { ...index.base_config, ...extra } as SchedulerConfig;
      expect(() => new DPMSolverMultistepScheduler(config)).toThrow(SchedulerConfigError);
    }
    expect(resolveDPMSolverMultistepConfig({ algorithm_type: "deis", solver_type: "bh2" })).toMatchObject({
      algorithm_type: "dpmsolver++",
      solver_type: "midpoint",
    });
  });
});

describe("DPMSolverMultistepScheduler (sde-dpmsolver++, DPM++ 2M SDE) vs diffusers 0.29.2", () => {
  test("the fixture has SDE cases, all of them stochastic with the generator passed to step", () => {
    expect(sdeCases.length).toBeGreaterThan(0);
    for (const c of sdeCases) expect(c.generator_passed_to_step).toBe(true);
  });

  test("every case: timesteps, sigmas and the whole trajectory, with per-step noise from the same generator", async () => {
    for (const c of sdeCases) {
      const scheduler = new DPMSolverMultistepScheduler(diffusersConfig(index, c));
      expect(scheduler.config.algorithm_type).toBe("sde-dpmsolver++");
      await expectFixtureCase(scheduler, c);
    }
  });

  test("Karras sigmas from SchedulerOptions equal use_karras_sigmas from the config", async () => {
    for (const c of sdeCases.filter((x) => x.from_config_overrides.use_karras_sigmas === true)) {
      const config = diffusersConfigWithout(index, c, "use_karras_sigmas");
      const r = await runFixtureTrajectory(
        new DPMSolverMultistepScheduler(config, { karrasSigmas: true }),
        c,
      );
      expect(r.timesteps).toEqual(c.timesteps);
      expect(r.finalErr).toBeLessThanOrEqual(1e-5);
    }
  });

  test("the full resolved config builds the same scheduler as base + overrides", () => {
    for (const c of sdeCases) {
      const fromBase = new DPMSolverMultistepScheduler(diffusersConfig(index, c));
      expectResolvedConfig(c, new DPMSolverMultistepScheduler(c.config).config, fromBase.config);
    }
  });

  test("noise: one randn of the sample's size per step; a missing generator is an error", () => {
    const s = new DPMSolverMultistepScheduler({ ...index.base_config, algorithm_type: "sde-dpmsolver++" });
    s.setTimesteps(3);
    const x = new Float32Array(32).fill(0.25);
    const eps = new Float32Array(32).fill(0.1);
    expect(() => s.step(eps, s.timesteps[0] as number, x)).toThrow(/generator/);

    const g = new TorchGenerator(7, { kernel: "avx2" });
    const mirror = new TorchGenerator(7, { kernel: "avx2" });
    s.setTimesteps(3);
    let sample: Float32Array = x;
    for (const t of s.timesteps) {
      sample = s.step(eps, t, sample, g).prevSample;
      mirror.randn([32]);
    }
    // Both generators have advanced by exactly three draws of 32 values.
    expect(Array.from(g.randn([16]))).toEqual(Array.from(mirror.randn([16])));
    // The last step lands on σ = 0: no noise is added there and the result is the data prediction.
    const last = new DPMSolverMultistepScheduler({ ...index.base_config, algorithm_type: "sde-dpmsolver++" });
    last.setTimesteps(1);
    const out = last.step(eps, last.timesteps[0] as number, x, g);
    expect(Array.from(out.prevSample)).toEqual(Array.from(out.predOriginalSample ?? []));
  });

  test("the same seed gives the same trajectory; another seed gives another one", () => {
    const run = (seed: number): Float32Array => {
      const s = new DPMSolverMultistepScheduler({ ...index.base_config, algorithm_type: "sde-dpmsolver++" });
      s.setTimesteps(5);
      const g = new TorchGenerator(seed, { kernel: "avx2" });
      let sample = g.randn([64]);
      for (const t of s.timesteps) sample = s.step(toyModel(sample, t), t, sample, g).prevSample;
      return sample;
    };
    expect(Array.from(run(1))).toEqual(Array.from(run(1)));
    expect(Array.from(run(1))).not.toEqual(Array.from(run(2)));
  });
});

describe("scheduler table (index.ts)", () => {
  test("names, A1111 display names and factories", () => {
    expect(SCHEDULER_NAMES).toContain("dpmsolver++");
    expect(SCHEDULERS["dpmsolver++"]).toMatchObject({ displayName: "DPM++ 2M", karras: true });
    // Whatever the model's file says (SD 1.5 ships PNDM settings), "dpmsolver++" is DPM++ 2M.
    const s = createScheduler("dpmsolver++", {
      ...index.base_config,
      solver_order: 3,
      algorithm_type: "sde-dpmsolver++",
    });
    expect(s).toBeInstanceOf(DPMSolverMultistepScheduler);
    expect((s as DPMSolverMultistepScheduler).config).toMatchObject({
      algorithm_type: "dpmsolver++",
      solver_order: 2,
    });
  });
});
