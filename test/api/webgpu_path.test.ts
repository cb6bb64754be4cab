/**
 * The WebGPU path's server-side wiring that runs without an adapter: --provider webgpu parsed, /health's `webgpu`
 * block (the adapter named by a stand-in vulkaninfo on PATH, float16 or why not) and `provider_fallbacks`, and a
 * host told to run on WebGPU that finds no adapter loading on the CPU, saying why (skipped where an adapter exists).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { readServerConfig } from "../../api/config.ts";
import { ModelHost, type ModelHostOptions } from "../../api/engine/model_host.ts";
import { clearVulkanDeviceCache } from "../../api/engine/onnx/gpu_info.ts";
import { chooseProvider, probeWebGpu } from "../../api/engine/onnx/runtime.ts";
import type { Health } from "../../contract/index.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";
import { startServer } from "../helpers/server.ts";

const dirs: string[] = [];
afterAll(async () => {
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

async function healthOf(
  options: Omit<ModelHostOptions, "modelsDir">,
  modelsDir = join(tmpdir(), "sdx-no-models"),
) {
  const host = new ModelHost({ modelsDir, ...options });
  const res = await createApp(host).handle(new Request("http://127.0.0.1/health"));
  return (await res.json()) as Health;
}

test("--provider webgpu and SDX_PROVIDER=webgpu are accepted; an unknown provider names the choices", () => {
  expect(readServerConfig(["--provider", "webgpu"], {})).toMatchObject({ provider: "webgpu" });
  expect(readServerConfig([], { SDX_PROVIDER: "webgpu" })).toMatchObject({ provider: "webgpu" });
  expect(() => readServerConfig(["--provider", "vulkan"], {})).toThrow(
    '--provider must be one of auto, cpu, cuda, webgpu; got "vulkan"',
  );
});

describe("/health on WebGPU", () => {
  test("names the adapter from vulkaninfo, says float16 or why not, and lists the providers passed over", async () => {
    const bin = await mkdtemp(join(tmpdir(), "sdx-fake-vulkaninfo-"));
    dirs.push(bin);
    await writeFile(
      join(bin, "vulkaninfo"),
      `#!/bin/sh\n[ "$*" = "--summary" ] || exit 2\nprintf 'Devices:\\n========\\nGPU0:\\n\\tapiVersion         = 1.3.277\\n\\tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU\\n\\tdeviceName         = AMD Radeon RX 7900 XTX (RADV NAVI31)\\n\\tdriverInfo         = Mesa 24.2.8\\n'\n`,
    );
    await chmod(join(bin, "vulkaninfo"), 0o755);
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    clearVulkanDeviceCache();
    const fallbacks = [{ provider: "cuda" as const, reason: "no NVIDIA GPU is visible" }];
    try {
      const health = await healthOf({ provider: "webgpu", float16: true, providerFallbacks: fallbacks });
      expect(health.execution_provider).toBe("webgpu");
      expect(health.gpu).toBeNull();
      expect(health.provider_fallbacks).toEqual(fallbacks);
      expect(health.webgpu).toEqual({
        adapter: {
          name: "AMD Radeon RX 7900 XTX (RADV NAVI31)",
          type: "DISCRETE_GPU",
          driver: "Mesa 24.2.8",
          vulkan_version: "1.3.277",
        },
        float16: true,
        note: null,
      });
      const note = "the adapter does not compute float16 (shader-f16: …); checkpoint graphs run in float32";
      const float32 = await healthOf({ provider: "webgpu", float16: false, float16Note: note });
      expect(float32.webgpu).toMatchObject({ float16: false, note });
      // Other providers have no webgpu block.
      const cpu = await healthOf({ provider: "cpu" });
      expect(cpu.webgpu).toBeNull();
      expect(cpu.provider_fallbacks).toEqual([]);
    } finally {
      process.env.PATH = path;
      clearVulkanDeviceCache();
    }
  });

  test("the adapter is null when vulkaninfo is not there", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    clearVulkanDeviceCache();
    try {
      expect((await healthOf({ provider: "webgpu", float16: false })).webgpu?.adapter).toBeNull();
    } finally {
      process.env.PATH = path;
      clearVulkanDeviceCache();
    }
  });
});

const probe = await probeWebGpu();

test.skipIf(probe.ok)(
  "a host on WebGPU without an adapter loads the model on the CPU and /health says why",
  async () => {
    const host = new ModelHost({
      modelsDir: MODELS_DIR,
      provider: "webgpu",
      model: "tiny_sd15",
      float16: true,
    });
    try {
      await host.start();
      const health = (await (
        await createApp(host).handle(new Request("http://127.0.0.1/health"))
      ).json()) as Health;
      expect(health.execution_provider).toBe("cpu");
      expect(health.webgpu).toBeNull();
      expect(health.provider_fallbacks).toHaveLength(1);
      expect(health.provider_fallbacks[0]?.provider).toBe("webgpu");
      expect(health.provider_fallbacks[0]?.reason).toMatch(/^the WebGPU execution provider is not available/);
      expect(health.message).toContain("The webgpu provider fell back to the CPU");
    } finally {
      await host.close();
    }
  },
);

// What auto finds here: the CPU where neither CUDA nor a WebGPU adapter is there (CI).
const auto = await chooseProvider("auto");

test.skipIf(auto.provider !== "cpu")(
  "the server started with auto logs each provider passed over and /health lists them",
  async () => {
    const empty = await mkdtemp(join(tmpdir(), "sdx-webgpu-none-"));
    dirs.push(empty);
    const server = await startServer(["--models-dir", empty, "--provider", "auto"]);
    try {
      const output = server.output();
      expect(output).toContain("sdx: execution provider cuda passed over: ");
      expect(output).toMatch(/sdx: execution provider webgpu passed over: no WebGPU adapter: /);
      expect(output).toContain("sdx: execution provider cpu (cuda: ");
      const health = (await (await fetch(`${server.url}/health`)).json()) as Health;
      expect(health.provider_fallbacks.map((f) => f.provider)).toEqual(["cuda", "webgpu"]);
      expect(health.provider_fallbacks).toEqual(auto.fallbacks);
    } finally {
      await server.stop();
    }
  },
);
