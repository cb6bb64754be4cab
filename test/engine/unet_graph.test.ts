/**
 * The UNet built in TypeScript from the LDM-layout single file (tiny_sd15.safetensors) against the same model as
 * exported by optimum (models/tiny_sd15/unet/model.onnx): detected config, external-data references, interface,
 * and out_sample on the same inputs; plus latent sizes the optimum export cannot take.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { linkSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { UNET_PREFIX } from "../../api/engine/checkpoint/keys.ts";
import {
  buildUNetGraph,
  detectUNet,
  loraInputNames,
  type UNetConfig,
} from "../../api/engine/checkpoint/unet_graph.ts";
import { CheckpointWeights } from "../../api/engine/checkpoint/weights.ts";
import { readOnnxGraph } from "../../api/engine/onnx/proto.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { readSafetensorsHeader } from "../../api/engine/safetensors.ts";
import { FIXTURES, TINY_SD15 } from "../helpers/fixtures.ts";

const CHECKPOINT = join(FIXTURES, "checkpoints", "tiny_sd15.safetensors");
const REFERENCE = join(TINY_SD15, "unet", "model.onnx");
const LINK = "tiny_sd15.safetensors";

const dir = mkdtempSync(join(tmpdir(), "sdx-unet-graph-"));
afterAll(async () => {
  await built?.release();
  await reference?.release();
  rmSync(dir, { recursive: true, force: true });
});

let weights: CheckpointWeights;
let config: UNetConfig;
let graphPath: string;
let nodeCount = 0;
let built: OnnxModel;
let reference: OnnxModel;
let loadMs = 0;

beforeAll(async () => {
  linkSync(CHECKPOINT, join(dir, LINK));
  weights = new CheckpointWeights(await readSafetensorsHeader(join(dir, LINK)), LINK);
  config = detectUNet(weights);
  const g = buildUNetGraph(weights, config);
  nodeCount = g.nodeCount;
  graphPath = join(dir, "unet.onnx");
  writeFileSync(graphPath, g.toBytes());
  const started = performance.now();
  built = await OnnxModel.load(graphPath, { provider: "cpu" });
  loadMs = performance.now() - started;
  reference = await OnnxModel.load(REFERENCE, { provider: "cpu" });
}, 60_000);

/** Seeded standard normal values (mulberry32 + Box–Muller). */
function normals(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++)
    out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}

function feeds(
  batch: number,
  height: number,
  width: number,
  timestep: number,
  sequence: number,
  seed: number,
) {
  return {
    sample: { data: normals(batch * 4 * height * width, seed), dims: [batch, 4, height, width] },
    timestep: { data: Float32Array.of(timestep), dims: [] },
    encoder_hidden_states: { data: normals(batch * sequence * 32, seed + 1), dims: [batch, sequence, 32] },
  };
}

test("detectUNet reads the fixture's diffusers config from the LDM keys and shapes", async () => {
  const unet = (await Bun.file(join(TINY_SD15, "unet", "config.json")).json()) as {
    in_channels: number;
    out_channels: number;
    block_out_channels: number[];
    layers_per_block: number;
    cross_attention_dim: number;
    attention_head_dim: number;
    use_linear_projection: boolean;
    norm_num_groups: number;
    down_block_types: string[];
    up_block_types: string[];
    transformer_layers_per_block: number;
  };
  expect(config.prefix).toBe("model.diffusion_model.");
  expect(config.inChannels).toBe(unet.in_channels);
  expect(config.outChannels).toBe(unet.out_channels);
  expect(config.channelMult.map((m) => m * config.modelChannels)).toEqual(unet.block_out_channels);
  expect(config.numResBlocks).toEqual(unet.block_out_channels.map(() => unet.layers_per_block));
  expect(config.contextDim).toBe(unet.cross_attention_dim);
  expect(config.useLinearProjection).toBe(unet.use_linear_projection);
  expect(config.normGroups).toBe(unet.norm_num_groups);
  // SD1.x: attention_head_dim is really the head count.
  expect(config.numHeads).toEqual(unet.block_out_channels.map(() => unet.attention_head_dim));
  expect(config.headDim).toEqual(unet.block_out_channels.map((c) => c / unet.attention_head_dim));
  const depth = unet.transformer_layers_per_block;
  expect(config.transformerDepthPerLevel).toEqual(
    unet.down_block_types.map((t) => (t.startsWith("CrossAttn") ? depth : 0)),
  );
  expect(config.transformerDepth).toEqual(
    unet.down_block_types.flatMap((t) =>
      Array(unet.layers_per_block).fill(t.startsWith("CrossAttn") ? depth : 0),
    ),
  );
  expect(config.transformerDepthOutput).toEqual(
    unet.up_block_types.flatMap((t) =>
      Array(unet.layers_per_block + 1).fill(t.startsWith("CrossAttn") ? depth : 0),
    ),
  );
  expect(config.transformerDepthMiddle).toBe(depth);
  expect(config.timeEmbedDim).toBe(4 * (unet.block_out_channels[0] as number));
  expect(config.admInChannels).toBeNull();
  expect(config.adm).toBeNull();
  // A head count given by the caller replaces the rule.
  expect(detectUNet(weights, UNET_PREFIX, { headsPerLevel: [4, 4, 8, 8] }).headDim).toEqual([8, 8, 8, 8]);
  expect(() => detectUNet(weights, "model.nothing.")).toThrow(/no UNet/);
});

test("the graph refers to every UNet tensor in the checkpoint as external data, is small and loads fast", async () => {
  const bytes = statSync(graphPath).size;
  expect(bytes).toBeLessThan(1024 * 1024);
  const graph = await readOnnxGraph(graphPath);
  const external = new Set<string>();
  for (const [name, t] of graph.initializers) {
    if (t.location.kind === "external") {
      expect(t.location.location).toBe(LINK);
      external.add(name);
    }
  }
  const unetKeys = [...weights.keys()].filter((k) => k.startsWith(UNET_PREFIX));
  expect([...external].sort()).toEqual(unetKeys.sort());
  expect(graph.opset).toBe(17);
  expect(nodeCount).toBe(graph.nodes.length);
  expect(loadMs).toBeLessThan(10_000);
});

test("the interface is the optimum export's", () => {
  for (const model of [built, reference]) {
    expect([...model.inputs.keys()].sort()).toEqual(["encoder_hidden_states", "sample", "timestep"]);
    expect([...model.outputs.keys()]).toEqual(["out_sample"]);
  }
  for (const name of ["sample", "timestep", "encoder_hidden_states"]) {
    expect(built.inputs.get(name)?.type).toBe("float32");
    expect(built.inputs.get(name)?.shape).toEqual(reference.inputs.get(name)?.shape ?? []);
  }
  expect(built.outputs.get("out_sample")?.shape).toEqual(reference.outputs.get("out_sample")?.shape ?? []);
});

const CASES = [
  { height: 8, width: 8, timestep: 981.37, sequence: 77, seed: 11 },
  { height: 16, width: 24, timestep: 500, sequence: 154, seed: 22 },
  { height: 8, width: 8, timestep: 1, sequence: 154, seed: 33 },
  { height: 16, width: 24, timestep: 0.25, sequence: 77, seed: 44 },
];

for (const c of CASES) {
  test(`out_sample matches the optimum UNet: batch 2, ${c.height}×${c.width}, t ${c.timestep}, ${c.sequence} tokens`, async () => {
    const input = feeds(2, c.height, c.width, c.timestep, c.sequence, c.seed);
    const ours = (await built.run(input)).out_sample;
    const theirs = (await reference.run(input)).out_sample;
    if (!ours || !theirs) throw new Error("out_sample missing");
    expect(ours.dims).toEqual([2, 4, c.height, c.width]);
    expect(theirs.dims).toEqual(ours.dims);
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < ours.data.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs((ours.data[i] as number) - (theirs.data[i] as number)));
      maxAbs = Math.max(maxAbs, Math.abs(theirs.data[i] as number));
    }
    expect(maxAbs).toBeGreaterThan(0.1); // values are O(1), so the bound below is meaningful
    expect(maxDiff).toBeLessThanOrEqual(1e-4);
  }, 30_000);
}

test("latent sizes not divisible by 8 run, upsampling to each skip connection's size", async () => {
  for (const [height, width] of [
    [12, 16],
    [10, 14],
  ] as const) {
    const out = (await built.run(feeds(2, height, width, 700, 77, 55))).out_sample;
    expect(out?.dims).toEqual([2, 4, height, width]);
    expect(out?.data.every(Number.isFinite)).toBe(true);
  }
}, 30_000);

test("float16 compute (inputs cast in, output cast out, norms and softmax in float32) stays close", async () => {
  const half = new CheckpointWeights(weights.header, LINK, "float16");
  const path = join(dir, "unet_fp16.onnx");
  writeFileSync(path, buildUNetGraph(half, config).toBytes());
  const model = await OnnxModel.load(path, { provider: "cpu" });
  expect(model.inputs.get("sample")?.type).toBe("float32");
  expect(model.outputs.get("out_sample")?.type).toBe("float32");
  const input = feeds(2, 16, 24, 500, 154, 66);
  const ours = (await model.run(input)).out_sample;
  const theirs = (await reference.run(input)).out_sample;
  if (!ours || !theirs) throw new Error("out_sample missing");
  let maxDiff = 0;
  for (let i = 0; i < ours.data.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs((ours.data[i] as number) - (theirs.data[i] as number)));
  }
  expect(maxDiff).toBeLessThan(5e-3);
  await model.release();
}, 30_000);

test("the LoRA-ready graph (a branch on every Linear and Conv) fed zero-rank factors gives the plain graph's out_sample", async () => {
  const g = buildUNetGraph(weights, config, { loraSlots: true });
  const path = join(dir, "unet_lora.onnx");
  writeFileSync(path, g.toBytes());
  const model = await OnnxModel.load(path, { provider: "cpu" });
  const layers = [...weights.keys()].filter(
    (k) => k.startsWith(UNET_PREFIX) && k.endsWith(".weight") && weights.shape(k).length >= 2,
  );
  const zero: Record<string, { data: Float32Array; dims: number[] }> = {};
  for (const key of layers) {
    const names = loraInputNames(key);
    const [out = 0, cols = 0, ...kernel] = weights.shape(key);
    expect(model.inputs.get(names.down)?.shape).toEqual([`rank:${key}`, cols, ...kernel]);
    expect(model.inputs.get(names.up)?.shape).toEqual([out, `rank:${key}`, ...kernel.map(() => 1)]);
    zero[names.down] = { data: new Float32Array(0), dims: [0, cols, ...kernel] };
    zero[names.up] = { data: new Float32Array(0), dims: [out, 0, ...kernel.map(() => 1)] };
  }
  expect(model.inputs.size).toBe(3 + 2 * layers.length);
  for (const c of [CASES[0], CASES[1]]) {
    if (!c) continue;
    const input = feeds(2, c.height, c.width, c.timestep, c.sequence, c.seed);
    const plain = (await built.run(input)).out_sample?.data as Float32Array;
    const ready = (await model.run({ ...input, ...zero })).out_sample?.data as Float32Array;
    let maxDiff = 0;
    for (let i = 0; i < plain.length; i++)
      maxDiff = Math.max(maxDiff, Math.abs((plain[i] as number) - (ready[i] as number)));
    expect(maxDiff).toBeLessThanOrEqual(1e-6);
  }
  await model.release();
}, 60_000);
