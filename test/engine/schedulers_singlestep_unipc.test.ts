import { beforeAll, describe, expect, test } from "bun:test";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { SchedulerConfigError } from "../../api/engine/schedulers/config.ts";
import { DPMSolverMultistepScheduler } from "../../api/engine/schedulers/dpmsolver_multistep.ts";
import {
  DPMSolverSinglestepScheduler,
  dpmSinglestepOrderList,
  resolveDPMSolverSinglestepConfig,
} from "../../api/engine/schedulers/dpmsolver_singlestep.ts";
import type { Scheduler, SchedulerConfig } from "../../api/engine/schedulers/scheduler.ts";
import {
  resolveUniPCMultistepConfig,
  torchSolve,
  UniPCMultistepScheduler,
} from "../../api/engine/schedulers/unipc.ts";
import {
  diffusersConfig,
  diffusersConfigWithout,
  expectFixtureCase,
  expectResolvedConfig,
  loadSchedulerFixtures,
  runToy,
  type SchedulerFixtureCase,
  type SchedulerFixtureIndex,
  toyModel,
} from "../helpers/scheduler_fixtures.ts";

const f32 = Math.fround;

/** The README §3 procedure for one case, asserting every tensor; returns the worst prev_sample / final deviation. */
async function expectCaseMatches(scheduler: Scheduler, c: SchedulerFixtureCase): Promise<number> {
  const r = await expectFixtureCase(scheduler, c);
  return Math.max(r.prevErr, r.finalErr);
}

let index: SchedulerFixtureIndex;
let singleCases: SchedulerFixtureCase[] = [];
let unipcCases: SchedulerFixtureCase[] = [];
/** DPM++ 2M Karras cases: the same Karras timesteps / sigmas formula as the two classes here. */
let karrasReference: SchedulerFixtureCase[] = [];

beforeAll(async () => {
  index = await loadSchedulerFixtures();
  singleCases = index.cases.filter((c) => c.class === "DPMSolverSinglestepScheduler");
  unipcCases = index.cases.filter((c) => c.class === "UniPCMultistepScheduler");
  karrasReference = index.cases.filter(
    (c) =>
      c.class === "DPMSolverMultistepScheduler" &&
      c.config.use_karras_sigmas === true &&
      c.config.final_sigmas_type === "zero",
  );
});

const base = (): SchedulerConfig => index.base_config;

describe("DPMSolverSinglestepScheduler vs diffusers 0.29.2", () => {
  test("every fixture case: timesteps, sigmas, init_noise_sigma and the whole trajectory", async () => {
    expect(singleCases.length).toBeGreaterThan(0);
    for (const c of singleCases) {
      const s = new DPMSolverSinglestepScheduler(diffusersConfig(index, c));
      expect(await expectCaseMatches(s, c)).toBeLessThanOrEqual(1e-5);
      // diffusers' set_timesteps switched lower_order_final on (zero final sigma); the fixture recorded it.
      expect(s.lowerOrderFinal).toBe(c.config.lower_order_final as boolean);
      expect(s.orderList.length).toBe(c.num_inference_steps);
    }
  });

  test("Karras sigmas from SchedulerOptions equal use_karras_sigmas from the config", async () => {
    for (const c of singleCases.filter((x) => x.from_config_overrides.use_karras_sigmas === true)) {
      const s = new DPMSolverSinglestepScheduler(diffusersConfigWithout(index, c, "use_karras_sigmas"), {
        karrasSigmas: true,
      });
      await expectCaseMatches(s, c);
    }
    // The Karras schedule is the one DPM++ 2M Karras uses (diffusers copies the code): compare with its fixtures.
    for (const ref of karrasReference) {
      const s = new DPMSolverSinglestepScheduler(base(), { karrasSigmas: true });
      s.setTimesteps(ref.num_inference_steps);
      expect(s.timesteps).toEqual(ref.timesteps);
      expect(Array.from(s.sigmas)).toEqual((ref.sigmas as number[]).map(f32));
      const off = new DPMSolverSinglestepScheduler(
        { ...base(), use_karras_sigmas: true },
        { karrasSigmas: false },
      );
      off.setTimesteps(ref.num_inference_steps);
      expect(off.timesteps).not.toEqual(ref.timesteps);
    }
  });

  test("the full resolved config (with _use_default_values) builds the same scheduler as base + overrides", () => {
    for (const c of singleCases) {
      const fromResolved = new DPMSolverSinglestepScheduler(c.config);
      const fromBase = new DPMSolverSinglestepScheduler(diffusersConfig(index, c));
      expect(fromResolved.config).toEqual(fromBase.config);
      fromResolved.setTimesteps(c.num_inference_steps);
      expect(fromResolved.timesteps).toEqual(c.timesteps);
      // scheduler.config after set_timesteps, including diffusers' lower_order_final switch.
      for (const [key, value] of Object.entries(fromResolved.config)) {
        const expected = key === "lower_order_final" ? fromResolved.lowerOrderFinal : value;
        expect(c.config[key]).toEqual(expected);
      }
    }
  });

  test("get_order_list", () => {
    expect(dpmSinglestepOrderList(4, 2, true)).toEqual([1, 2, 1, 1]);
    expect(dpmSinglestepOrderList(5, 2, true)).toEqual([1, 2, 1, 2, 1]);
    expect(dpmSinglestepOrderList(1, 2, true)).toEqual([1]);
    expect(dpmSinglestepOrderList(2, 2, true)).toEqual([1, 1]);
    expect(dpmSinglestepOrderList(6, 2, false)).toEqual([1, 2, 1, 2, 1, 2]);
    expect(dpmSinglestepOrderList(6, 3, true)).toEqual([1, 2, 3, 1, 2, 1]);
    expect(dpmSinglestepOrderList(7, 3, true)).toEqual([1, 2, 3, 1, 2, 3, 1]);
    expect(dpmSinglestepOrderList(8, 3, true)).toEqual([1, 2, 3, 1, 2, 3, 1, 2]);
    expect(dpmSinglestepOrderList(6, 3, false)).toEqual([1, 2, 3, 1, 2, 3]);
    expect(dpmSinglestepOrderList(3, 1, false)).toEqual([1, 1, 1]);
  });

  test("lower_order_final: kept off only for a sigma_min final sigma and a step count divisible by the order", () => {
    const off = { ...base(), lower_order_final: false };
    const s = new DPMSolverSinglestepScheduler({ ...off, final_sigmas_type: "sigma_min" });
    expect(s.config.lower_order_final).toBe(false);
    s.setTimesteps(6);
    expect(s.lowerOrderFinal).toBe(false);
    expect(s.orderList).toEqual([1, 2, 1, 2, 1, 2]);
    s.setTimesteps(7); // uneven: switched on, and it stays on (register_to_config)
    expect(s.lowerOrderFinal).toBe(true);
    s.setTimesteps(6);
    expect(s.orderList).toEqual([1, 2, 1, 2, 1, 1]);
    const zero = new DPMSolverSinglestepScheduler(off);
    zero.setTimesteps(6);
    expect(zero.lowerOrderFinal).toBe(true);
    expect(
      Number.isFinite(
        runToy(new DPMSolverSinglestepScheduler({ ...off, final_sigmas_type: "sigma_min" }), 8)[0] as number,
      ),
    ).toBe(true);
  });

  test("a big step: the entry after a first-order one is the 2S update from the saved start point", () => {
    const s = new DPMSolverSinglestepScheduler(base());
    s.setTimesteps(4); // orders 1, 2, 1, 1
    const x = new TorchGenerator(5, { kernel: "avx2" }).randn([32]);
    const t0 = s.timesteps[0] as number;
    const t1 = s.timesteps[1] as number;
    const first = s.step(toyModel(x, t0), t0, x);
    const eps1 = toyModel(first.prevSample, t1);
    const second = s.step(eps1, t1, first.prevSample).prevSample;
    // Algorithm 1 of DPM-Solver++ in float64: x_t = (σ_t/σ_s)x_s − α_t(e^{−h} − 1)((1 − 1/2r)x_θ(s) + (1/2r)x_θ(u)).
    const point = (j: number) => {
      const sig = s.sigmas[j] as number;
      const alpha = 1 / Math.sqrt(sig * sig + 1);
      return { alpha, sigma: sig * alpha, lambda: Math.log(alpha) - Math.log(sig * alpha) };
    };
    const [ps, pu, pt] = [point(0), point(1), point(2)];
    const h = pt.lambda - ps.lambda;
    const r = (pu.lambda - ps.lambda) / h;
    const x0s = toyModel(x, t0).map((e, k) => ((x[k] as number) - ps.sigma * e) / ps.alpha);
    const x0u = eps1.map((e, k) => ((first.prevSample[k] as number) - pu.sigma * e) / pu.alpha);
    second.forEach((v, k) => {
      const d = (1 - 1 / (2 * r)) * (x0s[k] as number) + (1 / (2 * r)) * (x0u[k] as number);
      const expected = (pt.sigma / ps.sigma) * (x[k] as number) - pt.alpha * Math.expm1(-h) * d;
      expect(Math.abs(v - expected)).toBeLessThanOrEqual(1e-5 * Math.max(1, Math.abs(expected)));
    });
    // Starting mid-schedule on an order-2 entry lowers it to order 1 (no earlier evaluation in this big step).
    const mid = new DPMSolverSinglestepScheduler(base());
    mid.setTimesteps(4);
    mid.setBeginIndex(1);
    const y = mid.step(eps1, t1, first.prevSample).prevSample;
    const ref = new DPMSolverMultistepScheduler({ ...base(), solver_order: 1 });
    ref.setTimesteps(4);
    ref.setBeginIndex(1);
    expect(Array.from(y)).toEqual(Array.from(ref.step(eps1, t1, first.prevSample).prevSample));
  });

  test("higher orders and the heun variant converge (error ÷ ≥ 8 from 24 to 96 steps)", () => {
    const reference = runToy(new DPMSolverMultistepScheduler({ ...base(), solver_order: 3 }), 999);
    const err = (a: Float32Array) => {
      let m = 0;
      for (let i = 0; i < a.length; i++)
        m = Math.max(m, Math.abs((a[i] as number) - (reference[i] as number)));
      return m;
    };
    for (const extra of [
      { solver_order: 2 },
      { solver_order: 2, solver_type: "heun" },
      { solver_order: 3 },
      { solver_order: 3, solver_type: "heun" },
    ]) {
      const coarse = err(runToy(new DPMSolverSinglestepScheduler({ ...base(), ...extra }), 24));
      const fine = err(runToy(new DPMSolverSinglestepScheduler({ ...base(), ...extra }), 96));
      expect(fine).toBeLessThan(coarse / 8);
      expect(fine).toBeLessThan(3e-3);
    }
  });

  test("order 3 with a zero final sigma refuses step counts that would end on a second-order step", () => {
    const s = new DPMSolverSinglestepScheduler({ ...base(), solver_order: 3 });
    expect(() => s.setTimesteps(8)).toThrow(SchedulerConfigError); // diffusers returns inf here
    expect(Number.isFinite(runToy(s, 9)[0] as number)).toBe(true);
    expect(Number.isFinite(runToy(s, 7)[0] as number)).toBe(true);
  });

  test("no timestep_spacing option: a config key is ignored, a requested spacing other than linspace refused", () => {
    const leading = new DPMSolverSinglestepScheduler({ ...base(), timestep_spacing: "leading" });
    leading.setTimesteps(20);
    const plain = new DPMSolverSinglestepScheduler(base(), { timestepSpacing: "linspace" });
    plain.setTimesteps(20);
    expect(leading.timesteps).toEqual(plain.timesteps);
    expect(plain.timesteps.slice(0, 3)).toEqual([999, 949, 899]);
    expect(() => new DPMSolverSinglestepScheduler(base(), { timestepSpacing: "trailing" })).toThrow(
      SchedulerConfigError,
    );
  });

  test("step bookkeeping and unsupported settings", () => {
    const s = new DPMSolverSinglestepScheduler(base());
    expect(() => s.step(new Float32Array(4), 999, new Float32Array(4))).toThrow();
    s.setTimesteps(2);
    expect(() => s.step(new Float32Array(3), 999, new Float32Array(4))).toThrow(RangeError);
    const x = new Float32Array([0.5, -1, 2, 0]);
    expect(s.scaleModelInput(x, 999)).toBe(x);
    s.step(x, s.timesteps[0] as number, x);
    const last = s.step(x, s.timesteps[1] as number, x); // into σ = 0: the data prediction itself
    expect(Array.from(last.prevSample)).toEqual(Array.from(last.predOriginalSample ?? []));
    expect(() => s.step(x, 0, x)).toThrow();

    const refused: Record<string, unknown>[] = [
      { algorithm_type: "sde-dpmsolver++" },
      { algorithm_type: "dpmsolver" },
      { algorithm_type: "bogus" },
      { solver_order: 4 },
      { solver_type: "bogus" },
      { thresholding: true },
      { variance_type: "learned_range" },
      { final_sigmas_type: "bogus" },
    ];
    for (const extra of refused) {
      expect(() => new DPMSolverSinglestepScheduler({ ...base(), ...extra } as SchedulerConfig)).toThrow(
        SchedulerConfigError,
      );
    }
    expect(resolveDPMSolverSinglestepConfig({ algorithm_type: "deis", solver_type: "bh2" })).toMatchObject({
      algorithm_type: "dpmsolver++",
      solver_type: "midpoint",
      lower_order_final: false,
    });
  });
});

describe("UniPCMultistepScheduler vs diffusers 0.29.2", () => {
  test("every fixture case: timesteps, sigmas, init_noise_sigma and the whole trajectory", async () => {
    expect(unipcCases.length).toBeGreaterThan(0);
    for (const c of unipcCases) {
      const s = new UniPCMultistepScheduler(diffusersConfig(index, c));
      expect(await expectCaseMatches(s, c)).toBeLessThanOrEqual(1e-5);
    }
  });

  test("Karras sigmas from SchedulerOptions equal use_karras_sigmas from the config", async () => {
    for (const c of unipcCases.filter((x) => x.from_config_overrides.use_karras_sigmas === true)) {
      const s = new UniPCMultistepScheduler(diffusersConfigWithout(index, c, "use_karras_sigmas"), {
        karrasSigmas: true,
      });
      await expectCaseMatches(s, c);
    }
    for (const ref of karrasReference) {
      const s = new UniPCMultistepScheduler(base(), { karrasSigmas: true });
      s.setTimesteps(ref.num_inference_steps);
      expect(s.timesteps).toEqual(ref.timesteps);
      expect(Array.from(s.sigmas)).toEqual((ref.sigmas as number[]).map(f32));
    }
    // UniPC's "sigma_min" final sigma with Karras is the last Karras sigma (a zero-length last step).
    const s = new UniPCMultistepScheduler(
      { ...base(), final_sigmas_type: "sigma_min" },
      { karrasSigmas: true },
    );
    s.setTimesteps(10);
    expect(s.sigmas[10]).toBe(s.sigmas[9] as number);
    expect(runToy(s, 10).every(Number.isFinite)).toBe(true);
  });

  test("the full resolved config (with _use_default_values) builds the same scheduler as base + overrides", () => {
    for (const c of unipcCases) {
      const fromResolved = new UniPCMultistepScheduler(c.config);
      expectResolvedConfig(
        c,
        fromResolved.config,
        new UniPCMultistepScheduler(diffusersConfig(index, c)).config,
      );
      fromResolved.setTimesteps(c.num_inference_steps);
      expect(fromResolved.timesteps).toEqual(c.timesteps);
    }
  });

  test("timestep_spacing from the config and from SchedulerOptions (the option wins)", () => {
    const trailing = new UniPCMultistepScheduler(
      { ...base(), timestep_spacing: "leading" },
      { timestepSpacing: "trailing" },
    );
    trailing.setTimesteps(7);
    expect(trailing.timesteps).toEqual([999, 856, 713, 570, 428, 285, 142]); // round(arange(1000, 0, −1000/7)) − 1
    const leading = new UniPCMultistepScheduler({ ...base(), timestep_spacing: "leading" });
    leading.setTimesteps(20);
    expect(leading.timesteps).toEqual(Array.from({ length: 20 }, (_, i) => (20 - i) * 47 + 1));
    const linspace = new UniPCMultistepScheduler(base());
    linspace.setTimesteps(20);
    expect(linspace.timesteps.slice(0, 3)).toEqual([999, 949, 899]);
    expect(runToy(trailing, 7).every(Number.isFinite)).toBe(true);
  });

  test("UniP-2 alone is DPM-Solver++(2M); UniP-1 alone is DPM-Solver++(1) (to float32 rounding)", () => {
    const noCorrector = Array.from({ length: 50 }, (_, i) => i);
    for (const order of [1, 2]) {
      const uni = runToy(
        new UniPCMultistepScheduler({ ...base(), solver_order: order, disable_corrector: noCorrector }),
        20,
      );
      const dpm = runToy(new DPMSolverMultistepScheduler({ ...base(), solver_order: order }), 20);
      for (let i = 0; i < uni.length; i++) {
        expect(Math.abs((uni[i] as number) - (dpm[i] as number))).toBeLessThanOrEqual(
          1e-4 * Math.max(1, Math.abs(dpm[i] as number)),
        );
      }
    }
    // With the corrector the result differs (it is a different, higher-order method).
    const withC = runToy(new UniPCMultistepScheduler(base()), 20);
    const without = runToy(new UniPCMultistepScheduler({ ...base(), disable_corrector: noCorrector }), 20);
    expect(Array.from(withC)).not.toEqual(Array.from(without));
  });

  test("higher orders, bh1 and the noise-prediction form converge (error ÷ ≥ 8 from 24 to 96 steps)", () => {
    for (const [extra, final] of [
      [{ solver_order: 1 }, "zero"],
      [{ solver_order: 2 }, "zero"],
      [{ solver_order: 3 }, "zero"],
      [{ solver_order: 3, solver_type: "bh1" }, "zero"],
      [{ solver_order: 4 }, "zero"],
      [{ solver_order: 2, predict_x0: false }, "sigma_min"],
      [{ solver_order: 3, predict_x0: false, solver_type: "bh1" }, "sigma_min"],
    ] as const) {
      const reference = runToy(
        new DPMSolverMultistepScheduler({ ...base(), solver_order: 3, final_sigmas_type: final }),
        999,
      );
      const err = (a: Float32Array) => {
        let m = 0;
        for (let i = 0; i < a.length; i++)
          m = Math.max(m, Math.abs((a[i] as number) - (reference[i] as number)));
        return m;
      };
      const config = { ...base(), ...extra, final_sigmas_type: final };
      const coarse = err(runToy(new UniPCMultistepScheduler(config), 24));
      const fine = err(runToy(new UniPCMultistepScheduler(config), 96));
      expect(fine).toBeLessThan(coarse / 8);
      expect(fine).toBeLessThan(5e-3);
    }
  });

  test("torchSolve: LAPACK LU with partial pivoting, on A or (contiguous A) on Aᵀ", () => {
    const A = [
      [2, 1, 1],
      [4, -6, 0],
      [-2, 7, 2],
    ];
    const x = [1, -2, 3];
    const b = A.map((row) => row.reduce((acc, v, j) => acc + v * (x[j] as number), 0));
    expect(torchSolve(A, b, true)).toEqual(x);
    expect(torchSolve(A, b, false)).toEqual(x);
    expect(
      torchSolve(
        [
          [0, 1],
          [1, 0],
        ],
        [3, 4],
        false,
      ),
    ).toEqual([4, 3]); // needs a row swap
    expect(
      torchSolve(
        [
          [0, 1],
          [1, 0],
        ],
        [3, 4],
        true,
      ),
    ).toEqual([4, 3]);
    expect(torchSolve([[4]], [2], true)).toEqual([0.5]);
  });

  test("step bookkeeping and unsupported settings", () => {
    const s = new UniPCMultistepScheduler(base());
    expect(() => s.step(new Float32Array(4), 999, new Float32Array(4))).toThrow();
    s.setTimesteps(2);
    const x = new Float32Array([0.5, -1, 2, 0]);
    expect(() => s.step(new Float32Array(3), 999, x)).toThrow(RangeError);
    expect(s.scaleModelInput(x, 999)).toBe(x);
    s.step(x, s.timesteps[0] as number, x);
    s.step(x, s.timesteps[1] as number, x);
    expect(() => s.step(x, 0, x)).toThrow();

    const refused: Record<string, unknown>[] = [
      { solver_type: "bogus" },
      { solver_order: 0 },
      { thresholding: true },
      { solver_p: { _class_name: "DPMSolverMultistepScheduler" } },
      { disable_corrector: [0.5] },
      { predict_x0: false }, // with the default zero final sigma: NaN in diffusers
      { lower_order_final: false }, // with the default zero final sigma: inf in diffusers
      { timestep_spacing: "bogus" },
    ];
    for (const extra of refused) {
      expect(() => new UniPCMultistepScheduler({ ...base(), ...extra } as SchedulerConfig)).toThrow(
        SchedulerConfigError,
      );
    }
    expect(resolveUniPCMultistepConfig({ solver_type: "midpoint" }).solver_type).toBe("bh2");
    expect(
      () =>
        new UniPCMultistepScheduler({ ...base(), lower_order_final: false, final_sigmas_type: "sigma_min" }),
    ).not.toThrow();
  });
});
