import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";

const DIR = join(import.meta.dir, "../fixtures/rng");

interface RngCase {
  name: string;
  seed: number | bigint;
  shapes: number[][];
  keys: string[];
  first8_default: number[][];
}

type TensorMap = Map<string, { shape: number[]; data: Float32Array }>;

/**
 * rng_index.json holds seeds up to 2**63-1, which JSON.parse rounds to a double; the exact decimal digits are
 * read back from the text (cases appear in file order, each with its "seed" right after its "name").
 */
function parseIndex(text: string): RngCase[] {
  const parsed = JSON.parse(text) as { cases: Omit<RngCase, "seed">[] };
  const exactSeeds = new Map<string, bigint>();
  for (const m of text.matchAll(/"name":\s*"([^"]+)",\s*"seed":\s*(-?\d+)/g)) {
    exactSeeds.set(m[1] as string, BigInt(m[2] as string));
  }
  return parsed.cases.map((c) => {
    const exact = exactSeeds.get(c.name);
    if (exact === undefined) throw new Error(`no seed found for ${c.name}`);
    // Seeds of 2**32 and beyond go in as bigint, the way a caller holding a 64-bit seed passes them.
    const seed = exact < 2n ** 32n ? Number(exact) : exact;
    return { ...c, seed };
  });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((p, d) => p * d, 1);
}

let cases: RngCase[] = [];
let avx2: TensorMap;
let scalar: TensorMap;

beforeAll(async () => {
  cases = parseIndex(await Bun.file(join(DIR, "rng_index.json")).text());
  avx2 = await loadSafetensors(join(DIR, "randn.safetensors"));
  scalar = await loadSafetensors(join(DIR, "randn_scalar.safetensors"));
});

describe("TorchGenerator.randn vs torch.randn (CPU, float32)", () => {
  test("the index is fully covered: every case, every consecutive call", () => {
    expect(cases.length).toBeGreaterThan(0);
    let calls = 0;
    for (const c of cases) {
      expect(c.keys.length).toBe(c.shapes.length);
      c.keys.forEach((key, j) => {
        expect(key).toBe(`${c.name}.${j}`);
        expect(avx2.has(key)).toBe(true);
        expect(scalar.has(key)).toBe(true);
      });
      calls += c.keys.length;
    }
    expect(calls).toBe(avx2.size);
  });

  test("default (scalar) kernel, every case: numel < 16 bit-exact, scalar file ≤ 1e-6, AVX2 file ≤ 5e-6", () => {
    let maxScalar = 0;
    let maxAvx2 = 0;
    let smallValues = 0;
    for (const c of cases) {
      const g = new TorchGenerator(c.seed);
      expect(g.kernel).toBe("scalar");
      c.shapes.forEach((shape, j) => {
        const key = `${c.name}.${j}`;
        const ours = g.randn(shape);
        const refScalar = scalar.get(key)?.data as Float32Array;
        const refAvx2 = avx2.get(key)?.data as Float32Array;
        expect(ours.length).toBe(numel(shape));
        if (ours.length < 16) {
          expect(Array.from(ours)).toEqual(Array.from(refScalar));
          expect(Array.from(ours)).toEqual(Array.from(refAvx2));
          smallValues += ours.length;
        }
        const ds = maxAbsDiff(ours, refScalar);
        const da = maxAbsDiff(ours, refAvx2);
        if (ds > 1e-6 || da > 5e-6) throw new Error(`${key}: max |Δ| scalar ${ds}, avx2 ${da}`);
        maxScalar = Math.max(maxScalar, ds);
        maxAvx2 = Math.max(maxAvx2, da);
        // The index also records the first 8 AVX2 values of every call.
        const first8 = c.first8_default[j] as number[];
        for (let i = 0; i < first8.length; i++) {
          expect(Math.abs((ours[i] as number) - (first8[i] as number))).toBeLessThanOrEqual(5e-6);
        }
      });
    }
    expect(smallValues).toBeGreaterThan(0);
    expect(maxScalar).toBeLessThanOrEqual(1e-6);
    expect(maxAvx2).toBeLessThanOrEqual(5e-6);
  });

  test('kernel "avx2": every value of every case and call equals torch\'s AVX2 kernel bit for bit', () => {
    let values = 0;
    for (const c of cases) {
      const g = new TorchGenerator(c.seed, { kernel: "avx2" });
      expect(g.kernel).toBe("avx2");
      c.shapes.forEach((shape, j) => {
        const key = `${c.name}.${j}`;
        const ours = g.randn(shape);
        const ref = avx2.get(key)?.data as Float32Array;
        let differing = 0;
        for (let i = 0; i < ours.length; i++) if (ours[i] !== ref[i]) differing++;
        if (differing > 0) throw new Error(`${key}: ${differing} of ${ours.length} values differ`);
        values += ours.length;
      });
    }
    expect(values).toBe(Array.from(avx2.values()).reduce((n, t) => n + t.data.length, 0));
  });

  test("only the low 32 bits of the seed reach mt19937 (bigint seeds)", () => {
    const shapes = [[7], [1, 4, 8, 8], [3, 17]];
    const pairs: [bigint, number][] = [
      [2n ** 32n + 5n, 5],
      [2n ** 63n - 1n, 2 ** 32 - 1],
      [2n ** 64n - 1n, 2 ** 32 - 1],
    ];
    for (const [big, small] of pairs) {
      const a = new TorchGenerator(big);
      const b = new TorchGenerator(small);
      for (const shape of shapes) expect(Array.from(a.randn(shape))).toEqual(Array.from(b.randn(shape)));
    }
    // Negative seeds wrap like torch's manual_seed (two's complement of the 64-bit value).
    expect(Array.from(new TorchGenerator(-1).randn([20]))).toEqual(
      Array.from(new TorchGenerator(2 ** 32 - 1).randn([20])),
    );
  });

  test("the seeds 2**32+5 and 2**63-1 of the index are read exactly and covered as bigint", () => {
    const bigSeeds = new Set(cases.filter((c) => typeof c.seed === "bigint").map((c) => c.seed));
    expect(bigSeeds).toEqual(new Set([2n ** 32n + 5n, 2n ** 63n - 1n]));
  });

  test("the double-path cache survives across calls and is ignored by large calls", () => {
    // seq0: [7] then [3]: the 8th value of the first call is cached, the second call starts with it.
    const g = new TorchGenerator(0);
    const a = g.randn([7]);
    const b = g.randn([3]);
    const whole = new TorchGenerator(0).randn([1, 10]);
    expect(Array.from(a).concat(Array.from(b))).toEqual(Array.from(whole));
    // A large call in between neither consumes nor clears the cache.
    const h = new TorchGenerator(0);
    h.randn([7]);
    h.randn([32]);
    expect(h.randn([1])[0]).toBe(whole[7] as number);
  });

  test("seeds that a double cannot hold exactly are refused", () => {
    expect(() => new TorchGenerator(2 ** 63)).toThrow(RangeError);
    expect(() => new TorchGenerator(1.5)).toThrow(RangeError);
    expect(() => new TorchGenerator(2n ** 64n)).toThrow(RangeError);
    expect(() => new TorchGenerator(0).randn([2, -1])).toThrow(RangeError);
  });

  test("a [1,4,128,128] draw takes a few milliseconds", () => {
    for (const kernel of ["scalar", "avx2"] as const) {
      const g = new TorchGenerator(42, { kernel });
      g.randn([1, 4, 128, 128]);
      const t0 = performance.now();
      for (let i = 0; i < 5; i++) g.randn([1, 4, 128, 128]);
      const ms = (performance.now() - t0) / 5;
      expect(ms).toBeLessThan(50);
    }
  });
});
