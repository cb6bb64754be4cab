/**
 * A small ONNX graph builder: nodes, inputs, outputs and initializers, written as ONNX protobuf (field numbers
 * from onnx/onnx.proto). Weights stay where they are: an initializer can point into another file as ONNX
 * external data (location, offset, length), so a graph over a .safetensors checkpoint holds no copy of it.
 */
import { type ElemType, elementTypeCode } from "./dtypes.ts";

/** A tensor stored in another file, relative to the graph's folder. */
export interface ExternalTensor {
  location: string;
  offset: number;
  length: number;
  type: ElemType;
  dims: readonly number[];
}

/**
 * Node attributes: a whole number is an INT and any other number a FLOAT; `{ f }` forces a FLOAT for a whole
 * value (alpha 1.0); arrays are INTS unless given as `{ floats }`.
 */
export type AttributeValue =
  | number
  | string
  | readonly number[]
  | { f: number }
  | { ints: readonly number[] }
  | { floats: readonly number[] };

// ---- protobuf wire format ----

class Writer {
  private chunks: Uint8Array[] = [];
  private size = 0;

  bytes(b: Uint8Array): this {
    this.chunks.push(b);
    this.size += b.length;
    return this;
  }

  varint(value: number | bigint): this {
    let v = BigInt.asUintN(64, BigInt(value));
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    return this.bytes(Uint8Array.from(out));
  }

  tag(field: number, wire: number): this {
    return this.varint(field * 8 + wire);
  }

  int(field: number, value: number | bigint): this {
    return this.tag(field, 0).varint(value);
  }

  float(field: number, value: number): this {
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, value, true);
    return this.tag(field, 5).bytes(b);
  }

  len(field: number, body: Uint8Array): this {
    return this.tag(field, 2).varint(body.length).bytes(body);
  }

  str(field: number, s: string): this {
    return this.len(field, new TextEncoder().encode(s));
  }

  message(field: number, build: (w: Writer) => void): this {
    const w = new Writer();
    build(w);
    return this.len(field, w.finish());
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const c of this.chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

function writeShape(w: Writer, type: ElemType, dims: readonly (number | string)[]): void {
  // TypeProto.tensor_type (1): elem_type (1), shape (2) → dim (1) → dim_value (1) | dim_param (2).
  w.message(1, (t) => {
    t.int(1, elementTypeCode(type));
    t.message(2, (s) => {
      for (const d of dims) s.message(1, (dim) => (typeof d === "number" ? dim.int(1, d) : dim.str(2, d)));
    });
  });
}

export interface NodeSpec {
  op: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attributes: Record<string, AttributeValue>;
  domain: string;
  name: string;
}

interface PendingInitializer {
  name: string;
  type: ElemType;
  dims: readonly number[];
  raw?: Uint8Array;
  external?: ExternalTensor;
  /** Also declared as a graph input (see GraphBuilder.external). */
  overridable?: boolean;
}

interface ValueInfo {
  name: string;
  type: ElemType;
  dims: readonly (number | string)[];
}

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly initializers: PendingInitializer[] = [];
  private readonly inputs: ValueInfo[] = [];
  private readonly outputs: ValueInfo[] = [];
  private readonly names = new Set<string>();
  private counter = 0;

  constructor(
    readonly name: string,
    readonly opset = 17,
    /** Extra operator sets, e.g. { "com.microsoft": 1 } for onnxruntime's contrib ops. */
    readonly extraOpsets: Record<string, number> = {},
  ) {}

  /** A fresh value name with a readable prefix. */
  fresh(prefix: string): string {
    let name = `${prefix}_${this.counter++}`;
    while (this.names.has(name)) name = `${prefix}_${this.counter++}`;
    this.names.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.names.has(name)) throw new Error(`value name ${name} is used twice`);
    this.names.add(name);
    return name;
  }

  input(name: string, type: ElemType, dims: readonly (number | string)[]): string {
    this.inputs.push({ name: this.claim(name), type, dims });
    return name;
  }

  /** Marks `value` as a graph output under `name` (through an Identity when the names differ). */
  output(value: string, name: string, type: ElemType, dims: readonly (number | string)[]): string {
    const out = value === name ? name : this.node("Identity", [value], {}, name);
    this.outputs.push({ name: out, type, dims });
    return out;
  }

  /** A small constant stored in the graph itself. */
  constant(
    values: ArrayLike<number>,
    dims: readonly number[],
    type: "float32" | "int64" | "int32" = "float32",
  ): string {
    const raw =
      type === "int64"
        ? new Uint8Array(BigInt64Array.from(Array.from(values), (v) => BigInt(v)).buffer)
        : type === "int32"
          ? new Uint8Array(Int32Array.from(values).buffer)
          : new Uint8Array(Float32Array.from(values).buffer);
    const name = this.fresh("const");
    this.initializers.push({ name, type, dims, raw });
    return name;
  }

  /**
   * A tensor read from another file by onnxruntime at load time; `name` keeps the checkpoint's key readable.
   * `overridable` also declares it as a graph input (ONNX IR ≥ 4: an initializer that is an input is a default
   * a caller may replace), which onnxruntime therefore never treats as a constant: it neither folds the nodes
   * computed from it (a Cast to float32) nor rewrites it at load, so it stays in memory as stored and those nodes
   * run in every call. Sessions still list only the real inputs.
   */
  external(tensor: ExternalTensor, name?: string, overridable = false): string {
    const id = name ? this.claim(name) : this.fresh("weight");
    this.initializers.push({
      name: id,
      type: tensor.type,
      dims: tensor.dims,
      external: tensor,
      ...(overridable ? { overridable } : {}),
    });
    return id;
  }

  /**
   * Adds a node and returns its output name (or names, when `outputs` is a count above 1 or a list).
   * An empty string in `inputs` is an omitted optional input.
   */
  node(
    op: string,
    inputs: readonly string[],
    attributes?: Record<string, AttributeValue>,
    output?: string,
  ): string;
  node(
    op: string,
    inputs: readonly string[],
    attributes: Record<string, AttributeValue>,
    outputs: number | readonly string[],
    domain?: string,
  ): string[];
  node(
    op: string,
    inputs: readonly string[],
    attributes: Record<string, AttributeValue> = {},
    outputs?: string | number | readonly string[],
    domain = "",
  ): string | string[] {
    const names =
      typeof outputs === "string"
        ? [this.claim(outputs)]
        : typeof outputs === "number"
          ? Array.from({ length: outputs }, () => this.fresh(op.toLowerCase()))
          : Array.isArray(outputs)
            ? outputs.map((o) => this.claim(o))
            : [this.fresh(op.toLowerCase())];
    this.nodes.push({ op, inputs, outputs: names, attributes, domain, name: this.fresh(`${op}_node`) });
    return typeof outputs === "number" || Array.isArray(outputs) ? names : (names[0] as string);
  }

  get nodeCount(): number {
    return this.nodes.length;
  }

  /** Node counts by operator (`domain:op` for operators outside the default domain), for tests and reports. */
  opCounts(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const n of this.nodes) {
      const key = n.domain ? `${n.domain}:${n.op}` : n.op;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return counts;
  }

  /** The ModelProto bytes. */
  toBytes(): Uint8Array {
    // A node of a domain the model does not import fails only when onnxruntime loads it; fail here instead.
    for (const n of this.nodes) {
      if (n.domain && n.domain !== "ai.onnx" && !(n.domain in this.extraOpsets)) {
        throw new Error(
          `graph ${this.name}: node ${n.name} (${n.op}) is in domain ${n.domain}, which the graph does not import`,
        );
      }
    }
    const model = new Writer();
    model.int(1, 8); // ir_version 8 (opset ≤ 18)
    model.str(2, "sdx");
    model.message(7, (g) => {
      for (const n of initializerNodesFirst(this.nodes, this.initializers))
        g.message(1, (w) => writeNode(w, n));
      g.str(2, this.name);
      for (const t of this.initializers) g.message(5, (w) => writeInitializer(w, t));
      for (const v of this.inputs)
        g.message(11, (w) => w.str(1, v.name).message(2, (t) => writeShape(t, v.type, v.dims)));
      for (const t of this.initializers)
        if (t.overridable)
          g.message(11, (w) => w.str(1, t.name).message(2, (s) => writeShape(s, t.type, t.dims)));
      for (const v of this.outputs)
        g.message(12, (w) => w.str(1, v.name).message(2, (t) => writeShape(t, v.type, v.dims)));
    });
    model.message(8, (o) => o.str(1, "").int(2, this.opset));
    for (const [domain, version] of Object.entries(this.extraOpsets))
      model.message(8, (o) => o.str(1, domain).int(2, version));
    return model.finish();
  }
}

/**
 * The nodes in the order the model lists them: first those computed from initializers alone (a weight's Cast,
 * Reshape), then the rest, each group in the order built. onnxruntime's default execution order follows the node
 * indices (GraphViewer's reverse DFS from the outputs), and with the casts of kept weights listed where they were
 * built it ran many of them early, holding their float32 results: with every SD 1.5 UNet weight kept, a call's
 * transient memory was 1.14 GB so and 0.70 GB with them listed first. Casts that are folded at load are unaffected.
 */
function initializerNodesFirst(
  nodes: readonly NodeSpec[],
  initializers: readonly PendingInitializer[],
): NodeSpec[] {
  const constant = new Set(initializers.map((t) => t.name));
  const first: NodeSpec[] = [];
  const rest: NodeSpec[] = [];
  for (const n of nodes) {
    if (n.inputs.length > 0 && n.inputs.every((i) => i === "" || constant.has(i))) {
      first.push(n);
      for (const o of n.outputs) constant.add(o);
    } else {
      rest.push(n);
    }
  }
  return [...first, ...rest];
}

function writeNode(w: Writer, n: NodeSpec): void {
  for (const i of n.inputs) w.str(1, i);
  for (const o of n.outputs) w.str(2, o);
  w.str(3, n.name);
  w.str(4, n.op);
  for (const [name, value] of Object.entries(n.attributes))
    w.message(5, (a) => writeAttribute(a, name, value));
  if (n.domain) w.str(7, n.domain);
}

function writeAttribute(a: Writer, name: string, value: AttributeValue): void {
  // AttributeProto: name 1, f 2, i 3, s 4, floats 7, ints 8, type 20 (FLOAT 1, INT 2, STRING 3, FLOATS 6, INTS 7).
  a.str(1, name);
  if (typeof value === "number") {
    if (Number.isInteger(value) && !Object.is(value, -0)) a.int(3, value).int(20, 2);
    else a.float(2, value).int(20, 1);
  } else if (typeof value === "object" && "f" in value) {
    a.float(2, value.f).int(20, 1);
  } else if (typeof value === "string") {
    a.str(4, value).int(20, 3);
  } else if ("floats" in value) {
    for (const f of value.floats) a.float(7, f);
    a.int(20, 6);
  } else {
    const ints = "ints" in value ? value.ints : value;
    for (const i of ints) a.int(8, i);
    a.int(20, 7);
  }
}

function writeInitializer(w: Writer, t: PendingInitializer): void {
  // TensorProto: dims 1, data_type 2, name 8, raw_data 9, external_data 13, data_location 14 (EXTERNAL = 1).
  for (const d of t.dims) w.int(1, d);
  w.int(2, elementTypeCode(t.type));
  w.str(8, t.name);
  if (t.raw) w.len(9, t.raw);
  if (t.external) {
    const entry = (k: string, v: string) => w.message(13, (e) => e.str(1, k).str(2, v));
    entry("location", t.external.location);
    entry("offset", String(t.external.offset));
    entry("length", String(t.external.length));
    w.int(14, 1);
  }
}

// ---- pieces for splicing an existing model's bytes (onnx/fuse_attention.ts) ----

/** GraphProto.node (field 1) holding one node, tag and length included. */
export function encodeNodeField(node: NodeSpec): Uint8Array {
  return new Writer().message(1, (w) => writeNode(w, node)).finish();
}

/** GraphProto.initializer (field 5) whose values live in another file, tag and length included. */
export function encodeExternalInitializerField(name: string, tensor: ExternalTensor): Uint8Array {
  return new Writer()
    .message(5, (w) => writeInitializer(w, { name, type: tensor.type, dims: tensor.dims, external: tensor }))
    .finish();
}

/** ModelProto.opset_import (field 8), tag and length included. */
export function encodeOpsetImportField(domain: string, version: number): Uint8Array {
  return new Writer().message(8, (o) => o.str(1, domain).int(2, version)).finish();
}

/** The tag and length prefix of a length-delimited field whose body has `length` bytes. */
export function encodeFieldHeader(field: number, length: number): Uint8Array {
  return new Writer().tag(field, 2).varint(length).finish();
}
