/**
 * `bun run check:full-size [--only sd15|sd21] [--keep]`: the single-file checkpoint path on full-size models,
 * without downloading any. For each preset of scripts/ldm_keys.ts (SD 1.5 v1-5-pruned-emaonly, SD 2.1
 * v2-1_768-ema-pruned) it writes a .safetensors file of random fp16 weights with the released file's exact keys
 * and shapes into a temporary models folder, then runs sdx's own path: prepareCheckpoint (graphs built, weights
 * hard-linked), inspectCheckpoint + loadOnnxPipeline(entry, "cpu"), one UNet step with classifier-free guidance's
 * shape (batch 2) on random latents and text states — 512×512 for SD 1.5, 768×768 for SD 2.1 when the memory
 * onnxruntime's attention needs there is available, else 512×512 — plus one text-encoder row and one small VAE
 * decode. It prints sizes, times and memory (VmRSS/VmHWM) per preset and exits non-zero when anything fails.
 *
 * Not part of CI (it writes 2–3 GB per preset and needs ~10 GB of memory). Without --only each preset runs in a
 * child process of its own, so each one's peak RSS is its own. SDXL is out of scope for now.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { prepareCheckpoint } from "../api/engine/checkpoint/build.ts";
import { buildClipGraph, detectClip } from "../api/engine/checkpoint/clip_graph.ts";
import {
  detectKind,
  TEXT_ENCODER_PREFIXES,
  UNET_PREFIX,
  VAE_PREFIX,
} from "../api/engine/checkpoint/detect.ts";
import { buildUNetGraph, detectUNet } from "../api/engine/checkpoint/unet_graph.ts";
import { buildVaeDecoderGraph, buildVaeEncoderGraph, detectVae } from "../api/engine/checkpoint/vae_graph.ts";
import { CheckpointWeights } from "../api/engine/checkpoint/weights.ts";
import { inspectCheckpoint } from "../api/engine/model_folder.ts";
import { OnnxModel } from "../api/engine/onnx/runtime.ts";
import {
  loadOnnxPipeline,
  type PipelineComponents,
  releasePipeline,
} from "../api/engine/pipeline/stable_diffusion.ts";
import { readSafetensorsHeader } from "../api/engine/safetensors.ts";
import { memAvailable, readMemory, resetPeakRss } from "../bench/load.ts";
import { type CheckpointArch, ldmTensors, PRESETS, writeRandomCheckpoint } from "./ldm_keys.ts";

const FULL_SIZE = ["sd15", "sd21"] as const;
type FullSize = (typeof FULL_SIZE)[number];
const SDXL_NOTE = "SDXL: out of scope for now (sdx recognises SDXL single files but does not load them yet)";
const RESULT_PREFIX = "FULL_SIZE_RESULT ";
const MB = 1024 * 1024;
const GiB = 1024 * MB;

interface Result {
  preset: FullSize;
  ok: boolean;
  /** Which stage failed and how, or null. */
  failure: string | null;
  fileBytes: number;
  writeMs: number;
  buildMs: number | null;
  loadMs: number | null;
  size: number | null;
  sizeNote: string;
  unetMs: number | null;
  textMs: number | null;
  vaeMs: number | null;
  finite: { unet: boolean; text: boolean; vae: boolean } | null;
  rssBefore: number;
  rssAfterLoad: number | null;
  /** VmHWM once the sessions are loaded (before any run). */
  peakAfterLoad: number | null;
  rssAfter: number;
  peakRss: number;
}

/** Seeded standard normal values (xorshift32 + Box–Muller). */
function normals(count: number, seed: number): Float32Array {
  let s = seed | 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) + 0.5) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform()));
    const a = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(a);
    if (i + 1 < count) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

const allFinite = (data: Float32Array) => data.every(Number.isFinite);
const message = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/**
 * Bytes onnxruntime's unfused attention needs at the UNet's first level for one step: scores and softmax
 * probabilities, each [batch, heads, tokens, tokens] float32 (the graph computes softmax in float32).
 */
function attentionBytes(arch: CheckpointArch, size: number, batch: number): number {
  const tokens = (size / 8) ** 2;
  const { heads, modelChannels } = arch.unet;
  const count = "numHeads" in heads ? heads.numHeads : modelChannels / heads.numHeadChannels;
  return 2 * batch * count * tokens * tokens * 4;
}

/** Which component's graph fails to build, when prepareCheckpoint failed: each builder run on its own. */
async function diagnoseBuild(path: string): Promise<string> {
  const header = await readSafetensorsHeader(path);
  const weights = new CheckpointWeights(header, "weights.safetensors");
  const failures: string[] = [];
  const kind = detectKind(header);
  const encoder = TEXT_ENCODER_PREFIXES[kind][0];
  const steps: [string, () => unknown][] = [
    ["text encoder", () => buildClipGraph(weights, detectClip(weights, encoder.prefix)).toBytes()],
    ["unet", () => buildUNetGraph(weights, detectUNet(weights, UNET_PREFIX)).toBytes()],
    ["vae decoder", () => buildVaeDecoderGraph(weights, detectVae(weights, VAE_PREFIX)).toBytes()],
    ["vae encoder", () => buildVaeEncoderGraph(weights, detectVae(weights, VAE_PREFIX)).toBytes()],
  ];
  for (const [name, build] of steps) {
    try {
      build();
    } catch (e) {
      failures.push(`${name}: ${message(e)}`);
    }
  }
  return failures.length > 0 ? failures.join("; ") : "no single builder fails on its own";
}

/** Which component's session fails to load, when loadOnnxPipeline failed: each graph loaded on its own. */
async function diagnoseLoad(path: string): Promise<string> {
  const { files } = await prepareCheckpoint(path);
  const failures: string[] = [];
  for (const [name, file] of [
    ["text encoder", files.textEncoder],
    ["unet", files.unet],
    ["vae decoder", files.vaeDecoder],
  ] as const) {
    try {
      await (await OnnxModel.load(file, { provider: "cpu" })).release();
    } catch (e) {
      failures.push(`${name} (${file}): ${message(e)}`);
    }
  }
  return failures.length > 0 ? failures.join("; ") : "every session loads on its own";
}

async function timed<T>(run: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = performance.now();
  const value = await run();
  return { value, ms: performance.now() - started };
}

/** One preset, in this process. */
async function checkPreset(preset: FullSize, keep: boolean, forcedSize: number | null): Promise<Result> {
  const arch: CheckpointArch = PRESETS[preset];
  const dir = await mkdtemp(join(tmpdir(), "sdx-full-size-"));
  const modelsDir = join(dir, "models");
  const path = join(modelsDir, `${preset}.safetensors`);
  const log = (line: string) => console.log(`[${preset}] ${line}`);
  const result: Result = {
    preset,
    ok: false,
    failure: null,
    fileBytes: 0,
    writeMs: 0,
    buildMs: null,
    loadMs: null,
    size: null,
    sizeNote: "",
    unetMs: null,
    textMs: null,
    vaeMs: null,
    finite: null,
    rssBefore: 0,
    rssAfterLoad: null,
    peakAfterLoad: null,
    rssAfter: 0,
    peakRss: 0,
  };
  let pipeline: PipelineComponents | null = null;
  let stage = "write";
  try {
    await mkdir(modelsDir);
    log(`writing ${arch.mirrors} with random fp16 weights to ${path}`);
    const written = await timed(() => writeRandomCheckpoint(path, ldmTensors(arch), { arch }));
    result.fileBytes = written.value.bytes;
    result.writeMs = written.ms;
    log(`${(result.fileBytes / 1e9).toFixed(2)} GB written in ${(written.ms / 1000).toFixed(1)} s`);

    Bun.gc(true);
    resetPeakRss();
    result.rssBefore = readMemory().rss;

    stage = "build";
    const built = await timed(() => prepareCheckpoint(path));
    result.buildMs = built.ms;
    log(`graphs built in ${(built.ms / 1000).toFixed(2)} s (${built.value.kind})`);

    stage = "load";
    const entry = await inspectCheckpoint(preset, path);
    if (entry.problem) throw new Error(`inspectCheckpoint: ${entry.problem}`);
    const loaded = await timed(() => loadOnnxPipeline(entry, "cpu"));
    pipeline = loaded.value;
    result.loadMs = loaded.ms;
    const loadedMemory = readMemory();
    result.rssAfterLoad = loadedMemory.rss;
    result.peakAfterLoad = loadedMemory.hwm;
    log(
      `sessions loaded in ${(loaded.ms / 1000).toFixed(1)} s (graphs reused: ${pipeline.checkpointGraphs?.reused}), RSS ${(result.rssAfterLoad / MB).toFixed(0)} MB`,
    );

    // 768×768 for the 768-v model when its attention fits in the memory left, else 512×512.
    const native = entry.nativeSize;
    const batch = 2;
    let size = forcedSize ?? native;
    if (forcedSize === null && size > 512) {
      const need = attentionBytes(arch, size, batch) + 2 * GiB;
      const available = memAvailable();
      if (available < need) {
        result.sizeNote = `${size}×${size} needs ~${(need / GiB).toFixed(1)} GiB more, ${(available / GiB).toFixed(1)} GiB available: ran 512×512`;
        size = 512;
      } else {
        result.sizeNote = `native ${size}×${size} (~${(need / GiB).toFixed(1)} GiB needed, ${(available / GiB).toFixed(1)} GiB available)`;
      }
    } else {
      result.sizeNote = forcedSize !== null ? "size from --size" : `native ${size}×${size}`;
    }
    result.size = size;

    stage = "text encoder run";
    const context = arch.unet.contextDim;
    const ids = Array.from({ length: 77 }, (_, i) => (i === 0 ? 49406 : i < 8 ? 320 + i : 49407));
    const text = await timed(() =>
      (pipeline as PipelineComponents).textEncoder.run({ input_ids: { data: ids, dims: [1, 77] } }, [
        "last_hidden_state",
      ]),
    );
    result.textMs = text.ms;
    const textOut = text.value.last_hidden_state;
    const textFinite = textOut !== undefined && textOut.dims[2] === context && allFinite(textOut.data);

    stage = `UNet step at ${size}×${size}`;
    const latent = size / 8;
    log(`one UNet step: batch ${batch}, ${size}×${size} (${result.sizeNote})`);
    const step = await timed(() =>
      (pipeline as PipelineComponents).unet.run(
        {
          sample: { data: normals(batch * 4 * latent * latent, 1), dims: [batch, 4, latent, latent] },
          timestep: { data: [999], dims: [] },
          encoder_hidden_states: { data: normals(batch * 77 * context, 2), dims: [batch, 77, context] },
        },
        ["out_sample"],
      ),
    );
    result.unetMs = step.ms;
    const unetOut = step.value.out_sample;
    const unetFinite =
      unetOut !== undefined && unetOut.data.length === batch * 4 * latent * latent && allFinite(unetOut.data);

    stage = "VAE decode";
    const vae = await timed(() =>
      (pipeline as PipelineComponents).vaeDecoder.run(
        { latent_sample: { data: normals(4 * 32 * 32, 3), dims: [1, 4, 32, 32] } },
        ["sample"],
      ),
    );
    result.vaeMs = vae.ms;
    const vaeOut = vae.value.sample;
    const vaeFinite = vaeOut !== undefined && vaeOut.data.length === 3 * 256 * 256 && allFinite(vaeOut.data);

    result.finite = { unet: unetFinite, text: textFinite, vae: vaeFinite };
    result.ok = unetFinite && textFinite && vaeFinite;
    if (!result.ok) {
      result.failure = `non-finite or misshapen output: ${Object.entries(result.finite)
        .filter(([, ok]) => !ok)
        .map(([name]) => name)
        .join(", ")}`;
    }
  } catch (e) {
    let detail = message(e);
    if (stage === "build") detail += ` | per component: ${await diagnoseBuild(path).catch(message)}`;
    if (stage === "load") detail += ` | per component: ${await diagnoseLoad(path).catch(message)}`;
    result.failure = `${stage} failed: ${detail}`;
  } finally {
    if (pipeline) await releasePipeline(pipeline);
    const memory = readMemory();
    result.rssAfter = memory.rss;
    result.peakRss = memory.hwm;
    if (keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
  return result;
}

function printTable(rows: string[][]): void {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((cell, j) => cell.padStart(widths[j] ?? 0)).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}

function report(results: readonly Result[]): void {
  const s = (ms: number | null, digits = 2) => (ms === null ? "–" : (ms / 1000).toFixed(digits));
  const m = (bytes: number | null) => (bytes === null ? "–" : (bytes / MB).toFixed(0));
  printTable([
    [
      "preset",
      "file GB",
      "build s",
      "load s",
      "UNet step",
      "step s",
      "text enc s",
      "VAE 256² s",
      "RSS before MB",
      "RSS loaded MB",
      "RSS after MB",
      "peak load MB",
      "peak RSS MB",
      "finite",
    ],
    ...results.map((r) => [
      r.preset,
      (r.fileBytes / 1e9).toFixed(2),
      s(r.buildMs),
      s(r.loadMs, 1),
      r.size === null ? "–" : `2×${r.size}²`,
      s(r.unetMs, 1),
      s(r.textMs),
      s(r.vaeMs),
      m(r.rssBefore),
      m(r.rssAfterLoad),
      m(r.rssAfter),
      m(r.peakAfterLoad),
      m(r.peakRss),
      r.finite === null ? "–" : r.ok ? "yes" : "NO",
    ]),
  ]);
  for (const r of results) {
    if (r.sizeNote) console.log(`${r.preset}: UNet step size: ${r.sizeNote}`);
    if (r.failure) console.log(`${r.preset}: FAILED: ${r.failure}`);
  }
  console.log(
    "file: random fp16 weights with the released checkpoint's keys and shapes; build: first prepareCheckpoint; " +
      "load: loadOnnxPipeline (3 sessions, graphs reused); step: first UNet run, batch 2 (CFG); " +
      "peak load / peak RSS: VmHWM from before the build to the loaded sessions / to the end",
  );
  console.log(SDXL_NOTE);
}

/** Runs one preset in a child process and returns its result (null when the child died without one). */
async function runChild(
  preset: FullSize,
  args: readonly string[],
): Promise<{ result: Result | null; code: number }> {
  const child = Bun.spawn([process.execPath, import.meta.path, "--only", preset, "--child", ...args], {
    stdout: "pipe",
    stderr: "inherit",
  });
  let result: Result | null = null;
  let pending = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.startsWith(RESULT_PREFIX)) result = JSON.parse(line.slice(RESULT_PREFIX.length)) as Result;
      else console.log(line);
      newline = pending.indexOf("\n");
    }
  }
  const code = await child.exited;
  return { result, code };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      only: { type: "string" },
      keep: { type: "boolean", default: false },
      size: { type: "string" },
      child: { type: "boolean", default: false },
    },
  });
  const only = values.only;
  if (only !== undefined && !(FULL_SIZE as readonly string[]).includes(only)) {
    console.error(`usage: bun run check:full-size [--only ${FULL_SIZE.join("|")}] [--keep] [--size 512]`);
    return 2;
  }
  const forcedSize = values.size === undefined ? null : Number(values.size);
  if (forcedSize !== null && !(Number.isInteger(forcedSize) && forcedSize > 0 && forcedSize % 8 === 0)) {
    console.error("--size must be a positive multiple of 8");
    return 2;
  }
  if (only !== undefined) {
    const result = await checkPreset(only as FullSize, values.keep, forcedSize);
    if (values.child) console.log(RESULT_PREFIX + JSON.stringify(result));
    else report([result]);
    return result.ok ? 0 : 1;
  }
  console.log(`full-size check: ${FULL_SIZE.join(", ")}, one child process each. ${SDXL_NOTE}`);
  const results: Result[] = [];
  let failed = false;
  for (const preset of FULL_SIZE) {
    const extra = forcedSize !== null ? ["--size", String(forcedSize)] : [];
    const { result, code } = await runChild(preset, [...(values.keep ? ["--keep"] : []), ...extra]);
    if (result) results.push(result);
    else console.log(`${preset}: FAILED: the child process exited with ${code} without a result`);
    failed ||= code !== 0 || !result?.ok;
  }
  console.log("");
  report(results);
  return failed ? 1 : 0;
}

process.exitCode = await main();
