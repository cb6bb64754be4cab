/**
 * `bun run check:full-size [--only sd15|sd21|sdxl] [--keep]`: the single-file checkpoint path on full-size models,
 * without downloading any. For each preset of api/engine/checkpoint/ldm_layout.ts (SD 1.5 v1-5-pruned-emaonly, SD 2.1
 * v2-1_768-ema-pruned, SDXL sd_xl_base_1.0) it writes a .safetensors file of random fp16 weights with the released
 * file's exact keys and shapes into a temporary models folder, then runs sdx's own path: prepareCheckpoint (graphs
 * built, weights hard-linked), inspectCheckpoint + loadOnnxPipeline(entry, "cpu"), one UNet step with
 * classifier-free guidance's shape (batch 2) on random latents and text states — 512×512 for SD 1.5, 768×768 for
 * SD 2.1 when the memory onnxruntime's attention needs there is available, else 512×512 — plus one text-encoder
 * row and one small VAE decode. It prints sizes, times and memory (VmRSS/VmHWM) per preset and exits non-zero
 * when anything fails.
 *
 * SDXL (6.9 GB file): all five graphs are built, but only the UNet session is loaded — its 2.57 G parameters are
 * 10.3 GB as float32 in onnxruntime, and the two text encoders and the VAE decoder would add ~3.6 GB more. Creating
 * the UNet session the way sdx does (OnnxModel.load: optimization level "all", which folds every fp16 → float32
 * cast and weight transpose at load) peaks far above its resident size: ~22 GiB estimated (ALL_LOAD_PEAK_PER_PARAM).
 * So MemAvailable is checked first: sdx's own OnnxModel.load when that fits, else a session made here with graph
 * optimizations disabled (said in the output: nothing is folded, the fp16 weights are read and cast inside each
 * step, so the load is instant and the step slower), else none. The step runs at the native 1024×1024 (128×128
 * latents) with batch 2 when the memory it needs is available, else batch 1, else 512×512 with batch 1; the
 * output says which. Its inputs add text_embeds [b, 1280] and time_ids [b, 6].
 * SDXL always runs in a child process (with --only too), so that an out-of-memory kill is reported and its
 * temporary files removed.
 *
 * Not part of CI (it writes 2–7 GB per preset and needs ~10 GB of memory, ~15 GB for SDXL). Without --only each
 * preset runs in a child process of its own, SDXL last, so each one's peak RSS is its own.
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import {
  type PipelineFiles,
  type PreparedCheckpoint,
  prepareCheckpoint,
} from "../api/engine/checkpoint/build.ts";
import { buildClipGraph, detectClip } from "../api/engine/checkpoint/clip_graph.ts";
import { detectKind, TEXT_ENCODER_PREFIXES } from "../api/engine/checkpoint/detect.ts";
import { UNET_PREFIX, VAE_PREFIX } from "../api/engine/checkpoint/keys.ts";
import {
  type CheckpointArch,
  checkpointBytes,
  depthAt,
  headsAt,
  ldmTensors,
  PRESETS,
  writeRandomCheckpoint,
} from "../api/engine/checkpoint/ldm_layout.ts";
import { buildUNetGraph, detectUNet } from "../api/engine/checkpoint/unet_graph.ts";
import { buildVaeDecoderGraph, buildVaeEncoderGraph, detectVae } from "../api/engine/checkpoint/vae_graph.ts";
import { CheckpointWeights } from "../api/engine/checkpoint/weights.ts";
import { inspectCheckpoint } from "../api/engine/model_folder.ts";
import { OnnxModel } from "../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../api/engine/pipeline/load.ts";
import type { PipelineComponents } from "../api/engine/pipeline/types.ts";
import { readSafetensorsHeader } from "../api/engine/safetensors.ts";
import { memAvailable, readMemory, resetPeakRss } from "../bench/load.ts";

const FULL_SIZE = ["sd15", "sd21", "sdxl"] as const;
type FullSize = (typeof FULL_SIZE)[number];
const SDXL_NOTE =
  "sdxl: all graphs built, the UNet session only (2.57 G parameters, 10.3 GB as float32; the text encoders and VAE " +
  'decoder are not loaded), with sdx\'s optimization level "all" when its load fits in MemAvailable, else "disabled"; ' +
  "step 1024×1024 batch 2 when memory allows, else batch 1, else 512×512 batch 1";
const RESULT_PREFIX = "FULL_SIZE_RESULT ";
/** A child's temporary folder, so that the parent can remove it when the child is killed (out of memory). */
const DIR_PREFIX = "FULL_SIZE_DIR ";
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
  /** The UNet step's batch (2: classifier-free guidance's; SDXL may fall back to 1). */
  batch: number | null;
  sizeNote: string;
  /** What was not loaded or run, and why ("" when nothing was skipped). */
  skipped: string;
  /** How the sessions were made, where not by loadOnnxPipeline ("" otherwise). */
  sessionNote: string;
  unetMs: number | null;
  textMs: number | null;
  vaeMs: number | null;
  finite: Partial<Record<"unet" | "text" | "vae", boolean>> | null;
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
 * Bytes onnxruntime's unfused attention needs for one step at the UNet's largest attention level (the first
 * level with a transformer: level 0 for SD 1.x/2.x, level 1 for SDXL): scores and softmax probabilities, each
 * [batch, heads, tokens, tokens] float32 (the graph computes softmax in float32).
 */
function attentionBytes(arch: CheckpointArch, size: number, batch: number): number {
  let most = 0;
  for (let level = 0; level < arch.unet.channelMult.length; level++) {
    if (depthAt(arch.unet, level) === 0) continue;
    const tokens = (size / 8 / 2 ** level) ** 2;
    most = Math.max(most, 2 * batch * headsAt(arch.unet, level) * tokens * tokens * 4);
  }
  return most;
}

const gib = (bytes: number) => (bytes / GiB).toFixed(1);

/**
 * Peak memory of creating a UNet session from a checkpoint's fp16 weights with optimization level "all" (sdx's
 * OnnxModel.load), in bytes per UNet parameter. On SD 1.5's UNet (859.5 M parameters; onnxruntime-node 1.30, CPU)
 * the load peaks at 6.1 GiB ("extended": 4.5 GiB; either holds 4.0 GiB once loaded). SDXL's does not scale from
 * that: its load at level "extended" was killed for memory at 16.0 GiB of RSS (15.7 GiB had been available), so
 * its "all" load is assumed to need at least 16.0 GiB × 6.1 / 4.5 ≈ 9.1 bytes per parameter (~22 GiB).
 */
const ALL_LOAD_PEAK_PER_PARAM = 9.1;
/**
 * With graph optimizations disabled nothing is folded: the load leaves the fp16 weights in the file (RSS ~0.1 GiB
 * after it) and each step casts them to float32 as it goes. Trial steps at 1024×1024 took MemAvailable down by
 * 8.0 GiB (batch 1) and 9.2 GiB (batch 2): 0.7 × the float32 weights plus the attention, either time.
 */
const DISABLED_STEP_PER_FLOAT32_BYTE = 0.7;
type LoadLevel = "all" | "disabled";

/** A UNet session for the SDXL check, and its one output. */
interface UNetSession {
  run(feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<Float32Array | null>;
  release(): Promise<void>;
}

/**
 * The UNet session through sdx's OnnxModel.load, at level "all" (sdx's default) or with graph optimizations
 * disabled when the float32 copies that "all" folds out of the float16 weights would not fit in memory.
 */
async function loadUNetSession(path: string, level: LoadLevel): Promise<UNetSession> {
  const model = await OnnxModel.load(path, { provider: "cpu", optimizationLevel: level });
  return {
    run: async (feeds) => (await model.run(feeds, ["out_sample"])).out_sample?.data ?? null,
    release: () => model.release(),
  };
}

/** Float32 bytes of the UNet's weights, as onnxruntime holds them once the casts are folded. */
function unetFloat32Bytes(arch: CheckpointArch): number {
  return checkpointBytes(
    ldmTensors(arch).filter((t) => t.key.startsWith(UNET_PREFIX)),
    "F32",
  );
}

/** Which component's graph fails to build, when prepareCheckpoint failed: each builder run on its own. */
async function diagnoseBuild(path: string): Promise<string> {
  const header = await readSafetensorsHeader(path);
  const weights = new CheckpointWeights(header, "weights.safetensors");
  const failures: string[] = [];
  const kind = detectKind(header);
  const encoders: readonly { prefix: string }[] = TEXT_ENCODER_PREFIXES[kind];
  const steps: [string, () => unknown][] = [
    ...encoders.map((encoder, i): [string, () => unknown] => [
      i === 0 ? "text encoder" : `text encoder ${i + 1}`,
      () => buildClipGraph(weights, detectClip(weights, encoder.prefix)).toBytes(),
    ]),
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

/** A preset's run in this process: its result so far, the stage under way, and the sessions to release. */
interface PresetRun {
  preset: FullSize;
  arch: CheckpointArch;
  /** The random-weight checkpoint, in a temporary models folder. */
  path: string;
  /** --size, or null for the preset's own choice. */
  forcedSize: number | null;
  result: Result;
  /** What runs now, named in the failure ("write", "build", "load", …). */
  stage: string;
  pipeline: PipelineComponents | null;
  unetOnly: UNetSession | null;
  log: (line: string) => void;
}

function emptyResult(preset: FullSize): Result {
  return {
    preset,
    ok: false,
    failure: null,
    fileBytes: 0,
    writeMs: 0,
    buildMs: null,
    loadMs: null,
    size: null,
    batch: null,
    sizeNote: "",
    skipped: "",
    sessionNote: "",
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
}

// ---- what it builds ----

/** Writes the preset's random fp16 checkpoint. */
async function writeCheckpoint(run: PresetRun): Promise<void> {
  const { arch, path, result, log } = run;
  run.stage = "write";
  await mkdir(dirname(path));
  log(`writing ${arch.mirrors} with random fp16 weights to ${path}`);
  const written = await timed(() => writeRandomCheckpoint(path, ldmTensors(arch), { arch }));
  result.fileBytes = written.value.bytes;
  result.writeMs = written.ms;
  log(`${(result.fileBytes / 1e9).toFixed(2)} GB written in ${(written.ms / 1000).toFixed(1)} s`);
}

/** Builds the graphs (prepareCheckpoint), the memory peak counted from here. */
async function buildGraphs(run: PresetRun): Promise<PreparedCheckpoint> {
  const { result, log } = run;
  Bun.gc(true);
  resetPeakRss();
  result.rssBefore = readMemory().rss;

  run.stage = "build";
  const built = await timed(() => prepareCheckpoint(run.path));
  result.buildMs = built.ms;
  log(`graphs built in ${(built.ms / 1000).toFixed(2)} s (${built.value.kind})`);
  return built.value;
}

// ---- what it runs: SDXL, the UNet session alone (see the header comment) ----

/** Loads the SDXL UNet session at the optimization level that fits in memory; returns that level. */
async function loadSdxlUNet(run: PresetRun, unetFile: string): Promise<LoadLevel> {
  const { arch, result, log } = run;
  result.skipped =
    "text encoder, text encoder 2 and VAE decoder sessions not loaded (graphs built only), so no text-encoder or VAE run";
  const float32 = unetFloat32Bytes(arch);
  const allPeak = (float32 / 4) * ALL_LOAD_PEAK_PER_PARAM;
  const availableBeforeLoad = memAvailable();
  log(
    `MemAvailable ${gib(availableBeforeLoad)} GiB; UNet ${(float32 / 4e9).toFixed(2)} G parameters, float32 ${gib(float32)} GiB; ` +
      `sdx's OnnxModel.load (optimization level "all") estimated to peak at ~${gib(allPeak)} GiB`,
  );
  log(`skipped: ${result.skipped}`);
  run.stage = "UNet session load";
  let level: LoadLevel;
  if (allPeak + GiB <= availableBeforeLoad) {
    level = "all";
    result.sessionNote = `UNet session: sdx's OnnxModel.load (optimization level "all"; ~${gib(allPeak)} GiB load peak estimated, ${gib(availableBeforeLoad)} GiB available)`;
  } else if (2 * GiB <= availableBeforeLoad) {
    level = "disabled";
    result.sessionNote =
      `UNet session: onnxruntime directly with graph optimizations disabled, not sdx's OnnxModel.load ("all", ~${gib(allPeak)} GiB ` +
      `load peak estimated, ${gib(availableBeforeLoad)} GiB available): the fp16 weights are cast inside the step, so it is slower than sdx's`;
  } else {
    result.skipped = `UNet session not loaded either: ${gib(availableBeforeLoad)} GiB available; ${result.skipped}`;
    throw new Error(`not enough memory: ${result.skipped}`);
  }
  log(result.sessionNote);
  const loadedUnet = await timed(() => loadUNetSession(unetFile, level));
  run.unetOnly = loadedUnet.value;
  result.loadMs = loadedUnet.ms;
  const loadedMemory = readMemory();
  result.rssAfterLoad = loadedMemory.rss;
  result.peakAfterLoad = loadedMemory.hwm;
  log(
    `UNet session loaded in ${(loadedUnet.ms / 1000).toFixed(1)} s, RSS ${(loadedMemory.rss / MB).toFixed(0)} MB, peak ${(loadedMemory.hwm / MB).toFixed(0)} MB`,
  );
  return level;
}

/**
 * The SDXL step's [size, batch], largest first: native size with CFG's batch 2, then batch 1, then 512×512 batch 1.
 * Besides the weights cast in the step (optimizations disabled), the attention scores and probabilities are nearly
 * all a step adds (SD 1.5 at 512×512 at level "extended": 2.0 GiB more RSS, its attention 2.0 GiB).
 */
function chooseSdxlStep(run: PresetRun, level: LoadLevel): [number, number] {
  const { arch, forcedSize, result } = run;
  const native = forcedSize ?? 1024;
  const candidates: [number, number][] = [
    [native, 2],
    [native, 1],
    ...(forcedSize === null ? ([[512, 1]] as [number, number][]) : []),
  ];
  const available = memAvailable();
  const castInStep = level === "disabled" ? DISABLED_STEP_PER_FLOAT32_BYTE * unetFloat32Bytes(arch) : 0;
  const needOf = ([size, batch]: [number, number]) => attentionBytes(arch, size, batch) + castInStep + GiB;
  const fits = candidates.find((c) => needOf(c) <= available);
  const [size, batch] = fits ?? (candidates[candidates.length - 1] as [number, number]);
  const need = needOf([size, batch]);
  const refused = candidates
    .slice(0, fits ? candidates.indexOf(fits) : candidates.length)
    .map(([s, b]) => `${b}×${s}² needs ~${(needOf([s, b]) / GiB).toFixed(1)} GiB`);
  result.sizeNote = `${batch}×${size}×${size} (${forcedSize !== null ? "size from --size; " : ""}${
    refused.length > 0 ? `${refused.join(", ")}, too much; ` : ""
  }~${(need / GiB).toFixed(1)} GiB needed, ${(available / GiB).toFixed(1)} GiB available after the load)`;
  result.size = size;
  result.batch = batch;
  if (!fits) {
    result.skipped = `UNet step not run: ${result.sizeNote}; ${result.skipped}`;
    throw new Error(`not enough memory for the step: ${result.sizeNote}`);
  }
  return [size, batch];
}

/** One SDXL UNet step on random latents, text states, text_embeds and time_ids. */
async function runSdxlStep(run: PresetRun, unet: UNetSession, size: number, batch: number): Promise<void> {
  const { arch, result, log } = run;
  run.stage = `UNet step at ${size}×${size}`;
  const latent = size / 8;
  const context = arch.unet.contextDim;
  const pooled = arch.text.layout === "sdxl" ? arch.text.bigG.embedDim : 1280;
  log(`one UNet step: batch ${batch}, ${size}×${size}, latents ${latent}×${latent} (${result.sizeNote})`);
  const timeIds = Array.from({ length: batch }, () => [size, size, 0, 0, size, size]).flat();
  const step = await timed(() =>
    unet.run({
      sample: { data: normals(batch * 4 * latent * latent, 1), dims: [batch, 4, latent, latent] },
      timestep: { data: Float32Array.of(999), dims: [] },
      encoder_hidden_states: { data: normals(batch * 77 * context, 2), dims: [batch, 77, context] },
      text_embeds: { data: normals(batch * pooled, 3), dims: [batch, pooled] },
      time_ids: { data: Float32Array.from(timeIds), dims: [batch, 6] },
    }),
  );
  result.unetMs = step.ms;
  const unetOut = step.value;
  const unetFinite = unetOut !== null && unetOut.length === batch * 4 * latent * latent && allFinite(unetOut);
  result.finite = { unet: unetFinite };
  result.ok = unetFinite;
  if (!result.ok) result.failure = "non-finite or misshapen output: unet";
}

async function checkSdxlUNet(run: PresetRun, files: PipelineFiles): Promise<void> {
  const level = await loadSdxlUNet(run, files.unet);
  const [size, batch] = chooseSdxlStep(run, level);
  await runSdxlStep(run, run.unetOnly as UNetSession, size, batch);
}

// ---- what it runs: SD 1.x / 2.x, the whole pipeline ----

/** Loads the pipeline the way the server does (inspectCheckpoint + loadOnnxPipeline on the CPU). */
async function loadPipeline(run: PresetRun): Promise<{ pipeline: PipelineComponents; nativeSize: number }> {
  const { preset, path, result, log } = run;
  run.stage = "load";
  const entry = await inspectCheckpoint(preset, path);
  if (entry.problem) throw new Error(`inspectCheckpoint: ${entry.problem}`);
  const loaded = await timed(() => loadOnnxPipeline(entry, "cpu"));
  const pipeline = loaded.value;
  run.pipeline = pipeline;
  result.loadMs = loaded.ms;
  const loadedMemory = readMemory();
  result.rssAfterLoad = loadedMemory.rss;
  result.peakAfterLoad = loadedMemory.hwm;
  log(
    `sessions loaded in ${(loaded.ms / 1000).toFixed(1)} s (graphs reused: ${pipeline.checkpointGraphs?.reused}), RSS ${(result.rssAfterLoad / MB).toFixed(0)} MB`,
  );
  return { pipeline, nativeSize: entry.nativeSize };
}

/** The UNet step's size: 768×768 for the 768-v model when its attention fits in the memory left, else 512×512. */
function chooseStepSize(run: PresetRun, native: number, batch: number): number {
  const { arch, forcedSize, result } = run;
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
  result.batch = batch;
  return size;
}

/** One text-encoder row; whether its output is finite and of the UNet's context width. */
async function runTextEncoder(run: PresetRun, pipeline: PipelineComponents): Promise<boolean> {
  run.stage = "text encoder run";
  const context = run.arch.unet.contextDim;
  const ids = Array.from({ length: 77 }, (_, i) => (i === 0 ? 49406 : i < 8 ? 320 + i : 49407));
  const text = await timed(() =>
    pipeline.textEncoder.run({ input_ids: { data: ids, dims: [1, 77] } }, ["last_hidden_state"]),
  );
  run.result.textMs = text.ms;
  const textOut = text.value.last_hidden_state;
  return textOut !== undefined && textOut.dims[2] === context && allFinite(textOut.data);
}

/** One UNet step on random latents and text states; whether its output is finite and of the latents' shape. */
async function runUNetStep(
  run: PresetRun,
  pipeline: PipelineComponents,
  size: number,
  batch: number,
): Promise<boolean> {
  run.stage = `UNet step at ${size}×${size}`;
  const context = run.arch.unet.contextDim;
  const latent = size / 8;
  run.log(`one UNet step: batch ${batch}, ${size}×${size} (${run.result.sizeNote})`);
  const step = await timed(() =>
    pipeline.unet.run(
      {
        sample: { data: normals(batch * 4 * latent * latent, 1), dims: [batch, 4, latent, latent] },
        timestep: { data: [999], dims: [] },
        encoder_hidden_states: { data: normals(batch * 77 * context, 2), dims: [batch, 77, context] },
      },
      ["out_sample"],
    ),
  );
  run.result.unetMs = step.ms;
  const unetOut = step.value.out_sample;
  return (
    unetOut !== undefined && unetOut.data.length === batch * 4 * latent * latent && allFinite(unetOut.data)
  );
}

/** One 256×256 VAE decode of random latents; whether its output is finite and of the image's shape. */
async function runVaeDecode(run: PresetRun, pipeline: PipelineComponents): Promise<boolean> {
  run.stage = "VAE decode";
  const vae = await timed(() =>
    pipeline.vaeDecoder.run({ latent_sample: { data: normals(4 * 32 * 32, 3), dims: [1, 4, 32, 32] } }, [
      "sample",
    ]),
  );
  run.result.vaeMs = vae.ms;
  const vaeOut = vae.value.sample;
  return vaeOut !== undefined && vaeOut.data.length === 3 * 256 * 256 && allFinite(vaeOut.data);
}

async function checkPipeline(run: PresetRun): Promise<void> {
  const { result } = run;
  const { pipeline, nativeSize } = await loadPipeline(run);
  const batch = 2;
  const size = chooseStepSize(run, nativeSize, batch);
  const textFinite = await runTextEncoder(run, pipeline);
  const unetFinite = await runUNetStep(run, pipeline, size, batch);
  const vaeFinite = await runVaeDecode(run, pipeline);
  result.finite = { unet: unetFinite, text: textFinite, vae: vaeFinite };
  result.ok = unetFinite && textFinite && vaeFinite;
  if (!result.ok) {
    result.failure = `non-finite or misshapen output: ${Object.entries(result.finite)
      .filter(([, ok]) => !ok)
      .map(([name]) => name)
      .join(", ")}`;
  }
}

// ---- one preset: build, run, and the result whatever happened ----

/** One preset, in this process. */
async function checkPreset(
  preset: FullSize,
  keep: boolean,
  forcedSize: number | null,
  child: boolean,
): Promise<Result> {
  const dir = await mkdtemp(join(tmpdir(), "sdx-full-size-"));
  if (child) console.log(DIR_PREFIX + dir);
  const run: PresetRun = {
    preset,
    arch: PRESETS[preset],
    path: join(dir, "models", `${preset}.safetensors`),
    forcedSize,
    result: emptyResult(preset),
    stage: "write",
    pipeline: null,
    unetOnly: null,
    log: (line: string) => console.log(`[${preset}] ${line}`),
  };
  const { result } = run;
  try {
    await writeCheckpoint(run);
    const built = await buildGraphs(run);
    if (built.kind === "sdxl") await checkSdxlUNet(run, built.files);
    else await checkPipeline(run);
  } catch (e) {
    let detail = message(e);
    if (run.stage === "build") detail += ` | per component: ${await diagnoseBuild(run.path).catch(message)}`;
    if (run.stage === "load") detail += ` | per component: ${await diagnoseLoad(run.path).catch(message)}`;
    result.failure = `${run.stage} failed: ${detail}`;
  } finally {
    if (run.pipeline) await releasePipeline(run.pipeline);
    if (run.unetOnly) await run.unetOnly.release();
    const memory = readMemory();
    result.rssAfter = memory.rss;
    result.peakRss = memory.hwm;
    if (keep) run.log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
  return result;
}

// ---- what it reports ----

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
      r.size === null ? "–" : `${r.batch ?? 2}×${r.size}²`,
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
    if (r.sessionNote) console.log(`${r.preset}: ${r.sessionNote}`);
    if (r.skipped) console.log(`${r.preset}: skipped: ${r.skipped}`);
    if (r.failure) console.log(`${r.preset}: FAILED: ${r.failure}`);
  }
  console.log(
    "file: random fp16 weights with the released checkpoint's keys and shapes; build: first prepareCheckpoint; " +
      "load: loadOnnxPipeline (3 sessions, graphs reused; sdxl: the UNet session alone); " +
      "step: first UNet run, batch 2 (CFG) unless the column says otherwise; " +
      "peak load / peak RSS: VmHWM from before the build to the loaded sessions / to the end",
  );
  console.log(SDXL_NOTE);
}

// ---- the command: each preset in a child process, or one in this process ----

/**
 * Runs one preset in a child process and returns its result (null when the child died without one, as when the
 * kernel kills it for memory: then its temporary folder, gigabytes, is removed here unless --keep).
 */
async function runChild(
  preset: FullSize,
  args: readonly string[],
): Promise<{ result: Result | null; code: number }> {
  const child = Bun.spawn([process.execPath, import.meta.path, "--only", preset, "--child", ...args], {
    stdout: "pipe",
    stderr: "inherit",
  });
  let result: Result | null = null;
  let dir: string | null = null;
  let pending = "";
  const decoder = new TextDecoder();
  for await (const chunk of child.stdout) {
    pending += decoder.decode(chunk, { stream: true });
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      if (line.startsWith(RESULT_PREFIX)) result = JSON.parse(line.slice(RESULT_PREFIX.length)) as Result;
      else if (line.startsWith(DIR_PREFIX)) dir = line.slice(DIR_PREFIX.length);
      else console.log(line);
      newline = pending.indexOf("\n");
    }
  }
  const code = await child.exited;
  if (result === null && dir !== null) {
    if (args.includes("--keep")) console.log(`[${preset}] kept ${dir} (the child died)`);
    else {
      await rm(dir, { recursive: true, force: true });
      console.log(`[${preset}] removed ${dir} (the child died before it could)`);
    }
  }
  return { result, code };
}

interface Options {
  only: FullSize | undefined;
  keep: boolean;
  /** --size, or null for each preset's own choice. */
  forcedSize: number | null;
  /** This process is a child of the check, which reads its result from stdout. */
  child: boolean;
}

/** The command line's options, or the usage error to print. */
function parseOptions(args: string[]): Options | string {
  const { values } = parseArgs({
    args,
    options: {
      only: { type: "string" },
      keep: { type: "boolean", default: false },
      size: { type: "string" },
      child: { type: "boolean", default: false },
    },
  });
  const only = values.only;
  if (only !== undefined && !(FULL_SIZE as readonly string[]).includes(only))
    return `usage: bun run check:full-size [--only ${FULL_SIZE.join("|")}] [--keep] [--size 512]`;
  const forcedSize = values.size === undefined ? null : Number(values.size);
  if (forcedSize !== null && !(Number.isInteger(forcedSize) && forcedSize > 0 && forcedSize % 8 === 0))
    return "--size must be a positive multiple of 8";
  return { only: only as FullSize | undefined, keep: values.keep, forcedSize, child: values.child };
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  if (typeof options === "string") {
    console.error(options);
    return 2;
  }
  const { only, keep, forcedSize, child } = options;
  // sdxl runs in a child even with --only: if the kernel kills it for memory, the parent still reports that and
  // removes its 7 GB of temporary files.
  if (only !== undefined && (child || only !== "sdxl")) {
    const result = await checkPreset(only, keep, forcedSize, child);
    if (child) console.log(RESULT_PREFIX + JSON.stringify(result));
    else report([result]);
    return result.ok ? 0 : 1;
  }
  const presets: readonly FullSize[] = only !== undefined ? [only] : FULL_SIZE;
  if (only === undefined)
    console.log(`full-size check: ${FULL_SIZE.join(", ")}, one child process each. ${SDXL_NOTE}`);
  const results: Result[] = [];
  let failed = false;
  for (const preset of presets) {
    const extra = forcedSize !== null ? ["--size", String(forcedSize)] : [];
    const { result, code } = await runChild(preset, [...(keep ? ["--keep"] : []), ...extra]);
    if (result) results.push(result);
    else console.log(`${preset}: FAILED: the child process exited with ${code} without a result`);
    failed ||= code !== 0 || !result?.ok;
  }
  console.log("");
  if (results.length > 0) report(results);
  return failed ? 1 : 0;
}

process.exitCode = await main();
