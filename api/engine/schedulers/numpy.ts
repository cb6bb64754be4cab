/**
 * numpy's float64 `round`, `linspace` and `arange` and its float32 `log`, as diffusers 0.29.2 calls them on
 * numpy 1.24 (x86-64), operation for operation.
 */
import { bitsOf, f32, fmaF32, fromBits } from "../rng/float32.ts";

/** numpy's `round` / `np.around`: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** `np.linspace(start, stop, num)` in float64 (numpy 1.x: `arange(num) * step + start`, last element = stop). */
export function npLinspace(start: number, stop: number, num: number): number[] {
  const div = num - 1;
  const delta = stop - start;
  const out = new Array<number>(num);
  if (div <= 0) {
    for (let i = 0; i < num; i++) out[i] = i * delta + start;
    return out;
  }
  const step = delta / div;
  for (let i = 0; i < num; i++) out[i] = (step === 0 ? (i / div) * delta : i * step) + start;
  if (num > 1) out[num - 1] = stop;
  return out;
}

/**
 * `np.arange(start, stop, step)` with a float step: length ⌈(stop − start) / step⌉, element i = start + i·δ where
 * δ = (start + step) − start, as numpy's `DOUBLE_fill` recomputes it.
 */
export function npArange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const out = new Array<number>(length);
  if (length === 0) return out;
  out[0] = start;
  if (length === 1) return out;
  const second = start + step;
  out[1] = second;
  const delta = second - start;
  for (let i = 2; i < length; i++) out[i] = start + i * delta;
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// float32 log

// numpy's NPY_COEFF_{P,Q}{0..5}_LOGf, as the float32 values the C `f` literals denote.
const LOG_P = [0, 1, 2.112677574157715, 1.480000615119934, 0.3808837831020355, 0.025899792090058327];
const LOG_Q = [
  1, 2.612677574157715, 2.4530060291290283, 0.9864943027496338, 0.15464763343334198, 0.005875095259398222,
];
const LN2_F = f32(Math.LN2);
const SQRT1_2_F = f32(Math.SQRT1_2);
const FLT_MIN = 2 ** -126;

/** c₀ + x·(c₁ + x·(…)) with one fused multiply-add per coefficient, highest first (float32). */
function hornerFma(c: readonly number[], x: number): number {
  let acc = c[c.length - 1] as number;
  for (let k = c.length - 2; k >= 0; k--) acc = fmaF32(acc, x, c[k] as number);
  return acc;
}

/**
 * `np.log` on float32 (numpy 1.24 `simd_log_FLOAT`, the AVX2+FMA3 / AVX-512F kernel that x86 builds dispatch to):
 * x = 2^k·m with m ∈ (√½, √2], log(1 + r) ≈ P(r)/Q(r) (degree-5 minimax), log x = k·ln2 + P/Q; max error 3.83 ulp.
 */
export function npLogF32(value: number): number {
  let x = f32(value);
  if (Number.isNaN(x) || x < 0) return Number.NaN;
  if (x === 0) return Number.NEGATIVE_INFINITY;
  if (x === Number.POSITIVE_INFINITY) return x;
  let bias = 0x7e;
  if (x < FLT_MIN) {
    x = f32(x * 2 ** 100); // subnormals: scale up, correct the exponent
    bias += 100;
  }
  const bits = bitsOf(x);
  let k = (bits >>> 23) - bias;
  let m = fromBits((bits & 0x7fffff) | (126 << 23)); // mantissa in [0.5, 1)
  if (m <= SQRT1_2_F) {
    m = f32(m + m);
    k -= 1;
  }
  const r = f32(m - 1);
  return fmaF32(k, LN2_F, f32(hornerFma(LOG_P, r) / hornerFma(LOG_Q, r)));
}
