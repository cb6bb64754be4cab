/**
 * Recovers a CLIP text encoder's final layer norm from its ONNX graph, so that diffusers' clip skip,
 * `final_layer_norm(hidden_states[-(clip_skip + 1)])`, can be applied to the `hidden_states.N` outputs of an
 * optimum export (which outputs the normalised `last_hidden_state` but not the norm's weights).
 *
 * Two graph forms are recognised, walking back from the output through Identity nodes:
 * - a `LayerNormalization` node (opset ≥ 17, or com.microsoft);
 * - torch's opset < 17 decomposition: `Add(Mul(Div(Sub(x, ReduceMean(x)), Sqrt(Add(ReduceMean(Pow(Sub, 2)),
 *   eps))), gamma), beta)` (Mul by `Reciprocal(Sqrt(...))` and `Mul(d, d)` for the square are accepted too).
 */
import {
  type OnnxGraphSummary,
  type OnnxNode,
  type OnnxTensorRef,
  readOnnxGraph,
  readTensor,
} from "./proto.ts";

export interface LayerNormParams {
  gamma: Float32Array;
  beta: Float32Array;
  /** As float32, the precision torch and onnxruntime use it in. */
  epsilon: number;
}

export interface FinalLayerNorm extends LayerNormParams {
  /** The normalised value (e.g. `hidden_states.12` for a 12-layer encoder). */
  input: string;
  form: "LayerNormalization" | "decomposed";
}

export type LayerNormMatch = { ok: true; ln: FinalLayerNorm } | { ok: false; reason: string };

/** Ops that pass a value through unchanged for this purpose. */
const PASS_THROUGH = new Set(["Identity"]);

class GraphWalk {
  constructor(readonly graph: OnnxGraphSummary) {}

  /** Follows Identity nodes back to the value's real name. */
  resolve(value: string): string {
    let v = value;
    for (let guard = 0; guard < 64; guard++) {
      const node = this.graph.producers.get(v);
      if (!node || !PASS_THROUGH.has(node.opType) || node.inputs[0] === undefined) return v;
      v = node.inputs[0];
    }
    return v;
  }

  /** The node producing `value` (after Identity), when it has the given op type. */
  producer(value: string | undefined, ...opTypes: string[]): OnnxNode | undefined {
    if (value === undefined || value === "") return undefined;
    const node = this.graph.producers.get(this.resolve(value));
    return node && opTypes.includes(node.opType) ? node : undefined;
  }

  /** The stored tensor behind a constant value (an initializer or a Constant node), through Identity/Cast. */
  constantRef(value: string | undefined): OnnxTensorRef | { values: number[] } | undefined {
    if (value === undefined || value === "") return undefined;
    let v = value;
    for (let guard = 0; guard < 64; guard++) {
      const init = this.graph.initializers.get(v);
      if (init) return init;
      const node = this.graph.producers.get(v);
      if (!node) return undefined;
      if ((PASS_THROUGH.has(node.opType) || node.opType === "Cast") && node.inputs[0] !== undefined) {
        v = node.inputs[0];
        continue;
      }
      if (node.opType !== "Constant") return undefined;
      const attrs = node.attributes;
      const t = attrs.get("value")?.t;
      if (t) return t;
      const f = attrs.get("value_float")?.f ?? attrs.get("value_int")?.i;
      if (f !== undefined) return { values: [f] };
      const fs = attrs.get("value_floats")?.floats ?? attrs.get("value_ints")?.ints;
      if (fs) return { values: fs };
      return undefined;
    }
    return undefined;
  }

  isConstant(value: string | undefined): boolean {
    return this.constantRef(value) !== undefined;
  }

  async constant(value: string | undefined): Promise<Float32Array | undefined> {
    const ref = this.constantRef(value);
    if (!ref) return undefined;
    if ("values" in ref) return Float32Array.from(ref.values);
    return readTensor(this.graph, ref);
  }

  /** Rank of a graph output, when declared. */
  outputRank(name: string): number | undefined {
    return this.graph.outputs.find((o) => o.name === name)?.shape.length || undefined;
  }
}

/** Splits a binary node's inputs into (constant, other) in either order. */
function constantAndOther(walk: GraphWalk, node: OnnxNode): [string, string] | undefined {
  const [a, b] = node.inputs;
  if (a === undefined || b === undefined) return undefined;
  if (walk.isConstant(b) && !walk.isConstant(a)) return [b, a];
  if (walk.isConstant(a) && !walk.isConstant(b)) return [a, b];
  return undefined;
}

/** Checks that a ReduceMean averages over the last axis only and keeps dims. */
async function reducesLastAxis(walk: GraphWalk, node: OnnxNode, rank: number | undefined): Promise<boolean> {
  if ((node.attributes.get("keepdims")?.i ?? 1) !== 1) return false;
  let axes = node.attributes.get("axes")?.ints;
  if (!axes && node.inputs[1]) {
    const t = await walk.constant(node.inputs[1]);
    axes = t ? [...t] : undefined;
  }
  if (axes?.length !== 1) return false;
  const axis = axes[0] as number;
  return axis === -1 || (rank !== undefined && axis === rank - 1);
}

async function matchLayerNormalization(
  walk: GraphWalk,
  node: OnnxNode,
  value: string,
): Promise<LayerNormMatch> {
  if (node.domain !== "" && node.domain !== "ai.onnx" && node.domain !== "com.microsoft")
    return { ok: false, reason: `LayerNormalization of unknown domain ${node.domain}` };
  if (walk.resolve(node.outputs[0] ?? "") !== value)
    return { ok: false, reason: "output is not the norm's Y" };
  const axis = node.attributes.get("axis")?.i ?? -1;
  const rank = walk.outputRank(value);
  if (axis !== -1 && !(rank !== undefined && axis === rank - 1))
    return { ok: false, reason: `LayerNormalization over axis ${axis}, not the last one` };
  const [x, scale, bias] = node.inputs;
  if (x === undefined) return { ok: false, reason: "LayerNormalization without input" };
  const gamma = await walk.constant(scale);
  if (!gamma) return { ok: false, reason: "LayerNormalization scale is not a constant" };
  let beta: Float32Array | undefined = new Float32Array(gamma.length);
  if (bias) beta = await walk.constant(bias);
  if (!beta) return { ok: false, reason: "LayerNormalization bias is not a constant" };
  const epsilon = Math.fround(node.attributes.get("epsilon")?.f ?? 1e-5);
  return checked({ gamma, beta, epsilon, input: walk.resolve(x), form: "LayerNormalization" });
}

async function matchDecomposed(walk: GraphWalk, add: OnnxNode, value: string): Promise<LayerNormMatch> {
  const fail = (reason: string): LayerNormMatch => ({
    ok: false,
    reason: `decomposed layer norm: ${reason}`,
  });
  const rank = walk.outputRank(value);
  const addParts = constantAndOther(walk, add);
  if (!addParts) return fail(`${add.name || "Add"} does not add a constant (beta)`);
  const [betaName, scaled] = addParts;
  const mulGamma = walk.producer(scaled, "Mul");
  if (!mulGamma) return fail("beta is not added to a Mul (gamma)");
  const mulParts = constantAndOther(walk, mulGamma);
  if (!mulParts) return fail(`${mulGamma.name || "Mul"} does not multiply by a constant (gamma)`);
  const [gammaName, normed] = mulParts;

  // normed = centred / sqrt(var + eps), as Div or as Mul by Reciprocal.
  let centred: string | undefined;
  let sqrt: OnnxNode | undefined;
  const div = walk.producer(normed, "Div", "Mul");
  if (div?.opType === "Div") {
    centred = div.inputs[0];
    sqrt = walk.producer(div.inputs[1], "Sqrt");
  } else if (div) {
    for (const [c, r] of [
      [div.inputs[0], div.inputs[1]],
      [div.inputs[1], div.inputs[0]],
    ] as const) {
      const recip = walk.producer(r, "Reciprocal");
      if (recip) {
        centred = c;
        sqrt = walk.producer(recip.inputs[0], "Sqrt");
        break;
      }
    }
  }
  if (!div || centred === undefined) return fail("gamma does not multiply a Div by a standard deviation");
  if (!sqrt) return fail("the divisor is not a Sqrt");
  const addEps = walk.producer(sqrt.inputs[0], "Add");
  const epsParts = addEps && constantAndOther(walk, addEps);
  if (!epsParts) return fail("the Sqrt's input is not variance + constant epsilon");
  const [epsName, variance] = epsParts;

  const sub = walk.producer(centred, "Sub");
  if (!sub || sub.inputs[0] === undefined) return fail("the numerator is not a Sub (x - mean)");
  const x = walk.resolve(sub.inputs[0]);
  const mean = walk.producer(sub.inputs[1], "ReduceMean");
  if (!mean || walk.resolve(mean.inputs[0] ?? "") !== x)
    return fail("the Sub does not subtract ReduceMean(x)");
  if (!(await reducesLastAxis(walk, mean, rank))) return fail("the mean is not over the last axis");

  const varMean = walk.producer(variance, "ReduceMean");
  if (!varMean) return fail("the variance is not a ReduceMean");
  if (!(await reducesLastAxis(walk, varMean, rank))) return fail("the variance is not over the last axis");
  const square = walk.producer(varMean.inputs[0], "Pow", "Mul");
  if (!square) return fail("the variance does not average a square");
  const [d0, d1] = square.inputs;
  const sameCentred = (v: string | undefined) => {
    if (v === undefined) return false;
    if (walk.resolve(v) === walk.resolve(centred)) return true;
    const s = walk.producer(v, "Sub");
    return (
      s !== undefined &&
      walk.resolve(s.inputs[0] ?? "") === x &&
      walk.resolve(s.inputs[1] ?? "") === walk.resolve(sub.inputs[1] ?? "")
    );
  };
  if (!sameCentred(d0)) return fail("the variance is not of x - mean");
  if (square.opType === "Pow") {
    const exponent = await walk.constant(d1);
    if (exponent?.length !== 1 || exponent[0] !== 2) return fail("the square is not Pow(·, 2)");
  } else if (!sameCentred(d1)) return fail("the square is not (x - mean) * (x - mean)");

  const eps = await walk.constant(epsName);
  if (eps?.length !== 1) return fail("epsilon is not a scalar");
  const gamma = await walk.constant(gammaName);
  const beta = await walk.constant(betaName);
  if (!gamma || !beta) return fail("gamma or beta could not be read");
  return checked({ gamma, beta, epsilon: Math.fround(eps[0] as number), input: x, form: "decomposed" });
}

function checked(ln: FinalLayerNorm): LayerNormMatch {
  if (ln.gamma.length === 0 || ln.gamma.length !== ln.beta.length)
    return { ok: false, reason: `gamma (${ln.gamma.length}) and beta (${ln.beta.length}) widths differ` };
  if (!(ln.epsilon >= 0) || !Number.isFinite(ln.epsilon))
    return { ok: false, reason: `epsilon ${ln.epsilon} is not a non-negative number` };
  return { ok: true, ln };
}

/** Matches the layer norm producing `outputName` in an already read graph. */
export async function matchFinalLayerNorm(
  graph: OnnxGraphSummary,
  outputName = "last_hidden_state",
): Promise<LayerNormMatch> {
  if (!graph.outputs.some((o) => o.name === outputName))
    return { ok: false, reason: `the graph has no output "${outputName}"` };
  const walk = new GraphWalk(graph);
  const value = walk.resolve(outputName);
  const node = graph.producers.get(value);
  if (!node) return { ok: false, reason: `"${outputName}" is not produced by a node` };
  if (node.opType === "LayerNormalization") return matchLayerNormalization(walk, node, value);
  if (node.opType === "Add") return matchDecomposed(walk, node, value);
  return { ok: false, reason: `"${outputName}" comes from ${node.opType}, not a layer norm` };
}

/**
 * Finds the layer norm that produces `outputName` in an ONNX model and reads its weights. Returns null when
 * the graph does not have that form; `diagnostics.reason` then says why. Unreadable files throw.
 */
export async function findFinalLayerNorm(
  modelPath: string,
  outputName = "last_hidden_state",
  diagnostics?: { reason?: string },
): Promise<FinalLayerNorm | null> {
  const match = await matchFinalLayerNorm(await readOnnxGraph(modelPath), outputName);
  if (match.ok) return match.ln;
  if (diagnostics) diagnostics.reason = match.reason;
  return null;
}

const LANES = 8; // Vectorized<float>::size() with AVX2, torch's default CPU capability on x86-64
const CHUNK = 16; // at::native::utils::kChunkSize
const f32 = Math.fround;

/** Per-lane Welford state. */
interface Moments {
  n: number;
  m1: Float32Array;
  m2: Float32Array;
}

/** AddMomentsVec: merges (n, m1, m2) into `into`, in float32. */
function addMomentsVec(n: number, m1: Float32Array, m2: Float32Array, into: Moments): void {
  const total = into.n + n;
  const c = total === 0 ? 0 : f32(n / total);
  const m0 = into.n;
  for (let l = 0; l < LANES; l++) {
    const delta = f32((m1[l] as number) - (into.m1[l] as number));
    into.m1[l] = f32((into.m1[l] as number) + f32(c * delta));
    into.m2[l] = f32((into.m2[l] as number) + f32((m2[l] as number) + f32(f32(f32(delta * delta) * c) * m0)));
  }
  into.n = total;
}

/**
 * Mean and biased variance of x[off, off+N) the way torch CPU computes them for float32 LayerNorm
 * (at::native::utils::RowwiseMoments: 8-lane Welford over chunks of 16 vectors, cascade merge, scalar tail).
 */
function rowMoments(x: Float32Array, off: number, N: number): [number, number] {
  const n = Math.floor(N / LANES);
  const m = Math.ceil(n / CHUNK);
  const depth = m <= 2 ? 1 : 32 - Math.clz32(m - 1);
  const stack: Moments[] = Array.from({ length: depth }, () => ({
    n: 0,
    m1: new Float32Array(LANES),
    m2: new Float32Array(LANES),
  }));
  const rc = Array.from({ length: CHUNK }, (_, j) => f32(1 / (j + 1)));
  const m1v = new Float32Array(LANES);
  const m2v = new Float32Array(LANES);
  const s0 = stack[0] as Moments;
  for (let i = 0; i < m; i++) {
    const m0 = Math.min(CHUNK, n - i * CHUNK);
    m1v.fill(0);
    m2v.fill(0);
    for (let j = 0; j < m0; j++) {
      const base = off + (i * CHUNK + j) * LANES;
      const c = rc[j] as number;
      for (let l = 0; l < LANES; l++) {
        const xv = x[base + l] as number;
        const delta = f32(xv - (m1v[l] as number));
        m1v[l] = f32((m1v[l] as number) + f32(delta * c));
        m2v[l] = f32((m2v[l] as number) + f32(delta * f32(xv - (m1v[l] as number))));
      }
    }
    addMomentsVec(m0, m1v, m2v, s0);
    let mask = i + 1;
    for (let j = 1; j < depth && (mask & 1) === 0; j++) {
      const lower = stack[j - 1] as Moments;
      addMomentsVec(lower.n, lower.m1, lower.m2, stack[j] as Moments);
      lower.n = 0;
      lower.m1.fill(0);
      lower.m2.fill(0);
      mask >>= 1;
    }
  }
  for (let i = 1; i < depth; i++) {
    const s = stack[i] as Moments;
    addMomentsVec(s.n, s.m1, s.m2, s0);
  }
  let cnt = 0;
  let m1 = 0;
  let m2 = 0;
  for (let i = n * LANES; i < N; i++) {
    const xv = x[off + i] as number;
    const delta = f32(xv - m1);
    cnt++;
    m1 = f32(m1 + f32(delta / cnt));
    m2 = f32(m2 + f32(delta * f32(xv - m1)));
  }
  for (let l = 0; l < LANES; l++) {
    // AddMoments(n, lane) into the scalar state.
    const total = cnt + n;
    const c = total === 0 ? 0 : f32(n / total);
    const delta = f32((s0.m1[l] as number) - m1);
    m1 = f32(m1 + f32(c * delta));
    m2 = f32(m2 + f32((s0.m2[l] as number) + f32(f32(f32(delta * delta) * c) * cnt)));
    cnt = total;
  }
  return [m1, f32(m2 / N)];
}

/**
 * torch.nn.LayerNorm over the last axis in float32, following torch 1.13's CPU kernel: rstd = 1/sqrt(var+eps),
 * y = (x·rstd + (−rstd·mean))·gamma + beta, every operation rounded to float32.
 */
export function layerNorm(
  x: Float32Array,
  dims: readonly [number, number, number],
  ln: LayerNormParams,
): Float32Array {
  const [b, s, d] = dims;
  if (x.length !== b * s * d) throw new Error(`layerNorm: ${x.length} values for dims [${dims.join(", ")}]`);
  if (ln.gamma.length !== d || ln.beta.length !== d)
    throw new Error(
      `layerNorm: gamma/beta have ${ln.gamma.length}/${ln.beta.length} values, the last axis ${d}`,
    );
  const eps = f32(ln.epsilon);
  const out = new Float32Array(x.length);
  for (let row = 0; row < b * s; row++) {
    const off = row * d;
    const [mean, variance] = rowMoments(x, off, d);
    const rstd = f32(1 / f32(Math.sqrt(f32(variance + eps))));
    const bias = f32(-rstd * mean);
    for (let j = 0; j < d; j++) {
      const y = f32(f32((x[off + j] as number) * rstd) + bias);
      out[off + j] = f32(f32(y * (ln.gamma[j] as number)) + (ln.beta[j] as number));
    }
  }
  return out;
}
