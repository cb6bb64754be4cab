/**
 * Engine features through the API, on the tiny model: clip skip, A1111 prompts and the tokenize route, the
 * sampler table, memory switches, PNG infotext, and /health staying responsive while a generation runs.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { readPngText } from "../../api/engine/pipeline/image.ts";
import { SCHEDULER_NAMES } from "../../contract/index.ts";
import { createSdxClient, type GenerateRequest, SdxError } from "../../sdk/index.ts";
import { imageDiff, MODELS_DIR } from "../helpers/fixtures.ts";

const host = new ModelHost({ modelsDir: MODELS_DIR, provider: "cpu" });
const app = createApp(host);
const client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
beforeAll(() => host.start());
afterAll(() => host.close());

const small: GenerateRequest = { prompt: "a red cat", seed: 3, width: 64, height: 64, num_steps: 4 };
const png = (b64: string | undefined) => Buffer.from(b64 ?? "", "base64");

async function rejection(promise: Promise<unknown>): Promise<SdxError> {
  const e = await promise.catch((error: unknown) => error);
  if (!(e instanceof SdxError)) throw new Error(`expected an SdxError, got ${String(e)}`);
  return e;
}

describe("clip_skip", () => {
  test("2 changes the image; beyond the encoder's 3 layers is a 422 naming the model and the allowed values", async () => {
    const [one, two] = await Promise.all([
      client.generate(small),
      client.generate({ ...small, clip_skip: 2 }),
    ]);
    expect((await imageDiff(png(one.images[0]?.png), png(two.images[0]?.png))).mean).toBeGreaterThan(0.5);
    const e = await rejection(client.generate({ ...small, clip_skip: 4 }));
    expect(e.status).toBe(422);
    expect(e.fields[0]).toMatchObject({ field: "clip_skip", allowed: [1, 2, 3] });
    expect(e.message).toContain("tiny_sd15");
  });
});

describe("prompts", () => {
  test("tokenize shows each 77-id chunk with weights, and what diffusers syntax would cut", async () => {
    const long = Array.from({ length: 40 }, (_, i) => `word${i}`).join(" ");
    const a1111 = await client.tokenize({ prompt: `(${long}:1.2)` });
    expect(a1111.token_count).toBeGreaterThan(75);
    expect(a1111.chunks.length).toBe(Math.ceil(a1111.token_count / 75));
    for (const chunk of a1111.chunks) expect(chunk.input_ids).toHaveLength(77);
    expect(a1111.chunks[0]?.weights[1]).toBeCloseTo(1.2);
    const literal = await client.tokenize({ prompt: long, prompt_syntax: "diffusers" });
    expect(literal.chunks).toHaveLength(1);
    expect(literal.truncated.tokens).toBe(literal.token_count - 75);
    expect(literal.truncated.text?.length).toBeGreaterThan(0);
  });

  test("attention weights change the image; plain prompts give the same image in both syntaxes", async () => {
    const [plain, literal, weighted] = await Promise.all([
      client.generate(small),
      client.generate({ ...small, prompt_syntax: "diffusers" }),
      client.generate({ ...small, prompt: "a (red:1.6) cat" }),
    ]);
    expect((await imageDiff(png(plain.images[0]?.png), png(literal.images[0]?.png))).max).toBe(0);
    expect((await imageDiff(png(plain.images[0]?.png), png(weighted.images[0]?.png))).mean).toBeGreaterThan(
      0.1,
    );
  });

  test("a long prompt is encoded in chunks and reported; malformed weights are a 422 on the field", async () => {
    const long = Array.from({ length: 90 }, (_, i) => `w${i}`).join(" ");
    const res = await client.generate({ ...small, prompt: long, negative_prompt: "blurry" });
    expect(res.metadata.prompt.chunks).toBeGreaterThan(1);
    expect(res.metadata.prompt.truncated_tokens).toBe(0);
    expect(res.warnings.join(" ")).not.toContain("cut");
    const cut = await client.generate({ ...small, prompt: long, prompt_syntax: "diffusers" });
    expect(cut.metadata.prompt.truncated_tokens).toBeGreaterThan(0);
    expect(cut.warnings.join(" ")).toContain("cut");
    const e = await rejection(client.generate({ ...small, negative_prompt: "(bad:1.2.3)" }));
    expect(e.fields[0]?.field).toBe("negative_prompt");
  });
});

describe("samplers", () => {
  test("GET /v1/schedulers lists every name with its aliases and Karras support", async () => {
    const { schedulers } = await client.schedulers();
    expect(schedulers.map((s) => s.name)).toEqual([...SCHEDULER_NAMES]);
    const dpm = schedulers.find((s) => s.name === "dpmsolver++");
    expect(dpm?.karras).toBe(true);
    expect(dpm?.aliases).toContainEqual({ name: "DPM++ 2M Karras", karras: true });
  });

  test("an A1111 alias selects the sampler and its schedule; a contradiction is a 422", async () => {
    const alias = await client.generate({ ...small, scheduler_type: "DPM++ 2M Karras" });
    const named = await client.generate({ ...small, scheduler_type: "dpmsolver++", karras_sigmas: true });
    expect(alias.metadata.parameters).toMatchObject({ scheduler_type: "dpmsolver++", karras_sigmas: true });
    expect(alias.metadata.scheduler.display_name).toBe("DPM++ 2M Karras");
    expect((await imageDiff(png(alias.images[0]?.png), png(named.images[0]?.png))).max).toBe(0);
    const e = await rejection(
      client.generate({ ...small, scheduler_type: "DPM++ 2M Karras", karras_sigmas: false }),
    );
    expect(e.fields[0]?.field).toBe("karras_sigmas");
  });

  test("Karras on a sampler without it is a 422 listing those with it; eta and spacing take effect or warn", async () => {
    const e = await rejection(client.generate({ ...small, scheduler_type: "ddim", karras_sigmas: true }));
    expect(e.status).toBe(422);
    expect(e.fields[0]?.allowed).toContain("dpmsolver++");
    const [plain, eta, trailing] = await Promise.all([
      client.generate({ ...small, scheduler_type: "ddim" }),
      client.generate({ ...small, scheduler_type: "ddim", eta: 1 }),
      client.generate({ ...small, scheduler_type: "ddim", timestep_spacing: "trailing" }),
    ]);
    expect(eta.warnings).toEqual([]);
    expect((await imageDiff(png(plain.images[0]?.png), png(eta.images[0]?.png))).mean).toBeGreaterThan(0.1);
    expect(trailing.metadata.timesteps).not.toEqual(plain.metadata.timesteps);
    const ignored = await client.generate({ ...small, scheduler_type: "dpmsolver++", eta: 0.5 });
    expect(ignored.warnings.join(" ")).toContain("eta has no effect");
  });
});

describe("memory switches and PNG metadata", () => {
  test("model CPU offload on the CPU provider releases the idle stages and gives the same image", async () => {
    const [kept, offloaded] = [
      await client.generate(small),
      await client.generate({ ...small, enable_model_cpu_offload: true }),
    ];
    expect(offloaded.metadata.memory.model_cpu_offload).toMatchObject({ requested: true, applied: true });
    expect(offloaded.metadata.memory.model_cpu_offload.note).toContain("released");
    expect(kept.metadata.memory.model_cpu_offload.applied).toBe(false);
    expect(offloaded.warnings.join(" ")).not.toContain("enable_model_cpu_offload");
    expect(offloaded.images[0]?.png).toEqual(kept.images[0]?.png);
  });

  test("VAE tiling decodes a large image in tiles close to the untiled one, and metadata.memory says so", async () => {
    // The tiny VAE tiles at 256 px (32 latents): 320×256 is 40×32 latents, four overlapping tiles.
    const big: GenerateRequest = { ...small, width: 320, height: 256, num_steps: 2 };
    const [whole, tiled] = await Promise.all([
      client.generate(big),
      client.generate({ ...big, enable_vae_tiling: true }),
    ]);
    expect(tiled.metadata.memory.vae_tiling).toMatchObject({ requested: true, applied: true });
    expect(whole.metadata.memory.vae_tiling.applied).toBe(false);
    const diff = await imageDiff(png(whole.images[0]?.png), png(tiled.images[0]?.png));
    expect(diff.mean).toBeGreaterThan(0);
    expect(diff.mean).toBeLessThan(12);
    const fits = await client.generate({ ...small, enable_vae_tiling: true, enable_attention_slicing: true });
    expect(fits.metadata.memory.vae_tiling.applied).toBe(false);
    expect(fits.metadata.memory.attention_slicing.applied).toBe(false);
    expect(fits.warnings.join(" ")).toContain("enable_attention_slicing");
    expect(fits.warnings.join(" ")).toContain("enable_vae_tiling");
  });

  test("each PNG carries AUTOMATIC1111 infotext in a parameters chunk", async () => {
    const res = await client.generate({
      ...small,
      negative_prompt: "blurry, dark",
      batch_size: 2,
      clip_skip: 2,
    });
    const texts = res.images.map((image) => readPngText(png(image.png)).parameters ?? "");
    expect(texts[0]).toBe(
      [
        "a red cat",
        "Negative prompt: blurry, dark",
        `Steps: 4, Sampler: DPM++ 2M, Schedule type: Automatic, CFG scale: 7.5, Seed: 3, Size: 64x64, Model hash: ${res.metadata.model.hash.slice(0, 10)}, Model: tiny_sd15, Model type: SD1, Clip skip: 2, Version: sdx ${res.metadata.sdx_version}`,
      ].join("\n"),
    );
    expect(texts[1]).toContain("Seed: 4,");
  });
});

describe("off the HTTP thread", () => {
  test("/health answers in under 50 ms while a generation runs", async () => {
    const running = client.generate({ ...small, width: 256, height: 256, num_steps: 12 });
    await Bun.sleep(300);
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await client.health();
      times.push(performance.now() - t0);
      await Bun.sleep(50);
    }
    await running;
    expect(Math.max(...times)).toBeLessThan(50);
  });
});
