/**
 * The image-to-image building blocks against the tensors diffusers recorded: the VAE latent sample drawn with
 * the request's generator (img2img_sd15: encoder moments → image_latents) and the hires fix's latent upscalers
 * (hires_sd15: pass-1 latents → upscaled latents), bit for bit.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { upscaleLatents } from "../../api/engine/pipeline/latent_upscale.ts";
import { rgbToSample, sampleLatents } from "../../api/engine/pipeline/vae_encode.ts";
import { TorchGenerator } from "../../api/engine/rng/torch_generator.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { FIXTURES, pixels } from "../helpers/fixtures.ts";
import { parsePythonJson } from "../helpers/scheduler_fixtures.ts";

const casesOf = (suite: string) =>
  readdirSync(join(FIXTURES, "cases", suite), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => join(FIXTURES, "cases", suite, d.name));

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

describe("VAE latent sampling (img2img_sd15)", () => {
  for (const dir of casesOf("img2img_sd15")) {
    test(dir.split("/").pop() as string, async () => {
      const c = parsePythonJson(await Bun.file(join(dir, "case.json")).text()) as { seed: number };
      const t = await loadSafetensors(join(dir, "tensors.safetensors"));
      const moments = t.get("vae_encode.latent_parameters");
      const expected = t.get("image_latents");
      if (!moments || !expected) throw new Error("tensors missing");
      const [, , h, w] = expected.shape as [number, number, number, number];
      const z = sampleLatents(moments.data, new TorchGenerator(c.seed, { kernel: "avx2" }), 0.18215, [
        4,
        h,
        w,
      ]);
      expect(maxAbsDiff(z, expected.data)).toBe(0);
    });
  }

  test("the encoder input is 2·(png/255) − 1", async () => {
    const img = await pixels(join(FIXTURES, "cases", "img2img_sd15", "i01_ddim10_s075_gradient", "init.png"));
    const sample = rgbToSample(img.data, img.width, img.height);
    // A pixel value v maps to 2v/255 − 1 in float32, plane by plane.
    expect(sample[0]).toBe(Math.fround(2 * Math.fround((img.data[0] as number) / 255) - 1));
    expect(sample[img.width * img.height]).toBe(
      Math.fround(2 * Math.fround((img.data[1] as number) / 255) - 1),
    );
  });
});

describe("hires latent upscalers (hires_sd15)", () => {
  for (const dir of casesOf("hires_sd15")) {
    test(dir.split("/").pop() as string, async () => {
      const c = (await Bun.file(join(dir, "case.json")).json()) as {
        sdx_request: { hires: { upscaler: string } };
      };
      const t = await loadSafetensors(join(dir, "tensors.safetensors"));
      const first = t.get("pass1.final_latents");
      const expected = t.get("upscaled_latents");
      if (!first || !expected) throw new Error("tensors missing");
      const [, , h, w] = first.shape as [number, number, number, number];
      const [, , outH, outW] = expected.shape as [number, number, number, number];
      const mode = c.sdx_request.hires.upscaler === "latent" ? "bilinear" : "nearest";
      const up = upscaleLatents(first.data, 4, h, w, outH, outW, mode);
      expect(maxAbsDiff(up, expected.data)).toBe(0);
    });
  }
});
