/** IEEE 754 half precision ↔ float32 for fp16 tensors at the edges of the engine, on the built-in Float16Array. */

/** float32 → half bits, rounding to nearest even. */
export function floatsToHalfBits(values: ArrayLike<number>): Uint16Array {
  const half = Float16Array.from(values);
  return new Uint16Array(half.buffer, half.byteOffset, half.length);
}

/** half bits → float32 (exact). */
export function halfBitsToFloats(bits: Uint16Array): Float32Array {
  return Float32Array.from(new Float16Array(bits.buffer, bits.byteOffset, bits.length));
}
