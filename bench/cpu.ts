/**
 * `bun run bench cpu`: full-size SD 1.5 on the CPU provider, one generation per variant of the graphs sdx can run,
 * each variant in a child process of its own so that its peak RSS (VmHWM, load included) is its own.
 *
 * Model: random fp16 weights with v1-5-pruned-emaonly's exact keys and shapes (bench/full_size.ts, as `bench gpu`),
 * 512×512, the contract's default sampler (DPM++ 2M) with classifier-free guidance (CFG 7.5: each step is one UNet
 * call at batch 2), `--steps` steps. Reported per variant: session load time, RSS after load, text-encoder time
 * (both prompts), seconds per denoising step (median of the steps, and the first step apart: onnxruntime's first
 * call allocates), VAE decode time, peak RSS.
 *
 * Variants:
 * - checkpoint graphs (sdx's builder): plain or fused attention × folded or lean weights
 *   (api/engine/checkpoint/attention_variant.ts, weight_residency.ts); `fused-lean` is the CPU default;
 * - an optimum-layout ONNX folder (`folder`, `folder-fused`): no exporter is at hand here (no torch), so the folder
 *   holds sdx's own plain float32 graphs laid out as optimum writes them (bench/optimum_folder.ts), and is loaded
 *   like every other ONNX folder — as it is, then with its UNet rewritten into MultiHeadAttention at load
 *   (api/engine/pipeline/folder_attention.ts).
 *
 * `--tiny` runs every variant on the tiny fixture model's shapes at 64×64 instead: a smoke test of this script (CI
 * runs it: test/engine/bench_cpu.test.ts), whose times mean nothing.
 *
 *   bun run bench cpu [--steps 4] [--only NAME[,NAME…]] [--cache DIR] [--tiny]
 */
import { spawn } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { AttentionVariant } from "../api/engine/checkpoint/attention_variant.ts";
import type { PresetName } from "../api/engine/checkpoint/ldm_layout.ts";
import type { WeightResidency } from "../api/engine/checkpoint/weight_residency.ts";
import { inspectCheckpoint, inspectModelFolder } from "../api/engine/model_folder.ts";
import { onnxruntimeVersion } from "../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../api/engine/pipeline/load.ts";
import { Residency } from "../api/engine/pipeline/residency.ts";
import { generate } from "../api/engine/pipeline/text_to_image.ts";
import type { Stage } from "../api/engine/pipeline/types.ts";
import { GENERATE_DEFAULTS } from "../contract/index.ts";
import { median, printTable } from "./engine.ts";
import { benchRequest, randomCheckpoint } from "./full_size.ts";
import { readMemory, resetPeakRss } from "./load.ts";
import { writeExportShapedFolder } from "./optimum_folder.ts";

interface Variant {
  source: "checkpoint" | "folder";
  attention: AttentionVariant;
  /** Checkpoint graphs only: ONNX folders hold their float32 weights as the export wrote them. */
  residency?: WeightResidency;
  /** Only the running stage's sessions are kept (enable_model_cpu_offload); the others are released. */
  releaseStages?: boolean;
  label: string;
}

const VARIANTS: Record<string, Variant> = {
  "plain-folded": {
    source: "checkpoint",
    attention: "plain",
    residency: "folded",
    label: "plain attention, weights folded to float32 (the CPU default before)",
  },
  "fused-folded": {
    source: "checkpoint",
    attention: "fused",
    residency: "folded",
    label: "MultiHeadAttention, weights folded to float32 (--weights folded)",
  },
  "fused-lean": {
    source: "checkpoint",
    attention: "fused",
    residency: "lean",
    label: "MultiHeadAttention, float16 weights kept below the two highest resolutions (the CPU default)",
  },
  "fused-lean-release": {
    source: "checkpoint",
    attention: "fused",
    residency: "lean",
    releaseStages: true,
    label:
      "the CPU default with enable_model_cpu_offload: each stage's sessions created as it begins, released after",
  },
  folder: { source: "folder", attention: "plain", label: "optimum-layout ONNX folder as exported" },
  "folder-fused": {
    source: "folder",
    attention: "fused",
    label: "the same folder, its UNet rewritten into MultiHeadAttention at load",
  },
};

/** The full-size run, and `--tiny`: the tiny fixture model's shapes at 64×64, a smoke test of this script. */
const RUNS = {
  full: { preset: "sd15", size: 512 },
  tiny: { preset: "tiny_sd15", size: 64 },
} as const satisfies Record<string, { preset: PresetName; size: number }>;
const RESULT_PREFIX = "CPU_RESULT ";
const USAGE = `usage: bun run bench cpu [--steps 4] [--only ${Object.keys(VARIANTS).join(",")}] [--cache DIR] [--tiny]`;
const GB = 1024 ** 3;

interface Result {
  variant: string;
  loadMs: number;
  rssAfterLoad: number;
  encodeMs: number;
  firstStepMs: number;
  medianStepMs: number;
  decodeMs: number;
  peakRss: number;
  /** Peak RSS while each stage ran (VmHWM reset as it began). */
  stagePeaks: Partial<Record<Stage, number>>;
}

/** One variant, in this process: load, one generation, the figures on one line of stdout. */
async function runVariant(
  name: string,
  variant: Variant,
  path: string,
  steps: number,
  size: number,
): Promise<void> {
  const entry =
    variant.source === "checkpoint"
      ? await inspectCheckpoint(name, path)
      : await inspectModelFolder(name, path);
  if (entry.problem) throw new Error(`${path}: ${entry.problem}`);
  const loadStart = performance.now();
  const pipeline = await loadOnnxPipeline(entry, "cpu", {
    attention: variant.attention,
    ...(variant.residency ? { residency: variant.residency } : {}),
  });
  const loadMs = performance.now() - loadStart;
  const rssAfterLoad = readMemory().rss;
  try {
    const stepMs: number[] = [];
    let last = 0;
    const stagePeaks: Partial<Record<Stage, number>> = {};
    let stage: Stage | null = null;
    const closeStage = () => {
      if (stage) stagePeaks[stage] = Math.max(stagePeaks[stage] ?? 0, readMemory().hwm);
    };
    const peakBeforeRun = readMemory().hwm;
    const residency = new Residency(pipeline);
    const enter = residency.enterStage(variant.releaseStages ?? false);
    const out = await generate(pipeline, benchRequest(size, steps, 42), {
      enterStage: async (next) => {
        closeStage();
        resetPeakRss();
        stage = next;
        await enter(next);
      },
      onStep: () => {
        const now = performance.now();
        if (last > 0) stepMs.push(now - last);
        last = now;
      },
    });
    closeStage();
    // The first step ends at the first event; its start is where the denoising stage began.
    const firstStepMs = out.timings.denoiseMs - stepMs.reduce((a, b) => a + b, 0);
    const result: Result = {
      variant: name,
      loadMs,
      rssAfterLoad,
      encodeMs: out.timings.encodeMs,
      firstStepMs,
      medianStepMs: stepMs.length > 0 ? median(stepMs) : firstStepMs,
      decodeMs: out.timings.decodeMs,
      peakRss: Math.max(peakBeforeRun, ...Object.values(stagePeaks)),
      stagePeaks,
    };
    console.log(`${RESULT_PREFIX}${JSON.stringify(result)}`);
  } finally {
    await releasePipeline(pipeline);
  }
}

/** Runs one variant in a child process; its result, or why it failed. */
function child(name: string, path: string, steps: number, size: number): Promise<Result | string> {
  return new Promise((resolve) => {
    const proc = spawn(
      process.execPath,
      [
        join(import.meta.dir, "index.ts"),
        "cpu",
        ...["--child", name, "--path", path, "--steps", String(steps), "--size", String(size)],
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    proc.stdout.on("data", (d) => {
      stdout += d;
    });
    proc.stderr.on("data", (d) => {
      stderr += d;
    });
    proc.on("close", (code, signal) => {
      const line = stdout.split("\n").find((l) => l.startsWith(RESULT_PREFIX));
      if (line) resolve(JSON.parse(line.slice(RESULT_PREFIX.length)) as Result);
      else
        resolve(
          `exited ${signal ?? code}${signal === "SIGKILL" ? " (out of memory?)" : ""}: ${stderr.trim().split("\n").slice(-2).join(" ")}`,
        );
    });
  });
}

export async function benchCpu(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      steps: { type: "string", default: "4" },
      only: { type: "string" },
      cache: { type: "string", default: join(tmpdir(), "sdx-bench-cpu") },
      tiny: { type: "boolean", default: false },
      child: { type: "string" },
      path: { type: "string" },
      size: { type: "string", default: String(RUNS.full.size) },
    },
  });
  const steps = Math.max(2, Number(values.steps) || 4);
  if (values.child) {
    const variant = VARIANTS[values.child];
    if (!variant || !values.path) throw new Error(`bench cpu: bad child invocation (${values.child})`);
    await runVariant(values.child, variant, values.path, steps, Number(values.size));
    return;
  }
  const names = values.only ? values.only.split(",") : Object.keys(VARIANTS);
  const unknown = names.filter((n) => !(n in VARIANTS));
  if (unknown.length > 0) {
    console.error(`unknown variant(s) ${unknown.join(", ")}\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const run = values.tiny ? RUNS.tiny : RUNS.full;
  const cacheDir = values.tiny ? join(values.cache, "tiny") : values.cache;
  await mkdir(cacheDir, { recursive: true });
  const checkpoint = await randomCheckpoint(run.preset, cacheDir);
  const folder = join(cacheDir, `${run.preset}-optimum`);
  const folderWritten = await Bun.file(join(folder, "model_index.json")).exists();
  if (!folderWritten && names.some((n) => VARIANTS[n]?.source === "folder"))
    await writeExportShapedFolder(checkpoint.path, folder);

  console.log(
    `bench cpu${values.tiny ? " --tiny (a smoke test of the script: its times mean nothing)" : ""}: onnxruntime-node ` +
      `${onnxruntimeVersion}, CPU provider; ${run.preset} ${run.size}×${run.size}, ${steps} steps of ` +
      `${GENERATE_DEFAULTS.scheduler_type} with CFG ${GENERATE_DEFAULTS.guidance_scale} (UNet batch 2), batch 1; ` +
      `each variant in its own process, one after another`,
  );
  console.log(`checkpoint: ${checkpoint.note}`);
  const rows: string[][] = [];
  let failed = false;
  for (const name of names) {
    const variant = VARIANTS[name] as Variant;
    const result = await child(
      name,
      variant.source === "checkpoint" ? checkpoint.path : folder,
      steps,
      run.size,
    );
    const s = (ms: number) => (ms / 1000).toFixed(2);
    if (typeof result === "string") {
      failed = true;
      rows.push([name, `FAILED: ${result}`, "", "", "", "", "", "", ""]);
      continue;
    }
    rows.push([
      name,
      s(result.loadMs),
      (result.rssAfterLoad / GB).toFixed(2),
      s(result.encodeMs),
      s(result.firstStepMs),
      s(result.medianStepMs),
      s(result.decodeMs),
      (result.peakRss / GB).toFixed(2),
      (["text_encoder", "unet", "vae_decoder"] as const)
        .map((st) => ((result.stagePeaks[st] ?? 0) / GB).toFixed(2))
        .join(" / "),
    ]);
  }
  printTable([
    [
      "variant",
      "load s",
      "RSS loaded GiB",
      "text enc s",
      "1st step s",
      "s/step",
      "VAE s",
      "peak RSS GiB",
      "peak text / UNet / VAE",
    ],
    ...rows,
  ]);
  for (const name of names) console.log(`${name}: ${VARIANTS[name]?.label}`);
  console.log(
    "s/step: median of the steps after the first (one UNet call at batch 2 each); text enc: both prompts; " +
      "peak RSS: VmHWM of the variant's process, session creation included",
  );
  if (failed) process.exitCode = 1;
}
