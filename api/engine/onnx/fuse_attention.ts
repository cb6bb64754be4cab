/**
 * Rewrites the attention of an exported UNet (an optimum / diffusers ONNX export) into onnxruntime's fused
 * com.microsoft MultiHeadAttention (see checkpoint/attention_variant.ts for the operator's contract).
 *
 * The pattern matched is what torch.onnx exports for diffusers' AttnProcessor (attention_processor.py:
 * head_to_batch_dim → get_attention_scores → bmm → batch_to_head_dim), per projection X ∈ {Q, K, V} of shape
 * [b, n, H·d]:
 *
 *   split(X)  = Reshape(Transpose(Reshape(X, [X₀, X₁, H, X₂/H]), [0,2,1,3]), [X₀·H, X₁, X₂/H])   → [b·H, n, d]
 *   scores    = MatMul(split(Q), Transpose(split(K), [0,2,1])) · scale      (Mul by, or Div by, a constant)
 *               [+ Mul(ConstantOfShape([q₀, q₁, k₁], finite), 0)]              (baddbmm's β·input with β = 0)
 *   O         = MatMul(Cast?(Softmax(scores, axis −1)), split(V))                                 → [b·H, s, d]
 *   merge(O)  = Reshape(Transpose(Reshape(O, [O₀/H, H, O₁, O₂]), [0,2,1,3]), [O₀/H, O₁, O₂·H])   → [b, s, H·d]
 *
 * which equals MultiHeadAttention(Q, K, V, num_heads = H, scale). Every shape operand is evaluated symbolically
 * (Shape → Gather → Mul/Div/Cast → Unsqueeze → Concat, or constants) and must equal the form above; H is the
 * constant of the first Reshape. (X₂/H in the first Reshape also pins X to rank 3: its element count must match.)
 * A match that cannot be proven is left as it is. Nodes left without consumers are
 * removed afterwards (ONNX nodes have no side effects).
 *
 * The graph is spliced at the byte level (proto.ts records where each graph field is): kept fields are copied as
 * they are, the merge Reshape is replaced by the MultiHeadAttention node, and initializers stored inline become
 * external data pointing into a hard link of the original file, so the rewritten model holds no copy of the weights.
 */
import { CONTRIB_DOMAIN, CONTRIB_OPSET } from "../checkpoint/attention_variant.ts";
import { type ElemType, elementTypeName } from "./dtypes.ts";
import {
  encodeExternalInitializerField,
  encodeFieldHeader,
  encodeNodeField,
  encodeOpsetImportField,
} from "./graph_builder.ts";
import { type OnnxGraphSummary, type OnnxNode, readRange, readTensor } from "./proto.ts";

export interface AttentionMatch {
  /** The merge Reshape whose output the fused node produces. */
  anchor: OnnxNode;
  q: string;
  k: string;
  v: string;
  heads: number;
  scale: number;
}

export interface AttentionScan {
  /** Attentions in the graph (Softmax nodes). */
  attentions: number;
  matches: AttentionMatch[];
}

/** float32, int32, int64, float16, float64. */
const CAST_NUMERIC = new Set([1, 6, 7, 10, 11]);

/** A scalar of a shape computation: c · Π dims, a dim being `<tensor>#<axis>`. */
interface Sym {
  c: number;
  dims: string[];
}

function sym(c: number, dims: string[] = []): Sym {
  return { c, dims: [...dims].sort() };
}

function symEqual(a: Sym | null, b: Sym): boolean {
  return (
    a !== null &&
    Math.abs(a.c - b.c) <= 1e-9 * Math.max(1, Math.abs(b.c)) &&
    a.dims.length === b.dims.length &&
    a.dims.every((d, i) => d === b.dims[i])
  );
}

function dim(tensor: string, axis: number): Sym {
  return sym(1, [`${tensor}#${axis}`]);
}

class Matcher {
  private readonly consts = new Map<string, Float32Array | null>();

  constructor(private readonly graph: OnnxGraphSummary) {}

  private producer(value: string, op: string): OnnxNode | null {
    const n = this.graph.producers.get(value);
    return n && n.opType === op && n.domain === "" ? n : null;
  }

  /** The values of a constant (Constant node or initializer), or null. */
  async constant(value: string): Promise<Float32Array | null> {
    if (this.consts.has(value)) return this.consts.get(value) ?? null;
    let out: Float32Array | null = null;
    const init = this.graph.initializers.get(value);
    const node = this.producer(value, "Constant");
    const tensor = init ?? node?.attributes.get("value")?.t;
    if (tensor && tensor.dims.reduce((a, b) => a * b, 1) <= 64) out = await readTensor(this.graph, tensor);
    this.consts.set(value, out);
    return out;
  }

  /** A constant of shape [] or [1] (nothing that could broadcast to a higher rank), or null. */
  async scalarConstant(value: string): Promise<number | null> {
    const v = await this.constant(value);
    const tensor =
      this.graph.initializers.get(value) ?? this.producer(value, "Constant")?.attributes.get("value")?.t;
    return v && v.length === 1 && tensor && tensor.dims.length <= 1 ? (v[0] as number) : null;
  }

  /** A scalar (or one-element) integer shape value as a symbol, or null when it cannot be followed. */
  async scalar(value: string): Promise<Sym | null> {
    const k = await this.scalarConstant(value);
    if (k !== null) return sym(k);
    const n = this.graph.producers.get(value);
    if (n?.domain !== "") return null;
    const [a = "", b = ""] = n.inputs;
    switch (n.opType) {
      case "Cast":
        // Between integer and float types only (a Cast to bool is no identity).
        return CAST_NUMERIC.has(n.attributes.get("to")?.i ?? 0) ? this.scalar(a) : null;
      case "Identity":
      case "Floor":
        return this.scalar(a);
      case "Unsqueeze":
      case "Squeeze":
        return this.scalar(a);
      case "Gather": {
        if ((n.attributes.get("axis")?.i ?? 0) !== 0) return null;
        const shape = this.producer(a, "Shape");
        const axis = await this.scalarConstant(b);
        if (!shape || shape.attributes.size > 0 || axis === null || axis < 0) return null;
        return dim(shape.inputs[0] as string, axis);
      }
      case "Mul": {
        const [x, y] = [await this.scalar(a), await this.scalar(b)];
        return x && y ? sym(x.c * y.c, [...x.dims, ...y.dims]) : null;
      }
      case "Div": {
        const [x, y] = [await this.scalar(a), await this.scalar(b)];
        return x && y && y.dims.length === 0 && y.c !== 0 ? sym(x.c / y.c, x.dims) : null;
      }
      default:
        return null;
    }
  }

  /** A 1-D shape value (a constant, or a Concat of constants and scalars) as symbols, or null. */
  async shapeOf(shape: string): Promise<Sym[] | null> {
    const constant = await this.constant(shape);
    if (constant) return Array.from(constant, (c) => sym(c));
    const concat = this.producer(shape, "Concat");
    if (!concat || (concat.attributes.get("axis")?.i ?? 0) !== 0) return null;
    const parts: Sym[] = [];
    for (const piece of concat.inputs) {
      const values = await this.constant(piece);
      const one = values ? null : await this.scalar(piece);
      if (values) parts.push(...Array.from(values, (c) => sym(c)));
      else if (one) parts.push(one);
      else return null;
    }
    return parts;
  }

  /** The target shape of a Reshape as symbols (a 0 copies the input's dim; a −1 is refused), or null. */
  async reshapeTarget(reshape: OnnxNode): Promise<Sym[] | null> {
    const [input = "", shape = ""] = reshape.inputs;
    if ((reshape.attributes.get("allowzero")?.i ?? 0) !== 0) return null;
    const parts = await this.shapeOf(shape);
    if (!parts || parts.some((p) => p.dims.length === 0 && p.c === -1)) return null;
    return parts.map((p, i) => (p.dims.length === 0 && p.c === 0 ? dim(input, i) : p));
  }

  private async transposed(value: string, perm: readonly number[]): Promise<string | null> {
    const t = this.producer(value, "Transpose");
    const p = t?.attributes.get("perm")?.ints;
    return t && p && p.length === perm.length && p.every((x, i) => x === perm[i])
      ? (t.inputs[0] as string)
      : null;
  }

  /** split(X) = [b·H, n, d] from X [b, n, H·d]: X and H, or null. */
  async split(value: string): Promise<{ x: string; heads: number } | null> {
    const outer = this.producer(value, "Reshape");
    if (!outer) return null;
    const middle = await this.transposed(outer.inputs[0] as string, [0, 2, 1, 3]);
    const inner = middle ? this.producer(middle, "Reshape") : null;
    if (!inner) return null;
    const x = inner.inputs[0] as string;
    const s1 = await this.reshapeTarget(inner);
    const s2 = await this.reshapeTarget(outer);
    const h = s1?.[2];
    if (!s1 || !s2 || s1.length !== 4 || s2.length !== 3 || !h || h.dims.length > 0) return null;
    const heads = h.c;
    if (!Number.isInteger(heads) || heads < 1) return null;
    const headDim = sym(1 / heads, [`${x}#2`]);
    const ok =
      symEqual(s1[0] as Sym, dim(x, 0)) &&
      symEqual(s1[1] as Sym, dim(x, 1)) &&
      symEqual(s1[3] as Sym, headDim) &&
      symEqual(s2[0] as Sym, sym(heads, [`${x}#0`])) &&
      symEqual(s2[1] as Sym, dim(x, 1)) &&
      symEqual(s2[2] as Sym, headDim);
    return ok ? { x, heads } : null;
  }

  /** merge(O) → [b, s, H·d] ending in `anchor`: O and H, or null. */
  async merge(anchor: OnnxNode): Promise<{ o: string; heads: number } | null> {
    const middle = await this.transposed(anchor.inputs[0] as string, [0, 2, 1, 3]);
    const inner = middle ? this.producer(middle, "Reshape") : null;
    if (!inner) return null;
    const o = inner.inputs[0] as string;
    const s3 = await this.reshapeTarget(inner);
    const s4 = await this.reshapeTarget(anchor);
    const h = s3?.[1];
    if (!s3 || !s4 || s3.length !== 4 || s4.length !== 3 || !h || h.dims.length > 0) return null;
    const heads = h.c;
    const batch = sym(1 / heads, [`${o}#0`]);
    const ok =
      symEqual(s3[0] as Sym, batch) &&
      symEqual(s3[2] as Sym, dim(o, 1)) &&
      symEqual(s3[3] as Sym, dim(o, 2)) &&
      symEqual(s4[0] as Sym, batch) &&
      symEqual(s4[1] as Sym, dim(o, 1)) &&
      symEqual(s4[2] as Sym, sym(heads, [`${o}#2`]));
    return ok ? { o, heads } : null;
  }

  /**
   * Whether `value` is provably zeros of exactly the scores' shape [q₀, q₁, k₁] (so adding it neither changes nor
   * broadcasts them): Mul(ConstantOfShape([q₀, q₁, k₁], finite), 0).
   */
  async zeros(value: string, q: string, k: string): Promise<boolean> {
    const mul = this.producer(value, "Mul");
    if (!mul) return false;
    const want = [dim(q, 0), dim(q, 1), dim(k, 1)];
    for (const [a, b] of [mul.inputs, [...mul.inputs].reverse()] as string[][]) {
      const fill = this.producer(a as string, "ConstantOfShape");
      const fillValue = fill?.attributes.get("value")?.t;
      if (!fill || (await this.scalarConstant(b as string)) !== 0) continue;
      const shape = await this.shapeOf(fill.inputs[0] as string);
      if (shape?.length !== 3 || !shape.every((s, i) => symEqual(s, want[i] as Sym))) continue;
      if (!fillValue) return true; // ConstantOfShape's default value is 0.
      const v = await readTensor(this.graph, fillValue);
      if (v.length === 1 && Number.isFinite(v[0])) return true;
    }
    return false;
  }

  /** The scores' MatMul and scale behind a Softmax input, or null. */
  async scores(value: string): Promise<{ matmul: OnnxNode; scale: number } | null> {
    let scaled = value;
    const add = this.producer(value, "Add");
    if (add) {
      const [a = "", b = ""] = add.inputs;
      const operands = async (v: string) => {
        const s = this.graph.producers.get(v);
        const m =
          s && (s.opType === "Mul" || s.opType === "Div")
            ? s.inputs.map((i) => this.producer(i, "MatMul")).find(Boolean)
            : null;
        const kT = m ? await this.transposed(m.inputs[1] as string, [0, 2, 1]) : null;
        return m && kT ? { q: m.inputs[0] as string, k: kT } : null;
      };
      const left = await operands(a);
      const right = left ? null : await operands(b);
      if (left && (await this.zeros(b, left.q, left.k))) scaled = a;
      else if (right && (await this.zeros(a, right.q, right.k))) scaled = b;
      else return null;
    }
    const n = this.graph.producers.get(scaled);
    if (n?.domain !== "" || (n.opType !== "Mul" && n.opType !== "Div")) return null;
    const [a = "", b = ""] = n.inputs;
    const candidates =
      n.opType === "Mul"
        ? [
            [a, b],
            [b, a],
          ]
        : [[a, b]];
    for (const [m = "", s = ""] of candidates) {
      const matmul = this.producer(m, "MatMul");
      const k = await this.scalarConstant(s);
      if (matmul && k !== null && k !== 0 && Number.isFinite(k))
        return { matmul, scale: n.opType === "Mul" ? k : 1 / k };
    }
    return null;
  }

  async match(
    softmax: OnnxNode,
    consumers: Map<string, OnnxNode[]>,
    floatType: number,
  ): Promise<AttentionMatch | null> {
    const axis = softmax.attributes.get("axis")?.i ?? -1;
    if (axis !== -1 && axis !== 2) return null;
    const scores = await this.scores(softmax.inputs[0] as string);
    if (!scores) return null;
    let probs = softmax.outputs[0] as string;
    const next = consumers.get(probs) ?? [];
    const cast = next.length === 1 && next[0]?.opType === "Cast" ? next[0] : null;
    if (cast) {
      if (cast.attributes.get("to")?.i !== floatType) return null;
      probs = cast.outputs[0] as string;
    }
    const outMatmul = (consumers.get(probs) ?? []).find(
      (c) => c.opType === "MatMul" && c.inputs[0] === probs,
    );
    const after = (value: string | undefined, op: string) =>
      value === undefined
        ? undefined
        : (consumers.get(value) ?? []).find((c) => c.opType === op && c.domain === "");
    const inner = after(outMatmul?.outputs[0], "Reshape");
    const anchor = after(after(inner?.outputs[0], "Transpose")?.outputs[0], "Reshape");
    if (!outMatmul || !anchor) return null;
    const merged = await this.merge(anchor);
    const kT = await this.transposed(scores.matmul.inputs[1] as string, [0, 2, 1]);
    const q = await this.split(scores.matmul.inputs[0] as string);
    const k = kT ? await this.split(kT) : null;
    const v = await this.split(outMatmul.inputs[1] as string);
    if (!merged || merged.o !== outMatmul.outputs[0] || !q || !k || !v) return null;
    if (![k.heads, v.heads, merged.heads].every((h) => h === q.heads)) return null;
    return { anchor, q: q.x, k: k.x, v: v.x, heads: q.heads, scale: scores.scale };
  }
}

/** Finds the attentions of a UNet graph that can be fused, proving each. */
export async function findAttentions(graph: OnnxGraphSummary): Promise<AttentionScan> {
  const consumers = new Map<string, OnnxNode[]>();
  for (const n of graph.nodes) {
    for (const i of n.inputs) {
      const list = consumers.get(i);
      if (list) list.push(n);
      else consumers.set(i, [n]);
    }
  }
  const floatType = graph.inputs.find((i) => i.name === "sample")?.elemType ?? 1;
  const matcher = new Matcher(graph);
  const softmaxes = graph.nodes.filter((n) => n.opType === "Softmax" && n.domain === "");
  const matches: AttentionMatch[] = [];
  for (const s of softmaxes) {
    const m = await matcher.match(s, consumers, floatType);
    if (m) matches.push(m);
  }
  return { attentions: softmaxes.length, matches };
}

/** Why a graph is not rewritten at all (control flow, whose subgraphs may read outer values), or null. */
export function unfusable(graph: OnnxGraphSummary): string | null {
  const flow = graph.nodes.find((n) => ["If", "Loop", "Scan"].includes(n.opType));
  if (flow) return `it has control flow (${flow.opType})`;
  if (graph.layout.fields.filter((f) => f.field === 1).length !== graph.nodes.length)
    return "its node layout could not be read";
  return null;
}

/** The nodes still needed for the graph outputs once `replaced` (node → its stand-in's inputs) are swapped. */
function liveNodes(graph: OnnxGraphSummary, replaced: Map<OnnxNode, string[]>): Set<OnnxNode> {
  const live = new Set<OnnxNode>();
  const stack = graph.outputs.map((o) => o.name);
  const seen = new Set<string>();
  while (stack.length > 0) {
    const value = stack.pop() as string;
    if (seen.has(value)) continue;
    seen.add(value);
    const n = graph.producers.get(value);
    if (!n || live.has(n)) continue;
    live.add(n);
    for (const i of replaced.get(n) ?? n.inputs) if (i) stack.push(i);
  }
  return live;
}

export interface FusedModel {
  bytes: Uint8Array;
  /** Whether initializers now read `weightsName` (the original file's link). */
  readsWeights: boolean;
  /** The original external data locations the model still reads (link them beside it under the same names). */
  externalFiles: Set<string>;
  nodesRemoved: number;
}

/**
 * The ModelProto bytes of `graph` with `matches` fused. Inline initializers point into `weightsName` (a hard link
 * of the original model file placed beside the result); external ones keep their locations (link those files too).
 */
export async function rewriteModel(
  graph: OnnxGraphSummary,
  matches: readonly AttentionMatch[],
  weightsName: string,
): Promise<FusedModel> {
  const replaced = new Map(matches.map((m) => [m.anchor, [m.q, m.k, m.v]]));
  const byAnchor = new Map(matches.map((m) => [m.anchor, m]));
  const live = liveNodes(graph, replaced);
  const initializers = [...graph.initializers.values()];
  const initFields = graph.layout.fields.filter((f) => f.field === 5).length;
  const externalize = initializers.length === initFields;
  const externalFiles = new Set<string>();
  let readsWeights = false;
  const pieces: Uint8Array[] = [];
  let pending: { offset: number; end: number } | null = null;
  const flush = async () => {
    if (pending) pieces.push(await readRange(graph.path, pending.offset, pending.end - pending.offset));
    pending = null;
  };
  const keep = async (offset: number, length: number) => {
    if (pending && pending.end === offset) pending.end += length;
    else {
      await flush();
      pending = { offset, end: offset + length };
    }
  };
  let nodeIndex = 0;
  let initIndex = 0;
  let removed = 0;
  for (const f of graph.layout.fields) {
    if (f.field === 1) {
      const node = graph.nodes[nodeIndex++] as OnnxNode;
      const m = byAnchor.get(node);
      if (m) {
        await flush();
        pieces.push(
          encodeNodeField({
            op: "MultiHeadAttention",
            inputs: [m.q, m.k, m.v],
            outputs: node.outputs,
            attributes: { num_heads: m.heads, scale: { f: m.scale } },
            domain: CONTRIB_DOMAIN,
            name: `${node.name}/MultiHeadAttention`,
          }),
        );
        removed++;
      } else if (live.has(node)) await keep(f.offset, f.length);
      else removed++;
    } else if (f.field === 5) {
      const t = initializers[initIndex++];
      const loc = t?.location;
      const typeName = t ? elementTypeName(t.dataType) : "unknown";
      const type = typeName === "unknown" ? null : (typeName as ElemType);
      if (externalize && t && loc?.kind === "raw" && type) {
        await flush();
        pieces.push(
          encodeExternalInitializerField(t.name, {
            location: weightsName,
            offset: loc.offset,
            length: loc.length,
            type,
            dims: t.dims,
          }),
        );
        readsWeights = true;
      } else {
        if (t && loc?.kind === "external") externalFiles.add(loc.location);
        await keep(f.offset, f.length);
      }
    } else await keep(f.offset, f.length);
  }
  await flush();
  const body = Buffer.concat(pieces);
  const { offset: graphStart, length: graphLength } = graph.layout.graph;
  const fileSize = Bun.file(graph.path).size;
  const before = await readRange(graph.path, 0, graphStart);
  const after = await readRange(graph.path, graphStart + graphLength, fileSize - graphStart - graphLength);
  const opset = graph.opsets.has(CONTRIB_DOMAIN)
    ? new Uint8Array(0)
    : encodeOpsetImportField(CONTRIB_DOMAIN, CONTRIB_OPSET);
  const bytes = Buffer.concat([before, encodeFieldHeader(7, body.length), body, after, opset]);
  return { bytes, readsWeights, externalFiles, nodesRemoved: removed };
}
