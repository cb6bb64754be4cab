import sharp from "sharp";
import { roundHalfEven } from "../schedulers/numpy.ts";
import type { RgbPixels } from "./types.ts";

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

/** True when any value is NaN or infinite (a decode that overflowed must not be returned as an image). */
export function hasNonFinite(values: Float32Array): boolean {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i] as number)) return true;
  return false;
}

/**
 * RGB pixels to PNG (sharp), with text chunks after IHDR: `tEXt` for Latin-1 text, `iTXt` (UTF-8) otherwise,
 * as PIL's PngInfo.add_text writes them — the form AUTOMATIC1111 stores its `parameters` infotext in.
 */
export async function encodePng(
  rgb: Uint8Array,
  width: number,
  height: number,
  text: Record<string, string> = {},
): Promise<Uint8Array> {
  const buffer = await sharp(rgb, { raw: { width, height, channels: 3 } })
    .png({ compressionLevel: 6 })
    .toBuffer();
  const png = new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  const chunks = Object.entries(text).map(([key, value]) => textChunk(key, value));
  // A copy owns its memory, so it can be transferred to another thread (sharp's buffer may be pooled).
  if (chunks.length === 0) return png.slice();
  // Signature (8 bytes) + IHDR (4 length + 4 type + 13 data + 4 CRC) = 33 bytes; text chunks go right after.
  const ihdrEnd = 33;
  const total = png.length + chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  out.set(png.subarray(0, ihdrEnd), 0);
  let offset = ihdrEnd;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  out.set(png.subarray(ihdrEnd), offset);
  return out;
}

function isLatin1(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return false;
  return true;
}

function textChunk(key: string, value: string): Uint8Array {
  const keyword = new TextEncoder().encode(key);
  let data: Uint8Array;
  let type: string;
  if (isLatin1(value)) {
    type = "tEXt";
    data = new Uint8Array(keyword.length + 1 + value.length);
    data.set(keyword, 0);
    for (let i = 0; i < value.length; i++) data[keyword.length + 1 + i] = value.charCodeAt(i);
  } else {
    // iTXt: keyword, NUL, compression flag 0, method 0, empty language tag NUL, empty translated keyword NUL, UTF-8.
    type = "iTXt";
    const utf8 = new TextEncoder().encode(value);
    data = new Uint8Array(keyword.length + 5 + utf8.length);
    data.set(keyword, 0);
    data.set(utf8, keyword.length + 5);
  }
  const chunk = new Uint8Array(12 + data.length);
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  const typeAndData = chunk.subarray(4, 8 + data.length);
  typeAndData.set(new TextEncoder().encode(type), 0);
  typeAndData.set(data, 4);
  view.setUint32(8 + data.length, Bun.hash.crc32(typeAndData));
  return chunk;
}

/** The text chunks (tEXt and iTXt) of a PNG, by keyword. */
export function readPngText(png: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const latin1 = new TextDecoder("latin1");
  const utf8 = new TextDecoder();
  for (let offset = 8; offset + 12 <= png.length; ) {
    const length = view.getUint32(offset);
    const type = latin1.decode(png.subarray(offset + 4, offset + 8));
    const data = png.subarray(offset + 8, offset + 8 + length);
    const nul = data.indexOf(0);
    if (type === "tEXt" && nul > 0)
      out[latin1.decode(data.subarray(0, nul))] = latin1.decode(data.subarray(nul + 1));
    if (type === "iTXt" && nul > 0 && data[nul + 1] === 0) {
      let p = data.indexOf(0, nul + 3);
      p = data.indexOf(0, p + 1);
      out[latin1.decode(data.subarray(0, nul))] = utf8.decode(data.subarray(p + 1));
    }
    offset += 12 + length;
  }
  return out;
}

/** Resizes RGB pixels to width × height with Lanczos-3, stretching when the aspect ratio differs. */
export async function resizeRgb(image: RgbPixels, width: number, height: number): Promise<RgbPixels> {
  if (image.width === width && image.height === height) return image;
  const out = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
    .resize(width, height, { kernel: "lanczos3", fit: "fill" })
    .raw()
    .toBuffer();
  return { data: new Uint8Array(out.buffer, out.byteOffset, out.byteLength), width, height };
}
