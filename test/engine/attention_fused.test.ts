/**
 * The UNet's fused attention (onnxruntime's com.microsoft MultiHeadAttention, the CUDA path's form) against the
 * plain MatMul/Softmax form, on the CPU provider, which implements the contrib operator too: the same out_sample
 * on the tiny SD 1.x and SDXL checkpoints, the same images as diffusers for whole generations, and caches that
 * keep the two variants apart.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { linkSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { copyFile, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DEFAULT_ATTENTION } from "../../api/engine/checkpoint/attention_variant.ts";
import { prepareCheckpoint } from "../../api/engine/checkpoint/build.ts";
import { UNET_PREFIX } from "../../api/engine/checkpoint/keys.ts";
import { buildUNetGraph, detectUNet, type UNetConfig } from "../../api/engine/checkpoint/unet_graph.ts";
import { CheckpointWeights } from "../../api/engine/checkpoint/weights.ts";
import { inspectCheckpoint } from "../../api/engine/model_folder.ts";
import { readOnnxGraph } from "../../api/engine/onnx/proto.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import { generate } from "../../api/engine/pipeline/text_to_image.ts";
import { readSafetensorsHeader } from "../../api/engine/safetensors.ts";
import { FIXTURES, imageDiff, referenceCase } from "../helpers/fixtures.ts";

const dir = mkdtempSync(join(tmpdir(), "sdx-attention-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

interface Tiny {
  name: "tiny_sd15" | "tiny_sdxl";
  overrides: Parameters<typeof detectUNet>[2];
}
const TINY: Tiny[] = [
  { name: "tiny_sd15", overrides: {} },
  // The tiny SDXL's heads (2, 4, 8) leave no trace in its weights; its pooled embedding is 32 wide.
  { name: "tiny_sdxl", overrides: { headsPerLevel: [2, 4, 8], admPooledDim: 32 } },
];

/** Deterministic feeds for one UNet call at batch 2 (classifier-free guidance's), 32×32 latents. */
function feeds(config: UNetConfig) {
  const batch = 2;
  const side = 32;
  const ctx = config.contextDim ?? 1;
  const values = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
  const out: Record<string, { data: Float32Array; dims: number[] }> = {
    sample: {
      data: values(batch * 4 * side * side, (i) => Math.sin(i * 0.37)),
      dims: [batch, 4, side, side],
    },
    timestep: { data: Float32Array.of(500), dims: [] },
    encoder_hidden_states: {
      data: values(batch * 77 * ctx, (i) => Math.cos(i * 0.11)),
      dims: [batch, 77, ctx],
    },
  };
  if (config.adm) {
    const pooled = config.adm.pooledDim;
    out.text_embeds = { data: values(batch * pooled, (i) => Math.sin(i)), dims: [batch, pooled] };
    out.time_ids = { data: values(batch * config.adm.timeIds, () => 256), dims: [batch, config.adm.timeIds] };
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

describe("the UNet graph with fused attention", () => {
  for (const tiny of TINY) {
    test(`${tiny.name}: MultiHeadAttention replaces every MatMul/Softmax attention and gives the same out_sample`, async () => {
      const file = `${tiny.name}.safetensors`;
      linkSync(join(FIXTURES, "checkpoints", file), join(dir, file));
      const header = await readSafetensorsHeader(join(dir, file));
      const weights = new CheckpointWeights(header, file);
      const config = detectUNet(weights, UNET_PREFIX, tiny.overrides);
      const blocks =
        config.transformerDepth.reduce((a, d) => a + d, 0) +
        config.transformerDepthOutput.reduce((a, d) => a + d, 0) +
        Math.max(0, config.transformerDepthMiddle);
      const outputs: Float32Array[] = [];
      for (const attention of ["plain", "fused"] as const) {
        const graph = buildUNetGraph(weights, config, { attention });
        const counts = graph.opCounts();
        // Two attentions (self and cross) per transformer block.
        if (attention === "plain") {
          expect(counts.get("Softmax")).toBe(2 * blocks);
          expect(counts.get("com.microsoft:MultiHeadAttention")).toBeUndefined();
        } else {
          expect(counts.get("com.microsoft:MultiHeadAttention")).toBe(2 * blocks);
          expect(counts.get("Softmax")).toBeUndefined();
        }
        const path = join(dir, `${tiny.name}-${attention}.onnx`);
        writeFileSync(path, graph.toBytes());
        const parsed = await readOnnxGraph(path);
        const mha = parsed.nodes.filter((n) => n.opType === "MultiHeadAttention");
        expect(mha.every((n) => n.domain === "com.microsoft")).toBe(true);
        expect(parsed.opsets.get("com.microsoft")).toBe(attention === "fused" ? 1 : undefined);
        const model = await OnnxModel.load(path, { provider: "cpu" });
        try {
          const out = await model.run(feeds(config), ["out_sample"]);
          outputs.push(out.out_sample?.data as Float32Array);
        } finally {
          await model.release();
        }
      }
      const [plain, fused] = outputs as [Float32Array, Float32Array];
      expect(fused.length).toBe(plain.length);
      expect(fused.every(Number.isFinite)).toBe(true);
      // Measured: 1.9e-6 (tiny_sd15) and 2.4e-6 (tiny_sdxl) against outputs of magnitude ~1.3: float rounding.
      expect(maxAbsDiff(plain, fused)).toBeLessThan(1e-4);
    }, 60_000);
  }
});

describe("choosing the variant", () => {
  test("every provider gets fused attention unless told otherwise", () => {
    expect(DEFAULT_ATTENTION).toBe("fused");
  });

  test("plain and fused graphs get their own cache folders, and each is reused", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-attention-cache-"));
    try {
      const path = join(models, "tiny.safetensors");
      await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), path);
      const plain = await prepareCheckpoint(path, { attention: "plain" });
      const fused = await prepareCheckpoint(path, { attention: "fused" });
      expect(plain.attention).toBe("plain");
      expect(fused.attention).toBe("fused");
      expect(fused.files.unet).not.toBe(plain.files.unet);
      const folders = readdirSync(join(models, ".sdx-cache")).sort();
      expect(folders).toHaveLength(2);
      expect(folders[0]).toMatch(/^tiny-fp32-[0-9a-f]{16}$/);
      expect(folders[1]).toMatch(/^tiny-fp32-mha-[0-9a-f]{16}$/);
      expect((await prepareCheckpoint(path, { attention: "fused" })).reused).toBe(true);
      expect((await prepareCheckpoint(path, { attention: "plain" })).reused).toBe(true);
      // The UNet graph in the fused folder holds the contrib operator; the plain one does not.
      const ops = async (file: string) => (await readOnnxGraph(file)).nodes.map((n) => n.opType);
      expect(await ops(fused.files.unet)).toContain("MultiHeadAttention");
      expect(await ops(plain.files.unet)).not.toContain("MultiHeadAttention");
      // float16 graphs (what loadOnnxPipeline builds for CUDA) are fused unless told otherwise.
      const half = await prepareCheckpoint(path, { precision: "float16" });
      expect(half.attention).toBe("fused");
      expect(half.files.unet).toMatch(/\/tiny-fp16-mha-[0-9a-f]{16}\/unet\.onnx$/);
    } finally {
      rmSync(models, { recursive: true, force: true });
    }
  });
});

/** Loads a checkpoint's pipeline on the CPU with the fused graphs (as the bench smoke does). */
async function loadFused(path: string) {
  const entry = await inspectCheckpoint("tiny", path);
  expect(entry.problem).toBeNull();
  const pipeline = await loadOnnxPipeline(entry, "cpu", { attention: "fused" });
  const ops = (await readOnnxGraph(pipeline.files.unet)).nodes.map((n) => n.opType);
  expect(ops).toContain("MultiHeadAttention");
  return pipeline;
}

describe("whole generations with the fused graphs give diffusers' images", () => {
  test("tiny SD 1.x checkpoint, p04 (DPM++ 2M Karras, 20 steps, 256×256)", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-attention-sd15-"));
    const path = join(models, "tiny_sd15.safetensors");
    await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), path);
    const pipeline = await loadFused(path);
    try {
      const ref = await referenceCase("p04_dpmpp2m_karras20_256");
      const out = await generate(pipeline, {
        prompt: ref.prompt as string,
        negativePrompt: null,
        promptSyntax: "diffusers",
        seeds: [ref.seed],
        width: ref.width,
        height: ref.height,
        numSteps: ref.num_inference_steps,
        guidanceScale: ref.guidance_scale,
        scheduler: "dpmsolver++",
        schedulerOptions: { karrasSigmas: true },
        clipSkip: 1,
        vaeSlicing: false,
        vaeTiling: false,
      });
      expect(out.timesteps).toEqual(ref.timesteps);
      const diff = await imageDiff(out.images[0]?.png as Uint8Array, join(ref.dir, "image_0.png"));
      expect(diff.mean).toBeLessThanOrEqual(0.5);
      expect(diff.max).toBeLessThanOrEqual(4);
    } finally {
      await releasePipeline(pipeline);
      rmSync(models, { recursive: true, force: true });
    }
  }, 120_000);

  test("tiny SDXL checkpoint, xp02 (Euler, 12 steps, negative prompt, 128×128)", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-attention-sdxl-"));
    const path = join(models, "tiny_sdxl.safetensors");
    await copyFile(join(FIXTURES, "checkpoints", "tiny_sdxl.safetensors"), path);
    await writeFile(join(models, "tiny_sdxl.json"), JSON.stringify({ unet_attention_heads: [2, 4, 8] }));
    const pipeline = await loadFused(path);
    try {
      const ref = await referenceCase("xp02_euler12_neg", "tiny_sdxl");
      const out = await generate(pipeline, {
        prompt: ref.prompt as string,
        negativePrompt: ref.negative_prompt as string,
        promptSyntax: "diffusers",
        seeds: [ref.seed],
        width: ref.width,
        height: ref.height,
        numSteps: ref.num_inference_steps,
        guidanceScale: ref.guidance_scale,
        scheduler: "euler",
        schedulerOptions: {},
        clipSkip: 1,
        vaeSlicing: false,
        vaeTiling: false,
      });
      expect(out.timesteps).toEqual(ref.timesteps);
      const diff = await imageDiff(out.images[0]?.png as Uint8Array, join(ref.dir, "image_0.png"));
      expect(diff.mean).toBeLessThanOrEqual(0.5);
      expect(diff.max).toBeLessThanOrEqual(4);
    } finally {
      await releasePipeline(pipeline);
      rmSync(models, { recursive: true, force: true });
    }
  }, 120_000);
});
