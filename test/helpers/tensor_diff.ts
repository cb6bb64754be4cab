/** The largest |expected − actual| and the largest |expected| over two outputs of the same length. */
export function maxDiff(expected: Float32Array, actual: Float32Array): { diff: number; scale: number } {
  if (actual.length !== expected.length)
    throw new Error(`outputs differ in length: ${expected.length} and ${actual.length}`);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs((expected[i] as number) - (actual[i] as number)));
    scale = Math.max(scale, Math.abs(expected[i] as number));
  }
  return { diff, scale };
}
