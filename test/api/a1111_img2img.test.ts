/**
 * A1111's img2img and hires fix on the real app and the tiny model, driven with the exact bodies sdwebuiapi's
 * `img2img(images=[…], mask_image=…)` and `txt2img(enable_hr=True, …)` post: each must give the same PNG bytes as
 * the equivalent POST /v1/generate, and what sdx cannot do must be a 422 naming the A1111 field.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import sharp from "sharp";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { readPngText } from "../../api/engine/pipeline/image.ts";
import { MODELS_DIR, pixels } from "../helpers/fixtures.ts";
import { b64Img, sdwebuiapiImg2img, sdwebuiapiTxt2img } from "../helpers/sdwebuiapi.ts";

const host = new ModelHost({ modelsDir: MODELS_DIR, provider: "cpu" });
const app = createApp(host);
beforeAll(() => host.start());
afterAll(() => host.close());

interface ErrorBody {
  status: number;
  code: string;
  message: string;
  fields?: { field: string; message: string; allowed?: unknown[] }[];
}

interface A1111Answer {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}

interface Info {
  seed: number;
  all_seeds: number[];
  width: number;
  height: number;
  steps: number;
  denoising_strength: number | null;
  extra_generation_params: Record<string, string | number>;
  infotexts: string[];
  sdx_warnings: string[];
}

async function post(path: string, body: unknown): Promise<Response> {
  return app.handle(
    new Request(`http://localhost${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    }),
  );
}

async function ok<T>(path: string, body: unknown): Promise<T> {
  const res = await post(path, body);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`POST ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function a1111(path: string, body: unknown): Promise<{ res: A1111Answer; info: Info }> {
  const res = await ok<A1111Answer>(path, body);
  return { res, info: JSON.parse(res.info) as Info };
}

/** The PNGs of /v1/generate for each iteration's seed, in order: what an A1111 answer must equal. */
async function v1Images(body: Record<string, unknown>, seeds: number[]): Promise<string[]> {
  const out: string[] = [];
  for (const seed of seeds) {
    const res = await ok<{ images: { png: string }[] }>("/v1/generate", { ...body, seed });
    out.push(...res.images.map((i) => i.png));
  }
  return out;
}

async function rejected(path: string, body: unknown): Promise<ErrorBody> {
  const res = await post(path, body);
  const error = (await res.json()) as ErrorBody;
  expect(res.status).toBe(422);
  expect(error.code).toBe("validation_failed");
  return error;
}

/** A 64×64 colour gradient: the init image. */
async function gradient(): Promise<Uint8Array> {
  const rgb = new Uint8Array(64 * 64 * 3);
  for (let y = 0; y < 64; y++) {
    for (let x = 0; x < 64; x++) {
      rgb.set([x * 4, y * 4, 255 - x * 2], (y * 64 + x) * 3);
    }
  }
  return new Uint8Array(
    await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer(),
  );
}

/** A 64×64 black-and-white mask: white (repaint) where `white(x, y)`. */
async function mask(white: (x: number, y: number) => boolean): Promise<Uint8Array> {
  const gray = new Uint8Array(64 * 64);
  for (let y = 0; y < 64; y++) for (let x = 0; x < 64; x++) gray[y * 64 + x] = white(x, y) ? 255 : 0;
  return new Uint8Array(
    await sharp(gray, { raw: { width: 64, height: 64, channels: 1 } })
      .png()
      .toBuffer(),
  );
}

const SMALL = { width: 64, height: 64, steps: 4 };
let init: Uint8Array;
let rightHalf: Uint8Array;
let leftHalf: Uint8Array;

beforeAll(async () => {
  init = await gradient();
  rightHalf = await mask((x) => x >= 32);
  leftHalf = await mask((x) => x < 32);
});

/** /v1/generate's body for what sdwebuiapi's defaults mean: Euler a, CFG 7, A1111 prompt syntax. */
const v1Base = (prompt: string, steps = SMALL.steps) => ({
  prompt,
  width: 64,
  height: 64,
  num_steps: steps,
  guidance_scale: 7,
  scheduler_type: "euler_a",
  karras_sigmas: false,
  clip_skip: 1,
  prompt_syntax: "a1111",
});

describe("the upscaler lists", () => {
  test("upscalers: the image upscalers sdx has, as A1111's UpscalerItem (sdwebuiapi's get_upscalers)", async () => {
    const res = await app.handle(new Request("http://localhost/sdapi/v1/upscalers"));
    expect(await res.json()).toEqual([
      { name: "None", model_name: null, model_path: null, model_url: null, scale: 4 },
      { name: "Lanczos", model_name: null, model_path: null, model_url: null, scale: 4 },
    ]);
  });

  test("latent-upscale-modes: Latent and Latent (nearest) (sdwebuiapi's get_latent_upscale_modes)", async () => {
    const res = await app.handle(new Request("http://localhost/sdapi/v1/latent-upscale-modes"));
    expect(await res.json()).toEqual([{ name: "Latent" }, { name: "Latent (nearest)" }]);
  });
});

describe("img2img", () => {
  test("sdwebuiapi's img2img(images=[…]): the same PNGs as /v1/generate with init_image and strength", async () => {
    const body = sdwebuiapiImg2img({
      images: [init],
      prompt: "a watercolor lighthouse",
      seed: 21,
      batch_size: 2,
      n_iter: 2,
      ...SMALL,
    });
    const { res, info } = await a1111("/sdapi/v1/img2img", body);
    expect(Object.keys(res).sort()).toEqual(["images", "info", "parameters"]);
    expect(res.images).toHaveLength(4);
    expect(info.all_seeds).toEqual([21, 22, 23, 24]);
    expect(info.denoising_strength).toBe(0.75);
    expect(info.infotexts[0]).toContain("Denoising strength: 0.75");
    // Every field sdwebuiapi sends by default is one sdx applies or A1111 ignores too.
    expect(info.sdx_warnings).toEqual([]);
    expect(info.infotexts).toEqual(
      res.images.map((png) => readPngText(Buffer.from(png, "base64")).parameters ?? ""),
    );
    // A1111 leaves the images out of `parameters` unless include_init_images.
    expect(res.parameters).toMatchObject({ init_images: null, mask: null, denoising_strength: 0.75 });
    for (const png of res.images) expect((await pixels(Buffer.from(png, "base64"))).width).toBe(64);
    const v1 = await v1Images(
      { ...v1Base("a watercolor lighthouse"), init_image: b64Img(init), strength: 0.75, batch_size: 2 },
      [21, 23],
    );
    expect(res.images).toEqual(v1);
  });

  test("the init image raw or as a data URL, repeated or once, is the same request", async () => {
    const one = sdwebuiapiImg2img({ images: [init], prompt: "x", seed: 4, ...SMALL });
    const { res } = await a1111("/sdapi/v1/img2img", one);
    const raw = Buffer.from(init).toString("base64");
    const repeated = { ...one, init_images: [raw, b64Img(init)], include_init_images: true };
    const again = await a1111("/sdapi/v1/img2img", repeated);
    expect(again.res.images).toEqual(res.images);
    expect(again.res.parameters.init_images).toEqual([raw, b64Img(init)]);
  });

  test("sdwebuiapi's img2img(mask_image=…): A1111's inpainting defaults, the same PNGs as /v1/generate", async () => {
    const body = sdwebuiapiImg2img({
      images: [init],
      mask_image: rightHalf,
      prompt: "a red door",
      seed: 8,
      ...SMALL,
    });
    const { res, info } = await a1111("/sdapi/v1/img2img", body);
    expect(info.extra_generation_params).toMatchObject({ "Mask blur": 4 });
    expect(info.infotexts[0]).toContain("Mask blur: 4, Inpaint area: Only masked, Masked area padding: 0");
    expect(info.sdx_warnings).toEqual([]);
    const v1 = await v1Images(
      {
        ...v1Base("a red door"),
        init_image: b64Img(init),
        mask_image: b64Img(rightHalf),
        strength: 0.75,
        mask_blur: 4,
        masked_content: "fill",
        inpaint_full_res: true,
        inpaint_full_res_padding: 0,
      },
      [8],
    );
    expect(res.images).toEqual(v1);
  });

  test("inpainting_fill 0–3 is masked_content fill, original, latent_noise, latent_nothing", async () => {
    const contents = ["fill", "original", "latent_noise", "latent_nothing"];
    for (const [fill, content] of contents.entries()) {
      const body = sdwebuiapiImg2img({
        images: [init],
        mask_image: rightHalf,
        inpainting_fill: fill,
        inpaint_full_res: false,
        mask_blur: 0,
        denoising_strength: 0.9,
        prompt: "a red door",
        seed: 8,
        ...SMALL,
      });
      const { res } = await a1111("/sdapi/v1/img2img", body);
      const v1 = await v1Images(
        {
          ...v1Base("a red door"),
          init_image: b64Img(init),
          mask_image: b64Img(rightHalf),
          strength: 0.9,
          mask_blur: 0,
          masked_content: content,
          inpaint_full_res: false,
          inpaint_full_res_padding: 0,
        },
        [8],
      );
      expect(res.images).toEqual(v1);
    }
  });

  test("inpainting_mask_invert 1 repaints the black part: the same PNGs as /v1 with the inverted mask", async () => {
    const body = sdwebuiapiImg2img({
      images: [init],
      mask_image: rightHalf,
      inpainting_mask_invert: 1,
      inpaint_full_res: false,
      prompt: "a red door",
      seed: 8,
      ...SMALL,
    });
    const { res } = await a1111("/sdapi/v1/img2img", body);
    const plain = await a1111("/sdapi/v1/img2img", { ...body, inpainting_mask_invert: 0 });
    expect(res.images).not.toEqual(plain.res.images);
    const v1 = await v1Images(
      {
        ...v1Base("a red door"),
        init_image: b64Img(init),
        mask_image: b64Img(leftHalf),
        strength: 0.75,
        mask_blur: 4,
        masked_content: "fill",
        inpaint_full_res: false,
        inpaint_full_res_padding: 0,
      },
      [8],
    );
    expect(res.images).toEqual(v1);
  });
});

describe("txt2img with enable_hr", () => {
  const hiresCases: [string, Record<string, unknown>, Record<string, unknown>][] = [
    [
      "sdwebuiapi's defaults: Latent, ×2, denoising_strength 0.7",
      {},
      { upscaler: "latent", scale: 2, strength: 0.7, steps: 0 },
    ],
    [
      "Latent (nearest), hr_second_pass_steps, hr_resize_y alone (the width follows)",
      { hr_upscaler: "Latent (nearest)", hr_second_pass_steps: 3, hr_resize_y: 128, denoising_strength: 0.5 },
      { upscaler: "latent_nearest", width: 128, height: 128, strength: 0.5, steps: 3 },
    ],
    [
      "Lanczos to hr_resize_x × hr_resize_y",
      { hr_upscaler: "Lanczos", hr_resize_x: 128, hr_resize_y: 128 },
      { upscaler: "lanczos", width: 128, height: 128, strength: 0.7, steps: 0 },
    ],
  ];
  for (const [what, hr, hires] of hiresCases) {
    test(`${what}: the same PNGs as /v1/generate with hires`, async () => {
      const body = sdwebuiapiTxt2img({
        enable_hr: true,
        prompt: "a lighthouse at dawn",
        seed: 31,
        ...SMALL,
        ...hr,
      });
      const { res, info } = await a1111("/sdapi/v1/txt2img", body);
      expect(info.sdx_warnings).toEqual([]);
      // A1111 reports the first pass's size and the hires fix in extra_generation_params.
      expect([info.width, info.height]).toEqual([64, 64]);
      expect(info.denoising_strength).toBe(hires.strength as number);
      expect(info.extra_generation_params["Denoising strength"]).toBe(hires.strength as number);
      expect(info.extra_generation_params["Hires upscaler"]).toBe((hr.hr_upscaler as string) ?? "Latent");
      expect(info.infotexts[0]).toContain(`Denoising strength: ${hires.strength}`);
      // The second pass ran: the images have the final size.
      const final = await pixels(Buffer.from(res.images[0] as string, "base64"));
      expect([final.width, final.height]).toEqual([128, 128]);
      const v1 = await v1Images({ ...v1Base("a lighthouse at dawn"), hires }, [31]);
      expect(res.images).toEqual(v1);
    });
  }

  test("enable_hr false ignores the hr_* fields, as A1111 does", async () => {
    const body = sdwebuiapiTxt2img({
      prompt: "x",
      seed: 2,
      ...SMALL,
      hr_upscaler: "R-ESRGAN 4x+",
      hr_scale: 9,
    });
    const { res, info } = await a1111("/sdapi/v1/txt2img", body);
    expect(info.extra_generation_params).toEqual({ "Schedule type": "Automatic" });
    expect(res.images).toEqual(await v1Images(v1Base("x"), [2]));
  });
});

describe("422s name the A1111 field", () => {
  const img2imgCases: [
    string,
    (body: Record<string, unknown>) => Record<string, unknown>,
    string,
    unknown[]?,
  ][] = [
    ["resize_mode 1 (crop and resize)", (b) => ({ ...b, resize_mode: 1 }), "resize_mode", [0]],
    ["latent upscale resize", (b) => ({ ...b, resize_mode: 3 }), "resize_mode", [0]],
    [
      "several different init images",
      (b) => ({ ...b, init_images: [...(b.init_images as string[]), b64Img(rightHalf)] }),
      "init_images",
    ],
    ["no init image", (b) => ({ ...b, init_images: [] }), "init_images"],
    ["an init image URL", (b) => ({ ...b, init_images: ["https://example.com/a.png"] }), "init_images.0"],
    [
      "different mask blurs across and down",
      (b) => ({ ...b, mask_blur: null, mask_blur_x: 4, mask_blur_y: 8 }),
      "mask_blur_x",
    ],
    ["a noise multiplier", (b) => ({ ...b, initial_noise_multiplier: 1.5 }), "initial_noise_multiplier", [1]],
    ["a latent mask", (b) => ({ ...b, latent_mask: b64Img(rightHalf) }), "latent_mask"],
    ["denoising_strength 0", (b) => ({ ...b, denoising_strength: 0 }), "denoising_strength"],
    ["inpainting_fill 4", (b) => ({ ...b, inpainting_fill: 4 }), "inpainting_fill"],
    ["tiling", (b) => ({ ...b, tiling: true }), "tiling", [false]],
  ];
  for (const [what, change, field, allowed] of img2imgCases) {
    test(`img2img: ${what}`, async () => {
      const body = change(sdwebuiapiImg2img({ images: [init], prompt: "x", seed: 1, ...SMALL }));
      const error = await rejected("/sdapi/v1/img2img", body);
      expect(error.fields?.map((f) => f.field)).toContain(field);
      if (allowed) expect(error.fields?.find((f) => f.field === field)?.allowed).toEqual(allowed);
    });
  }

  const hiresCases: [string, Record<string, unknown>, string, unknown[]?][] = [
    [
      "a latent mode sdx does not have",
      { hr_upscaler: "Latent (antialiased)" },
      "hr_upscaler",
      ["None", "Latent", "Latent (nearest)", "Lanczos"],
    ],
    ["a model upscaler", { hr_upscaler: "R-ESRGAN 4x+" }, "hr_upscaler"],
    ["PIL's nearest", { hr_upscaler: "Nearest" }, "hr_upscaler"],
    ["hr_scale beyond 4", { hr_scale: 5 }, "hr_scale"],
    ["a resize to another aspect ratio (A1111 crops)", { hr_resize_x: 128, hr_resize_y: 96 }, "hr_resize_x"],
    ["a resize off the grid", { hr_resize_x: 100 }, "hr_resize_x"],
    ["a second-pass checkpoint", { hr_checkpoint_name: "other.safetensors" }, "hr_checkpoint_name"],
    ["a second-pass sampler", { hr_sampler_name: "DPM++ 2M" }, "hr_sampler_name"],
    ["a second-pass schedule", { hr_scheduler: "karras" }, "hr_scheduler"],
    ["a second-pass prompt", { hr_prompt: "something else" }, "hr_prompt"],
    ["a second-pass negative prompt", { hr_negative_prompt: "blurry" }, "hr_negative_prompt"],
    [
      "the deprecated first-phase size",
      { firstphase_width: 64, firstphase_height: 64 },
      "firstphase_width",
      [0],
    ],
    ["denoising_strength 0", { denoising_strength: 0 }, "denoising_strength"],
    ["too many second-pass steps", { hr_second_pass_steps: 1000 }, "hr_second_pass_steps"],
  ];
  for (const [what, fields, field, allowed] of hiresCases) {
    test(`txt2img enable_hr: ${what}`, async () => {
      const body = { ...sdwebuiapiTxt2img({ enable_hr: true, prompt: "x", seed: 1, ...SMALL }), ...fields };
      const error = await rejected("/sdapi/v1/txt2img", body);
      expect(error.fields?.map((f) => f.field)).toContain(field);
      if (allowed) expect(error.fields?.find((f) => f.field === field)?.allowed).toEqual(allowed);
      expect(error.message).toContain(field);
    });
  }

  test("the same-as-first-pass values A1111 clients send are fine", async () => {
    const body = {
      ...sdwebuiapiTxt2img({ enable_hr: true, prompt: "x", seed: 1, ...SMALL }),
      hr_checkpoint_name: "Use same checkpoint",
      hr_sampler_name: "Use same sampler",
      hr_scheduler: "Use same scheduler",
      hr_prompt: "x",
    };
    expect((await post("/sdapi/v1/txt2img", body)).status).toBe(200);
  });
});
