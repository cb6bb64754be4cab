import { expect, test } from "bun:test";
import { floatsToHalfBits, halfBitsToFloats } from "../../api/engine/half.ts";

test("every half value survives half → float → half", () => {
  const bits = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const back = floatsToHalfBits(halfBitsToFloats(bits));
  for (let i = 0; i < 65536; i++) {
    const nan = ((i >> 10) & 0x1f) === 31 && (i & 0x3ff) !== 0;
    if (!nan) expect(back[i]).toBe(i);
  }
});

test("float → half rounds to nearest even (checked on hand-picked ties and limits)", () => {
  const values = new Float32Array(200_000);
  let seed = 12345;
  for (let i = 0; i < values.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    const scale = 2 ** ((seed % 40) - 26);
    values[i] = ((seed / 2 ** 32) * 2 - 1) * scale * 70000;
  }
  // Exact halves survive; a value halfway between two halves goes to the even one.
  const cases: [number, number][] = [
    [1, 0x3c00],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [65504, 0x7bff],
    [65520, 0x7c00],
    [2 ** -24, 0x0001],
    [2 ** -26, 0x0000],
    [-2, 0xc000],
  ];
  for (const [value, bits] of cases) expect(floatsToHalfBits([value])[0]).toBe(bits);
  const back = halfBitsToFloats(floatsToHalfBits(values));
  for (let i = 0; i < values.length; i++) {
    const v = values[i] as number;
    if (Math.abs(v) < 65504 && Math.abs(v) > 2 ** -14)
      expect(Math.abs((back[i] as number) - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11);
  }
});
