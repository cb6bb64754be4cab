/**
 * The image inputs of a request, read as untrusted files: base64 (raw or a data URL) decoded, the format and
 * pixel count checked from the header before any pixel is decoded (a small file may claim a huge size), then
 * decoded to 8-bit RGB as PIL's `convert("RGB")` does (alpha dropped, gray replicated). Every failure is a 422
 * naming the field.
 */
import { createHash } from "node:crypto";
import sharp, { type Metadata } from "sharp";
import {
  type FieldError,
  IMAGE_FORMATS,
  type ImageFormat,
  type InputImageReport,
  validationFailed,
} from "../../../contract/index.ts";
import type { RgbPixels } from "../pipeline/types.ts";

/** A decoded input image and what the response says about it. */
export interface DecodedImage extends RgbPixels {
  format: ImageFormat;
  sha256: string;
}

const DATA_URL = /^data:([^;,]*)(;base64)?,/i;
const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

function refuse(field: string, message: string, allowed?: readonly string[]): never {
  const error: FieldError = { field, message, ...(allowed ? { allowed: [...allowed] } : {}) };
  throw validationFailed([error]);
}

/** The file's bytes from a base64 string, raw or as a `data:` URL. */
export function imageBytes(field: string, value: string): Uint8Array {
  let payload = value;
  const url = DATA_URL.exec(value);
  if (url) {
    if (!url[2]) refuse(field, "a data URL must be base64-encoded (data:image/png;base64,…)");
    payload = value.slice(url[0].length);
  }
  if (!BASE64.test(payload))
    refuse(field, "is not base64: send the image file base64-encoded, raw or as a data URL");
  const bytes = Buffer.from(payload, "base64");
  if (bytes.length === 0) refuse(field, "is empty");
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Decodes an image field to RGB, refusing other formats, oversized images and broken files. */
export async function decodeImage(field: string, value: string, maxPixels: number): Promise<DecodedImage> {
  const bytes = imageBytes(field, value);
  let meta: Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    refuse(field, `could not be read as an image; send a ${IMAGE_FORMATS.join(", ")} file`, IMAGE_FORMATS);
  }
  const format = meta.format as string;
  if (!(IMAGE_FORMATS as readonly string[]).includes(format)) {
    refuse(field, `is a ${format} file; send one of ${IMAGE_FORMATS.join(", ")}`, IMAGE_FORMATS);
  }
  const width = meta.width ?? 0;
  const height = meta.height ?? 0;
  if (width < 1 || height < 1) refuse(field, "has no size in its header");
  if (width * height > maxPixels) {
    refuse(field, `is ${width}×${height} = ${width * height} pixels; this server takes at most ${maxPixels}`);
  }
  let data: Buffer;
  try {
    data = await sharp(bytes, { limitInputPixels: maxPixels, failOn: "truncated", pages: 1 })
      .toColourspace("srgb")
      .removeAlpha()
      .raw({ depth: "uchar" })
      .toBuffer();
  } catch (e) {
    refuse(
      field,
      `could not be decoded (${(e as Error).message.split("\n")[0]}): the file is damaged or truncated`,
    );
  }
  if (data.length !== width * height * 3) refuse(field, "decoded to an unexpected number of channels");
  return {
    data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    width,
    height,
    format: format as ImageFormat,
    sha256: createHash("sha256").update(bytes).digest("hex"),
  };
}

/** PIL's `convert("L")` of RGB: L = (299·R + 587·G + 114·B)/1000, in its 16-bit fixed point. */
export function toGray(image: RgbPixels): Uint8Array {
  const plane = image.width * image.height;
  const out = new Uint8Array(plane);
  const d = image.data;
  for (let p = 0; p < plane; p++) {
    const r = d[p * 3] as number;
    const g = d[p * 3 + 1] as number;
    const b = d[p * 3 + 2] as number;
    out[p] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
  }
  return out;
}

/** What the response reports about a decoded input. */
export function reportOf(image: DecodedImage, resized: boolean): InputImageReport {
  return { sha256: image.sha256, format: image.format, width: image.width, height: image.height, resized };
}
