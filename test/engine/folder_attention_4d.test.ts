/**
 * The 4-D head split of fuse_attention.ts: sdx's own plain UNet graph (Reshape [0,0,H,d], Transpose, the scale
 * folded into to_q) and a hand-written graph in the form torch ≥ 2 exports diffusers' AttnProcessor2_0
 * (symbolic batch, sqrt(scale) on q and kᵀ) are rewritten into MultiHeadAttention with the same output; graphs
 * whose split the shapes do not prove stay plain; an optimum-layout folder written from sdx's graphs
 * (bench/optimum_folder.ts) loads with every attention fused.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { cp, mkdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { prepareCheckpoint } from "../../api/engine/checkpoint/build.ts";
import { inspectModelFolder } from "../../api/engine/model_folder.ts";
import { findAttentions, rewriteModel } from "../../api/engine/onnx/fuse_attention.ts";
import { GraphBuilder } from "../../api/engine/onnx/graph_builder.ts";
import { readOnnxGraph } from "../../api/engine/onnx/proto.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import { writeExportShapedFolder } from "../../bench/optimum_folder.ts";
import { FIXTURES } from "../helpers/fixtures.ts";
import { maxDiff } from "../helpers/tensor_diff.ts";

const root = mkdtempSync(join(tmpdir(), "sdx-attention-4d-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

type Feeds = Record<string, { data: Float32Array; dims: number[] }>;

const values = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));

async function run(path: string, feeds: (m: OnnxModel) => Feeds, output: string): Promise<Float32Array> {
  const model = await OnnxModel.load(path, { provider: "cpu" });
  try {
    return (await model.run(feeds(model), [output]))[output]?.data as Float32Array;
  } finally {
    await model.release();
  }
}

/** max |a − b| against max |a|, b finite. */
function compare(a: Float32Array, b: Float32Array): { diff: number; scale: number } {
  expect(b.every(Number.isFinite)).toBe(true);
  return maxDiff(a, b);
}

/** The graph rewritten with every match, written beside it (its external data paths stay valid). */
async function fuseBeside(path: string, name: string) {
  const graph = await readOnnxGraph(path);
  const scan = await findAttentions(graph);
  const fused = join(dirname(path), name);
  await writeFile(fused, (await rewriteModel(graph, scan.matches, basename(path))).bytes);
  return { graph, scan, fused };
}

async function checkpointCopy(name: string): Promise<string> {
  const dir = join(root, name);
  await mkdir(dir);
  await cp(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), join(dir, "tiny_sd15.safetensors"));
  return join(dir, "tiny_sd15.safetensors");
}

interface Sdpa {
  heads?: number;
  /** A constant head size; by default head_dim = key.shape[−1] // heads, computed from the key's shape. */
  headDim?: number;
  /** The axis of x its batch operand reads (0 in AttnProcessor2_0). */
  batchAxis?: number;
}

const WIDTH = 16;

/**
 * Self-attention as torch ≥ 2 exports AttnProcessor2_0 (symbolic_opset14.scaled_dot_product_attention): q, k, v
 * = x·W; head_dim = k.shape[−1] // heads; view(batch, −1, H, head_dim).transpose(1, 2) with batch = x.shape[0];
 * kᵀ by Transpose [0,1,3,2]; q and kᵀ each times √scale, scale = 1/√(q.size(−1)) computed from the shape;
 * Softmax; ·v; transpose(1, 2).reshape(batch, −1, H·head_dim).
 */
function sdpaGraph({ heads = 2, headDim, batchAxis = 0 }: Sdpa = {}): Uint8Array {
  const g = new GraphBuilder("sdpa");
  const x = g.input("x", "float32", ["batch", "tokens", WIDTH]);
  const weight = (seed: number) =>
    g.constant(
      values(WIDTH * WIDTH, (i) => Math.sin(i * 0.7 + seed) / 4),
      [WIDTH, WIDTH],
    );
  const i64 = (v: number[], dims: number[] = [v.length]) => g.constant(v, dims, "int64");
  const axisOf = (t: string, axis: number) =>
    g.node("Gather", [g.node("Shape", [t]), i64([axis], [])], { axis: 0 });
  const unsqueeze = (t: string) => g.node("Unsqueeze", [t, i64([0])]);
  const batch = unsqueeze(axisOf(x, batchAxis));
  const [qx, kx, vx] = [1, 2, 3].map((seed) => g.node("MatMul", [x, weight(seed)])) as [
    string,
    string,
    string,
  ];
  const d = headDim === undefined ? g.node("Div", [axisOf(kx, 2), i64([heads], [])]) : i64([headDim], []);
  const split = (t: string) =>
    g.node(
      "Transpose",
      [g.node("Reshape", [t, g.node("Concat", [batch, i64([-1]), i64([heads]), unsqueeze(d)], { axis: 0 })])],
      { perm: [0, 2, 1, 3] },
    );
  const [q, k, v] = [split(qx), split(kx), split(vx)];
  // _attention_scale: Cast(Div(1, Sqrt(Cast(Slice(Shape(q), [−1], [big]))))).
  const last = g.node("Slice", [g.node("Shape", [q]), i64([-1]), i64([2 ** 53])]);
  const scale = g.node(
    "Cast",
    [g.node("Div", [g.constant([1], [1]), g.node("Sqrt", [g.node("Cast", [last], { to: 1 })])])],
    { to: 1 },
  );
  const root = g.node("Sqrt", [scale]);
  const kT = g.node("Transpose", [k], { perm: [0, 1, 3, 2] });
  const scores = g.node("MatMul", [g.node("Mul", [q, root]), g.node("Mul", [kT, root])]);
  const o = g.node("MatMul", [g.node("Softmax", [scores], { axis: -1 }), v]);
  const width = unsqueeze(g.node("Mul", [i64([heads], []), d]));
  const merged = g.node("Reshape", [
    g.node("Transpose", [o], { perm: [0, 2, 1, 3] }),
    g.node("Concat", [batch, i64([-1]), width], { axis: 0 }),
  ]);
  g.output(merged, "y", "float32", ["batch", "tokens", WIDTH]);
  return g.toBytes();
}

describe("the 4-D head split fused into MultiHeadAttention", () => {
  test("sdx's plain UNet graph: every attention, scale 1, the same out_sample", async () => {
    const checkpoint = await checkpointCopy("plain");
    const { files } = await prepareCheckpoint(checkpoint, { precision: "float32", attention: "plain" });
    const { graph, scan, fused } = await fuseBeside(files.unet, "unet.mha.onnx");
    const softmaxes = graph.nodes.filter((n) => n.opType === "Softmax").length;
    expect(softmaxes).toBe(32);
    expect(scan).toMatchObject({ attentions: softmaxes });
    expect(scan.matches).toHaveLength(softmaxes);
    // The 1/√d is folded into to_q's weight, so MultiHeadAttention must not scale again.
    expect(new Set(scan.matches.map((m) => `${m.heads}:${m.scale}`))).toEqual(new Set(["8:1"]));

    const feeds = (m: OnnxModel): Feeds => ({
      sample: { data: values(2 * 4 * 16 * 16, (i) => Math.sin(i * 0.37)), dims: [2, 4, 16, 16] },
      encoder_hidden_states: {
        data: values(2 * 77 * 32, (i) => Math.cos(i * 0.11)),
        dims: [2, 77, m.inputs.get("encoder_hidden_states")?.shape[2] as number],
      },
      timestep: { data: Float32Array.of(500), dims: m.inputs.get("timestep")?.shape.length ? [1] : [] },
    });
    const { diff, scale } = compare(
      await run(files.unet, feeds, "out_sample"),
      await run(fused, feeds, "out_sample"),
    );
    // Measured: 2.4e-6 against outputs of magnitude ~1.5: float rounding.
    expect(diff).toBeLessThanOrEqual(3e-6 * Math.max(1, scale));

    // The float16 graph (softmax in float32 between two Casts) matches too; the CPU has no float16 kernel to run it.
    const half = await prepareCheckpoint(checkpoint, { precision: "float16", attention: "plain" });
    const halfScan = await findAttentions(await readOnnxGraph(half.files.unet));
    expect(halfScan.matches).toHaveLength(halfScan.attentions);
    expect(halfScan.attentions).toBe(32);
  }, 60_000);

  for (const [name, form] of [
    ["head_dim read from the key's shape", {}],
    ["head_dim a constant", { headDim: 8 }],
  ] as const) {
    test(`torch's SDPA export form, ${name}: √scale on q and kᵀ, the same output`, async () => {
      const dir = join(root, `sdpa-${form.headDim ?? "symbolic"}`);
      await mkdir(dir);
      const path = join(dir, "model.onnx");
      await writeFile(path, sdpaGraph(form));
      const { scan, fused } = await fuseBeside(path, "fused.onnx");
      expect(scan.attentions).toBe(1);
      expect(scan.matches).toHaveLength(1);
      expect(scan.matches[0]?.heads).toBe(2);
      expect(scan.matches[0]?.scale).toBeCloseTo(1 / Math.sqrt(8), 6);
      const fusedGraph = await readOnnxGraph(fused);
      expect(fusedGraph.nodes.map((n) => n.opType)).not.toContain("Softmax");

      const feeds = (): Feeds => ({
        x: { data: values(2 * 5 * WIDTH, (i) => Math.cos(i * 0.3)), dims: [2, 5, WIDTH] },
      });
      const { diff, scale } = compare(await run(path, feeds, "y"), await run(fused, feeds, "y"));
      // Measured: 1.1e-8 against outputs of magnitude ~0.05.
      expect(diff).toBeLessThanOrEqual(3e-6 * Math.max(1, scale));
    });
  }

  test("a split the shapes do not prove stays plain", async () => {
    for (const [name, form] of [
      // Reshape(x, [x₁, −1, H, d]) runs (−1 takes the batch), but mixes batch and tokens.
      ["batch from the token axis", { batchAxis: 1 }],
      // 2 heads of 4 channels do not cover x's 16: the −1 axis absorbs the rest.
      ["heads × d short of the width", { headDim: 4 }],
    ] as const) {
      const path = join(root, `unproven-${form.batchAxis ?? form.headDim}.onnx`);
      await writeFile(path, sdpaGraph(form));
      const scan = await findAttentions(await readOnnxGraph(path));
      expect({ name, attentions: scan.attentions, matches: scan.matches.length }).toEqual({
        name,
        attentions: 1,
        matches: 0,
      });
    }
  });

  test("an optimum-layout folder of sdx's graphs loads with every attention fused", async () => {
    const checkpoint = await checkpointCopy("export");
    const folder = await writeExportShapedFolder(checkpoint, join(root, "export", "models", "tiny_export"));
    const entry = await inspectModelFolder("tiny_export", folder);
    expect(entry).toMatchObject({ format: "onnx", kind: "sd1", problem: null });
    const pipeline = await loadOnnxPipeline(entry, "cpu", { attention: "fused" });
    try {
      expect(pipeline.folderAttention).toMatchObject({ fused: 32, attentions: 32, skipped: null });
      expect(pipeline.paths.unet).not.toBe(join(folder, "unet", "model.onnx"));
    } finally {
      await releasePipeline(pipeline);
    }
  }, 60_000);
});
