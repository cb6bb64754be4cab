/**
 * AUTOMATIC1111's pixel-space inpainting steps on small synthesized pictures: crop regions worked out by hand
 * from masking.get_crop_region_v2 + expand_crop_region, the mask blur against cv2's kernel, masking.fill's
 * colours, resize_image's fill bands and apply_overlay's composite.
 */
import { describe, expect, test } from "bun:test";
import {
  blurMask,
  cropRegion,
  cropResize,
  cropResizeGray,
  fillMasked,
  invertMask,
  pasteBack,
} from "../../api/engine/pipeline/inpaint_area.ts";
import type { GrayPixels, RgbPixels } from "../../api/engine/pipeline/types.ts";

function gray(width: number, height: number, value: (x: number, y: number) => number): GrayPixels {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data[y * width + x] = value(x, y);
  return { data, width, height };
}

function rgb(
  width: number,
  height: number,
  value: (x: number, y: number) => [number, number, number],
): RgbPixels {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) data.set(value(x, y), (y * width + x) * 3);
  }
  return { data, width, height };
}

function px(image: RgbPixels, x: number, y: number): [number, number, number] {
  const i = (y * image.width + x) * 3;
  return [image.data[i] as number, image.data[i + 1] as number, image.data[i + 2] as number];
}

const box = (x1: number, y1: number, x2: number, y2: number) => (x: number, y: number) =>
  x >= x1 && x < x2 && y >= y1 && y < y2 ? 255 : 0;

describe("cropRegion (get_crop_region_v2 + expand_crop_region)", () => {
  test("an empty mask has no region; any value above 0 counts", () => {
    expect(
      cropRegion(
        gray(16, 16, () => 0),
        8,
        512,
        512,
      ),
    ).toBeNull();
    expect(
      cropRegion(
        gray(16, 16, (x, y) => (x === 3 && y === 5 ? 1 : 0)),
        0,
        512,
        512,
      ),
    ).toEqual({
      x1: 3,
      y1: 5,
      x2: 4,
      y2: 6,
    });
  });

  test("a wide box grows in height to the square target, centred", () => {
    // bbox (10,30,20,34): 10×4, ratio 2.5 > 1 → height 10, diff 6 → y −3 / +3.
    expect(cropRegion(gray(64, 64, box(10, 30, 20, 34)), 0, 512, 512)).toEqual({
      x1: 10,
      y1: 27,
      x2: 20,
      y2: 37,
    });
    // Padding 4: (6,26,24,38), 18×12 → diff 6.
    expect(cropRegion(gray(64, 64, box(10, 30, 20, 34)), 4, 512, 512)).toEqual({
      x1: 6,
      y1: 23,
      x2: 24,
      y2: 41,
    });
  });

  test("a tall box grows in width to a 3:2 target", () => {
    // 10×40, ratio 0.25 ≤ 1.5 → width 60, diff 50 → x −25 / +25.
    expect(cropRegion(gray(100, 100, box(40, 20, 50, 60)), 0, 768, 512)).toEqual({
      x1: 15,
      y1: 20,
      x2: 75,
      y2: 60,
    });
  });

  test("int() truncates the growth and // puts the odd pixel after", () => {
    // 7×7 to 512:768 → height 7 / (2/3) = 10.5, diff int(3.5) = 3 → y −1 / +2.
    expect(cropRegion(gray(64, 64, box(20, 20, 27, 27)), 0, 512, 768)).toEqual({
      x1: 20,
      y1: 19,
      x2: 27,
      y2: 29,
    });
  });

  test("at the bottom border the region shifts up to stay inside", () => {
    // (0,60,32,64) → height 32, diff 28 → y1 46, y2 78; 14 over → (0,32,32,64).
    expect(cropRegion(gray(64, 64, box(0, 60, 32, 64)), 0, 512, 512)).toEqual({
      x1: 0,
      y1: 32,
      x2: 32,
      y2: 64,
    });
  });

  test("at the left border the region shifts right", () => {
    // 3×8 → width 8, diff 5 → x1 1−2 = −1, x2 4+3 = 7; shifted → (0,10,8,18).
    expect(cropRegion(gray(100, 100, box(1, 10, 4, 18)), 0, 512, 512)).toEqual({
      x1: 0,
      y1: 10,
      x2: 8,
      y2: 18,
    });
  });

  test("padding is clamped to the picture", () => {
    expect(cropRegion(gray(64, 64, box(0, 0, 4, 4)), 8, 512, 512)).toEqual({ x1: 0, y1: 0, x2: 12, y2: 12 });
  });

  test("a picture too small for the ratio keeps its full height (the ratio stays short)", () => {
    // 64×16 picture, box (8,4,56,8): height 48 wanted → y1 −18, y2 30 → shifted to (−32,16) → (0,48) → clamped 16.
    expect(cropRegion(gray(64, 16, box(8, 4, 56, 8)), 0, 512, 512)).toEqual({ x1: 8, y1: 0, x2: 56, y2: 16 });
  });
});

describe("blurMask (A1111 mask blur, cv2.GaussianBlur)", () => {
  test("σ 0 returns the mask unchanged (a copy)", async () => {
    const mask = gray(9, 7, (x, y) => (x * 31 + y * 7) % 256);
    const out = await blurMask(mask, 0);
    expect(out.data).toEqual(mask.data);
    expect(out.data).not.toBe(mask.data);
  });

  test("a one-pixel-wide line becomes cv2's kernel: symmetric, falling off, zero past 2·int(2.5σ+0.5)+1", async () => {
    const sigma = 2;
    const w = 31;
    const c = 15;
    const out = await blurMask(
      gray(w, 9, (x) => (x === c ? 255 : 0)),
      sigma,
    );
    expect(out.data.length).toBe(w * 9);
    const row = Array.from(out.data.subarray(4 * w, 5 * w));
    // cv2.getGaussianKernel(11, 2) applied to 255.
    const r = Math.trunc(2.5 * sigma + 0.5);
    const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
    const sum = k.reduce((a, b) => a + b, 0);
    for (let d = -r; d <= r; d++) {
      expect(Math.abs((row[c + d] as number) - (255 * (k[d + r] as number)) / sum)).toBeLessThanOrEqual(1);
    }
    for (let d = r + 1; d <= c; d++) {
      expect(row[c + d]).toBe(0);
      expect(row[c - d]).toBe(0);
    }
    for (let d = 1; d <= c; d++) {
      expect(row[c + d]).toBe(row[c - d] as number);
      expect(row[c + d] as number).toBeLessThanOrEqual(row[c + d - 1] as number);
    }
    expect(row[c + 1] as number).toBeLessThan(row[c] as number);
    // Every row of the (vertically constant) line is the same.
    for (let y = 0; y < 9; y++) expect(Array.from(out.data.subarray(y * w, (y + 1) * w))).toEqual(row);
  });

  test("a square's blur is symmetric in x and y and a bigger σ spreads further", async () => {
    const n = 33;
    const mask = gray(n, n, box(12, 12, 21, 21));
    const small = await blurMask(mask, 1);
    const large = await blurMask(mask, 4);
    for (let y = 0; y < n; y++) {
      for (let x = 0; x < n; x++) {
        const v = large.data[y * n + x];
        expect(large.data[y * n + (n - 1 - x)]).toBe(v as number);
        expect(large.data[x * n + y]).toBe(v as number);
      }
    }
    // Outside the square the wider blur reaches further; inside near the edge it is lower.
    expect(large.data[16 * n + 8] as number).toBeGreaterThan(small.data[16 * n + 8] as number);
    expect(small.data[16 * n + 8]).toBe(0);
    expect(large.data[16 * n + 12] as number).toBeLessThan(small.data[16 * n + 12] as number);
    // The centre is 255 × (the cv2 kernel's weight within ±4)², separably.
    const r = Math.trunc(2.5 * 4 + 0.5);
    const k = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / 32));
    const inside = k.slice(r - 4, r + 5).reduce((a, b) => a + b, 0) / k.reduce((a, b) => a + b, 0);
    expect(Math.abs((large.data[16 * n + 16] as number) - 255 * inside * inside)).toBeLessThanOrEqual(1);
  });
});

describe("fillMasked (masking.fill)", () => {
  const red: [number, number, number] = [255, 0, 0];
  const blue: [number, number, number] = [0, 0, 255];
  const image = rgb(32, 16, (x) => (x < 16 ? red : blue));

  test("a hole in the red half is filled reddish; unmasked pixels are unchanged", async () => {
    const mask = gray(32, 16, box(4, 4, 12, 12));
    const out = await fillMasked(image, mask);
    expect(out.width).toBe(32);
    expect(out.height).toBe(16);
    for (let y = 0; y < 16; y++) {
      for (let x = 0; x < 32; x++) {
        const [r, g, b] = px(out, x, y);
        if (mask.data[y * 32 + x] === 0) {
          expect([r, g, b]).toEqual(px(image, x, y));
        } else {
          expect(r).toBeGreaterThan(b);
          expect(r).toBeGreaterThan(200);
          expect(g).toBe(0);
        }
      }
    }
  });

  test("a hole and a half-masked pixel in a flat picture keep its colour (±1, uint8 premultiplication)", async () => {
    const flat = rgb(24, 24, () => [90, 140, 200]);
    const mask = gray(24, 24, (x, y) => (x === 3 && y === 3 ? 128 : box(6, 6, 18, 18)(x, y)));
    const out = await fillMasked(flat, mask);
    for (let i = 0; i < out.data.length; i += 3) {
      expect(Math.abs((out.data[i] as number) - 90)).toBeLessThanOrEqual(1);
      expect(Math.abs((out.data[i + 1] as number) - 140)).toBeLessThanOrEqual(1);
      expect(Math.abs((out.data[i + 2] as number) - 200)).toBeLessThanOrEqual(1);
    }
  });

  test("a half-masked pixel on the red/blue border mixes in the other side but keeps mostly its own", async () => {
    const mask = gray(32, 16, (x, y) => (y === 8 && (x === 15 || x === 16) ? 128 : 0));
    const out = await fillMasked(image, mask);
    const [r15, , b15] = px(out, 15, 8);
    const [r16, , b16] = px(out, 16, 8);
    expect(r15).toBeGreaterThan(127);
    expect(r15).toBeLessThan(255);
    expect(b15).toBeGreaterThan(0);
    expect(b16).toBeGreaterThan(127);
    expect(b16).toBeLessThan(255);
    expect(r16).toBeGreaterThan(0);
    expect(px(out, 14, 8)).toEqual(red);
    expect(px(out, 15, 7)).toEqual(red);
  });

  test("an empty mask gives the picture back", async () => {
    const pattern = rgb(12, 10, (x, y) => [x * 20, y * 25, (x * y) % 256]);
    const out = await fillMasked(
      pattern,
      gray(12, 10, () => 0),
    );
    expect(out.data).toEqual(pattern.data);
  });

  test("a mask of another size is refused", async () => {
    await expect(
      fillMasked(
        image,
        gray(8, 8, () => 0),
      ),
    ).rejects.toThrow(RangeError);
  });
});

describe("cropResize / cropResizeGray (crop, then resize_image mode 2)", () => {
  const pattern = rgb(40, 30, (x, y) => [x * 6, y * 8, 128]);

  test("a region of the target size is the crop itself", async () => {
    const out = await cropResize(pattern, { x1: 5, y1: 7, x2: 21, y2: 23 }, 16, 16);
    for (let y = 0; y < 16; y++)
      for (let x = 0; x < 16; x++) expect(px(out, x, y)).toEqual(px(pattern, x + 5, y + 7));
  });

  test("a flat region at the target ratio stretches to a flat picture", async () => {
    const flat = rgb(40, 30, () => [12, 34, 56]);
    const out = await cropResize(flat, { x1: 0, y1: 0, x2: 20, y2: 10 }, 64, 32);
    expect(out.data.length).toBe(64 * 32 * 3);
    for (let i = 0; i < out.data.length; i += 3)
      expect([out.data[i], out.data[i + 1], out.data[i + 2]]).toEqual([12, 34, 56]);
  });

  test("a wider region fits inside and its top/bottom edge rows fill the bands", async () => {
    // 20×10 crop → 16×16: fitted 16×8 at y 4; bands rows 0–3 and 12–15.
    const halves = rgb(40, 30, (_x, y) => (y < 15 ? [255, 0, 0] : [0, 255, 0]));
    const out = await cropResize(halves, { x1: 10, y1: 10, x2: 30, y2: 20 }, 16, 16);
    for (let x = 0; x < 16; x++) {
      for (let y = 0; y < 4; y++) expect(px(out, x, y)).toEqual([255, 0, 0]);
      for (let y = 12; y < 16; y++) expect(px(out, x, y)).toEqual([0, 255, 0]);
    }
  });

  test("a mask crops and resizes the same way, one channel", async () => {
    const mask = gray(40, 30, box(10, 10, 20, 20));
    const out = await cropResizeGray(mask, { x1: 10, y1: 10, x2: 20, y2: 20 }, 32, 32);
    expect(out.data.length).toBe(32 * 32);
    expect(out.data.every((v) => v === 255)).toBe(true);
    const same = await cropResizeGray(mask, { x1: 5, y1: 5, x2: 25, y2: 25 }, 20, 20);
    for (let y = 0; y < 20; y++)
      for (let x = 0; x < 20; x++)
        expect(same.data[y * 20 + x]).toBe(mask.data[(y + 5) * 40 + x + 5] as number);
  });

  test("a region outside the picture is refused", async () => {
    await expect(cropResize(pattern, { x1: 30, y1: 0, x2: 50, y2: 10 }, 8, 8)).rejects.toThrow(RangeError);
  });
});

describe("pasteBack (apply_overlay)", () => {
  const original = rgb(32, 32, (x, y) => [(x * 7) % 256, (y * 11) % 256, (x + y) % 256]);
  const region = { x1: 8, y1: 8, x2: 24, y2: 24 };
  // Fully repainted square, one half-masked pixel, and one masked pixel outside the region.
  const mask = gray(32, 32, (x, y) =>
    x === 12 && y === 20 ? 128 : x === 2 && y === 2 ? 255 : box(10, 10, 20, 20)(x, y),
  );

  test("mask 0 keeps the original exactly, 255 takes the generated, between blends; outside the region stays", async () => {
    const generated = rgb(16, 16, (x, y) => [x * 10, 200, y * 10]);
    const out = await pasteBack(original, generated, region, mask);
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const m = mask.data[y * 32 + x] as number;
        const inside = x >= 8 && x < 24 && y >= 8 && y < 24;
        if (!inside || m === 0) expect(px(out, x, y)).toEqual(px(original, x, y));
        else if (m === 255) expect(px(out, x, y)).toEqual(px(generated, x - 8, y - 8));
      }
    }
    const g = px(generated, 4, 12);
    const o = px(original, 12, 20);
    const blend = (c: 0 | 1 | 2) => Math.round((g[c] * 128 + o[c] * 127) / 255);
    expect(px(out, 12, 20)).toEqual([blend(0), blend(1), blend(2)]);
  });

  test("a generated picture of another size is resized to the region", async () => {
    const generated = rgb(64, 64, () => [10, 200, 30]);
    const out = await pasteBack(original, generated, region, mask);
    expect(px(out, 15, 15)).toEqual([10, 200, 30]);
    expect(px(out, 5, 5)).toEqual(px(original, 5, 5));
  });

  test("a generated picture of another ratio is cover-resized and centre-cropped (resize_image mode 1)", async () => {
    // 32×16 into 16×16: height fits (16), width 32, pasted at x 8 − 16 = −8 → columns 8–23.
    const generated = rgb(32, 16, (x) => [x * 8, 0, 0]);
    const full = gray(32, 32, box(8, 8, 24, 24));
    const out = await pasteBack(original, generated, region, full);
    for (let x = 0; x < 16; x++) expect(px(out, 8 + x, 12)[0]).toBe((x + 8) * 8);
  });

  test("without a region the generated picture is composited in place", async () => {
    const generated = rgb(32, 32, () => [1, 2, 3]);
    const out = await pasteBack(original, generated, null, mask);
    expect(px(out, 2, 2)).toEqual([1, 2, 3]);
    expect(px(out, 15, 15)).toEqual([1, 2, 3]);
    expect(px(out, 25, 25)).toEqual(px(original, 25, 25));
    await expect(
      pasteBack(
        original,
        rgb(16, 16, () => [0, 0, 0]),
        null,
        mask,
      ),
    ).rejects.toThrow(RangeError);
  });
});

test("invertMask is 255 − v (inpainting_mask_invert)", () => {
  const mask = gray(4, 2, (x) => [0, 1, 128, 255][x] as number);
  expect(Array.from(invertMask(mask).data)).toEqual([255, 254, 127, 0, 255, 254, 127, 0]);
});
