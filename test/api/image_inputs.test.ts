/**
 * Image inputs through a real server on loopback (`bun api/index.ts`, the tiny SD 1.x ONNX folder): every bad
 * input is a 422 naming its field and the server keeps serving; sizes, warnings, metadata, infotext, progress
 * events and batches behave as documented.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { deflateSync } from "node:zlib";
import sharp from "sharp";
import { readPngText } from "../../api/engine/pipeline/image.ts";
import { createSdxClient, type GenerateRequest, SdxError } from "../../sdk/index.ts";
import { imageDiff, MODELS_DIR, pixels } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

let server: RunningServer;
let client: ReturnType<typeof createSdxClient>;

const BASE = {
  prompt: "a red door",
  seed: 7,
  num_steps: 6,
  guidance_scale: 7.5,
  scheduler_type: "euler",
} as const;

/** A synthetic RGB picture: a gradient with a disk. */
async function picture(
  width: number,
  height: number,
  format: "png" | "jpeg" | "webp" = "png",
): Promise<Buffer> {
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const inDisk = (x - width / 2) ** 2 + (y - height / 2) ** 2 < (width / 4) ** 2;
      data[i] = inDisk ? 230 : Math.round((255 * x) / width);
      data[i + 1] = Math.round((255 * y) / height);
      data[i + 2] = inDisk ? 40 : 128;
    }
  }
  return sharp(data, { raw: { width, height, channels: 3 } })
    .toFormat(format)
    .toBuffer();
}

/** A mask: white (repaint) in the right half. */
async function rightHalfMask(width: number, height: number): Promise<Buffer> {
  const data = Buffer.alloc(width * height);
  for (let y = 0; y < height; y++) for (let x = width / 2; x < width; x++) data[y * width + x] = 255;
  return sharp(data, { raw: { width, height, channels: 1 } })
    .png()
    .toBuffer();
}

const b64 = (b: Uint8Array) => Buffer.from(b).toString("base64");

/** A PNG whose header claims `size`×`size` pixels, with almost no data: a decompression bomb's shape. */
function bombPng(size: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf: Buffer) => {
    let c = 0xffffffff;
    for (const b of buf) c = (crcTable[(c ^ b) & 0xff] as number) ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(size, 0);
  ihdr.writeUInt32BE(size, 4);
  ihdr.set([8, 0, 0, 0, 0], 8); // 8-bit grayscale
  const row = Buffer.alloc(1 + size); // one zero row, compressed: a few bytes claiming size × size pixels
  return Buffer.concat([
    Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]),
    chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(row)),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

async function refusal(body: Record<string, unknown>): Promise<SdxError> {
  const error = await client.generate(body as GenerateRequest).catch((e: unknown) => e);
  expect(error).toBeInstanceOf(SdxError);
  return error as SdxError;
}

beforeAll(async () => {
  server = await startServer(["--models-dir", MODELS_DIR, "--max-image-pixels", String(512 * 512)]);
  client = createSdxClient({ baseUrl: server.url });
});
afterAll(() => server.stop());

describe("bad image inputs are 422s naming the field", () => {
  test.each<[string, { init_image?: string; mask_image?: string; strength?: number }, string]>([
    ["not base64", { init_image: "%%%not base64%%%" }, "init_image"],
    ["not an image", { init_image: b64(new TextEncoder().encode("hello, this is text")) }, "init_image"],
    ["a GIF", { init_image: "R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7" }, "init_image"],
    ["a mask without an init image", { mask_image: "AAAA" }, "mask_image"],
    ["strength 0", { strength: 0 }, "strength"],
    ["strength above 1", { strength: 1.5 }, "strength"],
  ])("%s", async (_, fields, field) => {
    const init = fields.init_image ?? (fields.mask_image ? undefined : b64(await picture(64, 64)));
    const error = await refusal({ ...BASE, ...(init ? { init_image: init } : {}), ...fields });
    expect(error.status).toBe(422);
    expect(error.fields.map((f) => f.field)).toContain(field);
  });

  test("a truncated PNG", async () => {
    const png = await picture(64, 64);
    const error = await refusal({ ...BASE, init_image: b64(png.subarray(0, png.length - 40)) });
    expect(error.status).toBe(422);
    expect(error.fields[0]?.field).toBe("init_image");
  });

  test("a mask whose size differs from the image", async () => {
    const error = await refusal({
      ...BASE,
      init_image: b64(await picture(64, 64)),
      mask_image: b64(await rightHalfMask(64, 128)),
    });
    expect(error.fields[0]?.field).toBe("mask_image");
    expect(error.message).toContain("64×128");
  });

  test("images beyond the pixel limit, and a small file claiming a huge size, are refused before decoding", async () => {
    const big = await refusal({ ...BASE, init_image: b64(await picture(1024, 512)) });
    expect(big.fields[0]?.field).toBe("init_image");
    expect(big.fields[0]?.message).toContain("at most 262144");
    const bomb = bombPng(60_000);
    expect(bomb.length).toBeLessThan(200_000);
    const error = await refusal({ ...BASE, width: 64, height: 64, init_image: b64(bomb) });
    expect(error.fields[0]?.field).toBe("init_image");
    expect(error.fields[0]?.message).toContain("3600000000 pixels");
  });

  test("a strength that runs no step, and hires targets beyond the limits", async () => {
    const none = await refusal({ ...BASE, init_image: b64(await picture(64, 64)), strength: 0.1 });
    expect(none.fields[0]?.field).toBe("strength");
    const huge = await refusal({
      ...BASE,
      width: 64,
      height: 64,
      hires: { scale: 4, width: 4096, height: 4096 },
    });
    expect(huge.status).toBe(422);
    expect(huge.fields.map((f) => f.field).join()).toMatch(/hires/);
    const off = await refusal({ ...BASE, width: 64, height: 64, hires: { scale: 1.5 } });
    expect(off.fields[0]?.field).toBe("hires.scale");
    expect(off.fields[0]?.message).toContain("multiples of 64");
  });

  test("the server keeps serving", async () => {
    const res = await client.generate({ ...BASE, width: 64, height: 64 });
    expect(res.images).toHaveLength(1);
    const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string };
    expect(health.status).toBe("ok");
  });
});

describe("image-to-image through the server", () => {
  test("JPEG and WebP inits, raw or as data URLs; sizes from the image; metadata and infotext", async () => {
    const jpeg = await picture(128, 72, "jpeg");
    const res = await client.generate({
      ...BASE,
      init_image: `data:image/jpeg;base64,${b64(jpeg)}`,
      strength: 0.5,
    });
    const img = await pixels(Buffer.from(res.images[0]?.png ?? "", "base64"));
    // 128×72 rounded down to the ONNX folder's multiple of 64: 128×64, with a warning about the resize.
    expect([img.width, img.height]).toEqual([128, 64]);
    expect(res.metadata.parameters.strength).toBe(0.5);
    expect(res.metadata.inputs.init_image).toMatchObject({
      format: "jpeg",
      width: 128,
      height: 72,
      resized: true,
    });
    expect(res.metadata.inputs.init_image?.sha256).toBe(
      new Bun.CryptoHasher("sha256").update(jpeg).digest("hex"),
    );
    expect(res.warnings.join(" ")).toContain("resized to 128×64");
    // strength 0.5 of 6 steps: 3 run.
    expect(res.metadata.timesteps).toHaveLength(3);
    const text = readPngText(Buffer.from(res.images[0]?.png ?? "", "base64"));
    expect(text.parameters).toContain("Denoising strength: 0.5");

    const webp = await client.generate({
      ...BASE,
      width: 64,
      height: 64,
      init_image: b64(await picture(64, 64, "webp")),
    });
    expect(webp.metadata.inputs.init_image?.format).toBe("webp");
    expect(webp.metadata.parameters.strength).toBe(0.8);
  });

  test("batches: image i is seed + i from the same init image", async () => {
    const init = b64(await picture(64, 64));
    const batch = await client.generate({ ...BASE, width: 64, height: 64, init_image: init, batch_size: 2 });
    const alone = await client.generate({
      ...BASE,
      width: 64,
      height: 64,
      init_image: init,
      seed: BASE.seed + 1,
    });
    expect(batch.images[1]?.seed).toBe(BASE.seed + 1);
    const diff = await imageDiff(
      Buffer.from(batch.images[1]?.png ?? "", "base64"),
      Buffer.from(alone.images[0]?.png ?? "", "base64"),
    );
    expect(diff.max).toBe(0);
  });

  test("progress counts the steps run: strength's share, and both hires passes", async () => {
    const steps = async (body: GenerateRequest) => {
      const seen: { step: number; total: number }[] = [];
      for await (const event of client.generateStream(body)) {
        if (event.type === "step") seen.push({ step: event.step, total: event.total });
      }
      return seen;
    };
    const img2img = await steps({
      ...BASE,
      width: 64,
      height: 64,
      init_image: b64(await picture(64, 64)),
      strength: 0.5,
    });
    expect(img2img.map((e) => e.step)).toEqual([1, 2, 3]);
    expect(img2img.every((e) => e.total === 3)).toBe(true);
    const hires = await steps({
      ...BASE,
      width: 64,
      height: 64,
      hires: { scale: 2, strength: 0.5, steps: 4 },
    });
    expect(hires.map((e) => e.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(hires.every((e) => e.total === 8)).toBe(true);
  });

  test("hires fix: final size, metadata and A1111's infotext", async () => {
    const res = await client.generate({
      ...BASE,
      width: 64,
      height: 64,
      hires: { upscaler: "latent_nearest", scale: 2, strength: 0.5, steps: 4 },
    });
    const img = await pixels(Buffer.from(res.images[0]?.png ?? "", "base64"));
    expect([img.width, img.height]).toEqual([128, 128]);
    expect(res.metadata.parameters.hires).toEqual({
      upscaler: "latent_nearest",
      scale: 2,
      width: 128,
      height: 128,
      strength: 0.5,
      steps: 4,
    });
    expect(res.metadata.hires_timesteps).toHaveLength(2);
    const text = readPngText(Buffer.from(res.images[0]?.png ?? "", "base64")).parameters ?? "";
    for (const part of [
      "Size: 64x64",
      "Denoising strength: 0.5",
      "Hires upscale: 2",
      "Hires steps: 4",
      "Hires upscaler: Latent (nearest)",
    ]) {
      expect(text).toContain(part);
    }
    const lanczos = await client.generate({
      ...BASE,
      width: 64,
      height: 64,
      hires: { upscaler: "lanczos", scale: 2, strength: 0.5, steps: 4 },
    });
    expect((await pixels(Buffer.from(lanczos.images[0]?.png ?? "", "base64"))).width).toBe(128);
  });

  test("inpainting extras: mask blur pastes the kept side back, only-masked keeps the init image's size", async () => {
    const init = await picture(128, 64);
    const mask = await rightHalfMask(128, 64);
    const blurred = await client.generate({
      ...BASE,
      width: 128,
      height: 64,
      init_image: b64(init),
      mask_image: b64(mask),
      mask_blur: 4,
    });
    const out = await pixels(Buffer.from(blurred.images[0]?.png ?? "", "base64"));
    const original = await pixels(init);
    // Far from the mask's edge, the kept (left) side is the init image itself.
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 40; x++) {
        const i = (y * 128 + x) * 3;
        expect(out.data.subarray(i, i + 3)).toEqual(original.data.subarray(i, i + 3));
      }
    }
    const text = readPngText(Buffer.from(blurred.images[0]?.png ?? "", "base64")).parameters ?? "";
    expect(text).toContain("Mask blur: 4");

    const cropped = await client.generate({
      ...BASE,
      width: 64,
      height: 64,
      init_image: b64(init),
      mask_image: b64(mask),
      inpaint_full_res: true,
      inpaint_full_res_padding: 8,
      masked_content: "fill",
    });
    const whole = await pixels(Buffer.from(cropped.images[0]?.png ?? "", "base64"));
    expect([whole.width, whole.height]).toEqual([128, 64]);
    expect(cropped.metadata.parameters).toMatchObject({ inpaint_full_res: true, masked_content: "fill" });
  });

  test("fields with nothing to act on are named in warnings", async () => {
    const res = await client.generate({ ...BASE, width: 64, height: 64, strength: 0.5, mask_blur: 4 });
    expect(res.warnings.join(" ")).toContain("strength has no effect without init_image");
    expect(res.warnings.join(" ")).toContain("mask_blur has no effect without mask_image");
  });
});
