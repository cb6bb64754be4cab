/**
 * The GPU path's server-side wiring that runs without a GPU: /health's `gpu` block read from nvidia-smi (here a
 * stand-in script on PATH printing what nvidia-smi prints for the query), the warm-up after the startup load, and
 * --attention reaching the graphs built from a checkpoint.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmod, copyFile, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { clearGpuInfoCache } from "../../api/engine/onnx/gpu_info.ts";
import { createSdxClient } from "../../sdk/index.ts";
import { FIXTURES, imageDiff, MODELS_DIR } from "../helpers/fixtures.ts";
import { startServer } from "../helpers/server.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function healthOf(provider: "cpu" | "cuda") {
  const host = new ModelHost({ modelsDir: join(tmpdir(), "sdx-no-models"), provider });
  const res = await createApp(host).handle(new Request("http://127.0.0.1/health"));
  return (await res.json()) as { gpu: unknown };
}

describe("/health on CUDA", () => {
  test("reports the GPU's name, memory and driver from nvidia-smi", async () => {
    const bin = await mkdtemp(join(tmpdir(), "sdx-fake-smi-"));
    dirs.push(bin);
    const smi = join(bin, "nvidia-smi");
    // nvidia-smi --query-gpu=index,name,memory.total,memory.used,driver_version --format=csv,noheader,nounits
    await writeFile(
      smi,
      `#!/bin/sh\ncase "$*" in *--query-gpu=index,name,memory.total,memory.used,driver_version*) ;; *) exit 2;; esac\nprintf '0, NVIDIA H100 80GB HBM3, 81559, 1234, 550.54.15\\n'\n`,
    );
    await chmod(smi, 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    clearGpuInfoCache();
    try {
      expect((await healthOf("cuda")).gpu).toEqual({
        index: 0,
        name: "NVIDIA H100 80GB HBM3",
        memory_total_mib: 81559,
        memory_used_mib: 1234,
        driver_version: "550.54.15",
      });
      // The CPU provider never asks.
      expect((await healthOf("cpu")).gpu).toBeNull();
    } finally {
      process.env.PATH = path;
      clearGpuInfoCache();
    }
  });

  test("is null when nvidia-smi is not there", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    clearGpuInfoCache();
    try {
      expect((await healthOf("cuda")).gpu).toBeNull();
    } finally {
      process.env.PATH = path;
      clearGpuInfoCache();
    }
  });
});

describe("warm-up", () => {
  test("--warm-up on runs one short generation after the startup load, before /health says ok", async () => {
    const server = await startServer(["--models-dir", MODELS_DIR, "--warm-up", "on"]);
    try {
      expect(server.output()).toMatch(/tiny_sd15: warmed up at \d+×\d+ in \d+ ms/);
      const health = (await (await fetch(`${server.url}/health`)).json()) as { status: string };
      expect(health.status).toBe("ok");
    } finally {
      await server.stop();
    }
  });

  test("auto warms up on CUDA only, so a CPU server starts without one; a bad mode is a usage error", async () => {
    const server = await startServer(["--models-dir", MODELS_DIR]);
    try {
      expect(server.output()).not.toContain("warmed up");
    } finally {
      await server.stop();
    }
    const proc = Bun.spawn(["bun", "api/index.ts", "--warm-up", "sometimes"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(await proc.exited).toBe(2);
    expect(await new Response(proc.stderr).text()).toContain("--warm-up must be one of auto, on, off");
  });
});

describe("--attention", () => {
  test("fused builds the checkpoint's UNet with MultiHeadAttention, giving the plain graph's image", async () => {
    const pngs: Buffer[] = [];
    for (const attention of ["plain", "fused"]) {
      const dir = await mkdtemp(join(tmpdir(), `sdx-attention-${attention}-`));
      dirs.push(dir);
      await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), join(dir, "tiny.safetensors"));
      const server = await startServer(["--models-dir", dir, "--attention", attention]);
      try {
        const res = await createSdxClient({ baseUrl: server.url }).generate({
          prompt: "a red fox",
          seed: 3,
          width: 64,
          height: 64,
          num_steps: 3,
        });
        pngs.push(Buffer.from(res.images[0]?.png ?? "", "base64"));
      } finally {
        await server.stop();
      }
      const caches = (await readdir(join(dir, ".sdx-cache"))).filter((f) => f !== "hashes.json");
      expect(caches).toEqual([
        // The CPU's lean weights: "-lean" after the attention tag.
        expect.stringMatching(attention === "fused" ? /^tiny-fp32-mha-lean-/ : /^tiny-fp32-lean-[0-9a-f]+$/),
      ]);
    }
    const diff = await imageDiff(pngs[1] as Buffer, pngs[0] as Buffer);
    expect(diff.max).toBeLessThanOrEqual(1);
  });
});
