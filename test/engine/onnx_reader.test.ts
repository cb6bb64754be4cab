/**
 * The streaming ONNX reader and the final-layer-norm recovery behind clip skip: on the tiny SD 1.x text
 * encoder against onnxruntime and the diffusers reference cases, and on small ONNX files built here byte by
 * byte (external data, float16 / packed / unpacked fields, a LayerNormalization node, a multi-hundred-MB
 * sparse file that must be read by structure only).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  findFinalLayerNorm,
  layerNorm,
  matchFinalLayerNorm,
} from "../../api/engine/onnx/final_layer_norm.ts";
import {
  OnnxFormatError,
  type OnnxGraphSummary,
  readInitializer,
  readOnnxGraph,
} from "../../api/engine/onnx/proto.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { referenceCase, TINY_SD15 } from "../helpers/fixtures.ts";
import {
  cat,
  external,
  f32Bytes,
  floatValue,
  model,
  node,
  pb,
  tensor,
  varint,
} from "../helpers/onnx_writer.ts";

const TEXT_ENCODER = join(TINY_SD15, "text_encoder", "model.onnx");

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

async function inputIds(caseName: string): Promise<{ ids: number[]; clipSkip: number | null }> {
  const ref = (await referenceCase(caseName)) as Awaited<ReturnType<typeof referenceCase>> & {
    input_ids: number[];
  };
  return { ids: ref.input_ids, clipSkip: ref.clip_skip };
}

describe("tiny SD 1.x text encoder", () => {
  let graph: OnnxGraphSummary;
  let model: OnnxModel;

  beforeAll(async () => {
    graph = await readOnnxGraph(TEXT_ENCODER);
    model = await OnnxModel.load(TEXT_ENCODER, { provider: "cpu", intraOpThreads: 1 });
  });
  afterAll(async () => {
    await model.release();
  });

  test("inputs and outputs match what onnxruntime reports", () => {
    type Described = { name: string; type: string; shape: Array<number | string> };
    const mine = (list: OnnxGraphSummary["inputs"]): Described[] =>
      list.map(({ name, type, shape }) => ({ name, type, shape: [...shape] }));
    const ort = (map: OnnxModel["inputs"]): Described[] =>
      [...map.values()].map(({ name, type, shape }) => ({ name, type, shape: [...shape] }));
    expect(mine(graph.inputs)).toEqual(ort(model.inputs));
    expect(mine(graph.outputs)).toEqual(ort(model.outputs));
    expect(graph.opset).toBe(14);
    expect(graph.producerName).toBe("pytorch");
  });

  test("reads the structure only: the 6.3 MB token embedding is located, not read", async () => {
    const size = Bun.file(TEXT_ENCODER).size;
    expect(graph.stats.bytesRead).toBeLessThan(size / 10);
    const embedding = graph.initializers.get("text_model.embeddings.token_embedding.weight");
    expect(embedding?.dims).toEqual([49408, 32]);
    expect(embedding?.location.kind).toBe("raw");
    // A raw_data initializer comes back with the right length and finite values.
    const pos = await readInitializer(graph, "text_model.embeddings.position_embedding.weight");
    expect(pos.length).toBe(77 * 32);
    expect(pos.every(Number.isFinite)).toBe(true);
  });

  test("finds the decomposed final layer norm (Constant-node epsilon)", async () => {
    const ln = await findFinalLayerNorm(TEXT_ENCODER);
    expect(ln).not.toBeNull();
    if (!ln) return;
    expect(ln.form).toBe("decomposed");
    expect(ln.input).toBe("hidden_states.3");
    expect(ln.gamma.length).toBe(32);
    expect(ln.beta.length).toBe(32);
    expect(ln.epsilon).toBe(Math.fround(1e-5));
    expect(ln.gamma).toEqual(await readInitializer(graph, "text_model.final_layer_norm.weight"));
    expect(ln.beta).toEqual(await readInitializer(graph, "text_model.final_layer_norm.bias"));
  });

  test("returns null with a reason where there is no layer norm", async () => {
    const diagnostics: { reason?: string } = {};
    expect(await findFinalLayerNorm(TEXT_ENCODER, "pooler_output", diagnostics)).toBeNull();
    expect(diagnostics.reason).toContain("Reshape");
    const none = await matchFinalLayerNorm(graph, "hidden_states.2");
    expect(none.ok).toBe(false);
    expect((await matchFinalLayerNorm(graph, "missing")).ok).toBe(false);
  });

  test("layerNorm(hidden_states.3) reproduces last_hidden_state", async () => {
    const ln = await findFinalLayerNorm(TEXT_ENCODER);
    if (!ln) throw new Error("no layer norm");
    const { ids } = await inputIds("p05_euler20_clipskip1");
    const out = await model.run({ input_ids: { data: ids, dims: [1, ids.length] } });
    const hidden = out["hidden_states.3"];
    const last = out.last_hidden_state;
    if (!hidden || !last) throw new Error("missing outputs");
    expect(maxAbsDiff(layerNorm(hidden.data, [1, 77, 32], ln), last.data)).toBeLessThan(1e-5);
  });

  for (const name of ["p05_euler20_clipskip1", "p06_euler20_clipskip2"]) {
    test(`${name}: final_layer_norm(hidden_states.{3 - clip_skip}) equals diffusers' prompt_embeds`, async () => {
      const ln = await findFinalLayerNorm(TEXT_ENCODER);
      if (!ln) throw new Error("no layer norm");
      const ref = await referenceCase(name);
      const { ids, clipSkip } = await inputIds(name);
      expect(clipSkip).toBe(name.endsWith("1") ? 1 : 2);
      const output = `hidden_states.${3 - (clipSkip ?? 0)}`;
      const out = await model.run({ input_ids: { data: ids, dims: [1, 77] } }, [output]);
      const hidden = out[output];
      const expected = (await loadSafetensors(join(ref.dir, "tensors.safetensors"))).get("prompt_embeds");
      if (!hidden || !expected) throw new Error("missing tensors");
      expect(expected.shape).toEqual([1, 77, 32]);
      expect(maxAbsDiff(layerNorm(hidden.data, [1, 77, 32], ln), expected.data)).toBeLessThan(1e-5);
    });
  }
});

function randomInput(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return (s / 2 ** 31) * 6 - 3;
  });
}

describe("hand-built ONNX files", () => {
  const dir = mkdtempSync(join(tmpdir(), "onnx-reader-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const gamma = [0.5, 1.5, -2, 0.25];
  const beta = [0.1, -0.2, 0.3, 0];

  test("LayerNormalization with external gamma and packed float_data beta, run by onnxruntime", async () => {
    // weights.bin: 8 bytes of padding, then gamma.
    await Bun.write(join(dir, "weights.bin"), cat(new Uint8Array(8), f32Bytes(gamma)));
    const bytes = model(
      17,
      [
        node(
          "LayerNormalization",
          ["x", "scale", "bias"],
          ["y"],
          cat(pb.str(1, "epsilon"), pb.f32(2, 1e-3), pb.int(20, 1)),
        ),
      ],
      [
        tensor("scale", [4], "float32", external("weights.bin", 8, 16)),
        tensor("bias", [4], "float32", pb.len(4, f32Bytes(beta))),
      ],
      [floatValue("x", [2, 3, 4])],
      [floatValue("y", [2, 3, 4])],
    );
    const path = join(dir, "ln17.onnx");
    await Bun.write(path, bytes);

    const graph = await readOnnxGraph(path);
    expect(graph.initializers.get("scale")?.location).toEqual({
      kind: "external",
      location: "weights.bin",
      offset: 8,
      length: 16,
    });
    expect([...(await readInitializer(graph, "scale"))]).toEqual(gamma);
    expect([...(await readInitializer(graph, "bias"))]).toEqual(beta.map(Math.fround));
    const ln = await findFinalLayerNorm(path, "y");
    expect(ln?.form).toBe("LayerNormalization");
    expect(ln?.epsilon).toBe(Math.fround(1e-3));
    expect(ln?.input).toBe("x");
    if (!ln) return;

    const x = randomInput(24, 1);
    const ort = await OnnxModel.load(path, { provider: "cpu", intraOpThreads: 1 });
    try {
      const y = (await ort.run({ x: { data: x, dims: [2, 3, 4] } })).y;
      if (!y) throw new Error("no output");
      expect(maxAbsDiff(layerNorm(x, [2, 3, 4], ln), y.data)).toBeLessThan(1e-6);
    } finally {
      await ort.release();
    }
  });

  test("decomposed norm with value_float epsilon, Mul(d, d), Reciprocal and Identity, run by onnxruntime", async () => {
    const axes = cat(pb.str(1, "axes"), pb.int(8, -1), pb.int(20, 7));
    const bytes = model(
      13,
      [
        node("ReduceMean", ["x"], ["mean"], axes),
        node("Sub", ["x", "mean"], ["d"]),
        node("Mul", ["d", "d"], ["sq"]),
        node("ReduceMean", ["sq"], ["var"], axes),
        node("Constant", [], ["eps"], cat(pb.str(1, "value_float"), pb.f32(2, 1e-5), pb.int(20, 1))),
        node("Add", ["var", "eps"], ["ve"]),
        node("Sqrt", ["ve"], ["sd"]),
        node("Reciprocal", ["sd"], ["r"]),
        node("Mul", ["d", "r"], ["n"]),
        node("Mul", ["gamma", "n"], ["g"]),
        node("Add", ["beta", "g"], ["y0"]),
        node("Identity", ["y0"], ["y"]),
      ],
      [
        tensor("gamma", [4], "float32", pb.len(9, f32Bytes(gamma))),
        // beta as unpacked float_data: one fixed32 field per value.
        tensor("beta", [4], "float32", ...beta.map((b) => pb.f32(4, b))),
      ],
      [floatValue("x", [3, 2, 4])],
      [floatValue("y", [3, 2, 4])],
    );
    const path = join(dir, "decomposed13.onnx");
    await Bun.write(path, bytes);
    const ln = await findFinalLayerNorm(path, "y");
    expect(ln?.form).toBe("decomposed");
    expect(ln?.epsilon).toBe(Math.fround(1e-5));
    if (!ln) return;
    expect([...ln.gamma]).toEqual(gamma);
    expect([...ln.beta]).toEqual(beta.map(Math.fround));

    const x = randomInput(24, 2);
    const ort = await OnnxModel.load(path, { provider: "cpu", intraOpThreads: 1 });
    try {
      const y = (await ort.run({ x: { data: x, dims: [3, 2, 4] } })).y;
      if (!y) throw new Error("no output");
      expect(maxAbsDiff(layerNorm(x, [3, 2, 4], ln), y.data)).toBeLessThan(1e-6);
    } finally {
      await ort.release();
    }
  });

  test("float16, bfloat16, int64 and external locations outside the folder", async () => {
    const half = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3555, 0x0001]).buffer); // 1, -2, ~1/3, 2^-24
    await Bun.write(join(dir, "sub", "w.bin"), f32Bytes([7, 8]));
    const bytes = model(
      17,
      [],
      [
        tensor("half", [2, 2], "float16", pb.len(9, half)),
        tensor("bf16", [2], "bfloat16", pb.len(9, new Uint8Array(new Uint16Array([0x3f80, 0xc040]).buffer))),
        tensor("ints", [3], "int64", pb.len(7, varint(-1), varint(5), varint(2 ** 40))),
        tensor("nested", [2], "float32", external("sub/w.bin", 0, 8)),
        tensor("up", [1], "float32", external("../weights.bin", 8, 4)),
        tensor("abs", [1], "float32", external(join(dir, "weights.bin"), 8, 4)),
        tensor("short", [4], "float32", external("sub/w.bin", 0, 8)),
      ],
      [],
      [],
    );
    const path = join(dir, "formats.onnx");
    await Bun.write(path, bytes);
    const graph = await readOnnxGraph(path);
    expect([...(await readInitializer(graph, "half"))]).toEqual([
      1,
      -2,
      Math.fround(0.333251953125),
      2 ** -24,
    ]);
    expect([...(await readInitializer(graph, "bf16"))]).toEqual([1, -3]);
    expect([...(await readInitializer(graph, "ints"))]).toEqual([-1, 5, 2 ** 40]);
    expect([...(await readInitializer(graph, "nested"))]).toEqual([7, 8]);
    await expect(readInitializer(graph, "up")).rejects.toThrow(/not a relative path inside the model folder/);
    await expect(readInitializer(graph, "abs")).rejects.toThrow(
      /not a relative path inside the model folder/,
    );
    await expect(readInitializer(graph, "short")).rejects.toThrow(OnnxFormatError);
    await expect(readInitializer(graph, "missing")).rejects.toThrow(/no initializer/);
  });

  test("a 512 MiB (sparse) initializer is skipped, not read", async () => {
    const big = 512 * 1024 * 1024;
    const head = tensor("big", [big / 4], "float32");
    const small = tensor("small", [2], "float32", pb.len(9, f32Bytes([3, 4])));
    const bigTensorLength = head.length + pb.lenHeader(9, big).length + big;
    const tail = cat(pb.len(5, small), pb.len(12, floatValue("y", [2])));
    const graphPrefix = cat(
      pb.len(1, node("Identity", ["small"], ["y"])),
      pb.lenHeader(5, bigTensorLength),
      head,
      pb.lenHeader(9, big),
    );
    const graphLength = graphPrefix.length + big + tail.length;
    const prefix = cat(pb.int(1, 8), pb.lenHeader(7, graphLength), graphPrefix);
    const suffix = cat(tail, pb.len(8, pb.int(2, 17)));
    const path = join(dir, "sparse.onnx");
    const fd = openSync(path, "w");
    try {
      writeSync(fd, prefix, 0, prefix.length, 0);
      writeSync(fd, suffix, 0, suffix.length, prefix.length + big);
    } finally {
      closeSync(fd);
    }
    const graph = await readOnnxGraph(path);
    expect(graph.stats.bytesRead).toBeLessThan(64 * 1024);
    expect(graph.opset).toBe(17);
    expect(graph.outputs.map((o) => o.name)).toEqual(["y"]);
    expect(graph.initializers.get("big")?.location).toEqual({
      kind: "raw",
      offset: prefix.length,
      length: big,
    });
    expect([...(await readInitializer(graph, "small"))]).toEqual([3, 4]);
    expect((await matchFinalLayerNorm(graph, "y")).ok).toBe(false);
  });
});
