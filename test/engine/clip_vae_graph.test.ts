/**
 * Text encoders and VAE built from single-file checkpoints (api/engine/checkpoint/{clip,vae}_graph.ts), checked
 * against optimum's exports of the same weights: tiny SD1 (HF-layout CLIP, LDM VAE with conv attention weights)
 * and tiny SDXL's second encoder (OpenCLIP layout with fused in_proj and a transposed text_projection).
 *
 * onnxruntime reads external data only from the model's own folder, so each graph is written into a temp dir
 * beside a hard link of the checkpoint it refers to.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, linkSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildClipGraph, clipHeads, detectClip } from "../../api/engine/checkpoint/clip_graph.ts";
import {
  buildVaeDecoderGraph,
  buildVaeEncoderGraph,
  detectVae,
} from "../../api/engine/checkpoint/vae_graph.ts";
import {
  CheckpointError,
  CheckpointWeights,
  type ComputePrecision,
} from "../../api/engine/checkpoint/weights.ts";
import type { GraphBuilder } from "../../api/engine/onnx/graph_builder.ts";
import { type FeedValue, OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { readSafetensorsHeader } from "../../api/engine/safetensors.ts";
import { FIXTURES, TINY_SD15 } from "../helpers/fixtures.ts";

const SD15_CKPT = join(FIXTURES, "checkpoints", "tiny_sd15.safetensors");
const SDXL_CKPT = join(FIXTURES, "checkpoints", "tiny_sdxl.safetensors");
const SDXL_TE2 = join(FIXTURES, "models_sdxl_te2", "model.onnx");

const dir = mkdtempSync(join(tmpdir(), "sdx-clip-vae-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Outputs = Record<string, { data: Float32Array; dims: number[] }>;

/** A hard link of `source` in the temp dir (a copy across file systems), as the graphs' external-data file. */
async function checkpoint(
  source: string,
  name: string,
  precision?: ComputePrecision,
): Promise<CheckpointWeights> {
  const link = join(dir, name);
  try {
    linkSync(source, link);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EXDEV") copyFileSync(source, link);
    else if (code !== "EEXIST") throw e;
  }
  return new CheckpointWeights(await readSafetensorsHeader(link), name, precision);
}

async function load(graph: GraphBuilder, name: string): Promise<OnnxModel> {
  const path = join(dir, name);
  writeFileSync(path, graph.toBytes());
  return OnnxModel.load(path, { provider: "cpu" });
}

const reference = (path: string) => OnnxModel.load(path, { provider: "cpu" });

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

/** Every output of `expected` is present in `actual` with the same dims and within `tolerance`. */
function expectClose(actual: Outputs, expected: Outputs, tolerance: number): void {
  for (const [name, want] of Object.entries(expected)) {
    const got = actual[name];
    expect(got, name).toBeDefined();
    if (!got) continue;
    expect(got.dims, name).toEqual(want.dims);
    expect(maxAbsDiff(got.data, want.data), name).toBeLessThan(tolerance);
  }
}

/** Deterministic standard normals (mulberry32 + Box–Muller). */
function randn(count: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return Float32Array.from(
    { length: count },
    () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()),
  );
}

interface TokenizerCase {
  text: string;
  input_ids: number[];
  num_tokens_untruncated: number;
  truncated: boolean;
}

/** Two real 77-token rows: a truncated long prompt and a short padded one. */
function tokenRows(): number[][] {
  const cases = JSON.parse(
    readFileSync(join(FIXTURES, "tokenizer", "tokenizer_cases.json"), "utf8"),
  ) as TokenizerCase[];
  const long = cases.find((c) => c.truncated);
  const short = cases.find((c) => !c.truncated && c.num_tokens_untruncated >= 6);
  if (!long || !short) throw new Error("tokenizer cases lack a truncated and a short prompt");
  return [long.input_ids, short.input_ids];
}

const ids = (rows: number[][]): FeedValue => ({
  data: rows.flat(),
  dims: [rows.length, rows[0]?.length ?? 0],
});

describe("CLIP text encoder from a checkpoint", () => {
  test("heads: width/64, 4 for tiny widths, or the override", () => {
    expect(clipHeads(768)).toBe(12);
    expect(clipHeads(1024)).toBe(16);
    expect(clipHeads(1280)).toBe(20);
    expect(clipHeads(32)).toBe(4);
    expect(clipHeads(24)).toBe(4);
    expect(clipHeads(24, { heads: 2 })).toBe(2);
    expect(() => clipHeads(100)).toThrow(CheckpointError);
    expect(() => clipHeads(32, { heads: 5 })).toThrow(CheckpointError);
  });

  test("detects the HF layout (SD1, SDXL te1) and the OpenCLIP layout (SDXL te2)", async () => {
    const sd = await checkpoint(SD15_CKPT, "sd15.safetensors");
    const xl = await checkpoint(SDXL_CKPT, "sdxl.safetensors");
    const tiny = { width: 32, layers: 3, heads: 4, intermediate: 37, vocab: 49408, maxPositions: 77 };
    expect(detectClip(sd, "cond_stage_model.transformer.")).toEqual({
      layout: "hf",
      prefix: "cond_stage_model.transformer.",
      ...tiny,
      activation: "quick_gelu",
      projectionDim: null,
      eps: 1e-5,
    });
    expect(detectClip(xl, "conditioner.embedders.0.transformer.")).toMatchObject({ layout: "hf", ...tiny });
    expect(detectClip(xl, "conditioner.embedders.1.model.")).toEqual({
      layout: "openclip",
      prefix: "conditioner.embedders.1.model.",
      width: 24,
      layers: 3,
      heads: 4,
      intermediate: 64,
      vocab: 49408,
      maxPositions: 77,
      activation: "gelu",
      projectionDim: 32,
      eps: 1e-5,
    });
    // The prefix may also name the text_model level itself.
    expect(detectClip(sd, "cond_stage_model.transformer.text_model.")).toMatchObject({
      layout: "hf",
      ...tiny,
    });
    expect(() => detectClip(sd, "conditioner.embedders.1.model.")).toThrow(CheckpointError);
  });

  test("SD1 (HF layout) matches optimum's export on every output", async () => {
    const weights = await checkpoint(SD15_CKPT, "sd15.safetensors");
    const model = await load(
      buildClipGraph(weights, detectClip(weights, "cond_stage_model.transformer.")),
      "te.onnx",
    );
    const ref = await reference(join(TINY_SD15, "text_encoder", "model.onnx"));
    expect([...model.outputs.keys()].sort()).toEqual([...ref.outputs.keys()].sort());
    const rows = tokenRows();
    const full = { input_ids: ids(rows) };
    expectClose(await model.run(full), await ref.run(full), 1e-4);
    // A shorter sequence (positions and causal mask sliced to 12), batch 3.
    const short = { input_ids: ids([...rows, rows[0] ?? []].map((r) => r.slice(0, 12))) };
    expectClose(await model.run(short), await ref.run(short), 1e-4);
  });

  test("SDXL te2 (OpenCLIP layout) matches optimum's CLIPTextModelWithProjection export", async () => {
    const weights = await checkpoint(SDXL_CKPT, "sdxl.safetensors");
    const config = detectClip(weights, "conditioner.embedders.1.model.");
    const model = await load(buildClipGraph(weights, config), "te2.onnx");
    const ref = await reference(SDXL_TE2);
    // tokenizer_2 pads with "!" (id 0) after the end token.
    const rows = tokenRows().map((row) => {
      const end = row.indexOf(49407);
      return row.map((id, i) => (end >= 0 && i > end ? 0 : id));
    });
    const feed = { input_ids: ids(rows) };
    const got = await model.run(feed);
    expect(Object.keys(await ref.run(feed)).sort()).toEqual(
      [
        "text_embeds",
        "last_hidden_state",
        "hidden_states.0",
        "hidden_states.1",
        "hidden_states.2",
        "hidden_states.3",
      ].sort(),
    );
    expectClose(got, await ref.run(feed), 1e-4);
    expect(got.pooler_output?.dims).toEqual([2, 24]);
  });
});

describe("VAE from a checkpoint", () => {
  test("detects the LDM ddconfig", async () => {
    const weights = await checkpoint(SD15_CKPT, "sd15.safetensors");
    expect(detectVae(weights)).toEqual({
      prefix: "first_stage_model.",
      ch: 32,
      chMult: [1, 1, 2, 2],
      numResBlocks: 2,
      zChannels: 4,
      inChannels: 3,
      outChannels: 3,
      groups: 32,
    });
    expect(() => detectVae(weights, "vae.")).toThrow(CheckpointError);
  });

  test("decoder matches optimum's export (batch 2, 8×8 and 8×12 latents)", async () => {
    const weights = await checkpoint(SD15_CKPT, "sd15.safetensors");
    const model = await load(buildVaeDecoderGraph(weights, detectVae(weights)), "vae_decoder.onnx");
    const ref = await reference(join(TINY_SD15, "vae_decoder", "model.onnx"));
    for (const [h, w, seed] of [
      [8, 8, 1],
      [8, 12, 2],
    ] as const) {
      const feed = { latent_sample: { data: randn(2 * 4 * h * w, seed), dims: [2, 4, h, w] } };
      const got = await model.run(feed);
      expect(got.sample?.dims).toEqual([2, 3, 8 * h, 8 * w]);
      expectClose(got, await ref.run(feed), 1e-3);
    }
  });

  test("encoder matches optimum's export (mean ‖ logvar)", async () => {
    const weights = await checkpoint(SD15_CKPT, "sd15.safetensors");
    const model = await load(buildVaeEncoderGraph(weights, detectVae(weights)), "vae_encoder.onnx");
    const ref = await reference(join(TINY_SD15, "vae_encoder", "model.onnx"));
    for (const [h, w, seed] of [
      [64, 64, 3],
      [64, 96, 4],
    ] as const) {
      const image = randn(2 * 3 * h * w, seed).map((v) => Math.tanh(v));
      const feed = { sample: { data: image, dims: [2, 3, h, w] } };
      const got = await model.run(feed);
      expect(got.latent_parameters?.dims).toEqual([2, 8, h / 8, w / 8]);
      expectClose(got, await ref.run(feed), 1e-3);
    }
  });

  test("mid-block attention stored as [C, C] linear weights gives the same graphs", async () => {
    // Same bytes, header rewritten: q/k/v/proj_out of mid.attn_1 as [C, C] (the newer linear layout).
    const bytes = readFileSync(SD15_CKPT);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8")) as Record<
      string,
      { shape?: number[] }
    >;
    let rewritten = 0;
    for (const [key, info] of Object.entries(header)) {
      if (/\.mid\.attn_1\.(q|k|v|proj_out)\.weight$/.test(key) && info.shape) {
        info.shape = info.shape.slice(0, 2);
        rewritten++;
      }
    }
    expect(rewritten).toBe(8);
    let json = JSON.stringify(header);
    json += " ".repeat((8 - (json.length % 8)) % 8);
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    writeFileSync(
      join(dir, "linear_attn.safetensors"),
      Buffer.concat([length, Buffer.from(json), bytes.subarray(8 + headerLength)]),
    );
    const weights = new CheckpointWeights(
      await readSafetensorsHeader(join(dir, "linear_attn.safetensors")),
      "linear_attn.safetensors",
    );
    expect(weights.shape("first_stage_model.decoder.mid.attn_1.q.weight")).toEqual([64, 64]);
    const config = detectVae(weights);
    const decoder = await load(buildVaeDecoderGraph(weights, config), "vae_decoder_linear.onnx");
    const encoder = await load(buildVaeEncoderGraph(weights, config), "vae_encoder_linear.onnx");
    const latents = { latent_sample: { data: randn(4 * 8 * 12, 5), dims: [1, 4, 8, 12] } };
    expectClose(
      await decoder.run(latents),
      await (await reference(join(TINY_SD15, "vae_decoder", "model.onnx"))).run(latents),
      1e-3,
    );
    const image = { sample: { data: randn(3 * 64 * 64, 6).map((v) => Math.tanh(v)), dims: [1, 3, 64, 64] } };
    expectClose(
      await encoder.run(image),
      await (await reference(join(TINY_SD15, "vae_encoder", "model.onnx"))).run(image),
      1e-3,
    );
  });
});

test("float16 compute runs and stays near the float32 reference", async () => {
  const weights = await checkpoint(SD15_CKPT, "sd15.safetensors", "float16");
  const te = await load(
    buildClipGraph(weights, detectClip(weights, "cond_stage_model.transformer.text_model.")),
    "te16.onnx",
  );
  const teFeed = { input_ids: ids(tokenRows()) };
  expectClose(
    await te.run(teFeed),
    await (await reference(join(TINY_SD15, "text_encoder", "model.onnx"))).run(teFeed),
    2e-2,
  );
  const decoder = await load(buildVaeDecoderGraph(weights, detectVae(weights)), "vae_decoder16.onnx");
  const latents = { latent_sample: { data: randn(2 * 4 * 8 * 8, 7), dims: [2, 4, 8, 8] } };
  expectClose(
    await decoder.run(latents),
    await (await reference(join(TINY_SD15, "vae_decoder", "model.onnx"))).run(latents),
    2e-2,
  );
});
