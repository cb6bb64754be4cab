/**
 * Pixel-space steps of AUTOMATIC1111's inpainting (modules/processing.py StableDiffusionProcessingImg2Img.init and
 * apply_overlay, modules/masking.py, modules/images.resize_image), on raw 8-bit pixels; sharp does the Gaussian
 * blurs and the Lanczos-3 resizes. Masks are 255 where the picture is repainted.
 */
import sharp, { type Sharp } from "sharp";

import type { CropRegion, GrayPixels, RgbPixels } from "./types.ts";

/** sharp refuses a Gaussian σ below 0.3. */
const SHARP_MIN_SIGMA = 0.3;

/** masking.fill's (blur radius, composite repeats), composited in this order; radius 0 is the unblurred layer. */
const FILL_LAYERS: ReadonlyArray<readonly [number, number]> = [
  [256, 1],
  [64, 1],
  [16, 2],
  [4, 4],
  [2, 2],
  [0, 1],
];

/**
 * A1111's mask blur (processing.py Img2Img.init, mask_blur_x then mask_blur_y): cv2.GaussianBlur with σ = `sigma`
 * and kernel 2·int(2.5σ + 0.5) + 1 per axis; σ = 0 returns the mask unchanged. sharp's libvips blur gets the same
 * kernel radius (minAmplitude chosen so the mask stops at that radius) and float precision. Deviations: σ in
 * (0, 0.3) is raised to sharp's minimum 0.3; borders repeat the edge pixel (cv2 reflects, BORDER_REFLECT_101); both
 * axes are blurred in one float pass and rounded once (A1111 rounds to uint8 between the x and y passes).
 */
export async function blurMask(mask: GrayPixels, sigma: number): Promise<GrayPixels> {
  checkSize(mask.data, mask.width, mask.height, 1, "mask");
  if (!(sigma > 0)) return { data: mask.data.slice(), width: mask.width, height: mask.height };
  const s = Math.max(sigma, SHARP_MIN_SIGMA);
  // cv2's kernel radius; libvips keeps taps while exp(-x²/2σ²) ≥ minAmplitude, so cut halfway to the next tap.
  const radius = Math.trunc(2.5 * s + 0.5);
  const minAmplitude = clamp(Math.exp(-((radius + 0.5) ** 2) / (2 * s * s)), 0.001, 1);
  const blurred = await floatBands(
    sharp(mask.data, { raw: { width: mask.width, height: mask.height, channels: 1 } }).blur({
      sigma: s,
      minAmplitude,
      precision: "float",
    }),
    1,
  );
  // Rounded, as cv2 does (sharp's own uint8 cast truncates).
  const data = new Uint8Array(blurred.length);
  for (let i = 0; i < data.length; i++) data[i] = clamp(Math.round(blurred[i] as number), 0, 255);
  return { data, width: mask.width, height: mask.height };
}

/**
 * masking.fill ("masked content: fill"): the kept pixels (alpha = 255 − mask, premultiplied) are blurred with
 * σ = 256, 64, 16, 4, 2 and 0 and the layers alpha-composited (Porter-Duff over) in that order, 1, 1, 2, 4, 2 and 1
 * times, onto a transparent canvas; the alpha is then dropped. Pixels with mask 0 come out equal to the input (the
 * last, unblurred layer is opaque there); partly masked ones mix in the blur. PIL's GaussianBlur(radius) is a
 * three-pass box approximation of σ = radius; here sharp blurs a true Gaussian truncated near 3σ (σ ≥ 16 at reduced
 * resolution, see blurBands) and unpremultiplies from float.
 */
export async function fillMasked(image: RgbPixels, mask: GrayPixels): Promise<RgbPixels> {
  const { width, height } = image;
  checkSize(image.data, width, height, 3, "image");
  checkSameSize(image, mask);
  const n = width * height;
  // image_masked (PIL "RGBa"): the picture premultiplied by alpha 255 − mask, rounded to uint8 as PIL stores it.
  const straight = new Uint8Array(n * 4);
  const premultiplied = new Uint8Array(n * 3);
  const alpha = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    const a = 255 - (mask.data[p] as number);
    alpha[p] = a;
    straight[p * 4 + 3] = a;
    for (let c = 0; c < 3; c++) {
      const v = image.data[p * 3 + c] as number;
      straight[p * 4 + c] = v;
      premultiplied[p * 3 + c] = Math.round((v * a) / 255);
    }
  }
  // Each GaussianBlur(radius).convert("RGBA"): blur the premultiplied bands, then unpremultiply. Radius 0 is the
  // picture itself (exact, where PIL round-trips it through uint8 RGBa).
  const blurred = await Promise.all(
    FILL_LAYERS.map(async ([radius]) => {
      if (radius === 0) return straight;
      const [colour, weight] = await Promise.all([
        blurBands(premultiplied, width, height, 3, radius),
        blurBands(alpha, width, height, 1, radius),
      ]);
      return unpremultiply(colour, weight);
    }),
  );
  // image_mod: transparent, then each blurred layer alpha_composite'd `repeats` times.
  const canvas = new Uint8Array(n * 4);
  FILL_LAYERS.forEach(([, repeats], i) => {
    for (let r = 0; r < repeats; r++) alphaCompositeOver(canvas, blurred[i] as Uint8Array);
  });
  // .convert("RGB") drops the alpha.
  const data = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    data[p * 3] = canvas[p * 4] as number;
    data[p * 3 + 1] = canvas[p * 4 + 1] as number;
    data[p * 3 + 2] = canvas[p * 4 + 2] as number;
  }
  return { data, width, height };
}

/** One axis of expand_crop_region: [lo, hi) grown by `diff`, half on each side, then moved back inside [0, size). */
function growAxis(lo: number, hi: number, diff: number, size: number): [number, number] {
  let a = lo - Math.floor(diff / 2);
  let b = hi + diff - Math.floor(diff / 2);
  if (b >= size) {
    a -= b - size;
    b = size;
  }
  if (a < 0) {
    b -= a;
    a = 0;
  }
  return [a, Math.min(b, size)];
}

/**
 * masking.get_crop_region_v2 (bounding box of the pixels > 0, PIL getbbox, grown by `padding` and clamped to the
 * picture) then masking.expand_crop_region (grown to targetWidth:targetHeight, shifted back inside the picture,
 * then clamped — so at the borders the ratio may stay short of the target). null when the mask is all 0 (A1111
 * then falls back to whole-picture inpainting). Pass the blurred mask, as A1111 does.
 */
export function cropRegion(
  mask: GrayPixels,
  padding: number,
  targetWidth: number,
  targetHeight: number,
): CropRegion | null {
  const { width: w, height: h, data } = mask;
  checkSize(data, w, h, 1, "mask");
  let left = w;
  let top = h;
  let right = 0;
  let bottom = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (data[y * w + x] === 0) continue;
      if (x < left) left = x;
      if (x + 1 > right) right = x + 1;
      if (y < top) top = y;
      bottom = y + 1;
    }
  }
  if (right === 0) return null;
  // get_crop_region_v2's padding, clamped to the picture.
  let x1 = Math.max(left - padding, 0);
  let y1 = Math.max(top - padding, 0);
  let x2 = Math.min(right + padding, w);
  let y2 = Math.min(bottom + padding, h);
  // expand_crop_region: int() truncates, // floors.
  const ratioCrop = (x2 - x1) / (y2 - y1);
  const ratioProcessing = targetWidth / targetHeight;
  if (ratioCrop > ratioProcessing) {
    [y1, y2] = growAxis(y1, y2, Math.trunc((x2 - x1) / ratioProcessing - (y2 - y1)), h);
  } else {
    [x1, x2] = growAxis(x1, x2, Math.trunc((y2 - y1) * ratioProcessing - (x2 - x1)), w);
  }
  return { x1, y1, x2, y2 };
}

/**
 * Img2Img.init's `image.crop(crop_region)` then images.resize_image(2, …): "resize and fill" — Lanczos-3 to fit
 * inside width×height keeping the ratio, centred, and the uncovered bands filled from the crop's edge rows/columns
 * (PIL's resize of a zero-height/width box, reproduced exactly). A crop already at the target ratio is a stretch.
 */
export async function cropResize(
  image: RgbPixels,
  region: CropRegion,
  width: number,
  height: number,
): Promise<RgbPixels> {
  checkSize(image.data, image.width, image.height, 3, "image");
  return resizeAndFill(crop(image, region, 3), 3, width, height);
}

/** cropResize for a mask (A1111 crops and resizes the blurred mask the same way, resize_image(2, mask, …)). */
export async function cropResizeGray(
  mask: GrayPixels,
  region: CropRegion,
  width: number,
  height: number,
): Promise<GrayPixels> {
  checkSize(mask.data, mask.width, mask.height, 1, "mask");
  return resizeAndFill(crop(mask, region, 1), 1, width, height);
}

/**
 * processing.apply_overlay: with a region, uncrop — the generated picture through images.resize_image(1, …)
 * ("crop and resize": Lanczos-3 to cover the region's size keeping the ratio, centre-cropped) into the region of a
 * transparent canvas; then the overlay (the original with alpha 255 − mask) is alpha-composited on top, so
 * out = gen·m/255 + orig·(1 − m/255), rounded, and outside the region out = orig. Without a region `generated` must
 * be the original's size. `mask` is full size: the blurred mask (A1111's mask_for_overlay; in whole-picture mode
 * A1111 uses clip(2·mask) there).
 */
export async function pasteBack(
  original: RgbPixels,
  generated: RgbPixels,
  region: CropRegion | null,
  mask: GrayPixels,
): Promise<RgbPixels> {
  const { width, height } = original;
  checkSize(original.data, width, height, 3, "original");
  checkSize(generated.data, generated.width, generated.height, 3, "generated");
  checkSameSize(original, mask);
  const r = region ?? { x1: 0, y1: 0, x2: width, y2: height };
  if (r.x1 < 0 || r.y1 < 0 || r.x2 > width || r.y2 > height || r.x2 <= r.x1 || r.y2 <= r.y1) {
    throw new RangeError(`pasteBack: region ${JSON.stringify(r)} is not inside ${width}×${height}`);
  }
  const rw = r.x2 - r.x1;
  const rh = r.y2 - r.y1;
  let gen = generated;
  if (region === null) {
    if (generated.width !== width || generated.height !== height) {
      throw new RangeError(
        `pasteBack: generated is ${generated.width}×${generated.height}, original ${width}×${height} and no region`,
      );
    }
  } else {
    gen = await resizeAndCrop(generated, rw, rh);
  }
  const data = original.data.slice();
  for (let y = 0; y < rh; y++) {
    for (let x = 0; x < rw; x++) {
      const p = (r.y1 + y) * width + (r.x1 + x);
      const m = mask.data[p] as number;
      if (m === 0) continue;
      const g = (y * rw + x) * 3;
      for (let c = 0; c < 3; c++) {
        const o = original.data[p * 3 + c] as number;
        data[p * 3 + c] = Math.round(((gen.data[g + c] as number) * m + o * (255 - m)) / 255);
      }
    }
  }
  return { data, width, height };
}

/** A1111's inpainting_mask_invert (ImageOps.invert): 255 − v. */
export function invertMask(mask: GrayPixels): GrayPixels {
  checkSize(mask.data, mask.width, mask.height, 1, "mask");
  const data = new Uint8Array(mask.data.length);
  for (let i = 0; i < data.length; i++) data[i] = 255 - (mask.data[i] as number);
  return { data, width: mask.width, height: mask.height };
}

// ---- helpers ----

interface Raw {
  data: Uint8Array;
  width: number;
  height: number;
}

function clamp(v: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, v));
}

function checkSize(data: Uint8Array, width: number, height: number, channels: number, what: string): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new RangeError(`${what}: size ${width}×${height} is not a positive integer size`);
  }
  if (data.length !== width * height * channels) {
    throw new RangeError(`${what}: ${data.length} bytes for ${width}×${height}×${channels}`);
  }
}

function checkSameSize(image: Raw, mask: GrayPixels): void {
  checkSize(mask.data, mask.width, mask.height, 1, "mask");
  if (mask.width !== image.width || mask.height !== image.height) {
    throw new RangeError(`mask is ${mask.width}×${mask.height}, image ${image.width}×${image.height}`);
  }
}

/**
 * A Gaussian blur of 1 or 3 alpha-free 8-bit bands (so sharp does no alpha handling), as float; taps down to 1%
 * amplitude (≈ ±3σ, the reach of PIL's three box passes). From σ 16 up the bands are shrunk by f = ⌊σ/4⌋ (linear),
 * blurred with σ/f, rounded to uint8 and enlarged back (linear): the result is smooth at that scale anyway, and a
 * full-size σ = 256 blur takes seconds.
 */
async function blurBands(
  bands: Uint8Array,
  width: number,
  height: number,
  channels: 1 | 3,
  sigma: number,
): Promise<Float32Array> {
  const f = sigma >= 16 ? Math.floor(sigma / 4) : 1;
  const blur = {
    sigma: Math.max(sigma / f, SHARP_MIN_SIGMA),
    minAmplitude: 0.01,
    precision: "float" as const,
  };
  const raw = { width, height, channels };
  if (f === 1) return floatBands(sharp(bands, { raw }).blur(blur), channels);
  const lw = Math.max(1, Math.round(width / f));
  const lh = Math.max(1, Math.round(height / f));
  const small = await floatBands(
    sharp(bands, { raw }).resize(lw, lh, { fit: "fill", kernel: "linear" }).blur(blur),
    channels,
  );
  const rounded = new Uint8Array(small.length);
  for (let i = 0; i < small.length; i++) rounded[i] = clamp(Math.round(small[i] as number), 0, 255);
  const enlarge = sharp(rounded, { raw: { width: lw, height: lh, channels } });
  return floatBands(enlarge.resize(width, height, { fit: "fill", kernel: "linear" }), channels);
}

/** A pipeline's output as float (no uint8 truncation); one band stays one band (sharp would make it sRGB). */
async function floatBands(pipeline: Sharp, channels: 1 | 3): Promise<Float32Array> {
  const out = await (channels === 1 ? pipeline.toColourspace("b-w") : pipeline)
    .raw({ depth: "float" })
    .toBuffer();
  return new Float32Array(out.buffer, out.byteOffset, out.byteLength / 4).slice();
}

/** PIL's RGBa → RGBA: colour·255/alpha (0 where alpha rounds to 0), rounded and clipped; straight RGBA uint8. */
function unpremultiply(colour: Float32Array, alpha: Float32Array): Uint8Array {
  const out = new Uint8Array(alpha.length * 4);
  for (let p = 0; p < alpha.length; p++) {
    const a = clamp(Math.round(alpha[p] as number), 0, 255);
    out[p * 4 + 3] = a;
    if (a === 0) continue;
    for (let c = 0; c < 3; c++) {
      out[p * 4 + c] = clamp(
        Math.round(((colour[p * 3 + c] as number) * 255) / (alpha[p] as number)),
        0,
        255,
      );
    }
  }
  return out;
}

/** PIL Image.alpha_composite(src) in place on dst (straight RGBA): Porter-Duff src over dst, rounded to uint8. */
function alphaCompositeOver(dst: Uint8Array, src: Uint8Array): void {
  for (let i = 0; i < dst.length; i += 4) {
    const sa = src[i + 3] as number;
    if (sa === 0) continue;
    const da = dst[i + 3] as number;
    const blend = da * (255 - sa); // dst alpha left after src, ×255
    const outA255 = sa * 255 + blend;
    for (let c = 0; c < 3; c++) {
      dst[i + c] = Math.round(((src[i + c] as number) * sa * 255 + (dst[i + c] as number) * blend) / outA255);
    }
    dst[i + 3] = Math.round(outA255 / 255);
  }
}

function crop(image: Raw, region: CropRegion, channels: number): Raw {
  const { x1, y1, x2, y2 } = region;
  if (
    ![x1, y1, x2, y2].every(Number.isInteger) ||
    x1 < 0 ||
    y1 < 0 ||
    x2 > image.width ||
    y2 > image.height ||
    x2 <= x1 ||
    y2 <= y1
  ) {
    throw new RangeError(
      `crop region ${JSON.stringify(region)} is not inside ${image.width}×${image.height}`,
    );
  }
  const w = x2 - x1;
  const h = y2 - y1;
  const data = new Uint8Array(w * h * channels);
  for (let y = 0; y < h; y++) {
    const from = ((y1 + y) * image.width + x1) * channels;
    data.set(image.data.subarray(from, from + w * channels), y * w * channels);
  }
  return { data, width: w, height: h };
}

/** images.resize_image's inner resize: PIL LANCZOS (a = 3) → sharp's lanczos3, a plain stretch. */
async function lanczos(image: Raw, channels: number, width: number, height: number): Promise<Raw> {
  if (image.width === width && image.height === height) return image;
  let pipeline = sharp(image.data, {
    raw: { width: image.width, height: image.height, channels: channels as 1 | 3 },
  }).resize(width, height, { kernel: "lanczos3", fit: "fill" });
  if (channels === 1) pipeline = pipeline.toColourspace("b-w");
  const data = await pipeline.raw().toBuffer();
  return { data: new Uint8Array(data), width, height };
}

/** Paste `src` at (left, top) into `dst` (width × height × channels), clipped, as PIL's Image.paste. */
function paste(
  dst: Uint8Array,
  width: number,
  height: number,
  src: Raw,
  left: number,
  top: number,
  channels: number,
) {
  for (let y = 0; y < src.height; y++) {
    const ty = top + y;
    if (ty < 0 || ty >= height) continue;
    for (let x = 0; x < src.width; x++) {
      const tx = left + x;
      if (tx < 0 || tx >= width) continue;
      for (let c = 0; c < channels; c++) {
        dst[(ty * width + tx) * channels + c] = src.data[(y * src.width + x) * channels + c] as number;
      }
    }
  }
}

/**
 * images.resize_image mode 1, "crop and resize": resized to cover width×height (ratio kept, sizes floored as
 * Python's //), pasted centred at (width//2 − src_w//2, height//2 − src_h//2) on black.
 */
async function resizeAndCrop(image: RgbPixels, width: number, height: number): Promise<RgbPixels> {
  const ratio = width / height;
  const srcRatio = image.width / image.height;
  const srcW = ratio > srcRatio ? width : Math.floor((image.width * height) / image.height);
  const srcH = ratio <= srcRatio ? height : Math.floor((image.height * width) / image.width);
  const resized = await lanczos(image, 3, srcW, srcH);
  const data = new Uint8Array(width * height * 3);
  paste(
    data,
    width,
    height,
    resized,
    Math.floor(width / 2) - Math.floor(srcW / 2),
    Math.floor(height / 2) - Math.floor(srcH / 2),
    3,
  );
  return { data, width, height };
}

/**
 * images.resize_image mode 2, "resize and fill": resized to fit inside width×height, pasted centred on black, the
 * two bands beside it (each width//2 − src_w//2 or height//2 − src_h//2 wide, so an odd leftover line stays black,
 * as in A1111) filled with PIL's resize of the zero-width edge box — the edge line's Lanczos extrapolation.
 */
async function resizeAndFill(image: Raw, channels: number, width: number, height: number): Promise<Raw> {
  const ratio = width / height;
  const srcRatio = image.width / image.height;
  const srcW = ratio < srcRatio ? width : Math.floor((image.width * height) / image.height);
  const srcH = ratio >= srcRatio ? height : Math.floor((image.height * width) / image.width);
  const resized = await lanczos(image, channels, Math.max(srcW, 1), Math.max(srcH, 1));
  const data = new Uint8Array(width * height * channels);
  paste(
    data,
    width,
    height,
    resized,
    Math.floor(width / 2) - Math.floor(srcW / 2),
    Math.floor(height / 2) - Math.floor(srcH / 2),
    channels,
  );
  if (ratio < srcRatio) {
    const fill = Math.floor(height / 2) - Math.floor(srcH / 2);
    if (fill > 0) {
      const topRow = edgeLine(resized, channels, "rows", 0);
      const bottomRow = edgeLine(resized, channels, "rows", resized.height);
      for (let y = 0; y < fill; y++) {
        paste(data, width, height, { data: topRow, width: resized.width, height: 1 }, 0, y, channels);
        paste(
          data,
          width,
          height,
          { data: bottomRow, width: resized.width, height: 1 },
          0,
          fill + srcH + y,
          channels,
        );
      }
    }
  } else if (ratio > srcRatio) {
    const fill = Math.floor(width / 2) - Math.floor(srcW / 2);
    if (fill > 0) {
      const leftCol = edgeLine(resized, channels, "columns", 0);
      const rightCol = edgeLine(resized, channels, "columns", resized.width);
      for (let x = 0; x < fill; x++) {
        paste(data, width, height, { data: leftCol, width: 1, height: resized.height }, x, 0, channels);
        paste(
          data,
          width,
          height,
          { data: rightCol, width: 1, height: resized.height },
          fill + srcW + x,
          0,
          channels,
        );
      }
    }
  }
  return { data, width, height };
}

/** PIL's Lanczos (truncated sinc, a = 3). */
function lanczos3(x: number): number {
  if (x < -3 || x >= 3) return 0;
  const sinc = (t: number) => (t === 0 ? 1 : Math.sin(Math.PI * t) / (Math.PI * t));
  return sinc(x) * sinc(x / 3);
}

/**
 * One line of PIL's `resize(…, box)` with a zero-extent box at `at` (0 or the size) across `axis`: scale 0, so
 * support 3 and taps k ∈ [max(trunc(at − 2.5), 0), min(trunc(at + 3.5), size)) weighted lanczos3(k − at + 0.5),
 * normalised, rounded and clipped. PIL skips the other axis (its box spans it at scale 1).
 */
function edgeLine(image: Raw, channels: number, axis: "rows" | "columns", at: number): Uint8Array {
  const size = axis === "rows" ? image.height : image.width;
  const length = axis === "rows" ? image.width : image.height;
  const first = Math.max(Math.trunc(at - 2.5), 0);
  const last = Math.min(Math.trunc(at + 3.5), size);
  const weights: number[] = [];
  for (let k = first; k < last; k++) weights.push(lanczos3(k - at + 0.5));
  const total = weights.reduce((a, b) => a + b, 0);
  const line = new Uint8Array(length * channels);
  for (let i = 0; i < length; i++) {
    for (let c = 0; c < channels; c++) {
      let v = 0;
      for (let j = 0; j < weights.length; j++) {
        const k = first + j;
        const p = axis === "rows" ? k * image.width + i : i * image.width + k;
        v += (weights[j] as number) * (image.data[p * channels + c] as number);
      }
      line[i * channels + c] = clamp(Math.round(total !== 0 ? v / total : v), 0, 255);
    }
  }
  return line;
}
