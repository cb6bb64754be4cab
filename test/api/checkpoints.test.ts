/**
 * Single-file checkpoints in the models folder: the real server serves the tiny LDM checkpoint (graphs built by
 * sdx, cached beside it), clip skip works on it, its sidecar shows in /v1/models, and truncated, corrupt or
 * non-SD .safetensors files are listed with a clear problem while the server goes on serving.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFile, mkdtemp, readdir, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSdxClient, type ModelInfo } from "../../sdk/index.ts";
import { FIXTURES, imageDiff, referenceCase } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

let dir: string;
let server: RunningServer;
let client: ReturnType<typeof createSdxClient>;

/** A small valid safetensors file with the given float32 tensors. */
function safetensors(tensors: Record<string, number[]>): Uint8Array {
  let offset = 0;
  const header: Record<string, unknown> = {};
  for (const [name, values] of Object.entries(tensors)) {
    header[name] = {
      dtype: "F32",
      shape: [values.length],
      data_offsets: [offset, offset + values.length * 4],
    };
    offset += values.length * 4;
  }
  const json = new TextEncoder().encode(
    JSON.stringify(header).padEnd(8 * Math.ceil(JSON.stringify(header).length / 8)),
  );
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(new Uint8Array(Float32Array.from(Object.values(tensors).flat()).buffer), 8 + json.length);
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sdx-models-"));
  const source = join(FIXTURES, "checkpoints", "tiny_sd15.safetensors");
  await copyFile(source, join(dir, "tiny_sd15.safetensors"));
  await writeFile(
    join(dir, "tiny_sd15.json"),
    JSON.stringify({
      model_type: "SD",
      base_model: "SD 1.5",
      description: "tiny random weights",
      merged_from: ["a", "b"],
    }),
  );
  const bytes = new Uint8Array(await Bun.file(source).arrayBuffer());
  await writeFile(join(dir, "truncated.safetensors"), bytes.subarray(0, bytes.length - 4096));
  const corrupt = bytes.slice();
  corrupt.set(new TextEncoder().encode("{not json"), 8);
  await writeFile(join(dir, "corrupt.safetensors"), corrupt);
  await writeFile(
    join(dir, "lora.safetensors"),
    safetensors({ "lora_unet_down.alpha": [1], "lora_unet_down.weight": [1, 2] }),
  );
  await writeFile(join(dir, "empty.safetensors"), new Uint8Array(3));
  server = await startServer(["--models-dir", dir, "--model", "tiny_sd15"]);
  client = createSdxClient({ baseUrl: server.url });
});
afterAll(() => server.stop());

describe("the models folder", () => {
  test("lists the checkpoint with its kind and sidecar, and each broken file with a clear problem", async () => {
    const { models } = await client.models.list();
    const byName = new Map<string, ModelInfo>(models.map((m) => [m.name, m]));
    expect(byName.get("tiny_sd15")).toMatchObject({
      format: "safetensors",
      kind: "sd1",
      loadable: true,
      loaded: true,
      sidecar: { model_type: "SD", base_model: "SD 1.5", description: "tiny random weights" },
    });
    expect(byName.get("truncated")?.problem).toContain("truncated or corrupt");
    expect(byName.get("corrupt")?.problem).toContain("not valid JSON");
    expect(byName.get("lora")?.problem).toContain("not a Stable Diffusion checkpoint");
    expect(byName.get("empty")?.problem).toContain("too small");
    for (const name of ["truncated", "corrupt", "lora", "empty"])
      expect(byName.get(name)?.loadable).toBe(false);
    expect((await client.health()).status).toBe("ok");
  });

  test("the graphs are cached beside the checkpoint, with the weights hard-linked rather than copied", async () => {
    const cacheRoot = join(dir, ".sdx-cache");
    const [cache] = (await readdir(cacheRoot)).filter((name) => name !== "hashes.json");
    expect(cache).toMatch(/^tiny_sd15-fp32-mha-lean-[0-9a-f]{16}$/);
    const files = await readdir(join(cacheRoot, cache as string));
    expect(files).toEqual(
      expect.arrayContaining(["text_encoder.onnx", "unet.onnx", "vae_decoder.onnx", "weights.safetensors"]),
    );
    const weights = await stat(join(cacheRoot, cache as string, "weights.safetensors"));
    const original = await stat(join(dir, "tiny_sd15.safetensors"));
    expect(weights.ino === original.ino || weights.size === original.size).toBe(true);
    for (const graph of ["text_encoder.onnx", "unet.onnx", "vae_decoder.onnx"]) {
      expect((await stat(join(cacheRoot, cache as string, graph))).size).toBeLessThan(2_000_000);
    }
  });
});

describe("generation from the checkpoint", () => {
  test("gives the diffusers image, with clip skip", async () => {
    for (const name of ["p04_dpmpp2m_karras20_256", "p06_euler20_clipskip2"]) {
      const ref = await referenceCase(name);
      const res = await client.generate({
        prompt: ref.prompt as string,
        prompt_syntax: "diffusers",
        seed: ref.seed,
        width: ref.width,
        height: ref.height,
        num_steps: ref.num_inference_steps,
        guidance_scale: ref.guidance_scale,
        scheduler_type: name.includes("euler") ? "euler" : "dpmsolver++",
        karras_sigmas: name.includes("karras"),
        clip_skip: (ref.clip_skip ?? 0) + 1,
      });
      const diff = await imageDiff(
        Buffer.from(res.images[0]?.png ?? "", "base64"),
        join(ref.dir, "image_0.png"),
      );
      expect(diff.mean).toBeLessThanOrEqual(0.5);
      expect(diff.max).toBeLessThanOrEqual(4);
    }
  });

  test("a second start reuses the cache", async () => {
    const again = await startServer(["--models-dir", dir, "--model", "tiny_sd15"]);
    try {
      const health = await createSdxClient({ baseUrl: again.url }).health();
      expect(health.status).toBe("ok");
      expect((await readdir(join(dir, ".sdx-cache"))).sort()).toEqual([
        "hashes.json",
        expect.stringMatching(/^tiny_sd15-/),
      ]);
      expect(server.output()).toContain("tiny_sd15: built ONNX graphs from the checkpoint");
      expect(again.output()).toContain("tiny_sd15: reused cached graphs");
    } finally {
      await again.stop();
    }
  });
});
