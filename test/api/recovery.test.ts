/**
 * Recovery from an onnxruntime failure: a VAE decoder that only takes 64×64 images' latents (a fixed Reshape)
 * makes a 128×128 request fail inside onnxruntime. That request gets a 500 naming the stage; the next works.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TINY_SD15 } from "../helpers/fixtures.ts";
import { floatValue, model, node, pb, tensor } from "../helpers/onnx_writer.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const int64s = (name: string, values: number[]) =>
  tensor(
    name,
    [values.length],
    "int64",
    pb.len(9, new Uint8Array(BigInt64Array.from(values.map(BigInt)).buffer)),
  );

/** latent [1,4,8,8] → nearest-upsampled first three channels [1,3,64,64]; any other latent shape fails. */
function fixedDecoder(): Uint8Array {
  return model(
    13,
    [
      node("Reshape", ["latent_sample", "shape"], ["fixed"]),
      node("Slice", ["fixed", "starts", "ends", "axes"], ["rgb"]),
      node("Resize", ["rgb", "", "scales"], ["sample"]),
    ],
    [
      int64s("shape", [1, 4, 8, 8]),
      int64s("starts", [0]),
      int64s("ends", [3]),
      int64s("axes", [1]),
      tensor("scales", [4], "float32", pb.len(9, new Uint8Array(Float32Array.from([1, 1, 8, 8]).buffer))),
    ],
    [floatValue("latent_sample", ["batch", 4, "h", "w"])],
    [floatValue("sample", ["batch", 3, "H", "W"])],
  );
}

const dir = mkdtempSync(join(tmpdir(), "sdx-recovery-"));
let server: RunningServer;
beforeAll(async () => {
  const folder = join(dir, "broken_vae");
  mkdirSync(folder);
  for (const name of readdirSync(TINY_SD15)) {
    if (name !== "vae_decoder") symlinkSync(join(TINY_SD15, name), join(folder, name));
  }
  mkdirSync(join(folder, "vae_decoder"));
  cpSync(join(TINY_SD15, "vae_decoder", "config.json"), join(folder, "vae_decoder", "config.json"));
  writeFileSync(join(folder, "vae_decoder", "model.onnx"), fixedDecoder());
  server = await startServer(["--models-dir", dir]);
});
afterAll(async () => {
  await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

const generate = (size: number) =>
  fetch(`${server.url}/v1/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ prompt: "a cat", width: size, height: size, num_steps: 2, seed: 1 }),
  });

test("an onnxruntime failure is a 500 naming the stage, and the next request works", async () => {
  expect((await generate(64)).status).toBe(200);
  const failed = await generate(128);
  expect(failed.status).toBe(500);
  const body = (await failed.json()) as { code: string; message: string };
  expect(body.code).toBe("generation_failed");
  expect(body.message).toContain("vae_decoder stage");
  expect((await generate(64)).status).toBe(200);
  const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string };
  expect(health.status).toBe("ok");
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  expect(metrics).toContain('sdx_generation_failures_total{stage="vae_decoder"} 1');
}, 60_000);
