/**
 * The WebGPU execution provider: auto's order (CUDA, WebGPU, CPU) over stand-in probe results, the session
 * options, the adapter named from vulkaninfo's summary, and — where Dawn finds an adapter — real sessions on it
 * (the tiny VAE decoder and a fused MultiHeadAttention graph against the CPU). Where none exists (CI: no GPU, and
 * Debian 12's lavapipe lacks what Dawn requires) the real-session tests are skipped with the probe's reason, and
 * the provider's "not available" error is checked instead.
 */
import { describe, expect, test } from "bun:test";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CONTRIB_DOMAIN, multiHeadAttention } from "../../api/engine/checkpoint/attention_variant.ts";
import { inspectCheckpoint } from "../../api/engine/model_folder.ts";
import { parseVulkanSummary, preferredVulkanDevice, vulkanDevice } from "../../api/engine/onnx/gpu_info.ts";
import { GraphBuilder } from "../../api/engine/onnx/graph_builder.ts";
import {
  chooseProvider,
  OnnxModel,
  OnnxRunError,
  type ProviderProbes,
  probeWebGpu,
  sessionOptionsFor,
  type WebGpuProbe,
  webGpuProviderOptions,
} from "../../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import { FIXTURES, MODELS_DIR } from "../helpers/fixtures.ts";

/** Probes that answer as given and count their calls. */
function probes(cuda: { ok: boolean; reason: string }, webgpu: WebGpuProbe) {
  const calls = { cuda: 0, webgpu: 0 };
  const fake: ProviderProbes = {
    cuda: () => {
      calls.cuda++;
      return cuda;
    },
    webgpu: async () => {
      calls.webgpu++;
      return webgpu;
    },
  };
  return { fake, calls };
}

const NO_CUDA = { ok: false, reason: "no NVIDIA GPU is visible" };
const CUDA = { ok: true, reason: "an NVIDIA GPU is visible and the CUDA provider libraries are installed" };
const NO_ADAPTER_REASON = "no WebGPU adapter: No supported adapters";
const NO_ADAPTER: WebGpuProbe = { ok: false, reason: NO_ADAPTER_REASON };
const F16: WebGpuProbe = { ok: true, shaderF16: true, f16Error: null };
const NO_F16: WebGpuProbe = { ok: true, shaderF16: false, f16Error: "float16 Add has no WebGPU kernel" };

describe("auto: CUDA, then WebGPU, then the CPU", () => {
  test("CUDA first: WebGPU is not even probed", async () => {
    const { fake, calls } = probes(CUDA, F16);
    expect(await chooseProvider("auto", fake)).toEqual({
      provider: "cuda",
      reason: CUDA.reason,
      fallbacks: [],
      float16: true,
      float16Note: null,
    });
    expect(calls).toEqual({ cuda: 1, webgpu: 0 });
  });

  test("no CUDA: WebGPU, float16 where the adapter computes it, CUDA's reason kept", async () => {
    expect(await chooseProvider("auto", probes(NO_CUDA, F16).fake)).toEqual({
      provider: "webgpu",
      reason: "a WebGPU adapter runs the probe graph",
      fallbacks: [{ provider: "cuda", reason: NO_CUDA.reason }],
      float16: true,
      float16Note: null,
    });
    const noF16 = await chooseProvider("auto", probes(NO_CUDA, NO_F16).fake);
    expect(noF16).toMatchObject({ provider: "webgpu", float16: false });
    expect(noF16.float16Note).toContain("float16 Add has no WebGPU kernel");
    expect(noF16.float16Note).toContain("float32");
  });

  test("neither: the CPU, each provider passed over with its reason", async () => {
    const chosen = await chooseProvider("auto", probes(NO_CUDA, NO_ADAPTER).fake);
    expect(chosen.provider).toBe("cpu");
    expect(chosen.float16).toBe(false);
    expect(chosen.fallbacks).toEqual([
      { provider: "cuda", reason: NO_CUDA.reason },
      { provider: "webgpu", reason: NO_ADAPTER_REASON },
    ]);
    expect(chosen.reason).toBe(`cuda: ${NO_CUDA.reason}; webgpu: no WebGPU adapter: No supported adapters`);
  });

  test("--provider webgpu probes WebGPU only; without an adapter it runs on the CPU, saying why", async () => {
    const ok = probes(CUDA, NO_F16);
    expect(await chooseProvider("webgpu", ok.fake)).toMatchObject({
      provider: "webgpu",
      reason: "requested with --provider webgpu",
      fallbacks: [],
      float16: false,
    });
    expect(ok.calls).toEqual({ cuda: 0, webgpu: 1 });
    const missing = await chooseProvider("webgpu", probes(CUDA, NO_ADAPTER).fake);
    expect(missing.provider).toBe("cpu");
    expect(missing.reason).toBe(
      "--provider webgpu was requested but no WebGPU adapter: No supported adapters",
    );
    expect(missing.fallbacks.map((f) => f.provider)).toEqual(["webgpu"]);
  });

  test("--provider cpu and cuda probe nothing", async () => {
    const { fake, calls } = probes(NO_CUDA, F16);
    expect((await chooseProvider("cpu", fake)).provider).toBe("cpu");
    expect((await chooseProvider("cuda", fake)).provider).toBe("cuda");
    expect(calls).toEqual({ cuda: 0, webgpu: 0 });
  });
});

test("WebGPU session options: the WebGPU provider with the CPU behind it, one queue, no graph capture", () => {
  const options = sessionOptionsFor({ provider: "webgpu" });
  expect(options.executionProviders).toEqual([webGpuProviderOptions(), "cpu"]);
  expect(options).toMatchObject({ graphOptimizationLevel: "all", executionMode: "sequential" });
  expect(webGpuProviderOptions()).toEqual({ name: "webgpu" });
  // Graph capture needs fixed shapes; a deviceId above 0 needs a caller-made Dawn device.
  expect(webGpuProviderOptions()).not.toHaveProperty("enableGraphCapture");
  expect(webGpuProviderOptions()).not.toHaveProperty("deviceId");
});

/** `vulkaninfo --summary` on Debian 12 with mesa-vulkan-drivers 22.3.6 (lavapipe), Devices part. */
const LAVAPIPE_SUMMARY = `Vulkan Instance Version: 1.3.239

Instance Extensions: count = 20
-------------------------------
VK_EXT_debug_report                    : extension revision 10

Devices:
========
GPU0:
	apiVersion         = 1.3.230
	driverVersion      = 0.0.1
	vendorID           = 0x10005
	deviceID           = 0x0000
	deviceType         = PHYSICAL_DEVICE_TYPE_CPU
	deviceName         = llvmpipe (LLVM 15.0.6, 256 bits)
	driverID           = DRIVER_ID_MESA_LLVMPIPE
	driverName         = llvmpipe
	driverInfo         = Mesa 22.3.6 (LLVM 15.0.6)
	conformanceVersion = 1.3.1.1
`;

/** The same format with an NVIDIA GPU listed after lavapipe (its driverInfo is the driver version). */
const TWO_DEVICES = LAVAPIPE_SUMMARY.concat(`GPU1:
	apiVersion         = 1.3.277
	driverVersion      = 550.54.15.0
	deviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU
	deviceName         = NVIDIA H100 80GB HBM3
	driverName         = NVIDIA
	driverInfo         = 550.54.15
`);

describe("the adapter's name from vulkaninfo --summary", () => {
  test("each device's name, type, driver and Vulkan version", () => {
    expect(parseVulkanSummary(LAVAPIPE_SUMMARY)).toEqual([
      {
        name: "llvmpipe (LLVM 15.0.6, 256 bits)",
        type: "CPU",
        driver: "Mesa 22.3.6 (LLVM 15.0.6)",
        apiVersion: "1.3.230",
      },
    ]);
    expect(parseVulkanSummary("vulkaninfo: no devices\n")).toEqual([]);
  });

  test("a discrete GPU before a CPU rasterizer, as Dawn's default request picks", async () => {
    const devices = parseVulkanSummary(TWO_DEVICES);
    expect(devices.map((d) => d.type)).toEqual(["CPU", "DISCRETE_GPU"]);
    expect(preferredVulkanDevice(devices)?.name).toBe("NVIDIA H100 80GB HBM3");
    expect(preferredVulkanDevice([])).toBeNull();
    const seen: string[][] = [];
    const run = async (argv: readonly string[]) => {
      seen.push([...argv]);
      return TWO_DEVICES;
    };
    expect((await vulkanDevice({ run }))?.driver).toBe("550.54.15");
    expect(seen).toEqual([["vulkaninfo", "--summary"]]);
    expect(await vulkanDevice({ run: async () => null })).toBeNull();
  });
});

test("the precision the host asks for (float16 on WebGPU with shader-f16) decides the checkpoint's graphs", async () => {
  const models = await mkdtemp(join(tmpdir(), "sdx-webgpu-precision-"));
  try {
    const path = join(models, "tiny.safetensors");
    await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), path);
    const entry = await inspectCheckpoint("tiny", path);
    // Loaded on the CPU provider, which runs these graphs too: only the build is under test (with the folded
    // weights a GPU provider's float32 graphs get).
    for (const precision of ["float16", "float32"] as const) {
      const pipeline = await loadOnnxPipeline(entry, "cpu", {
        precision,
        attention: "fused",
        residency: "folded",
      });
      try {
        const folder = precision === "float16" ? "fp16" : "fp32";
        expect(pipeline.files.unet).toMatch(new RegExp(`/tiny-${folder}-mha-[0-9a-f]{16}/unet\\.onnx$`));
      } finally {
        await releasePipeline(pipeline);
      }
    }
  } finally {
    await rm(models, { recursive: true, force: true });
  }
}, 60_000);

const probe = await probeWebGpu();
const skipReason = probe.ok ? null : probe.reason;
if (skipReason) console.log(`webgpu_provider.test.ts: real WebGPU sessions skipped: ${skipReason}`);

const VAE_DECODER = join(MODELS_DIR, "tiny_sd15", "vae_decoder", "model.onnx");

/** Deterministic values in [-1, 1). */
const values = (n: number, seed: number) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 12.9898 + i * 78.233) % 1);

const maxAbsDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, v, i) => Math.max(m, Math.abs(v - (b[i] ?? 0))), 0);

describe("on a WebGPU adapter", () => {
  test.skipIf(!probe.ok)("the tiny VAE decoder gives the CPU's pixels", async () => {
    const feeds = { latent_sample: { data: values(4 * 8 * 8, 1), dims: [1, 4, 8, 8] } };
    const [gpu, cpu] = await Promise.all([
      OnnxModel.load(VAE_DECODER, { provider: "webgpu" }),
      OnnxModel.load(VAE_DECODER, { provider: "cpu" }),
    ]);
    const a = (await gpu.run(feeds)).sample;
    const b = (await cpu.run(feeds)).sample;
    expect(a?.dims).toEqual(b?.dims as number[]);
    expect(maxAbsDiff(a?.data as Float32Array, b?.data as Float32Array)).toBeLessThan(1e-3);
    await Promise.all([gpu.release(), cpu.release()]);
  });

  test.skipIf(!probe.ok)("fused MultiHeadAttention runs on it and matches the CPU's kernel", async () => {
    const g = new GraphBuilder("mha", 17, { [CONTRIB_DOMAIN]: 1 });
    const [q, k, v] = ["q", "k", "v"].map((n) => g.input(n, "float32", [1, n === "q" ? 16 : 7, 32]));
    g.output(
      multiHeadAttention(g, q as string, k as string, v as string, 4, 8),
      "out",
      "float32",
      [1, 16, 32],
    );
    const bytes = g.toBytes();
    const feeds = {
      q: { data: values(16 * 32, 2), dims: [1, 16, 32] },
      k: { data: values(7 * 32, 3), dims: [1, 7, 32] },
      v: { data: values(7 * 32, 4), dims: [1, 7, 32] },
    };
    const gpu = await OnnxModel.fromBytes("mha.onnx", bytes, { provider: "webgpu" });
    const cpu = await OnnxModel.fromBytes("mha.onnx", bytes, { provider: "cpu" });
    const diff = maxAbsDiff(
      (await gpu.run(feeds)).out?.data as Float32Array,
      (await cpu.run(feeds)).out?.data as Float32Array,
    );
    expect(diff).toBeLessThan(1e-4);
    await Promise.all([gpu.release(), cpu.release()]);
    console.log(
      `webgpu: shader-f16 ${probe.ok && probe.shaderF16 ? "yes" : `no (${probe.ok ? probe.f16Error : ""})`}`,
    );
  });

  test.skipIf(probe.ok)(
    "without one, loading on WebGPU says the provider is not available and how to go on",
    async () => {
      const error = await OnnxModel.load(VAE_DECODER, { provider: "webgpu" }).catch((e) => e);
      expect(error).toBeInstanceOf(OnnxRunError);
      expect(error.message).toMatch(/^the WebGPU execution provider is not available \(.+\)/);
      expect(error.message).toContain("--provider cpu");
      expect(skipReason).toMatch(/^no WebGPU adapter: /);
    },
  );
});
