/**
 * Replacement VAE files: the header inspection, the graph cache (built once, reused), and the engine swap on
 * the tiny SD 1.x checkpoint and ONNX folder, against diffusers' image of the vae_sd15 case (the model's
 * pipeline with `pipe.vae` replaced by the file loaded with AutoencoderKL.from_single_file).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFile, mkdtemp, readdir, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspectVae, prepareVae } from "../../api/engine/adapters/vae.ts";
import { useVae, vaeSessionBuilds } from "../../api/engine/adapters/vae_sessions.ts";
import { inspectCheckpoint, inspectModelFolder } from "../../api/engine/model_folder.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import { Residency } from "../../api/engine/pipeline/residency.ts";
import { generate } from "../../api/engine/pipeline/text_to_image.ts";
import type { GenerateInput, PipelineComponents } from "../../api/engine/pipeline/types.ts";
import { FIXTURES, imageDiff, TINY_SD15 } from "../helpers/fixtures.ts";

const VAE_FILE = join(FIXTURES, "adapters", "vae", "tiny_sd15_vae_alt.safetensors");
const CASE_DIR = join(FIXTURES, "cases", "vae_sd15", "vp01_alt_vae_eulera12_128");
const ALT = { name: "tiny_sd15_vae_alt", path: VAE_FILE };

interface SdxRequest {
  prompt: string;
  negative_prompt?: string;
  seed: number;
  width: number;
  height: number;
  num_steps: number;
  guidance_scale: number;
  scheduler_type: GenerateInput["scheduler"];
  karras_sigmas: boolean;
  timestep_spacing: NonNullable<GenerateInput["schedulerOptions"]["timestepSpacing"]>;
  prompt_syntax: GenerateInput["promptSyntax"];
  clip_skip: number;
}

let input: GenerateInput;
let workDir: string;

beforeAll(async () => {
  const ref = (await Bun.file(join(CASE_DIR, "case.json")).json()) as { sdx_request: SdxRequest };
  const r = ref.sdx_request;
  input = {
    prompt: r.prompt,
    negativePrompt: r.negative_prompt ?? null,
    promptSyntax: r.prompt_syntax,
    seeds: [r.seed],
    width: r.width,
    height: r.height,
    numSteps: r.num_steps,
    guidanceScale: r.guidance_scale,
    scheduler: r.scheduler_type,
    schedulerOptions: { karrasSigmas: r.karras_sigmas, timestepSpacing: r.timestep_spacing },
    clipSkip: r.clip_skip,
    vaeSlicing: false,
    vaeTiling: false,
  };
  workDir = await mkdtemp(join(tmpdir(), "sdx-vae-"));
});

/** A float32 .safetensors file of zero tensors with the given shapes. */
async function writeZeros(path: string, shapes: Record<string, number[]>): Promise<void> {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [key, shape] of Object.entries(shapes)) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[key] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(
    JSON.stringify(header).padEnd(8 * Math.ceil(JSON.stringify(header).length / 8)),
  );
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(json.length), true);
  await Bun.write(path, new Blob([prefix, json, new Uint8Array(offset)]));
}

const png = async (components: PipelineComponents) =>
  (await generate(components, input)).images[0]?.png as Uint8Array;

describe("inspectVae", () => {
  test("an AUTOMATIC1111 VAE file is usable, with 4 latent channels", async () => {
    expect(await inspectVae(VAE_FILE)).toEqual({
      format: "vae_safetensors",
      usable: true,
      reason: null,
      latentChannels: 4,
    });
  });

  test("the first_stage_model. prefix is accepted; diffusers' layout and non-VAE files are not", async () => {
    const full = await inspectVae(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"));
    expect(full).toMatchObject({ usable: true, latentChannels: 4 });

    const diffusers = join(workDir, "diffusers_vae.safetensors");
    await writeZeros(diffusers, {
      "decoder.conv_in.weight": [8, 4, 3, 3],
      "decoder.up_blocks.0.resnets.0.conv1.weight": [8, 8, 3, 3],
    });
    const d = await inspectVae(diffusers);
    expect(d.usable).toBe(false);
    expect(d.reason).toContain("diffusers");
    expect(d.latentChannels).toBe(4);
    await expect(prepareVae(diffusers, join(workDir, "cache"))).rejects.toThrow("LDM/AUTOMATIC1111 layout");

    const junk = join(workDir, "junk.safetensors");
    await Bun.write(junk, "not a safetensors file");
    expect(await inspectVae(junk)).toMatchObject({ usable: false, latentChannels: 0 });
  });
});

test("prepareVae builds the graphs once, beside a link of the file, and reuses them", async () => {
  const cacheRoot = join(workDir, "prepare-cache");
  const first = await prepareVae(VAE_FILE, cacheRoot);
  expect(first.reused).toBe(false);
  expect(first.encoder).not.toBeNull();
  expect(first.decoder).toContain(`tiny_sd15_vae_alt-vae-${first.key}`);
  const built = (await stat(first.decoder)).mtimeMs;
  const second = await prepareVae(VAE_FILE, cacheRoot);
  expect(second).toEqual({ ...first, reused: true });
  expect((await stat(second.decoder)).mtimeMs).toBe(built);
  expect((await readdir(cacheRoot)).filter((e) => !e.startsWith("."))).toEqual([
    `tiny_sd15_vae_alt-vae-${first.key}`,
  ]);
  expect((await readdir(join(cacheRoot, `tiny_sd15_vae_alt-vae-${first.key}`))).sort()).toEqual([
    "sdx_vae.json",
    "vae_decoder.onnx",
    "vae_encoder.onnx",
    "weights.safetensors",
  ]);
});

describe("the checkpoint model with the replacement VAE", () => {
  let components: PipelineComponents;
  let cacheRoot: string;
  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdx-vae-ckpt-"));
    const path = join(dir, "tiny_sd15.safetensors");
    await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), path);
    components = await loadOnnxPipeline(await inspectCheckpoint("tiny_sd15", path), "cpu");
    cacheRoot = join(dir, ".sdx-cache");
  }, 60_000);
  afterAll(() => releasePipeline(components));

  test("reproduces diffusers' image, and the model's own VAE gives the plain image back", async () => {
    const plain = await png(components);
    await useVae(components, ALT, cacheRoot);
    expect(components.paths.vae_decoder).toContain("tiny_sd15_vae_alt-vae-");
    expect(components.paths.vae_encoder).toContain("tiny_sd15_vae_alt-vae-");
    expect(components.vaeEncoder).toBeNull();
    const alt = await png(components);
    const diff = await imageDiff(alt, join(CASE_DIR, "image_0.png"));
    expect(diff.mean).toBeLessThanOrEqual(0.5);
    expect(diff.max).toBeLessThanOrEqual(4);
    expect((await imageDiff(alt, plain)).mean).toBeGreaterThan(20);

    await useVae(components, null, cacheRoot);
    expect(components.paths.vae_decoder).toBe(components.files.vaeDecoder);
    expect(components.paths.vae_encoder).toBe(components.files.vaeEncoder);
    expect((await imageDiff(await png(components), plain)).max).toBe(0);
  }, 60_000);

  test("the same VAE twice creates its session once", async () => {
    const before = vaeSessionBuilds(components);
    await useVae(components, ALT, cacheRoot);
    await useVae(components, ALT, cacheRoot);
    expect(vaeSessionBuilds(components)).toBe(before + 1);
    await useVae(components, null, cacheRoot);
    await useVae(components, null, cacheRoot);
    expect(vaeSessionBuilds(components)).toBe(before + 2);
  });
});

describe("the ONNX folder model with the replacement VAE", () => {
  let components: PipelineComponents;
  let cacheRoot: string;
  beforeAll(async () => {
    components = await loadOnnxPipeline(await inspectModelFolder("tiny_sd15", TINY_SD15), "cpu");
    cacheRoot = join(workDir, "onnx-cache");
  }, 60_000);
  afterAll(() => releasePipeline(components));

  test("reproduces diffusers' image", async () => {
    await useVae(components, ALT, cacheRoot);
    const diff = await imageDiff(await png(components), join(CASE_DIR, "image_0.png"));
    expect(diff.mean).toBeLessThanOrEqual(0.5);
    expect(diff.max).toBeLessThanOrEqual(4);
  }, 30_000);

  test("with model CPU offload a released decoder is only repointed, and created again at the next decode", async () => {
    const small: GenerateInput = { ...input, width: 64, height: 64, numSteps: 3 };
    const image = async (hooks = {}) =>
      (await generate(components, small, hooks)).images[0]?.png as Uint8Array;
    await useVae(components, null, cacheRoot);
    const plain = await image();
    await useVae(components, ALT, cacheRoot);
    const alt = await image();

    const residency = new Residency(components);
    const offload = { enterStage: residency.enterStage(true) };
    await offload.enterStage("unet");
    expect(residency.isResident("vae_decoder")).toBe(false);
    const builds = vaeSessionBuilds(components);
    await useVae(components, null, cacheRoot);
    expect(vaeSessionBuilds(components)).toBe(builds);
    expect((await imageDiff(await image(offload), plain)).max).toBe(0);
    expect(components.vaeDecoder.path).toBe(components.files.vaeDecoder);

    await useVae(components, ALT, cacheRoot);
    expect(vaeSessionBuilds(components)).toBe(builds + 1);
    expect((await imageDiff(await image(offload), alt)).max).toBe(0);
  }, 60_000);
});
