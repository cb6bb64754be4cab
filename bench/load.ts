/**
 * `bun run bench load`: what loading a single-file checkpoint costs. Writes a full-size random-weight checkpoint
 * (default: SD 1.5's exact keys and shapes, fp16, 2.1 GB; api/engine/checkpoint/ldm_layout.ts), then measures, in this process:
 * - the first `prepareCheckpoint` (graphs built, weights hard-linked into the cache), with its RSS growth and its
 *   peak (VmHWM, reset just before) — before any onnxruntime session exists, so the figures are sdx's own;
 * - the second `prepareCheckpoint` (the cache reused);
 * - creating the three onnxruntime sessions (`loadOnnxPipeline`), with their RSS growth and peak.
 *
 *   bun run bench load [--preset sd15|sd21|tiny_sd15] [--runs 1] [--keep]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { prepareCheckpoint } from "../api/engine/checkpoint/build.ts";
import { COND_STAGE_PREFIX, UNET_PREFIX, VAE_PREFIX } from "../api/engine/checkpoint/keys.ts";
import {
  checkpointBytes,
  isPresetName,
  ldmTensors,
  PRESETS,
  type TensorSpec,
  writeRandomCheckpoint,
} from "../api/engine/checkpoint/ldm_layout.ts";
import { inspectCheckpoint } from "../api/engine/model_folder.ts";
import { loadOnnxPipeline, releasePipeline } from "../api/engine/pipeline/load.ts";
import { printTable } from "./engine.ts";

const MB = 1024 * 1024;
const BUILD_TARGET_MS = 5000;
const BUILD_TARGET_BYTES = 500 * MB;

export interface MemorySample {
  /** Resident set size now (VmRSS), bytes. */
  rss: number;
  /** Peak resident set size since start or the last reset (VmHWM), bytes. */
  hwm: number;
}

/** VmRSS and VmHWM of this process from /proc/self/status (zeros where /proc is not available). */
export function readMemory(): MemorySample {
  let status = "";
  try {
    status = readFileSync("/proc/self/status", "utf8");
  } catch {
    return { rss: 0, hwm: 0 };
  }
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Resets VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs); false where that is refused. */
export function resetPeakRss(): boolean {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/** MemAvailable from /proc/meminfo, bytes (Infinity where /proc is not available). */
export function memAvailable(): number {
  try {
    const info = readFileSync("/proc/meminfo", "utf8");
    return (
      Number(/^MemAvailable:\s+(\d+) kB/m.exec(info)?.[1] ?? Number.NaN) * 1024 || Number.POSITIVE_INFINITY
    );
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/** Float32 bytes of the weights onnxruntime holds for the three sessions (UNet, text encoder, VAE decoder). */
export function sessionWeightBytes(tensors: readonly TensorSpec[]): number {
  const used = tensors.filter(
    (t) =>
      t.dtype === "float" &&
      (t.key.startsWith(UNET_PREFIX) ||
        t.key.startsWith(COND_STAGE_PREFIX) ||
        t.key.startsWith(`${VAE_PREFIX}decoder.`) ||
        t.key.startsWith(`${VAE_PREFIX}post_quant_conv.`)),
  );
  return checkpointBytes(used, "F32");
}

const mb = (bytes: number) => (bytes / MB).toFixed(0);
const seconds = (ms: number) => (ms / 1000).toFixed(3);

export async function benchLoad(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      preset: { type: "string", default: "sd15" },
      runs: { type: "string", default: "1" },
      keep: { type: "boolean", default: false },
    },
  });
  const preset = values.preset;
  if (!isPresetName(preset)) throw new Error(`unknown preset ${preset}: sd15, sd21 or tiny_sd15`);
  const runs = Math.max(1, Number(values.runs) || 1);
  const arch = PRESETS[preset];
  const tensors = ldmTensors(arch);
  const dir = await mkdtemp(join(tmpdir(), "sdx-bench-load-"));
  const path = join(dir, `${preset}.safetensors`);
  try {
    const t0 = performance.now();
    const { bytes } = await writeRandomCheckpoint(path, tensors, { arch });
    console.log(
      `load: ${preset} (${arch.mirrors}), random fp16 weights, ${(bytes / 1e9).toFixed(2)} GB written in ` +
        `${seconds(performance.now() - t0)} s to ${dir}`,
    );

    const rows: string[][] = [];
    const peakResets = resetPeakRss();
    let sdxOk = true;
    for (let run = 1; run <= runs; run++) {
      // A fresh cache each run; the first run in a fresh process is the one a server pays on first load.
      await rm(join(dir, ".sdx-cache"), { recursive: true, force: true });
      Bun.gc(true);
      resetPeakRss();
      const before = readMemory();
      const started = performance.now();
      const built = await prepareCheckpoint(path);
      const ms = performance.now() - started;
      const after = readMemory();
      if (built.reused) throw new Error("the first prepareCheckpoint reused a cache; expected a build");
      const peak = after.hwm - (peakResets ? before.rss : before.hwm);
      const ok =
        ms < BUILD_TARGET_MS && peak < BUILD_TARGET_BYTES && after.rss - before.rss < BUILD_TARGET_BYTES;
      sdxOk &&= ok;
      rows.push([
        runs > 1 ? `build (run ${run})` : "build (first prepareCheckpoint)",
        seconds(ms),
        mb(after.rss - before.rss),
        mb(peak),
        "< 5 s, < 500 MB",
        ok ? "yes" : "NO",
      ]);
    }

    const reuseStart = performance.now();
    const again = await prepareCheckpoint(path);
    const reuseMs = performance.now() - reuseStart;
    if (!again.reused) throw new Error("the second prepareCheckpoint rebuilt the graphs; expected the cache");
    rows.push(["cache reuse (second prepareCheckpoint)", seconds(reuseMs), "–", "–", "–", ""]);

    Bun.gc(true);
    resetPeakRss();
    const beforeSessions = readMemory();
    const sessionStart = performance.now();
    const entry = await inspectCheckpoint(preset, path);
    if (entry.problem) throw new Error(`${path}: ${entry.problem}`);
    const pipeline = await loadOnnxPipeline(entry, "cpu");
    const sessionMs = performance.now() - sessionStart;
    const afterSessions = readMemory();
    rows.push([
      "sessions (loadOnnxPipeline, 3 sessions)",
      seconds(sessionMs),
      mb(afterSessions.rss - beforeSessions.rss),
      mb(afterSessions.hwm - (peakResets ? beforeSessions.rss : beforeSessions.hwm)),
      "onnxruntime's own",
      "",
    ]);
    await releasePipeline(pipeline);

    printTable([["step", "wall s", "RSS Δ MB", "peak Δ MB", "target", "met"], ...rows]);
    console.log(
      `float32 weights of the three sessions: ${mb(sessionWeightBytes(tensors))} MB; ` +
        `peak RSS of this process: ${mb(readMemory().hwm)} MB since the last reset` +
        (peakResets ? "" : " (VmHWM could not be reset: peak Δ is a lower bound)"),
    );
    console.log("targets: build under 5 s and under 500 MB beyond onnxruntime's own (RSS and peak growth)");
    if (!sdxOk) process.exitCode = 1;
  } finally {
    if (values.keep) console.log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}
