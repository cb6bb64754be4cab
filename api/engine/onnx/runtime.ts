/**
 * The one module that touches onnxruntime. Everything else hands it plain typed arrays and shapes;
 * input names, element types and ranks are read from the session, never assumed, so the same engine
 * drives graphs from different exporters (optimum 1.22 feeds `timestep` as int64 [1], 1.24 as float32 []).
 */
import * as ort from "onnxruntime-node";

export const EXECUTION_PROVIDERS = ["cpu", "cuda"] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

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

export class OnnxRunError extends Error {
  override name = "OnnxRunError";
}

export interface OnnxModelOptions {
  provider: ExecutionProvider;
  /** Threads for one operator (0 = onnxruntime's default, all cores). */
  intraOpThreads?: number;
}

export class OnnxModel {
  private constructor(
    readonly path: string,
    readonly provider: ExecutionProvider,
    private readonly session: ort.InferenceSession,
    readonly inputs: ReadonlyMap<string, ValueInfo>,
    readonly outputs: ReadonlyMap<string, ValueInfo>,
  ) {}

  static async load(path: string, options: OnnxModelOptions): Promise<OnnxModel> {
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: options.provider === "cuda" ? ["cuda", "cpu"] : ["cpu"],
      graphOptimizationLevel: "all",
      intraOpNumThreads: options.intraOpThreads ?? 0,
    };
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, sessionOptions);
    } catch (e) {
      const message = (e as Error).message;
      if (options.provider === "cuda" && /shared library|providers_cuda|providers_shared/i.test(message)) {
        throw new OnnxRunError(
          `the CUDA execution provider is not available (${message}): onnxruntime-node needs its CUDA 12 provider ` +
            "libraries (libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so) beside its binding and an " +
            "NVIDIA driver; start with --provider cpu to run on the CPU",
        );
      }
      throw e;
    }
    return new OnnxModel(
      path,
      options.provider,
      session,
      describe(session.inputNames, session.inputMetadata),
      describe(session.outputNames, session.outputMetadata),
    );
  }

  hasInput(name: string): boolean {
    return this.inputs.has(name);
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
    try {
      result = await this.session.run(tensors, wanted as string[]);
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

  async release(): Promise<void> {
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
    default:
      throw new OnnxRunError(
        `input "${info.name}" has element type ${info.type}, which sdx does not feed yet`,
      );
  }
}

function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === "float32") return t.data as Float32Array;
  if (t.type === "float16" || t.type === "float64" || t.type === "int32")
    return Float32Array.from(t.data as ArrayLike<number>);
  throw new OnnxRunError(`output of element type ${t.type} is not supported`);
}

/** Execution providers this onnxruntime build can use on this machine. */
export function availableProviders(): ExecutionProvider[] {
  const names = new Set(ort.listSupportedBackends().map((b) => b.name));
  return EXECUTION_PROVIDERS.filter((p) => names.has(p));
}

export const onnxruntimeVersion: string = ort.env.versions.node ?? "unknown";
