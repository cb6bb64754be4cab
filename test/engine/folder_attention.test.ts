/**
 * ONNX folders with fused attention: the exported UNets of the tiny SD 1.x and SDXL folders and of the optimum
 * 1.22 export rewritten into com.microsoft MultiHeadAttention (every attention of the UNet, proven from the
 * export's shape computations), cached beside the folder with hard links to the original weights, and giving the
 * original UNet's out_sample on the CPU provider within float rounding.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { cp, mkdir, readdir, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { findAttentions, rewriteModel } from "../../api/engine/onnx/fuse_attention.ts";
import { readOnnxGraph } from "../../api/engine/onnx/proto.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import {
  describeFolderAttention,
  fusedFolderUNet,
  loadFolderUNet,
} from "../../api/engine/pipeline/folder_attention.ts";
import { FIXTURES, TINY_SD15 } from "../helpers/fixtures.ts";
import { maxDiff } from "../helpers/tensor_diff.ts";

const root = mkdtempSync(join(tmpdir(), "sdx-folder-attention-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

interface UNetConfig {
  down_block_types: string[];
  up_block_types: string[];
  mid_block_type?: string | null;
  layers_per_block: number;
  transformer_layers_per_block?: number | number[];
  cross_attention_dim: number;
  addition_time_embed_dim?: number | null;
  projection_class_embeddings_input_dim?: number | null;
}

/** Self- and cross-attention per transformer block, counted from the diffusers config (UNet2DConditionModel). */
function attentionsOf(c: UNetConfig): number {
  const levels = c.down_block_types.length;
  const per = (i: number) => {
    const t = c.transformer_layers_per_block ?? 1;
    return Array.isArray(t) ? (t[i] as number) : t;
  };
  let blocks = 0;
  c.down_block_types.forEach((type, i) => {
    if (type.startsWith("CrossAttn")) blocks += c.layers_per_block * per(i);
  });
  c.up_block_types.forEach((type, i) => {
    if (type.startsWith("CrossAttn")) blocks += (c.layers_per_block + 1) * per(levels - 1 - i);
  });
  if (c.mid_block_type !== null) blocks += per(levels - 1);
  return 2 * blocks;
}

const CASES = [
  { name: "tiny_sd15", unet: join(TINY_SD15, "unet") },
  { name: "optimum_1.22", unet: join(FIXTURES, "optimum_1.22_unet") },
  { name: "tiny_sdxl", unet: join(FIXTURES, "models_sdxl", "tiny_sdxl", "unet") },
];

/** Deterministic feeds for one UNet call at batch 2, 16×16 latents, from the session's own inputs. */
function feeds(model: OnnxModel, config: UNetConfig) {
  const values = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
  const batch = 2;
  const ctx = config.cross_attention_dim;
  const out: Record<string, { data: Float32Array; dims: number[] }> = {
    sample: { data: values(batch * 4 * 16 * 16, (i) => Math.sin(i * 0.37)), dims: [batch, 4, 16, 16] },
    encoder_hidden_states: {
      data: values(batch * 77 * ctx, (i) => Math.cos(i * 0.11)),
      dims: [batch, 77, ctx],
    },
    // optimum 1.22 declares timestep int64 [1]; later exports float32 [].
    timestep: { data: Float32Array.of(500), dims: model.inputs.get("timestep")?.shape.length ? [1] : [] },
  };
  if (config.addition_time_embed_dim) {
    const timeIds = 6;
    const pooled =
      (config.projection_class_embeddings_input_dim ?? 0) - timeIds * config.addition_time_embed_dim;
    out.text_embeds = { data: values(batch * pooled, (i) => Math.sin(i)), dims: [batch, pooled] };
    out.time_ids = { data: values(batch * timeIds, () => 256), dims: [batch, timeIds] };
  }
  return out;
}

async function run(path: string, config: UNetConfig): Promise<Float32Array> {
  const model = await OnnxModel.load(path, { provider: "cpu" });
  try {
    const out = await model.run(feeds(model, config), ["out_sample"]);
    return out.out_sample?.data as Float32Array;
  } finally {
    await model.release();
  }
}

/** A copy of the tiny SD 1.x UNet in its own folder, fused on the CPU. */
async function fusedTinySd15(name: string) {
  const folder = join(root, name);
  await mkdir(folder);
  await cp(join(TINY_SD15, "unet"), join(folder, "unet"), { recursive: true });
  const original = join(folder, "unet", "model.onnx");
  return { folder, original, fused: await fusedFolderUNet(folder, original, "cpu") };
}

describe("an ONNX folder's UNet with fused attention", () => {
  for (const c of CASES) {
    test(`${c.name}: every attention becomes MultiHeadAttention, cached, with the same out_sample`, async () => {
      const folder = join(root, c.name);
      await mkdir(folder);
      await cp(c.unet, join(folder, "unet"), { recursive: true });
      const original = join(folder, "unet", "model.onnx");
      const before = await stat(original);
      const config = (await Bun.file(join(folder, "unet", "config.json")).json()) as UNetConfig;
      const expected = attentionsOf(config);

      const fused = await fusedFolderUNet(folder, original, "cpu");
      expect(fused).toMatchObject({ fused: expected, attentions: expected, skipped: null, reused: false });
      expect(describeFolderAttention(c.name, fused)).toContain(
        `${expected} of ${expected} UNet attentions fused`,
      );
      const graph = await readOnnxGraph(fused.path);
      const ops = graph.nodes.map((n) => n.opType);
      expect(ops.filter((o) => o === "MultiHeadAttention")).toHaveLength(expected);
      expect(ops).not.toContain("Softmax");
      expect(graph.opsets.get("com.microsoft")).toBe(1);
      // Heads as the export's config gives them (SD 1.x's attention_head_dim is the head count).
      const heads = graph.nodes
        .filter((n) => n.opType === "MultiHeadAttention")
        .map((n) => n.attributes.get("num_heads")?.i);
      if (c.name !== "tiny_sdxl") expect(new Set(heads)).toEqual(new Set([8]));
      // The rewritten graph reads the original's weights through a hard link; the original is untouched.
      const cacheFiles = await readdir(join(root, ".sdx-cache"));
      const cacheDir = cacheFiles.find((f) => f.startsWith(`${c.name}-unet-mha-`)) as string;
      const link = await stat(join(root, ".sdx-cache", cacheDir, "unet.source.onnx"));
      expect(link.ino).toBe(before.ino);
      expect((await stat(fused.path)).size).toBeLessThan(before.size / 2);
      const after = await stat(original);
      expect([after.size, after.mtimeMs]).toEqual([before.size, before.mtimeMs]);

      const [plain, mha] = [await run(original, config), await run(fused.path, config)];
      expect(mha.length).toBe(plain.length);
      expect(mha.every(Number.isFinite)).toBe(true);
      const { diff, scale } = maxDiff(plain, mha);
      // Measured: 2.6e-6 (tiny_sd15) and 1.8e-6 (tiny_sdxl) against outputs of magnitude ~1.5: float rounding.
      expect(diff).toBeLessThanOrEqual(1e-4 * Math.max(1, scale));

      const again = await fusedFolderUNet(folder, original, "cpu");
      expect(again).toMatchObject({ path: fused.path, fused: expected, reused: true });
    }, 60_000);
  }

  test("an attention whose head split cannot be proven is left plain", async () => {
    const graph = await readOnnxGraph(join(TINY_SD15, "unet", "model.onnx"));
    const { matches, attentions } = await findAttentions(graph);
    expect(matches).toHaveLength(attentions);
    // Drop the proof of one head split: its Reshape's shape operand no longer comes from a Concat.
    const first = matches[0];
    const q = graph.nodes.find(
      (n) => n.opType === "Reshape" && n.inputs[0] === first?.q,
    ) as (typeof graph.nodes)[0];
    const shape = q.inputs[1] as string;
    graph.producers.delete(shape);
    const again = await findAttentions(graph);
    expect(again.matches).toHaveLength(attentions - 1);
    expect(again.matches.map((m) => m.q)).not.toContain(first?.q);
  });

  test("a rewritten UNet onnxruntime refuses falls back to the export as it is, saying why", async () => {
    const { original, fused } = await fusedTinySd15("refused");
    expect(fused.fused).toBe(32);
    await writeFile(fused.path, new Uint8Array([0x0a, 0xff, 0xff])); // a graph onnxruntime cannot read
    const { model, fused: used } = await loadFolderUNet(fused, original, "cpu");
    try {
      expect(model.path).toBe(original);
      expect(used).toMatchObject({ path: original, fused: 0, attentions: 32 });
      expect(used.skipped).toStartWith("onnxruntime refused the rewritten UNet: ");
      expect(describeFolderAttention("refused", used)).toContain("the UNet runs as exported");
    } finally {
      await model.release();
    }
  });

  test("a float16 export keeps its plain UNet on the CPU, whose MultiHeadAttention is float32 only", async () => {
    const { folder, original, fused } = await fusedTinySd15("half");
    // The cache as a float16 export leaves it (sample float16), which this fixture cannot be made into cheaply.
    const manifest = join(dirname(fused.path), "sdx_fused_unet.json");
    const m = (await Bun.file(manifest).json()) as Record<string, unknown>;
    await writeFile(manifest, JSON.stringify({ ...m, sampleType: "float16" }));
    const cpu = await fusedFolderUNet(folder, original, "cpu");
    expect(cpu).toMatchObject({ path: original, fused: 0, attentions: 32 });
    expect(cpu.skipped).toContain("takes float32");
    expect(await fusedFolderUNet(folder, original, "cuda")).toMatchObject({ path: fused.path, fused: 32 });
  });

  test("an export whose weights are external data: the rewrite links that file and gives the same out_sample", async () => {
    // Big exports keep their weights in model.onnx_data; made here from the tiny one by pointing its
    // initializers into a copy of its own file under that name.
    const folder = join(root, "external");
    await mkdir(join(folder, "unet"), { recursive: true });
    const source = join(TINY_SD15, "unet", "model.onnx");
    await cp(join(TINY_SD15, "unet", "config.json"), join(folder, "unet", "config.json"));
    await cp(source, join(folder, "unet", "model.onnx_data"));
    const original = join(folder, "unet", "model.onnx");
    await writeFile(original, (await rewriteModel(await readOnnxGraph(source), [], "model.onnx_data")).bytes);
    const exported = await readOnnxGraph(original);
    // The weights (every tensor of 1024 or more elements) now live in model.onnx_data; small ones stay inline.
    const large = [...exported.initializers.values()].filter(
      (t) => t.dims.reduce((a, b) => a * b, 1) >= 1024,
    );
    expect(large.length).toBeGreaterThan(0);
    expect(large.every((t) => t.location.kind === "external")).toBe(true);

    const fused = await fusedFolderUNet(folder, original, "cpu");
    expect(fused).toMatchObject({ fused: 32, attentions: 32, skipped: null });
    const dir = dirname(fused.path);
    expect((await readdir(dir)).sort()).toEqual(["model.onnx_data", "sdx_fused_unet.json", "unet.onnx"]);
    expect((await stat(join(dir, "model.onnx_data"))).ino).toBe(
      (await stat(join(folder, "unet", "model.onnx_data"))).ino,
    );
    const config = (await Bun.file(join(folder, "unet", "config.json")).json()) as UNetConfig;
    const [plain, mha] = [await run(original, config), await run(fused.path, config)];
    const { diff } = maxDiff(plain, mha);
    expect(diff).toBeLessThanOrEqual(1e-4);
  }, 60_000);
});
