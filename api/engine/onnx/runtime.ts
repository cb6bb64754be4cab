/**
 * The one module that touches onnxruntime. Everything else hands it plain typed arrays and shapes;
 * input names, element types and ranks are read from the session, never assumed, so the same engine
 * drives graphs from different exporters (optimum 1.22 feeds `timestep` as int64 [1], 1.24 as float32 []).
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import { EXECUTION_PROVIDERS, type ExecutionProvider } from "../../../contract/index.ts";
import { floatsToHalfBits, halfBitsToFloats } from "../half.ts";
import { GraphBuilder } from "./graph_builder.ts";

export interface ValueInfo {
  name: string;
  /** onnxruntime element type: "float32", "float16", "int64", "int32", ... */
  type: string;
  /** Declared dimensions; symbolic ones are strings. */
  shape: ReadonlyArray<number | string>;
}

export interface FeedValue {
  data: Float32Array | Int32Array | BigInt64Array | readonly number[];
  dims: readonly number[];
}

/**
 * onnxruntime-common decides once, on its first Tensor, whether float16 tensors hold a Float16Array (when the
 * global exists, as in Bun) or Uint16Array bits — and onnxruntime-node's binding reads a Float16Array as empty
 * under Bun ("not enough space: expected 6, got 0"). Make that one-time choice with the global hidden, so
 * fp16 tensors cross the boundary as Uint16Array bits, which the binding reads correctly.
 */
function pinFloat16TensorsToUint16(): void {
  const g = globalThis as { Float16Array?: unknown };
  const saved = g.Float16Array;
  if (saved === undefined) return;
  g.Float16Array = undefined;
  try {
    new ort.Tensor("float32", new Float32Array(1), [1]).dispose();
  } finally {
    g.Float16Array = saved;
  }
}
pinFloat16TensorsToUint16();

/** Time spent inside onnxruntime's `run` in this thread, for the engine benchmark's overhead figure. */
export const runStats = { runs: 0, ms: 0 };

export class OnnxRunError extends Error {
  override name = "OnnxRunError";
}

export const OPTIMIZATION_LEVELS = ["disabled", "basic", "extended", "all"] as const;

export interface OnnxModelOptions {
  provider: ExecutionProvider;
  /**
   * onnxruntime's graph optimization level (default "all"). "all" folds the casts of float16 weights into
   * float32 copies at load; "disabled" keeps the file's weights and casts on every run (less memory, slower).
   */
  optimizationLevel?: (typeof OPTIMIZATION_LEVELS)[number];
  /** Threads for one operator (0 = onnxruntime's default, all cores). */
  intraOpThreads?: number;
  /** CUDA: the GPU to run on (default 0). */
  deviceId?: number;
}

/**
 * The CUDA execution provider's options. onnxruntime-node 1.30's binding reads `deviceId` only (its
 * session_options_helper.cc: the other names are absent from the 1.30 binary); later bindings also read the
 * rest, named as in OrtCUDAProviderOptionsV2, so they are set now and take effect on upgrade:
 * - arenaExtendStrategy kSameAsRequested: the GPU arena grows by what is asked, not to the next power of two,
 *   so a server whose image sizes vary does not strand gigabytes of rounding;
 * - cudnnConvAlgoSearch EXHAUSTIVE: cuDNN benchmarks every convolution algorithm once per shape (onnxruntime's
 *   default; the warm-up at the default size pays for it before the first request);
 * - cudnnConvUseMaxWorkspace: lets cuDNN pick the fastest algorithms, which need workspace;
 * - doCopyInDefaultStream: copies on the compute stream (no cross-stream sync).
 * Not set: enableCudaGraph (CUDA graphs need fixed input shapes and addresses; sdx's shapes vary per request),
 * and IO binding, which onnxruntime-node does not offer (inputs and outputs cross as CPU tensors; for SD they are
 * small: latents and text states, well under a megabyte per step).
 */
export function cudaProviderOptions(deviceId = 0): ort.InferenceSession.ExecutionProviderConfig {
  return {
    name: "cuda",
    deviceId,
    arenaExtendStrategy: "kSameAsRequested",
    cudnnConvAlgoSearch: "EXHAUSTIVE",
    cudnnConvUseMaxWorkspace: true,
    doCopyInDefaultStream: true,
  } as ort.InferenceSession.ExecutionProviderConfig;
}

/**
 * The WebGPU execution provider's options (Dawn: Vulkan on Linux, Metal on macOS, D3D12 on Windows). onnxruntime-node
 * 1.30's binding reads deviceId, preferredLayout, validationMode, the buffer cache modes, enableRobustness and
 * forceCpuNodeNames (its session_options_helper.cc). Left at onnxruntime's defaults: deviceId (a WebGPU *context* id
 * there, not a GPU index: ids above 0 need a caller-made Dawn instance and device), the preferred layout, validation
 * and the buffer cache modes; graph capture, which only the session config could turn on, stays off (like CUDA
 * graphs it needs fixed shapes; sdx's vary).
 */
export function webGpuProviderOptions(): ort.InferenceSession.ExecutionProviderConfig {
  return { name: "webgpu" };
}

/**
 * The session options per provider. CPU: level "all", onnxruntime's default arena and threads, errors logged
 * only. WebGPU: the WebGPU provider with the CPU behind it for the shape operators it leaves to the host,
 * sequential execution (one queue), the CPU arena for those host tensors. CUDA: the CUDA provider first with the CPU provider behind it for the few shape operators CUDA leaves
 * to the host, level "all" (onnxruntime's CUDA fusions: LayerNorm, GELU, bias adds), the CPU arena for those host
 * tensors, memory patterns, sequential execution (one stream: parallel mode only adds host threads).
 */
export function sessionOptionsFor(options: OnnxModelOptions): ort.InferenceSession.SessionOptions {
  const graphOptimizationLevel = options.optimizationLevel ?? "all";
  if (options.provider === "webgpu") {
    return {
      executionProviders: [webGpuProviderOptions(), "cpu"],
      graphOptimizationLevel,
      enableCpuMemArena: true,
      executionMode: "sequential",
      intraOpNumThreads: options.intraOpThreads ?? 0,
    };
  }
  if (options.provider === "cuda") {
    return {
      executionProviders: [cudaProviderOptions(options.deviceId ?? 0), "cpu"],
      graphOptimizationLevel,
      enableCpuMemArena: true,
      enableMemPattern: true,
      executionMode: "sequential",
      intraOpNumThreads: options.intraOpThreads ?? 0,
    };
  }
  return {
    executionProviders: ["cpu"],
    graphOptimizationLevel,
    intraOpNumThreads: options.intraOpThreads ?? 0,
    // Errors only: onnxruntime warns once per weight that a graph keeps stored (GraphBuilder.external's
    // `overridable`: "appears in graph inputs and will not be treated as constant"), hundreds of lines per model.
    logSeverityLevel: 3,
  };
}

export class OnnxModel {
  private isReleased = false;

  private constructor(
    readonly path: string,
    readonly provider: ExecutionProvider,
    private readonly session: ort.InferenceSession,
    readonly inputs: ReadonlyMap<string, ValueInfo>,
    readonly outputs: ReadonlyMap<string, ValueInfo>,
  ) {}

  static async load(path: string, options: OnnxModelOptions): Promise<OnnxModel> {
    const sessionOptions = sessionOptionsFor(options);
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, sessionOptions);
    } catch (e) {
      const message = (e as Error).message;
      if (options.provider === "webgpu" && WEBGPU_UNAVAILABLE.test(message)) {
        throw new OnnxRunError(
          `the WebGPU execution provider is not available (${message}): Dawn found no usable GPU adapter ` +
            "(on Linux it needs libvulkan.so.1 and the GPU driver's Vulkan ICD); start with --provider cpu to run on the CPU",
        );
      }
      if (options.provider === "cuda" && /shared library|providers_cuda|providers_shared/i.test(message)) {
        throw new OnnxRunError(
          `the CUDA execution provider is not available (${message}): onnxruntime-node needs its CUDA 12 provider ` +
            "libraries (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so) beside its binding and an " +
            "NVIDIA driver; start with --provider cpu to run on the CPU",
        );
      }
      throw e;
    }
    return OnnxModel.wrap(path, options.provider, session);
  }

  /** A session on a graph held in memory (small helper graphs); `name` stands for its path in messages. */
  static async fromBytes(name: string, graph: Uint8Array, options: OnnxModelOptions): Promise<OnnxModel> {
    return OnnxModel.wrap(
      name,
      options.provider,
      await ort.InferenceSession.create(graph, sessionOptionsFor(options)),
    );
  }

  /** A model around a created session, its inputs and outputs as the session declares them. */
  private static wrap(path: string, provider: ExecutionProvider, session: ort.InferenceSession): OnnxModel {
    return new OnnxModel(
      path,
      provider,
      session,
      describe(session.inputNames, session.inputMetadata),
      describe(session.outputNames, session.outputMetadata),
    );
  }

  hasInput(name: string): boolean {
    return this.inputs.has(name);
  }

  /** The size the graph fixes for `axis` of an input or output, or null when that axis is dynamic. */
  fixedDim(name: string, axis: number): number | null {
    const dim = (this.inputs.get(name) ?? this.outputs.get(name))?.shape[axis];
    return typeof dim === "number" && dim > 0 ? dim : null;
  }

  /**
   * Runs `rows` items through a graph whose batch axis may be fixed: the `batched` feeds (first axis = rows)
   * are cut into slices of the size the graph takes, and each output is concatenated along its first axis.
   */
  async runBatched(
    feeds: Record<string, FeedValue>,
    batched: readonly string[],
    rows: number,
    outputNames: readonly string[],
  ): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
    const first = batched[0];
    const slice = (first ? this.fixedDim(first, 0) : null) ?? rows;
    if (slice >= rows && rows % slice === 0) return this.run(feeds, outputNames);
    if (rows % slice !== 0) {
      throw new OnnxRunError(
        `${this.path}: the graph takes batches of ${slice}; ${rows} rows cannot be split evenly`,
      );
    }
    const parts: Record<string, { data: Float32Array; dims: number[] }>[] = [];
    for (let start = 0; start < rows; start += slice) {
      const sliced: Record<string, FeedValue> = { ...feeds };
      for (const name of batched) {
        const feed = feeds[name] as FeedValue;
        const per = feed.data.length / rows;
        const data = feed.data as Float32Array;
        sliced[name] = {
          data: data.subarray(start * per, (start + slice) * per),
          dims: [slice, ...feed.dims.slice(1)],
        };
      }
      parts.push(await this.run(sliced, outputNames));
    }
    const out: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const name of outputNames) {
      const pieces = parts.map((p) => p[name] as { data: Float32Array; dims: number[] });
      const data = new Float32Array(pieces.reduce((n, p) => n + p.data.length, 0));
      let offset = 0;
      for (const p of pieces) {
        data.set(p.data, offset);
        offset += p.data.length;
      }
      const dims = [...(pieces[0] as { dims: number[] }).dims];
      dims[0] = rows;
      out[name] = { data, dims };
    }
    return out;
  }

  /**
   * Runs the graph. Each feed is converted to the element type the graph declares; a scalar feed is
   * given the rank the graph declares (0 or 1). Outputs come back as float32 arrays with their dims.
   */
  async run(
    feeds: Record<string, FeedValue>,
    outputNames?: readonly string[],
  ): Promise<Record<string, { data: Float32Array; dims: number[] }>> {
    const tensors: Record<string, ort.Tensor> = {};
    for (const [name, feed] of Object.entries(feeds)) {
      const info = this.inputs.get(name);
      if (!info)
        throw new OnnxRunError(
          `${this.path}: the graph has no input "${name}" (inputs: ${this.listInputs()})`,
        );
      tensors[name] = toTensor(info, feed);
    }
    const wanted = outputNames ?? [...this.outputs.keys()];
    let result: ort.InferenceSession.OnnxValueMapType;
    const started = performance.now();
    try {
      result = await this.session.run(tensors, wanted as string[]);
      runStats.runs++;
      runStats.ms += performance.now() - started;
    } catch (e) {
      const given = Object.entries(tensors)
        .map(([n, t]) => `${n}: ${t.type}[${t.dims.join(", ")}]`)
        .join("; ");
      throw new OnnxRunError(
        `${this.path}: run failed: ${(e as Error).message}\n  fed: ${given}\n  graph expects: ${this.listInputs()}`,
      );
    }
    const out: Record<string, { data: Float32Array; dims: number[] }> = {};
    for (const name of wanted) {
      const t = result[name] as ort.Tensor | undefined;
      if (!t) throw new OnnxRunError(`${this.path}: output "${name}" missing from the run's result`);
      out[name] = { data: toFloat32(t), dims: [...t.dims] };
      t.dispose();
    }
    return out;
  }

  /** Whether release() ran: the session can no longer run (model CPU offload creates another from `path`). */
  get released(): boolean {
    return this.isReleased;
  }

  /** Frees the session's memory; releasing twice is harmless. */
  async release(): Promise<void> {
    if (this.isReleased) return;
    this.isReleased = true;
    await this.session.release();
  }

  private listInputs(): string {
    return [...this.inputs.values()].map((i) => `${i.name}: ${i.type}[${i.shape.join(", ")}]`).join("; ");
  }
}

function describe(names: readonly string[], metadata: readonly ort.InferenceSession.ValueMetadata[]) {
  const map = new Map<string, ValueInfo>();
  names.forEach((name, i) => {
    const m = metadata[i];
    if (m?.isTensor) map.set(name, { name, type: m.type, shape: m.shape });
    else map.set(name, { name, type: "unknown", shape: [] });
  });
  return map;
}

function toTensor(info: ValueInfo, feed: FeedValue): ort.Tensor {
  const count = feed.dims.reduce((a, b) => a * b, 1);
  if (feed.data.length !== count) {
    throw new OnnxRunError(
      `input "${info.name}": ${feed.data.length} values for dims [${feed.dims.join(", ")}]`,
    );
  }
  // A single value is fed with the declared rank: float32 [] (optimum ≥ 1.24) or int64 [1] (optimum 1.22).
  let dims = [...feed.dims];
  if (count === 1 && dims.length <= 1 && info.shape.length !== dims.length)
    dims = info.shape.length === 0 ? [] : [1];
  const values = feed.data;
  switch (info.type) {
    case "float32":
      return new ort.Tensor(
        "float32",
        values instanceof Float32Array ? values : Float32Array.from(values, Number),
        dims,
      );
    case "int64":
      return new ort.Tensor(
        "int64",
        values instanceof BigInt64Array
          ? values
          : BigInt64Array.from(values as ArrayLike<number>, (v) => BigInt(Math.trunc(v))),
        dims,
      );
    case "int32":
      return new ort.Tensor(
        "int32",
        Int32Array.from(values as ArrayLike<number>, (v) => Math.trunc(v)),
        dims,
      );
    case "float16":
      // fp16 graphs keep fp32 at the JS boundary: values are rounded to half precision here, never assumed.
      return new ort.Tensor("float16", floatsToHalfBits(values as ArrayLike<number>), dims);
    default:
      throw new OnnxRunError(
        `input "${info.name}" has element type ${info.type}, which sdx does not feed yet`,
      );
  }
}

function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === "float32") return t.data as Float32Array;
  if (t.type === "float16") {
    return t.data instanceof Uint16Array
      ? halfBitsToFloats(t.data)
      : Float32Array.from(t.data as ArrayLike<number>);
  }
  if (t.type === "float64" || t.type === "int32") return Float32Array.from(t.data as ArrayLike<number>);
  throw new OnnxRunError(`output of element type ${t.type} is not supported`);
}

/** Where onnxruntime-node's native binding and any provider libraries beside it live. */
export function bindingDir(): string {
  const pkg = dirname(Bun.resolveSync("onnxruntime-node/package.json", import.meta.dir));
  return join(pkg, "bin", "napi-v6", process.platform, process.arch);
}

export const PROVIDER_CHOICES = ["auto", ...EXECUTION_PROVIDERS] as const;
export type ProviderChoice = (typeof PROVIDER_CHOICES)[number];

/** What onnxruntime or Dawn says when no WebGPU adapter (or device) can be had. */
const WEBGPU_UNAVAILABLE = /WebGPU (adapter|device)|libvulkan|No supported adapters/i;

/** A provider passed over on the way to the one in use, and why. */
export interface ProviderFallback {
  provider: ExecutionProvider;
  reason: string;
}

export interface ChosenProvider {
  provider: ExecutionProvider;
  reason: string;
  /** The providers tried first and passed over (auto's order: CUDA, WebGPU, CPU), each with its reason. */
  fallbacks: ProviderFallback[];
  /** Whether checkpoint graphs compute in float16 on this provider (CUDA; WebGPU where the adapter has shader-f16). */
  float16: boolean;
  /** WebGPU only: why the graphs stay float32, when they do. */
  float16Note: string | null;
}

/** Whether CUDA looks usable, without loading it: an NVIDIA GPU visible and the provider libraries installed. */
function cudaVisible(): { ok: boolean; reason: string } {
  const libs = ["libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"];
  const missing = libs.filter((lib) => !existsSync(join(bindingDir(), lib)));
  const gpu = existsSync("/dev/nvidia0") || existsSync("/proc/driver/nvidia/version");
  if (!gpu) return { ok: false, reason: "no NVIDIA GPU is visible" };
  if (missing.length > 0) {
    return {
      ok: false,
      reason: `an NVIDIA GPU is visible but onnxruntime-node's CUDA provider libraries are not installed (${missing.join(", ")}; see the README)`,
    };
  }
  return { ok: true, reason: "an NVIDIA GPU is visible and the CUDA provider libraries are installed" };
}

export type WebGpuProbe =
  | { ok: true; shaderF16: boolean; f16Error: string | null }
  | { ok: false; reason: string };

/** A one-operator graph x·x + x over four values of `type`, as bytes. */
function probeGraph(type: "float32" | "float16"): Uint8Array {
  const g = new GraphBuilder(`webgpu_probe_${type}`);
  const x = g.input("x", type, [4]);
  g.output(g.node("Add", [g.node("Mul", [x, x]), x]), "y", type, [4]);
  return g.toBytes();
}

/** Runs the probe graph of `type` on the WebGPU provider alone (no CPU fallback); null when the answer is right. */
async function runProbe(type: "float32" | "float16"): Promise<string | null> {
  const session = await ort.InferenceSession.create(probeGraph(type), {
    executionProviders: [webGpuProviderOptions()],
    extra: { session: { disable_cpu_ep_fallback: "1" } },
  });
  try {
    const values = [0.5, -2, 3, 1.25];
    const expected = values.map((v) => v * v + v); // exact in half precision too
    const data = type === "float16" ? floatsToHalfBits(values) : Float32Array.from(values);
    const result = await session.run({ x: new ort.Tensor(type, data, [4]) });
    const got = Array.from(toFloat32(result.y as ort.Tensor));
    return got.every((v, i) => v === expected[i]) ? null : `computed [${got}] for [${expected}]`;
  } finally {
    await session.release();
  }
}

/**
 * Whether a WebGPU adapter runs graphs here, and whether it computes float16 (WebGPU's optional `shader-f16`
 * feature): onnxruntime-node exposes no adapter query, so the answer is the behaviour itself — a tiny float32
 * graph, then a float16 one, on the WebGPU provider with the CPU fallback disabled, each checked against its exact
 * result. The failure's message (Dawn's "No supported adapters", a missing libvulkan.so.1…) is the reason.
 */
export async function probeWebGpu(): Promise<WebGpuProbe> {
  try {
    const wrong = await runProbe("float32");
    if (wrong !== null) return { ok: false, reason: `the WebGPU adapter ${wrong}` };
  } catch (e) {
    return { ok: false, reason: `no WebGPU adapter: ${firstLine((e as Error).message)}` };
  }
  try {
    const wrong = await runProbe("float16");
    return { ok: true, shaderF16: wrong === null, f16Error: wrong && `float16 ${wrong}` };
  } catch (e) {
    return { ok: true, shaderF16: false, f16Error: firstLine((e as Error).message) };
  }
}

/** The sentence that says what failed, without onnxruntime's source location and check. */
function firstLine(message: string): string {
  const line = message.split("\n")[0] ?? message;
  return (/ was false\. (.*)$/.exec(line)?.[1] ?? line).trim();
}

/** Where each provider stands, as a probe found it (tests pass their own). */
export interface ProviderProbes {
  cuda: () => { ok: boolean; reason: string };
  webgpu: () => Promise<WebGpuProbe>;
}

const realProbes: ProviderProbes = { cuda: cudaVisible, webgpu: probeWebGpu };

function onWebGpu(
  probe: WebGpuProbe & { ok: true },
  reason: string,
  fallbacks: ProviderFallback[],
): ChosenProvider {
  return {
    provider: "webgpu",
    reason,
    fallbacks,
    float16: probe.shaderF16,
    float16Note: probe.shaderF16
      ? null
      : `the adapter does not compute float16 (shader-f16: ${probe.f16Error}); checkpoint graphs run in float32`,
  };
}

/**
 * The execution provider to use and why. `auto` tries CUDA (an NVIDIA GPU visible and onnxruntime-node's CUDA
 * provider libraries installed), then WebGPU (a probe graph runs on a Dawn adapter), then the CPU; each provider
 * passed over is listed with its reason. An explicit `webgpu` whose probe fails runs on the CPU, saying why. (Whether
 * CUDA really loads is known only when the first session is created; the model host falls back to the CPU then.)
 */
export async function chooseProvider(
  choice: ProviderChoice,
  probes: ProviderProbes = realProbes,
): Promise<ChosenProvider> {
  const plain = (provider: ExecutionProvider, reason: string, fallbacks: ProviderFallback[] = []) => ({
    provider,
    reason,
    fallbacks,
    float16: provider === "cuda",
    float16Note: null,
  });
  if (choice === "cpu") return plain("cpu", "requested with --provider cpu");
  if (choice === "cuda") return plain("cuda", "requested with --provider cuda");
  const fallbacks: ProviderFallback[] = [];
  if (choice === "auto") {
    const cuda = probes.cuda();
    if (cuda.ok) return plain("cuda", cuda.reason);
    fallbacks.push({ provider: "cuda", reason: cuda.reason });
  }
  const webgpu = await probes.webgpu();
  if (webgpu.ok) {
    const reason =
      choice === "webgpu" ? "requested with --provider webgpu" : "a WebGPU adapter runs the probe graph";
    return onWebGpu(webgpu, reason, fallbacks);
  }
  fallbacks.push({ provider: "webgpu", reason: webgpu.reason });
  const reason =
    choice === "webgpu"
      ? `--provider webgpu was requested but ${webgpu.reason}`
      : fallbacks.map((f) => `${f.provider}: ${f.reason}`).join("; ");
  return plain("cpu", reason, fallbacks);
}

export const onnxruntimeVersion: string = ort.env.versions.node ?? "unknown";
