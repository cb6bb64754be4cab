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
 *
 * The second form keeps the heads as an axis (4-D), as torch ≥ 2 exports diffusers' AttnProcessor2_0
 * (attention_processor.py: view(batch, −1, heads, head_dim).transpose(1, 2), F.scaled_dot_product_attention,
 * transpose(1, 2).reshape(batch, −1, heads·head_dim)) through torch/onnx/symbolic_opset14.py
 * scaled_dot_product_attention (Transpose of the key's last two axes, then MatMul(q·√s, kᵀ·√s), Softmax(−1),
 * MatMul with v; s = 1/√(q.size(−1)) from Shape/Slice/Cast/Sqrt/Div when not given), and as sdx's own plain
 * checkpoint graphs spell it (unet_graph.ts: Reshape [0,0,H,d], Transpose [0,2,3,1] for the key, the 1/√d folded
 * into to_q's weight, so the scale is 1):
 *
 *   split₄(X) = Transpose(Reshape(X, [B, X₁ | 0 | −1, H, d]), [0,2,1,3])                  → [b, H, n, d]
 *   kᵀ        = Transpose(split₄(K), [0,1,3,2])  or  Transpose(Reshape(K, …), [0,2,3,1])  → [b, H, d, m]
 *   scores    = MatMul(split₄(Q)·c…, kᵀ·c…)·c…       (Mul by, or Div by, scalar constants anywhere on the way)
 *   O         = MatMul(Cast?(Softmax(Cast?(scores), axis −1)), split₄(V))                 → [b, H, s, d]
 *   merge₄(O) = Reshape(Transpose(O, [0,2,1,3]), [B, O₂ | 0 | −1, H·d])                 → [b, s, H·d]
 *
 * with X's last dim proven H·d, so −1 is X₁: d a constant with X's last dim read from the weight of the Linear
 * that made X, or d = t₂/H with t = X, or for Q and K t ∈ {Q, K} (MultiHeadAttention refuses Q₂ ≠ K₂;
 * AttnProcessor2_0 reads head_dim from the key for all three), or for V a t whose last dim equals V's. B is axis 0 of Q, K, V, O or of a tensor they are a Linear of (AttnProcessor2_0
 * takes the batch from encoder_hidden_states for all three splits): MultiHeadAttention refuses Q₀ ≠ K₀ ≠ V₀, so
 * wherever it runs B is the batch. The constant factors multiply into one scale.
 *
 * A match that cannot be proven is left as it is. Nodes left without consumers are removed afterwards (ONNX nodes
 * have no side effects).
 *
 * The graph is spliced at the byte level (proto.ts records where each graph field is): kept fields are copied as
 * they are, the merge Reshape is replaced by the MultiHeadAttention node, and initializers stored inline (of
 * INLINE_LIMIT bytes or more) become external data pointing into a hard link of the original file, so the
 * rewritten model holds no copy of the weights.
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
/** float32, float16, float64, bfloat16. */
const FLOAT_TYPES = new Set([1, 10, 11, 16]);

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
  /** Last dims proven by a match (a split query's head size), which `lastDim` reads first. */
  private readonly provenLast = new Map<string, number>();
  private readonly lastDims = new Map<string, Promise<number | null>>();

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

  /**
   * The target shape of a Reshape as symbols (a 0 copies the input's dim; a −1 is refused unless `inferred`,
   * where it stays the constant −1 for the caller to prove), or null.
   */
  async reshapeTarget(reshape: OnnxNode, inferred = false): Promise<Sym[] | null> {
    const [input = "", shape = ""] = reshape.inputs;
    if ((reshape.attributes.get("allowzero")?.i ?? 0) !== 0) return null;
    const parts = await this.shapeOf(shape);
    if (!parts || (!inferred && parts.some((p) => p.dims.length === 0 && p.c === -1))) return null;
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
   * The static size of the last axis of `value`, or null: a graph input's declared size, a matrix's last column
   * count through MatMul (nn.Linear: MatMul(x, Wᵀ) + bias), a broadcast operand's size above 1 through elementwise
   * ops, a Transpose of a Reshape to constants.
   */
  async lastDim(value: string): Promise<number | null> {
    const proven = this.provenLast.get(value);
    if (proven !== undefined) return proven;
    // Memoized: elementwise ops try both operands, and residual graphs reach a value along many paths.
    let known = this.lastDims.get(value);
    if (known === undefined) {
      known = this.findLastDim(value);
      this.lastDims.set(value, known);
    }
    return known;
  }

  private async findLastDim(value: string): Promise<number | null> {
    const input = this.graph.inputs.find((i) => i.name === value);
    if (input) {
      const d = input.shape.at(-1);
      return typeof d === "number" && d > 0 ? d : null;
    }
    const n = this.graph.producers.get(value);
    if (n?.domain !== "") return null;
    const [a = "", b = ""] = n.inputs;
    switch (n.opType) {
      case "Cast":
        return CAST_NUMERIC.has(n.attributes.get("to")?.i ?? 0) ? this.lastDim(a) : null;
      case "Identity":
        return this.lastDim(a);
      case "MatMul":
        return this.matrixColumns(b);
      case "Add":
      case "Sub":
      case "Mul":
      case "Div":
        for (const operand of [a, b]) {
          const d = this.constantLast(operand) ?? (await this.lastDim(operand));
          if (d !== null && d > 1) return d;
        }
        return null;
      case "Transpose": {
        const perm = n.attributes.get("perm")?.ints;
        const reshape = this.producer(a, "Reshape");
        const target = reshape ? await this.reshapeTarget(reshape, true) : null;
        const last = perm && target?.length === perm.length ? target[perm.at(-1) as number] : undefined;
        return last && last.dims.length === 0 && last.c > 0 ? last.c : null;
      }
      default:
        return null;
    }
  }

  /** The dims of a constant tensor (initializer or Constant node, maybe through Cast or Identity), or null. */
  private constantDims(value: string): number[] | null {
    const t =
      this.graph.initializers.get(value) ?? this.producer(value, "Constant")?.attributes.get("value")?.t;
    if (t) return t.dims;
    const n = this.graph.producers.get(value);
    return n?.domain === "" && (n.opType === "Cast" || n.opType === "Identity")
      ? this.constantDims(n.inputs[0] as string)
      : null;
  }

  /** The last axis of a constant tensor of rank ≥ 1, or null. */
  private constantLast(value: string): number | null {
    return this.constantDims(value)?.at(-1) ?? null;
  }

  /** The column count of a matrix of rank ≥ 2 (a weight, transposed, cast or scaled by a scalar), or null. */
  private async matrixColumns(value: string): Promise<number | null> {
    const dims = this.constantDims(value);
    if (dims) return dims.length >= 2 ? (dims.at(-1) as number) : null;
    const n = this.graph.producers.get(value);
    if (n?.domain !== "") return null;
    const [a = "", b = ""] = n.inputs;
    if (n.opType === "Cast" || n.opType === "Identity") return this.matrixColumns(a);
    if ((n.opType === "Mul" || n.opType === "Div") && (await this.scalarConstant(b)) !== null)
      return this.matrixColumns(a);
    if (n.opType === "Mul" && (await this.scalarConstant(a)) !== null) return this.matrixColumns(b);
    if (n.opType !== "Transpose") return null;
    const perm = n.attributes.get("perm")?.ints;
    const w = this.constantDims(a);
    return perm && w && perm.length === w.length && perm.length >= 2
      ? (w[perm.at(-1) as number] as number)
      : null;
  }

  /**
   * The value of a scalar factor: a constant, or a computation of constants through Sqrt, Mul, Div, Reciprocal,
   * float Casts and Slice(Shape(t), [−1], [end ≥ 2³¹]) of a tensor whose last dim `lastDim` proves (torch's
   * _attention_scale: 1/√(query.size(−1))), or null. With `shapesKnown` false (recognizing the form before the
   * match is proven) a dim not yet known stands in as 1.
   */
  async factor(value: string, shapesKnown = true): Promise<number | null> {
    const k = await this.scalarConstant(value);
    if (k !== null) return k;
    const n = this.graph.producers.get(value);
    if (n?.domain !== "") return null;
    const [a = "", b = ""] = n.inputs;
    const x = await this.factorOperand(a, shapesKnown);
    if (x === null) return null;
    switch (n.opType) {
      case "Sqrt":
        return x >= 0 ? Math.sqrt(x) : null;
      case "Reciprocal":
        return x !== 0 ? 1 / x : null;
      case "Cast":
        return FLOAT_TYPES.has(n.attributes.get("to")?.i ?? 0) ? x : null;
      case "Mul":
      case "Div": {
        const y = await this.factorOperand(b, shapesKnown);
        if (y === null || (n.opType === "Div" && y === 0)) return null;
        return n.opType === "Mul" ? x * y : x / y;
      }
      default:
        return null;
    }
  }

  /** A factor, or the last dim of a tensor read by Slice(Shape(t), [−1], [end]) along axis 0. */
  private async factorOperand(value: string, shapesKnown: boolean): Promise<number | null> {
    const slice = this.producer(value, "Slice");
    if (!slice) return this.factor(value, shapesKnown);
    const [shape = "", starts = "", ends = "", axes = "", steps = ""] = slice.inputs;
    const source = this.producer(shape, "Shape");
    const ok =
      source !== null &&
      source.attributes.size === 0 &&
      (await this.scalarConstant(starts)) === -1 &&
      ((await this.scalarConstant(ends)) ?? 0) >= 2 ** 31 - 1 &&
      (axes === "" || (await this.scalarConstant(axes)) === 0) &&
      (steps === "" || (await this.scalarConstant(steps)) === 1);
    if (!ok) return null;
    return (await this.lastDim(source.inputs[0] as string)) ?? (shapesKnown ? null : 1);
  }

  /**
   * `value` with constant factors peeled off (Mul by a factor on either side, Div by one): the tensor under them
   * and the factors' names and ops, evaluated later by `scaleOf`.
   */
  async peel(value: string): Promise<{ base: string; factors: Array<{ value: string; div: boolean }> }> {
    const factors: Array<{ value: string; div: boolean }> = [];
    let base = value;
    for (;;) {
      const n = this.graph.producers.get(base);
      if (n?.domain !== "" || (n.opType !== "Mul" && n.opType !== "Div")) break;
      const [a = "", b = ""] = n.inputs;
      if ((await this.factor(b, false)) !== null) {
        factors.push({ value: b, div: n.opType === "Div" });
        base = a;
      } else if (n.opType === "Mul" && (await this.factor(a, false)) !== null) {
        factors.push({ value: a, div: false });
        base = b;
      } else break;
    }
    return { base, factors };
  }

  /** The product of peeled factors, or null when one is zero or not finite. */
  async scaleOf(factors: ReadonlyArray<{ value: string; div: boolean }>): Promise<number | null> {
    let scale = 1;
    for (const f of factors) {
      const k = await this.factor(f.value);
      if (k === null) return null;
      scale = f.div ? scale / k : scale * k;
    }
    return scale !== 0 && Number.isFinite(scale) ? scale : null;
  }

  /**
   * The tensors whose axis 0 provably equals `value`'s: back through nn.Linear (MatMul by a matrix, then
   * elementwise ops with a constant of rank ≤ 1), Cast and Identity.
   */
  async sameRows(value: string): Promise<Set<string>> {
    const rows = new Set<string>();
    let t: string | null = value;
    while (t !== null && !rows.has(t)) {
      rows.add(t);
      const n = this.graph.producers.get(t);
      const [a = "", b = ""] = n?.inputs ?? [];
      t = null;
      if (n?.domain !== "") break;
      if (n.opType === "Cast" || n.opType === "Identity") t = a;
      else if (n.opType === "MatMul" && (await this.matrixColumns(b)) !== null) t = a;
      else if (["Add", "Sub", "Mul", "Div"].includes(n.opType)) {
        const small = async (c: string) =>
          (await this.scalarConstant(c)) !== null || this.constantDims(c)?.length === 1;
        if (await small(b)) t = a;
        else if (n.opType !== "Sub" && n.opType !== "Div" && (await small(a))) t = b;
      }
    }
    return rows;
  }

  /**
   * split₄(X) with X [b, n, H·d] and `perm` [0,2,1,3] (→ [b, H, n, d]) or [0,2,3,1] (→ [b, H, d, n]):
   * Transpose(Reshape(X, [B, X₁ | 0 | −1, H, d]), perm), d a constant with X's last dim proven H·d, or the symbol
   * t₂/H (AttnProcessor2_0's head_dim = key.shape[−1] // heads). X, H, d or t₂ (`width`) and the batch operand B,
   * which `match4` proves; the element count then leaves −1 = X₁.
   */
  async split4(
    value: string,
    perm: readonly number[],
  ): Promise<{ x: string; heads: number; d: number | null; width: string | null; batch: Sym } | null> {
    const inner = await this.transposed(value, perm);
    const reshape = inner ? this.producer(inner, "Reshape") : null;
    const s = reshape ? await this.reshapeTarget(reshape, true) : null;
    if (!reshape || s?.length !== 4) return null;
    const x = reshape.inputs[0] as string;
    const [batch, n, h, d] = s as [Sym, Sym, Sym, Sym];
    const heads = h.c;
    if (h.dims.length > 0 || !Number.isInteger(heads) || heads < 1) return null;
    if (!symEqual(n, dim(x, 1)) && !symEqual(n, sym(-1))) return null;
    const width = d.dims.length === 1 && d.dims[0]?.endsWith("#2") ? (d.dims[0] as string) : null;
    if (width && symEqual(d, sym(1 / heads, [width]))) return { x, heads, d: null, width, batch };
    if (d.dims.length > 0 || !Number.isInteger(d.c) || d.c < 1) return null;
    return (await this.lastDim(x)) === heads * d.c ? { x, heads, d: d.c, width: null, batch } : null;
  }

  /**
   * merge₄(O) = Reshape(Transpose(O, [0,2,1,3]), [B, O₂ | 0 | −1, W]) ending in `anchor`, W = H·d (or t₂ when d is
   * the symbol t₂/H): its batch operand B, or null.
   */
  async merge4(anchor: OnnxNode, o: string, width: Sym): Promise<Sym | null> {
    const t = this.producer(anchor.inputs[0] as string, "Transpose");
    if (!t || (await this.transposed(anchor.inputs[0] as string, [0, 2, 1, 3])) !== o) return null;
    const s = await this.reshapeTarget(anchor, true);
    if (s?.length !== 3) return null;
    const [batch, n, c] = s as [Sym, Sym, Sym];
    const inner = t.outputs[0] as string;
    const tokens = symEqual(n, dim(inner, 1)) || symEqual(n, dim(o, 2)) || symEqual(n, sym(-1));
    return symEqual(c, width) && tokens ? (symEqual(batch, dim(inner, 0)) ? dim(o, 0) : batch) : null;
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

  /**
   * The scores behind a Softmax input: the MatMul, its two operands with their constant factors peeled off, and
   * all factors (on the scores and on either operand). A Cast to float32 (softmax computed in float32) and, for
   * the 3-D form, baddbmm's zero bias are stepped over.
   */
  async scores(value: string): Promise<{
    matmul: OnnxNode;
    q: string;
    k: string;
    factors: Array<{ value: string; div: boolean }>;
  } | null> {
    let scaled = value;
    const cast = this.producer(value, "Cast");
    if (cast && cast.attributes.get("to")?.i === 1) scaled = cast.inputs[0] as string;
    const add = this.producer(scaled, "Add");
    if (add) {
      const [a = "", b = ""] = add.inputs;
      const operands = async (v: string) => {
        const m = this.producer((await this.peel(v)).base, "MatMul");
        const kT = m ? await this.transposed(m.inputs[1] as string, [0, 2, 1]) : null;
        return m && kT ? { q: m.inputs[0] as string, k: kT } : null;
      };
      const left = await operands(a);
      const right = left ? null : await operands(b);
      if (left && (await this.zeros(b, left.q, left.k))) scaled = a;
      else if (right && (await this.zeros(a, right.q, right.k))) scaled = b;
      else return null;
    }
    const outer = await this.peel(scaled);
    const matmul = this.producer(outer.base, "MatMul");
    if (!matmul) return null;
    const q = await this.peel(matmul.inputs[0] as string);
    const k = await this.peel(matmul.inputs[1] as string);
    return { matmul, q: q.base, k: k.base, factors: [...outer.factors, ...q.factors, ...k.factors] };
  }

  /** The 3-D form: split₃ of Q, K (then Transpose [0,2,1]) and V, merge₃ of O. */
  private async match3(
    q: string,
    k: string,
    outMatmul: OnnxNode,
    after: (value: string | undefined, op: string) => OnnxNode | undefined,
  ): Promise<Omit<AttentionMatch, "scale"> | null> {
    const inner = after(outMatmul.outputs[0], "Reshape");
    const anchor = after(after(inner?.outputs[0], "Transpose")?.outputs[0], "Reshape");
    if (!anchor) return null;
    const merged = await this.merge(anchor);
    const kT = await this.transposed(k, [0, 2, 1]);
    const qs = await this.split(q);
    const ks = kT ? await this.split(kT) : null;
    const vs = await this.split(outMatmul.inputs[1] as string);
    if (!merged || merged.o !== outMatmul.outputs[0] || !qs || !ks || !vs) return null;
    if (![ks.heads, vs.heads, merged.heads].every((h) => h === qs.heads)) return null;
    return { anchor, q: qs.x, k: ks.x, v: vs.x, heads: qs.heads };
  }

  /**
   * The 4-D form: split₄ of Q and V, of K with [0,2,3,1] (or split₄ then Transpose [0,1,3,2]), merge₄ of O. Each
   * batch operand must be axis 0 of Q, K, V or O (AttnProcessor2_0 takes it from encoder_hidden_states for all
   * three projections): MultiHeadAttention requires Q₀ = K₀ = V₀ and refuses the inputs otherwise, so wherever
   * it runs, every such operand is the batch.
   */
  private async match4(
    q: string,
    k: string,
    outMatmul: OnnxNode,
    after: (value: string | undefined, op: string) => OnnxNode | undefined,
  ): Promise<Omit<AttentionMatch, "scale"> | null> {
    const anchor = after(after(outMatmul.outputs[0], "Transpose")?.outputs[0], "Reshape");
    if (!anchor) return null;
    const qs = await this.split4(q, [0, 2, 1, 3]);
    const kT = await this.transposed(k, [0, 1, 3, 2]);
    const ks = (await this.split4(k, [0, 2, 3, 1])) ?? (kT ? await this.split4(kT, [0, 2, 1, 3]) : null);
    const o = outMatmul.outputs[0] as string;
    const vs = await this.split4(outMatmul.inputs[1] as string, [0, 2, 1, 3]);
    if (!qs || !ks || !vs || ks.heads !== qs.heads || vs.heads !== qs.heads) return null;
    // Q and K meet in the scores' MatMul, so they share d; MultiHeadAttention refuses Q₂ ≠ K₂, so a d read from
    // either is both's. V's d must be its own (or proven equal) and sets the output width.
    if (qs.d !== null && ks.d !== null && qs.d !== ks.d) return null;
    const qk = [`${qs.x}#2`, `${ks.x}#2`];
    if (![qs, ks].every((s) => s.width === null || qk.includes(s.width))) return null;
    if (vs.width !== null && vs.width !== `${vs.x}#2`) {
      const source = await this.lastDim(vs.width.slice(0, -2));
      if (source === null || source !== (await this.lastDim(vs.x))) return null;
    }
    const width = vs.d !== null ? sym(vs.heads * vs.d) : sym(1, [vs.width as string]);
    const merged = await this.merge4(anchor, o, width);
    if (!merged) return null;
    // The query's head size, which torch's _attention_scale reads from the split query's shape: d, or t₂/H
    // with t ∈ {Q, K} (3-D inputs of MultiHeadAttention, so t₂ is their last dim).
    const widthOf = qs.width ? await this.lastDim(qs.width.slice(0, -2)) : null;
    const headSize = qs.d ?? (widthOf !== null ? widthOf / qs.heads : null);
    if (headSize !== null) this.provenLast.set(q, headSize);
    const rows = new Set([`${o}#0`]);
    for (const s of [qs, ks, vs]) for (const t of await this.sameRows(s.x)) rows.add(`${t}#0`);
    const isBatch = (b: Sym) => b.c === 1 && b.dims.length === 1 && rows.has(b.dims[0] as string);
    if (![qs.batch, ks.batch, vs.batch, merged].every(isBatch)) return null;
    return { anchor, q: qs.x, k: ks.x, v: vs.x, heads: qs.heads };
  }

  async match(softmax: OnnxNode, consumers: Map<string, OnnxNode[]>): Promise<AttentionMatch | null> {
    const axis = softmax.attributes.get("axis")?.i ?? -1;
    const scores = await this.scores(softmax.inputs[0] as string);
    if (!scores) return null;
    let probs = softmax.outputs[0] as string;
    const next = consumers.get(probs) ?? [];
    const cast = next.length === 1 && next[0]?.opType === "Cast" ? next[0] : null;
    if (cast) {
      // Back to the compute type (the MatMul with V fixes it; MultiHeadAttention computes in its inputs' type).
      if (!FLOAT_TYPES.has(cast.attributes.get("to")?.i ?? 0)) return null;
      probs = cast.outputs[0] as string;
    }
    const outMatmul = (consumers.get(probs) ?? []).find(
      (c) => c.opType === "MatMul" && c.inputs[0] === probs,
    );
    if (outMatmul?.domain !== "") return null;
    const after = (value: string | undefined, op: string) =>
      value === undefined
        ? undefined
        : (consumers.get(value) ?? []).find((c) => c.opType === op && c.domain === "");
    const found = axis === -1 || axis === 2 ? await this.match3(scores.q, scores.k, outMatmul, after) : null;
    const fused =
      found ?? (axis === -1 || axis === 3 ? await this.match4(scores.q, scores.k, outMatmul, after) : null);
    const scale = fused ? await this.scaleOf(scores.factors) : null;
    return fused && scale !== null ? { ...fused, scale } : null;
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
  const matcher = new Matcher(graph);
  const softmaxes = graph.nodes.filter((n) => n.opType === "Softmax" && n.domain === "");
  const matches: AttentionMatch[] = [];
  for (const s of softmaxes) {
    const m = await matcher.match(s, consumers);
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

/** Initializers below this many bytes are copied into the rewritten model rather than pointed at. */
const INLINE_LIMIT = 4096;

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
      // Small tensors stay inline: onnxruntime reads shape operands (Reshape's) for shape inference only from
      // inline data, and copying them costs nothing.
      if (externalize && t && loc?.kind === "raw" && type && loc.length >= INLINE_LIMIT) {
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
