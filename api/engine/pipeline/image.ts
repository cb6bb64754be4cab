import sharp from "sharp";

/**
 * diffusers' VaeImageProcessor.postprocess for one image of a decoded batch: x/2 + 0.5 clamped to [0, 1]
 * (float32), then numpy's `(x * 255).round().astype(uint8)` — round half to even — into interleaved RGB.
 */
export function decodedToRgb(
  decoded: Float32Array,
  index: number,
  width: number,
  height: number,
): Uint8Array {
  const plane = width * height;
  const base = index * 3 * plane;
  const rgb = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < plane; p++) {
      const x = decoded[base + c * plane + p] ?? 0;
      const v = Math.min(1, Math.max(0, Math.fround(Math.fround(x / 2) + 0.5)));
      rgb[p * 3 + c] = roundHalfEven(Math.fround(v * 255));
    }
  }
  return rgb;
}

function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** True when any value is NaN or infinite (a decode that overflowed must not be returned as an image). */
export function hasNonFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i] as number)) return true;
  return false;
}

export async function encodePng(rgb: Uint8Array, width: number, height: number): Promise<Uint8Array> {
  const buffer = await sharp(rgb, { raw: { width, height, channels: 3 } })
    .png({ compressionLevel: 6 })
    .toBuffer();
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
