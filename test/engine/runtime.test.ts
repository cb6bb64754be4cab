/**
 * The onnxruntime boundary on hand-built graphs: feeds take the element type and rank the graph declares, fp16
 * graphs keep fp32 at the boundary, and a graph with a fixed batch axis is run in slices of that size.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ElemType, elementTypeCode } from "../../api/engine/onnx/dtypes.ts";
import { OnnxModel, OnnxRunError } from "../../api/engine/onnx/runtime.ts";
import { cat, f32Bytes, floatValue, model, node, pb, tensor } from "../helpers/onnx_writer.ts";

const dir = mkdtempSync(join(tmpdir(), "sdx-runtime-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function save(name: string, bytes: Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** y = x · 2 with x of the given element type and dims (a string is a dynamic axis). */
function doubler(elemType: ElemType, dims: (number | string)[]): Uint8Array {
  const two =
    elemType === "float16"
      ? [tensor("two", [], "float16", pb.len(9, Uint8Array.of(0x00, 0x40)))]
      : [tensor("two", [], "float32", pb.len(9, f32Bytes([2])))];
  return model(
    14,
    [node("Mul", ["x", "two"], ["y"])],
    two,
    [floatValue("x", dims, elemType)],
    [floatValue("y", dims, elemType)],
  );
}

test("a fixed batch axis is run in slices of its size and concatenated", async () => {
  const fixed = await OnnxModel.load(save("fixed.onnx", doubler("float32", [1, 3])), { provider: "cpu" });
  const dynamic = await OnnxModel.load(save("dynamic.onnx", doubler("float32", ["batch", 3])), {
    provider: "cpu",
  });
  expect(fixed.fixedDim("x", 0)).toBe(1);
  expect(dynamic.fixedDim("x", 0)).toBeNull();
  const x = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  for (const m of [fixed, dynamic]) {
    const out = await m.runBatched({ x: { data: x, dims: [3, 3] } }, ["x"], 3, ["y"]);
    expect([...(out.y?.data ?? [])]).toEqual([2, 4, 6, 8, 10, 12, 14, 16, 18]);
    expect(out.y?.dims).toEqual([3, 3]);
  }
  const two = await OnnxModel.load(save("two.onnx", doubler("float32", [2, 3])), { provider: "cpu" });
  await expect(two.runBatched({ x: { data: x, dims: [3, 3] } }, ["x"], 3, ["y"])).rejects.toBeInstanceOf(
    OnnxRunError,
  );
});

test("fp16 graphs take and give float32 at the boundary", async () => {
  const half = await OnnxModel.load(save("half.onnx", doubler("float16", ["n"])), { provider: "cpu" });
  expect(half.inputs.get("x")?.type).toBe("float16");
  const out = await half.run({ x: { data: Float32Array.from([0.1, -3.5, 1000]), dims: [3] } });
  expect([...(out.y?.data ?? [])]).toEqual([Math.fround(0.199951171875), -7, 2000]);
});

test("integer inputs are fed as the graph's int32 or int64, and a failed run names every input's shape and type", async () => {
  for (const elemType of ["int32", "int64"] as const) {
    const bytes = model(
      14,
      [
        node(
          "Cast",
          ["ids"],
          ["y"],
          cat(pb.str(1, "to"), pb.int(3, elementTypeCode("float32")), pb.int(20, 2)),
        ),
      ],
      [],
      [floatValue("ids", ["b", 4], elemType)],
      [floatValue("y", ["b", 4])],
    );
    const m = await OnnxModel.load(save(`ids${elemType}.onnx`, bytes), { provider: "cpu" });
    const out = await m.run({ ids: { data: [49406, 1, 2, 49407], dims: [1, 4] } });
    expect([...(out.y?.data ?? [])]).toEqual([49406, 1, 2, 49407]);
    const failure = await m.run({ ids: { data: [1, 2, 3], dims: [1, 3] } }).catch((e: unknown) => e);
    expect(failure).toBeInstanceOf(OnnxRunError);
    expect((failure as Error).message).toMatch(/fed: ids: int(32|64)\[1, 3\]/);
    expect((failure as Error).message).toContain("graph expects: ids:");
  }
});
