/**
 * A decode that overflows is refused, never returned as a black image; when the VAE decoder graph computes in
 * float16 (where SDXL's VAE overflows) the error names the ways out. Hand-built "decoders" that scale their
 * input stand in for the VAE: ×65504 overflows float16 for any latent above 1.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ElemType } from "../../api/engine/onnx/dtypes.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { GenerationFailed } from "../../api/engine/pipeline/errors.ts";
import { assertFiniteDecode } from "../../api/engine/pipeline/stages.ts";
import { f32Bytes, floatValue, model, node, pb, tensor } from "../helpers/onnx_writer.ts";

const dir = mkdtempSync(join(tmpdir(), "sdx-vae-nonfinite-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** sample = latent_sample × the largest finite value of the element type. */
async function scalingDecoder(elemType: ElemType): Promise<OnnxModel> {
  const big =
    elemType === "float16"
      ? tensor("big", [], "float16", pb.len(9, Uint8Array.of(0xff, 0x7b)))
      : tensor("big", [], "float32", pb.len(9, f32Bytes([3.4e38])));
  const dims = ["batch", 4, "h", "w"];
  const path = join(dir, `decoder${elemType}.onnx`);
  writeFileSync(
    path,
    model(
      14,
      [node("Mul", ["latent_sample", "big"], ["sample"])],
      [big],
      [floatValue("latent_sample", dims, elemType)],
      [floatValue("sample", dims, elemType)],
    ),
  );
  return OnnxModel.load(path, { provider: "cpu" });
}

async function decodeError(decoder: OnnxModel): Promise<unknown> {
  const latents = Float32Array.from({ length: 16 }, (_, i) => (i === 5 ? 2 : 0.5));
  const out = await decoder.run({ latent_sample: { data: latents, dims: [1, 4, 2, 2] } }, ["sample"]);
  try {
    assertFiniteDecode(out.sample?.data as Float32Array, 0, decoder);
  } catch (e) {
    return e;
  }
  return null;
}

test("a float16 VAE decoder that overflows is an error naming the fp16-fix VAE", async () => {
  const error = await decodeError(await scalingDecoder("float16"));
  expect(error).toBeInstanceOf(GenerationFailed);
  expect((error as Error).message).toContain("float16");
  expect((error as Error).message).toContain("madebyollin/sdxl-vae-fp16-fix");
});

test("a float32 decoder that overflows is an error too, without the float16 advice", async () => {
  const error = await decodeError(await scalingDecoder("float32"));
  expect(error).toBeInstanceOf(GenerationFailed);
  expect((error as Error).message).toBe("image 0 decoded to NaN or infinite values");
});

test("a finite decode passes", () => {
  expect(() => assertFiniteDecode(Float32Array.of(0, 1, -1), 0, { inputs: new Map() })).not.toThrow();
});
