/**
 * IEEE binary32 arithmetic on JS numbers. `Math.fround(a op b)` is the correctly rounded float32 result for
 * + − × ÷ and √ of float32 operands (binary64 has more than 2·24 + 2 bits, so rounding twice is harmless);
 * a fused multiply-add is the one operation that needs care, see `fmaF32`.
 */

export const f32 = Math.fround;

const scratchF = new Float32Array(1);
const scratchI = new Int32Array(scratchF.buffer);

/** The binary32 bit pattern of x (as a signed 32-bit integer). */
export function bitsOf(x: number): number {
  scratchF[0] = x;
  return scratchI[0] as number;
}

/** The float32 whose bit pattern is `bits`. */
export function fromBits(bits: number): number {
  scratchI[0] = bits;
  return scratchF[0] as number;
}

/**
 * `fmaf(a, b, c)` for float32 a, b, c (what `_mm256_fmadd_ps` and compiler-fused `a*b + c` compute): a·b is exact
 * in float64, and the only case where rounding the float64 sum to float32 differs from the correctly rounded
 * fused result — the sum landing exactly halfway between two floats after an inexact float64 addition — is
 * resolved with the sum's rounding error (TwoSum).
 */
export function fmaF32(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  const r = f32(s);
  if (r === s || !Number.isFinite(s)) return r;
  const bv = s - p;
  const err = p - (s - bv) + (c - bv);
  if (err === 0) return r;
  const mirror = 2 * s - r;
  if (f32(mirror) !== mirror) return r; // s was not a float32 midpoint: float64 rounding was harmless
  return err > 0 ? Math.max(r, mirror) : Math.min(r, mirror);
}
