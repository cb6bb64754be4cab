/**
 * The float32 `log` and `sincos` that torch's AVX2 `normal_fill_16_AVX2` uses (ATen native/cpu/avx_mathfun.h,
 * Giovanni Garberoglio's AVX port of Julien Pommier's sse_mathfun, i.e. the Cephes `logf` / `sinf` / `cosf`
 * polynomials), evaluated lane by lane.
 *
 * The AVX2 kernels are compiled with FMA enabled and GCC contracts `_mm256_add_ps(_mm256_mul_ps(a, b), c)` into
 * one fused multiply-add wherever the product has no other use; the contractions below are the ones that
 * reproduce torch 1.13's `randn` output bit for bit (checked on 430k values of the oracle fixtures).
 */
import { bitsOf, f32, fmaF32 as fma, fromBits } from "./float32.ts";

const MIN_NORM_POS = fromBits(0x00800000);
const HALF_BITS = bitsOf(0.5);
const SQRTHF = f32(Math.SQRT1_2);
const LOG_P = [
  7.0376836292e-2, -1.151461031e-1, 1.167699874e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
  2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
].map(f32);
const LOG_Q1 = f32(-2.1219444e-4);
const LOG_Q2 = f32(0.693359375);

/**
 * `log256_ps` for one lane, x > 0: x = m·2^e with m ∈ [√½, √2), log x = e·ln2 + log(1 + (m − 1)), the latter
 * by the Cephes rational approximation t − t²/2 + t³·P(t); ln2 is split in two (q2 + q1) for precision.
 */
export function log256(input: number): number {
  if (!(input > 0)) return Number.NaN;
  let x = Math.max(input, MIN_NORM_POS);
  const exponent = (bitsOf(x) >>> 23) - 0x7f;
  x = fromBits((bitsOf(x) & ~0x7f800000) | HALF_BITS); // mantissa in [0.5, 1)
  let e = f32(exponent + 1);
  const below = x < SQRTHF;
  x = f32(f32(x - 1) + (below ? x : 0)); // below √½: 2m − 1, else m − 1 (one of the terms is exact)
  if (below) e = f32(e - 1);
  const z = f32(x * x);
  let y = LOG_P[0] as number;
  for (let k = 1; k < LOG_P.length; k++) y = fma(y, x, LOG_P[k] as number);
  y = f32(y * x);
  y = fma(y, z, f32(e * LOG_Q1));
  y = f32(y - f32(z * 0.5));
  x = f32(x + y);
  return fma(e, LOG_Q2, x);
}

const FOPI = f32(1.27323954473516); // 4/π
const DP1 = f32(-0.78515625);
const DP2 = f32(-0.00024187564849853516);
const DP3 = f32(-3.774894977445941e-8);
const SIN_P = [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1].map(f32);
const COS_P = [2.443315711809948e-5, -0.001388731625493765, 0.04166664568298827].map(f32);

/**
 * `sincos256_ps` for one lane: reduce by octant j (x·4/π rounded up to even), x − j·π/4 in three parts
 * (Cody–Waite), then the Cephes sine and cosine polynomials on [−π/4, π/4], swapped and signed by octant.
 * Writes sin x to out[0] and cos x to out[1] (no allocation: this runs once per pair of normals).
 */
export function sincos256(input: number, out: Float64Array): void {
  let sinNegative = input < 0 || Object.is(input, -0);
  let x = Math.abs(input);
  let j = Math.trunc(f32(x * FOPI));
  j = (j + 1) & ~1;
  const y = j;
  if (j & 4) sinNegative = !sinNegative;
  const cosNegative = (~(j - 2) & 4) !== 0;
  const sinPolyFirst = (j & 2) === 0;

  x = fma(y, DP1, x);
  x = fma(y, DP2, x);
  x = fma(y, DP3, x);
  const z = f32(x * x);

  let c = COS_P[0] as number;
  c = fma(c, z, COS_P[1] as number);
  c = fma(c, z, COS_P[2] as number);
  c = f32(c * z);
  c = fma(c, z, -f32(z * 0.5));
  c = f32(c + 1);

  let s = SIN_P[0] as number;
  s = fma(s, z, SIN_P[1] as number);
  s = fma(s, z, SIN_P[2] as number);
  s = f32(s * z);
  s = fma(s, x, x);

  const sinValue = sinPolyFirst ? s : c;
  const cosValue = sinPolyFirst ? c : s;
  out[0] = sinNegative ? -sinValue : sinValue;
  out[1] = cosNegative ? -cosValue : cosValue;
}
