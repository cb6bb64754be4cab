/**
 * `bun run bench gpu`: the whole text-to-image pipeline on an NVIDIA GPU through onnxruntime's CUDA provider, at
 * full size with random weights of the real shapes (api/engine/checkpoint/ldm_layout.ts presets, as the full-size check writes):
 * - SD 1.5 (runwayml v1-5-pruned-emaonly layout), 512×512, a default request (the contract's GENERATE_DEFAULTS:
 *   sampler, steps, CFG), batch 1;
 * - SDXL (sd_xl_base_1.0 layout), 1024×1024, the same settings.
 * Each model: checkpoint written once into the cache folder (reused after), graphs built (float16, fused
 * MultiHeadAttention: the CUDA path), sessions loaded, one warm-up generation at the same size, then `--runs`
 * timed generations. Reported per run: seconds per image, UNet iterations per second (denoising steps per second
 * of the denoising stage; each step is one UNet call at CFG's batch 2) and the share of wall time spent outside
 * onnxruntime's `run`; then the published anchors with our time's ratio to them.
 *
 * Without CUDA (no NVIDIA GPU, or onnxruntime-node's CUDA provider libraries missing) it prints one line,
 * `bench gpu: no CUDA (reason); nothing measured`, and exits 0. `--provider webgpu` runs the same on onnxruntime's
 * WebGPU provider (float16 graphs where the adapter has shader-f16), or says `bench gpu: no WebGPU (reason)`. `--cpu` runs the same code on the CPU provider
 * over random-weight checkpoints of the tiny fixture models' shapes (presets tiny_sd15 and tiny_sdxl; 64×64,
 * 3 steps, fused attention as on CUDA): a smoke test of this script, not a measurement.
 *
 *   bun run bench gpu [--only sd15|sdxl] [--runs 3] [--steps 30] [--cache DIR] [--cpu | --provider cuda|webgpu]
 */

import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { parseArgs } from "node:util";
import type { PresetName } from "../api/engine/checkpoint/ldm_layout.ts";
import { inspectCheckpoint } from "../api/engine/model_folder.ts";
import { type GpuInfo, gpuInfo, type VulkanDevice, vulkanDevice } from "../api/engine/onnx/gpu_info.ts";
import { chooseProvider, onnxruntimeVersion, runStats } from "../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../api/engine/pipeline/load.ts";
import { generate } from "../api/engine/pipeline/text_to_image.ts";
import type { PipelineComponents } from "../api/engine/pipeline/types.ts";
import { warmUp } from "../api/engine/pipeline/warmup.ts";
import { type ExecutionProvider, GENERATE_DEFAULTS } from "../contract/index.ts";
import { median, printTable } from "./engine.ts";
import { benchRequest, randomCheckpoint } from "./full_size.ts";

/** A published figure to compare against: `seconds` for `steps` denoising steps at the same size and settings. */
interface Anchor {
  label: string;
  seconds: number;
  steps: number;
}

interface BenchModel {
  name: string;
  size: number;
  /** The random-weight checkpoint preset (api/engine/checkpoint/ldm_layout.ts) and the sidecar it needs, if any. */
  preset: PresetName;
  sidecar?: Record<string, unknown>;
  anchor: Anchor | null;
}

const GPU_MODELS: BenchModel[] = [
  {
    name: "sd15",
    size: 512,
    preset: "sd15",
    anchor: { label: "ONNX Runtime CUDA SD 1.5 pipeline, H100", seconds: 0.57, steps: 50 },
  },
  {
    name: "sdxl",
    size: 1024,
    preset: "sdxl",
    anchor: { label: "TensorRT SDXL, H100", seconds: 1.47, steps: 30 },
  },
];

/** The same two families at the tiny fixture models' shapes (random weights too). */
const CPU_SMOKE_MODELS: BenchModel[] = [
  { name: "sd15", size: 64, preset: "tiny_sd15", anchor: null },
  // The tiny SDXL's attention heads (2, 4, 8) are not in its weights: its sidecar names them.
  { name: "sdxl", size: 64, preset: "tiny_sdxl", sidecar: { unet_attention_heads: [2, 4, 8] }, anchor: null },
];

const NO_PROVIDER_PREFIX = { cuda: "bench gpu: no CUDA", webgpu: "bench gpu: no WebGPU" } as const;
const USAGE =
  "usage: bun run bench gpu [--only sd15|sdxl] [--runs 3] [--steps 30] [--cache DIR] [--cpu | --provider cuda|webgpu]";

const seconds = (ms: number, digits = 3) => (ms / 1000).toFixed(digits);

/** What the graph folder's name says: precision and attention variant (…-fp16-mha-<key>). */
function graphsOf(pipeline: PipelineComponents): string {
  const folder = basename(dirname(pipeline.files.unet));
  const precision = /-fp16(-|$)/.test(folder) ? "float16" : "float32";
  return `${precision}, ${/-mha-/.test(folder) ? "fused MultiHeadAttention" : "plain attention"}`;
}

interface ModelResult {
  rows: string[][];
  notes: string[];
  /** Median seconds per image of the timed runs. */
  median: number;
}

async function benchModel(
  model: BenchModel,
  provider: ExecutionProvider,
  precision: "float32" | "float16" | undefined,
  cacheDir: string,
  runs: number,
  steps: number,
): Promise<ModelResult> {
  const notes: string[] = [];
  const { path, note } = await randomCheckpoint(model.preset, cacheDir, model.sidecar);
  notes.push(`${model.name}: ${note}`);
  const entry = await inspectCheckpoint(model.name, path);
  if (entry.problem) throw new Error(`${path}: ${entry.problem}`);
  const loadStart = performance.now();
  // The GPU path's graphs (fused attention) on either provider: the --cpu smoke runs them in float32.
  const pipeline = await loadOnnxPipeline(entry, provider, {
    attention: "fused",
    ...(precision ? { precision } : {}),
  });
  const loadMs = performance.now() - loadStart;
  try {
    const built = pipeline.checkpointGraphs;
    notes.push(
      `${model.name}: graphs ${built?.reused ? "reused" : `built in ${seconds(built?.buildMs ?? 0)} s`} (${graphsOf(pipeline)}); ` +
        `sessions loaded in ${seconds(loadMs, 1)} s`,
    );
    const warm = await warmUp(pipeline, { size: model.size });
    notes.push(
      `${model.name}: warm-up (${warm.steps} steps at ${warm.width}×${warm.height}) ${seconds(warm.ms)} s`,
    );
    const rows: string[][] = [];
    const times: number[] = [];
    for (let run = 1; run <= runs; run++) {
      const before = { ...runStats };
      const started = performance.now();
      const out = await generate(pipeline, benchRequest(model.size, steps, 41 + run));
      const wall = performance.now() - started;
      const inside = runStats.ms - before.ms;
      times.push(wall);
      const anchor = model.anchor;
      const anchorSeconds = anchor ? (anchor.seconds * steps) / anchor.steps : null;
      rows.push([
        model.name,
        `${model.size}×${model.size}`,
        String(steps),
        String(run),
        seconds(wall),
        (steps / (out.timings.denoiseMs / 1000)).toFixed(2),
        seconds(inside),
        `${(((wall - inside) / wall) * 100).toFixed(2)} %`,
        anchorSeconds === null ? "–" : anchorSeconds.toFixed(3),
        anchorSeconds === null ? "–" : `${(wall / 1000 / anchorSeconds).toFixed(2)}×`,
      ]);
    }
    return { rows, notes, median: median(times) / 1000 };
  } finally {
    await releasePipeline(pipeline);
  }
}

const describeGpu = (gpu: GpuInfo | null) =>
  gpu === null
    ? "GPU: nvidia-smi gave no answer"
    : `GPU: ${gpu.name}, ${gpu.memoryTotalMiB} MiB, ${gpu.memoryUsedMiB ?? "?"} MiB in use, driver ${gpu.driverVersion}`;

const describeVulkan = (device: VulkanDevice | null) =>
  device === null
    ? "adapter: vulkaninfo gave no answer"
    : `adapter: ${device.name} (${device.type}), driver ${device.driver}, Vulkan ${device.apiVersion}`;

export async function benchGpu(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: "string" },
      runs: { type: "string" },
      steps: { type: "string" },
      cache: { type: "string", default: join(tmpdir(), "sdx-bench-gpu") },
      cpu: { type: "boolean", default: false },
      provider: { type: "string", default: "cuda" },
    },
  });
  const gpuProvider = values.provider;
  if (gpuProvider !== "cuda" && gpuProvider !== "webgpu") {
    console.error(`--provider must be cuda or webgpu; got "${gpuProvider}"\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const cpu = values.cpu;
  const runs = Math.max(1, Number(values.runs ?? (cpu ? 1 : 3)) || 1);
  const steps = Math.max(1, Number(values.steps ?? (cpu ? 3 : GENERATE_DEFAULTS.num_steps)) || 1);
  const models = (cpu ? CPU_SMOKE_MODELS : GPU_MODELS).filter((m) => !values.only || m.name === values.only);
  if (models.length === 0) {
    console.error(USAGE);
    process.exitCode = 2;
    return;
  }

  let provider: ExecutionProvider = "cpu";
  let precision: "float32" | "float16" | undefined;
  let precisionNote = "";
  if (!cpu) {
    const choice = await chooseProvider(gpuProvider === "cuda" ? "auto" : "webgpu");
    if (choice.provider !== gpuProvider) {
      const reason = choice.fallbacks.find((f) => f.provider === gpuProvider)?.reason ?? choice.reason;
      console.log(`${NO_PROVIDER_PREFIX[gpuProvider]} (${reason}); nothing measured`);
      return;
    }
    provider = gpuProvider;
    precision = choice.float16 ? "float16" : "float32";
    precisionNote = choice.float16Note ? ` (${choice.float16Note})` : "";
  }
  const cacheDir = cpu ? join(values.cache, "cpu-smoke") : values.cache;
  await mkdir(cacheDir, { recursive: true });

  const header = cpu
    ? "bench gpu --cpu: smoke of the GPU benchmark's code on the CPU provider, tiny random-weight models (not a measurement)"
    : provider === "webgpu"
      ? `bench gpu: onnxruntime-node ${onnxruntimeVersion}, WebGPU provider, ${precision} graphs${precisionNote}; ${describeVulkan(await vulkanDevice())}`
      : `bench gpu: onnxruntime-node ${onnxruntimeVersion}, CUDA provider; ${describeGpu(await gpuInfo({ cacheMs: 0 }))}`;
  console.log(header);
  console.log(
    `settings: ${steps} steps of ${GENERATE_DEFAULTS.scheduler_type}, CFG ${GENERATE_DEFAULTS.guidance_scale}, batch 1, ${runs} timed run(s) after one warm-up; cache ${cacheDir}`,
  );

  const rows: string[][] = [];
  const notes: string[] = [];
  const summary: string[] = [];
  let failed = false;
  for (const model of models) {
    try {
      const result = await benchModel(model, provider, precision, cacheDir, runs, steps);
      rows.push(...result.rows);
      notes.push(...result.notes);
      if (model.anchor) {
        const scaled = (model.anchor.seconds * steps) / model.anchor.steps;
        summary.push(
          `${model.name}: median ${result.median.toFixed(3)} s/image; anchor ${model.anchor.label}: ${model.anchor.seconds} s for ` +
            `${model.anchor.steps} steps` +
            (model.anchor.steps !== steps ? ` (${scaled.toFixed(3)} s scaled to ${steps} steps)` : "") +
            `; ratio ${(result.median / scaled).toFixed(2)}× (${result.median <= scaled ? "beats it" : "slower"})`,
        );
      }
    } catch (e) {
      failed = true;
      const message = e instanceof Error ? e.message : String(e);
      notes.push(`${model.name}: FAILED: ${message.split("\n")[0]}`);
    }
    Bun.gc(true);
  }
  for (const line of notes) console.log(line);
  printTable([
    [
      "model",
      "size",
      "steps",
      "run",
      "s/image",
      "UNet it/s",
      "in ORT s",
      "outside share",
      "anchor s",
      "vs anchor",
    ],
    ...rows,
  ]);
  for (const line of summary) console.log(line);
  if (!cpu) {
    if (provider === "cuda")
      console.log(describeGpu(await gpuInfo({ cacheMs: 0 })).replace("GPU:", "GPU after:"));
    console.log(
      "UNet it/s: denoising steps per second (one UNet call at CFG's batch 2 each); anchor s: the published time " +
        "scaled linearly to these steps; vs anchor < 1× beats it",
    );
  }
  if (failed) process.exitCode = 1;
}
