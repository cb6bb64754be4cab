/**
 * torch's float32 `exp`, `log` and `tanh` on x86-64 CPUs, bit for bit.
 *
 * ATen evaluates these elementwise functions with SLEEF's vector kernels (`Sleef_expf8_u10`, `Sleef_logf8_u10`,
 * `Sleef_tanhf8_u10` in the AVX2 build, used for every tensor size including 0-d ones). They are accurate to
 * 1 ulp but not correctly rounded, so `Math.fround(Math.log(x))` differs from torch in the last bit for a
 * fraction of inputs — enough to move a DPM-Solver step by several ulps. These are ports of SLEEF 3.5.1
 * `xexpf`, `xlogf_u1`, `xtanhf` (src/libm/sleefsimdsp.c, double-float helpers of src/libm/df.h) with the
 * AVX2 helper semantics: every `vmla`/`vfma` is a fused multiply-add, `vrint` (`_mm256_cvtps_epi32` under the
 * default MXCSR mode) rounds half to even, which on a float32 value is numpy's `roundHalfEven`. Checked against
 * the oracle fixtures: `tanhf` on every toy-model output, `expf`/`logf` through every DPM++ step.
 */
import { bitsOf, f32, fmaF32 as fma, fromBits } from "../rng/float32.ts";
import { roundHalfEven } from "./numpy.ts";

type F2 = readonly [hi: number, lo: number];

const R_LN2F = f32(Math.LOG2E);
const L2UF = f32(0.693145751953125);
const L2LF = f32(1.428606765330187e-6);
const FLT_MIN = 1.1754943508222875e-38;

/** 2^q built from exponent bits, as `vpow2i_vf_vi2` (valid for q in [−126, 127]). */
function pow2i(q: number): number {
  return fromBits((q + 0x7f) << 23);
}

function ldexp2(d: number, e: number): number {
  const half = e >> 1;
  return f32(f32(d * pow2i(half)) * pow2i(e - half));
}

function ldexp3(d: number, q: number): number {
  return fromBits((bitsOf(d) + (q << 23)) | 0);
}

function ilogb2k(d: number): number {
  return ((bitsOf(d) >>> 23) & 0xff) - 0x7f;
}

// Double-float ("df") arithmetic with FMA, as df.h under ENABLE_FMA_SP.

function dfadd2FF(x: number, y: number): F2 {
  const s = f32(x + y);
  const v = f32(s - x);
  return [s, f32(f32(x - f32(s - v)) + f32(y - v))];
}

function dfadd2F2F(x: F2, y: number): F2 {
  const s = f32(x[0] + y);
  const v = f32(s - x[0]);
  const t = f32(f32(x[0] - f32(s - v)) + f32(y - v));
  return [s, f32(t + x[1])];
}

function dfadd2F2F2(x: F2, y: F2): F2 {
  const s = f32(x[0] + y[0]);
  const v = f32(s - x[0]);
  const t = f32(f32(x[0] - f32(s - v)) + f32(y[0] - v));
  return [s, f32(t + f32(x[1] + y[1]))];
}

function dfaddF2F(x: F2, y: number): F2 {
  const s = f32(x[0] + y);
  return [s, f32(f32(f32(x[0] - s) + y) + x[1])];
}

function dfaddFF2(x: number, y: F2): F2 {
  const s = f32(x + y[0]);
  return [s, f32(f32(f32(x - s) + y[0]) + y[1])];
}

function dfaddF2F2(x: F2, y: F2): F2 {
  const s = f32(x[0] + y[0]);
  return [s, f32(f32(f32(f32(x[0] - s) + y[0]) + x[1]) + y[1])];
}

function dfscale(d: F2, s: number): F2 {
  return [f32(d[0] * s), f32(d[1] * s)];
}

function dfmulF2F(x: F2, y: number): F2 {
  const s = f32(x[0] * y);
  return [s, fma(x[1], y, fma(x[0], y, -s))];
}

function dfmulF2F2(x: F2, y: F2): F2 {
  const s = f32(x[0] * y[0]);
  return [s, fma(x[0], y[1], fma(x[1], y[0], fma(x[0], y[0], -s)))];
}

function dfsqu(x: F2): F2 {
  const s = f32(x[0] * x[0]);
  return [s, fma(f32(x[0] + x[0]), x[1], fma(x[0], x[0], -s))];
}

function dfdiv(n: F2, d: F2): F2 {
  const t = f32(1 / d[0]);
  const s = f32(n[0] * t);
  const u = fma(t, n[0], -s);
  const v = fma(-d[1], t, fma(-d[0], t, 1));
  return [s, fma(s, v, fma(n[1], t, u))];
}

function dfrec(d: F2): F2 {
  const s = f32(1 / d[0]);
  return [s, f32(s * fma(-d[1], s, fma(-d[0], s, 1)))];
}

/** torch.exp on a float32 value (SLEEF `xexpf`, 1.0 ulp): exp(d) = 2^q · e^s with s = d − q·ln2 in two parts. */
export function expf(x: number): number {
  const d = f32(x);
  if (Number.isNaN(d)) return Number.NaN;
  const q = roundHalfEven(f32(d * R_LN2F));
  let s = fma(q, -L2UF, d);
  s = fma(q, -L2LF, s);
  let u = f32(0.00019852761761285365);
  u = fma(u, s, f32(0.0013930435525253415));
  u = fma(u, s, f32(0.008333360776305199));
  u = fma(u, s, f32(0.041666485369205475));
  u = fma(u, s, f32(0.1666666716337204));
  u = fma(u, s, 0.5);
  u = f32(1 + fma(f32(s * s), u, s));
  if (d < -104) return 0;
  if (d > 100) return Number.POSITIVE_INFINITY;
  return ldexp2(u, q);
}

/** torch.log on a float32 value (SLEEF `xlogf_u1`, 1.0 ulp): log m + e·ln2 with m ∈ [0.75, 1.5), in double-float. */
export function logf(x: number): number {
  let d = f32(x);
  if (Number.isNaN(d) || d < 0) return Number.NaN;
  if (d === 0) return Number.NEGATIVE_INFINITY;
  if (d === Number.POSITIVE_INFINITY) return Number.POSITIVE_INFINITY;
  const tiny = d < FLT_MIN;
  if (tiny) d = f32(d * 2 ** 64);
  let e = ilogb2k(f32(d * f32(1 / 0.75)));
  const m = ldexp3(d, -e);
  if (tiny) e -= 64;
  let s = dfmulF2F([f32(0.6931471824645996), f32(-1.904654323148236e-9)], e);
  const xq = dfdiv(dfadd2FF(-1, m), dfadd2FF(1, m));
  const x2 = f32(xq[0] * xq[0]);
  let t = f32(0.3027294874);
  t = fma(t, x2, f32(0.3996108174));
  t = fma(t, x2, f32(0.666669488));
  s = dfaddF2F2(s, dfscale(xq, 2));
  s = dfaddF2F(s, f32(f32(x2 * xq[0]) * t));
  return f32(s[0] + s[1]);
}

/** e^d for a double-float d, as a double-float (SLEEF `expk2f`). */
function expk2f(d: F2): F2 {
  const u0 = f32(f32(d[0] + d[1]) * R_LN2F);
  const q = roundHalfEven(u0);
  let s = dfadd2F2F(d, f32(q * -L2UF));
  s = dfadd2F2F(s, f32(q * -L2LF));
  let u = f32(0.1980960224e-3);
  u = fma(u, s[0], f32(0.1394256484e-2));
  u = fma(u, s[0], f32(0.8333456703e-2));
  u = fma(u, s[0], f32(0.4166637361e-1));
  let t = dfadd2F2F(dfmulF2F(s, u), f32(0.16666665941423425));
  t = dfadd2F2F(dfmulF2F2(s, t), 0.5);
  t = dfadd2F2F2(s, dfmulF2F2(dfsqu(s), t));
  t = dfaddFF2(1, t);
  if (d[0] < -104) return [0, 0];
  return [ldexp2(t[0], q), ldexp2(t[1], q)];
}

const EXPM1_OVERFLOW = f32(88.72283172607422);
const EXPM1_MINUS_ONE = f32(-16.635532333438686);

/** torch.expm1 on a float32 value (SLEEF `xexpm1f`, 1.0 ulp): e^d in double-float, minus 1, then rounded. */
export function expm1f(x: number): number {
  const a = f32(x);
  if (Number.isNaN(a)) return Number.NaN;
  if (a > EXPM1_OVERFLOW) return Number.POSITIVE_INFINITY;
  if (a < EXPM1_MINUS_ONE) return -1;
  if (Object.is(a, -0)) return -0;
  const d = dfadd2F2F(expk2f([a, 0]), -1);
  return f32(d[0] + d[1]);
}

/** torch.tanh on a float32 value (SLEEF `xtanhf`, 1.0 ulp): (e^|x| − e^−|x|)/(e^|x| + e^−|x|) in double-float. */
export function tanhf(x: number): number {
  const v = f32(x);
  if (Number.isNaN(v)) return Number.NaN;
  const a = Math.abs(v);
  let y: number;
  if (a > f32(8.664339742)) {
    y = 1;
  } else {
    const d = expk2f([a, 0]);
    const e = dfrec(d);
    const r = dfdiv(dfaddF2F2(d, [-e[0], -e[1]]), dfaddF2F2(d, e));
    y = f32(r[0] + r[1]);
    if (Number.isNaN(y)) y = 1;
  }
  return v < 0 || Object.is(v, -0) ? -y : y;
}
