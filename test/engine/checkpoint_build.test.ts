/**
 * The checkpoint graph cache: keyed on the file (size, mtime, header) and precision, rebuilt when the file
 * changes with the stale folder removed, and float16 graphs (the CUDA path) close to float32 ones.
 */
import { expect, test } from "bun:test";
import { copyFile, mkdtemp, readdir, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { prepareCheckpoint } from "../../api/engine/checkpoint/build.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { FIXTURES } from "../helpers/fixtures.ts";

async function tinyCopy(): Promise<{ dir: string; path: string }> {
  const dir = await mkdtemp(join(tmpdir(), "sdx-build-"));
  const path = join(dir, "tiny.safetensors");
  await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), path);
  return { dir, path };
}

test("the cache is reused, rebuilt when the file changes, and the stale folder removed", async () => {
  const { dir, path } = await tinyCopy();
  const first = await prepareCheckpoint(path);
  expect(first.reused).toBe(false);
  expect(first.kind).toBe("sd1");
  const second = await prepareCheckpoint(path);
  expect(second.reused).toBe(true);
  expect(second.files).toEqual(first.files);
  const later = new Date(Date.now() + 60_000);
  await utimes(path, later, later);
  const third = await prepareCheckpoint(path);
  expect(third.reused).toBe(false);
  const caches = (await readdir(join(dir, ".sdx-cache"))).filter((d) => !d.startsWith("."));
  expect(caches).toHaveLength(1);
  expect(third.files.unet).toContain(caches[0] as string);
});

test("float16 graphs (the CUDA path) compute close to the float32 ones", async () => {
  const { path } = await tinyCopy();
  const [fp32, fp16] = await Promise.all([
    prepareCheckpoint(path, { precision: "float32" }),
    prepareCheckpoint(path, { precision: "float16" }),
  ]);
  expect(fp16.files.unet).not.toBe(fp32.files.unet);
  const feeds = {
    sample: { data: Float32Array.from({ length: 2 * 4 * 8 * 8 }, (_, i) => Math.sin(i)), dims: [2, 4, 8, 8] },
    timestep: { data: [500], dims: [] },
    encoder_hidden_states: {
      data: Float32Array.from({ length: 2 * 77 * 32 }, (_, i) => Math.cos(i) * 0.5),
      dims: [2, 77, 32],
    },
  };
  const [a, b] = await Promise.all([
    OnnxModel.load(fp32.files.unet, { provider: "cpu" }).then((m) => m.run(feeds)),
    OnnxModel.load(fp16.files.unet, { provider: "cpu" }).then((m) => m.run(feeds)),
  ]);
  const x = a.out_sample?.data as Float32Array;
  const y = b.out_sample?.data as Float32Array;
  let max = 0;
  for (let i = 0; i < x.length; i++) max = Math.max(max, Math.abs((x[i] as number) - (y[i] as number)));
  // Half-precision arithmetic differs in the last bits, and no more.
  expect(max).toBeGreaterThan(0);
  expect(max).toBeLessThan(1e-2);
});

test("a truncated checkpoint is a clear error, not a crash", async () => {
  const { dir } = await tinyCopy();
  const bytes = new Uint8Array(
    await Bun.file(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors")).arrayBuffer(),
  );
  const cut = join(dir, "cut.safetensors");
  await Bun.write(cut, bytes.subarray(0, 1_000_000));
  await expect(prepareCheckpoint(cut)).rejects.toThrow(/truncated or corrupt/);
});
