/**
 * A minimal, streaming reader for the parts of onnx.proto the engine needs (field numbers from
 * github.com/onnx/onnx onnx/onnx.proto): ModelProto → GraphProto (node, initializer, input, output),
 * NodeProto, AttributeProto, TensorProto, ValueInfoProto. The file is read through ranged reads; tensor
 * payloads (raw_data, packed *_data) are never copied while parsing, only located (file offset + length, or
 * the external file's location/offset/length), so reading costs O(graph structure), not O(file size).
 */
import { type FileHandle, open } from "node:fs/promises";
import { dirname, isAbsolute, join } from "node:path";
import { ELEMENT_TYPES, elementBytes, elementTypeName } from "./dtypes.ts";

/** A byte range of the model file. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** Where a tensor's values are; nothing is copied while parsing. */
export type TensorLocation =
  /** raw_data inside the model file. */
  | { kind: "raw"; offset: number; length: number }
  /** Packed float_data (4), int32_data (5), int64_data (7), double_data (10) or uint64_data (11). */
  | { kind: "packed"; field: number; ranges: ByteRange[] }
  /** The same fields written unpacked (one tag per value). */
  | { kind: "values"; field: number; values: number[] }
  /** data_location EXTERNAL: `location` relative to the model's folder; `length` absent = to the end. */
  | { kind: "external"; location: string; offset: number; length: number | undefined }
  | { kind: "none" };

export interface OnnxTensorRef {
  name: string;
  dims: number[];
  /** TensorProto.DataType. */
  dataType: number;
  location: TensorLocation;
}

export interface OnnxAttribute {
  name: string;
  /** AttributeProto.AttributeType (1 FLOAT, 2 INT, 3 STRING, 4 TENSOR, 6 FLOATS, 7 INTS, ...). */
  type: number;
  f?: number;
  i?: number;
  s?: string;
  t?: OnnxTensorRef;
  floats?: number[];
  ints?: number[];
}

export interface OnnxNode {
  name: string;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: Map<string, OnnxAttribute>;
}

export interface OnnxValueInfo {
  name: string;
  /** TensorProto.DataType of a tensor value; 0 for non-tensor types. */
  elemType: number;
  /** onnxruntime's name for elemType ("float32", "int64", ...). */
  type: string;
  /** Declared dims: numbers, symbolic names, or "" where neither is given. */
  shape: Array<number | string>;
}

export interface OnnxGraphSummary {
  path: string;
  /** The model's folder: external data locations are relative to it. */
  dir: string;
  irVersion: number;
  producerName: string;
  producerVersion: string;
  /** opset_import: domain ("" = ai.onnx) → version. */
  opsets: Map<string, number>;
  /** The default-domain opset, or undefined when none is imported. */
  opset: number | undefined;
  /** Top-level nodes in file (topological) order; subgraphs (If/Loop bodies) are not read. */
  nodes: OnnxNode[];
  initializers: Map<string, OnnxTensorRef>;
  /** Graph inputs that are not initializers (what onnxruntime reports as inputs). */
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
  /** Value name → the node that produces it. */
  producers: Map<string, OnnxNode>;
  /** Reads made while parsing (for checking that reading stays O(structure)). */
  stats: { reads: number; bytesRead: number };
  /** Where the graph is in the file, for rewriting it without a full parse (onnx/fuse_attention.ts). */
  layout: GraphLayout;
}

/**
 * The byte layout of ModelProto.graph: the whole field (tag, length and body) and each of the graph's own fields
 * in file order (field number, byte range from its tag to its end). The i-th field-1 entry is nodes[i].
 */
export interface GraphLayout {
  graph: ByteRange;
  fields: Array<{ field: number } & ByteRange>;
}

export class OnnxFormatError extends Error {
  override name = "OnnxFormatError";
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;
/** Longest tag + varint value / length prefix. */
const HEADER_BYTES = 20;
const MIN_CHUNK = 4 * 1024;
const MAX_CHUNK = 1024 * 1024;

/**
 * A window over the file, refilled by positioned reads on one open handle (several times cheaper per read
 * than `Bun.file().slice()`); sequential reads grow the window, jumps shrink it.
 */
class FileWindow {
  buf = new Uint8Array(0);
  start = 0;
  private chunk = MIN_CHUNK;
  reads = 0;
  bytesRead = 0;

  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  static async open(path: string): Promise<FileWindow> {
    const handle = await open(path, "r");
    try {
      return new FileWindow(path, handle, (await handle.stat()).size);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  close(): Promise<void> {
    return this.handle.close();
  }

  has(pos: number, n: number): boolean {
    return pos >= this.start && pos + n <= this.start + this.buf.length;
  }

  async load(pos: number, n: number): Promise<void> {
    if (pos + n > this.size) throw new OnnxFormatError(`${this.path}: truncated (needs byte ${pos + n})`);
    const sequential = pos >= this.start && pos <= this.start + this.buf.length;
    this.chunk = sequential ? Math.min(this.chunk * 2, MAX_CHUNK) : MIN_CHUNK;
    const length = Math.min(this.size, pos + Math.max(n, this.chunk)) - pos;
    const buf = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.handle.read(buf, got, length - got, pos + got);
      if (bytesRead === 0) throw new OnnxFormatError(`${this.path}: file shrank while being read`);
      got += bytesRead;
    }
    this.buf = buf;
    this.start = pos;
    this.reads++;
    this.bytesRead += length;
  }
}

const utf8 = new TextDecoder();

/** A load the parser needs before it can go on. */
interface Need {
  pos: number;
  n: number;
}

/**
 * Parsers are synchronous generators that yield a `Need` when the window lacks bytes; one driver awaits the
 * read and resumes them, so parsing costs no promise per field.
 */
type Reads<T> = Generator<Need, T, undefined>;

async function drive<T>(win: FileWindow, parser: Reads<T>): Promise<T> {
  let step = parser.next();
  while (!step.done) {
    await win.load(step.value.pos, step.value.n);
    step = parser.next();
  }
  return step.value;
}

/** Reads one message's fields, [pos, end) of the file, through the shared window. */
class Cursor {
  constructor(
    private readonly win: FileWindow,
    public pos: number,
    readonly end: number,
  ) {}

  get more(): boolean {
    return this.pos < this.end;
  }

  /** True when the next n bytes (clipped to the message) are not in the window: then `yield want(n)`. */
  needs(n: number): boolean {
    return !this.win.has(this.pos, Math.min(n, this.end - this.pos));
  }

  /** A request for the driver to load the next n bytes (clipped to the message). */
  want(n: number): Need {
    return { pos: this.pos, n: Math.min(n, this.end - this.pos) };
  }

  private fail(what: string): never {
    throw new OnnxFormatError(`${this.win.path}: malformed protobuf at byte ${this.pos} (${what})`);
  }

  private byteAt(pos: number): number {
    const b = this.win.buf[pos - this.win.start];
    if (pos >= this.end || b === undefined) this.fail("runs past its message");
    return b;
  }

  /** A varint read as a two's-complement int64 (exact up to 2^53). */
  varint(): number {
    let p = this.pos;
    let lo = 0;
    let hi = 0;
    let b = 0;
    for (let shift = 0; shift < 28; shift += 7) {
      b = this.byteAt(p++);
      lo |= (b & 0x7f) << shift;
      if (b < 0x80) {
        this.pos = p;
        return lo >>> 0;
      }
    }
    b = this.byteAt(p++);
    lo |= (b & 0x0f) << 28;
    hi = (b & 0x7f) >> 4;
    let shift = 3;
    while (b >= 0x80) {
      if (shift > 31) this.fail("varint longer than 10 bytes");
      b = this.byteAt(p++);
      hi |= (b & 0x7f) << shift;
      shift += 7;
    }
    this.pos = p;
    lo >>>= 0;
    hi >>>= 0;
    if (hi & 0x80000000) return -((~hi >>> 0) * 2 ** 32 + (~lo >>> 0) + 1);
    return hi * 2 ** 32 + lo;
  }

  /** The next field's number and wire type. */
  tag(): [number, number] {
    const key = this.varint();
    return [Math.floor(key / 8), key & 7];
  }

  /** A length prefix, checked against the message's end. */
  length(): number {
    const n = this.varint();
    if (n < 0 || this.pos + n > this.end) this.fail(`length ${n} exceeds the message`);
    return n;
  }

  bytes(n: number): Uint8Array {
    if (!this.win.has(this.pos, n)) this.fail("bytes not loaded");
    const at = this.pos - this.win.start;
    this.pos += n;
    return this.win.buf.subarray(at, at + n);
  }

  float32(): number {
    const b = this.bytes(4);
    return new DataView(b.buffer, b.byteOffset, 4).getFloat32(0, true);
  }

  /** Skips a field's value without reading it (the header must already be read). */
  skip(wire: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_I64:
        this.pos += 8;
        break;
      case WIRE_LEN: {
        const n = this.length();
        this.pos += n;
        return;
      }
      case WIRE_I32:
        this.pos += 4;
        break;
      default:
        this.fail(`unsupported wire type ${wire}`);
    }
    if (this.pos > this.end) this.fail("field runs past its message");
  }

  /** A cursor over the next `n` bytes as a sub-message; this cursor moves past them. */
  sub(n: number): Cursor {
    const c = new Cursor(this.win, this.pos, this.pos + n);
    this.pos += n;
    return c;
  }
}

/** Reads a length-delimited string field (header already read). */
function* readString(c: Cursor): Reads<string> {
  const n = c.length();
  if (c.needs(n)) yield c.want(n);
  return utf8.decode(c.bytes(n));
}

/** Reads a length-delimited sub-message and, when it is small, loads it whole first. */
function* subMessage(c: Cursor, preload: number): Reads<Cursor> {
  const n = c.length();
  const sub = c.sub(n);
  if (n <= preload && sub.needs(n)) yield sub.want(n);
  return sub;
}

/** Reads a repeated varint field in either encoding (packed, or one tag per value). */
function* repeatedVarints(c: Cursor, wire: number, into: number[]): Reads<void> {
  if (wire !== WIRE_LEN) {
    into.push(c.varint());
    return;
  }
  const packed = yield* subMessage(c, Number.POSITIVE_INFINITY);
  while (packed.more) into.push(packed.varint());
}

/** Reads a repeated float field in either encoding. */
function* repeatedFloats(c: Cursor, wire: number, into: number[]): Reads<void> {
  if (wire !== WIRE_LEN) {
    into.push(c.float32());
    return;
  }
  const packed = yield* subMessage(c, Number.POSITIVE_INFINITY);
  while (packed.more) into.push(packed.float32());
}

const SMALL_MESSAGE = 64 * 1024;
const PACKED_FIELDS = new Set([4, 5, 7, 10, 11]);

function* parseTensor(c: Cursor): Reads<OnnxTensorRef> {
  const t: OnnxTensorRef = { name: "", dims: [], dataType: 0, location: { kind: "none" } };
  let dataLocation = 0;
  let raw: ByteRange | undefined;
  let packed: { field: number; ranges: ByteRange[] } | undefined;
  let values: { field: number; values: number[] } | undefined;
  const external = new Map<string, string>();
  while (c.more) {
    if (c.needs(HEADER_BYTES)) yield c.want(HEADER_BYTES);
    const [field, wire] = c.tag();
    if (field === 1 && wire !== WIRE_I32 && wire !== WIRE_I64) yield* repeatedVarints(c, wire, t.dims);
    else if (field === 2 && wire === WIRE_VARINT) t.dataType = c.varint();
    else if (field === 3)
      throw new OnnxFormatError(`${t.name || "a tensor"}: segmented tensors are not supported`);
    else if (field === 8 && wire === WIRE_LEN) t.name = yield* readString(c);
    else if (field === 9 && wire === WIRE_LEN) {
      const n = c.length();
      raw = { offset: c.pos, length: n };
      c.pos += n;
    } else if (PACKED_FIELDS.has(field) && wire === WIRE_LEN) {
      const n = c.length();
      if (!packed) packed = { field, ranges: [] };
      packed.ranges.push({ offset: c.pos, length: n });
      c.pos += n;
    } else if (PACKED_FIELDS.has(field) && wire !== WIRE_LEN) {
      if (!values) values = { field, values: [] };
      if (field === 4 && wire === WIRE_I32) values.values.push(c.float32());
      else if (field === 10 && wire === WIRE_I64) {
        const b = c.bytes(8);
        values.values.push(new DataView(b.buffer, b.byteOffset, 8).getFloat64(0, true));
      } else if (wire === WIRE_VARINT) values.values.push(c.varint());
      else c.skip(wire);
    } else if (field === 13 && wire === WIRE_LEN) {
      const e = yield* subMessage(c, SMALL_MESSAGE);
      let key = "";
      let value = "";
      while (e.more) {
        const [f, w] = e.tag();
        if (f === 1 && w === WIRE_LEN) key = yield* readString(e);
        else if (f === 2 && w === WIRE_LEN) value = yield* readString(e);
        else e.skip(w);
      }
      external.set(key, value);
    } else if (field === 14 && wire === WIRE_VARINT) dataLocation = c.varint();
    else c.skip(wire);
  }
  if (dataLocation === 1) {
    const location = external.get("location");
    if (!location) throw new OnnxFormatError(`tensor ${t.name}: external data without a location`);
    const offset = Number(external.get("offset") ?? "0");
    const lengthText = external.get("length");
    const length = lengthText === undefined ? undefined : Number(lengthText);
    if (!Number.isSafeInteger(offset) || offset < 0 || (length !== undefined && !(length >= 0)))
      throw new OnnxFormatError(`tensor ${t.name}: bad external offset/length`);
    t.location = { kind: "external", location, offset, length };
  } else if (raw) t.location = { kind: "raw", ...raw };
  else if (packed) t.location = { kind: "packed", ...packed };
  else if (values) t.location = { kind: "values", ...values };
  return t;
}

function* parseAttribute(c: Cursor): Reads<OnnxAttribute> {
  const a: OnnxAttribute = { name: "", type: 0 };
  while (c.more) {
    if (c.needs(HEADER_BYTES)) yield c.want(HEADER_BYTES);
    const [field, wire] = c.tag();
    if (field === 1 && wire === WIRE_LEN) a.name = yield* readString(c);
    else if (field === 20 && wire === WIRE_VARINT) a.type = c.varint();
    else if (field === 2 && wire === WIRE_I32) a.f = c.float32();
    else if (field === 3 && wire === WIRE_VARINT) a.i = c.varint();
    else if (field === 4 && wire === WIRE_LEN) a.s = yield* readString(c);
    else if (field === 5 && wire === WIRE_LEN) a.t = yield* parseTensor(yield* subMessage(c, SMALL_MESSAGE));
    else if (field === 7 && (wire === WIRE_I32 || wire === WIRE_LEN)) {
      a.floats ??= [];
      yield* repeatedFloats(c, wire, a.floats);
    } else if (field === 8 && (wire === WIRE_VARINT || wire === WIRE_LEN)) {
      a.ints ??= [];
      yield* repeatedVarints(c, wire, a.ints);
    } else c.skip(wire);
  }
  return a;
}

function* parseNode(c: Cursor): Reads<OnnxNode> {
  const node: OnnxNode = { name: "", opType: "", domain: "", inputs: [], outputs: [], attributes: new Map() };
  while (c.more) {
    if (c.needs(HEADER_BYTES)) yield c.want(HEADER_BYTES);
    const [field, wire] = c.tag();
    if (wire !== WIRE_LEN) c.skip(wire);
    else if (field === 1) node.inputs.push(yield* readString(c));
    else if (field === 2) node.outputs.push(yield* readString(c));
    else if (field === 3) node.name = yield* readString(c);
    else if (field === 4) node.opType = yield* readString(c);
    else if (field === 7) node.domain = yield* readString(c);
    else if (field === 5) {
      const a = yield* parseAttribute(yield* subMessage(c, SMALL_MESSAGE));
      node.attributes.set(a.name, a);
    } else c.skip(wire);
  }
  return node;
}

/** ValueInfoProto → TypeProto.tensor_type → elem_type and TensorShapeProto.dim. */
function* parseValueInfo(c: Cursor): Reads<OnnxValueInfo> {
  const v: OnnxValueInfo = { name: "", elemType: 0, type: "unknown", shape: [] };
  while (c.more) {
    if (c.needs(HEADER_BYTES)) yield c.want(HEADER_BYTES);
    const [field, wire] = c.tag();
    if (field === 1 && wire === WIRE_LEN) v.name = yield* readString(c);
    else if (field === 2 && wire === WIRE_LEN) {
      const type = yield* subMessage(c, Number.POSITIVE_INFINITY);
      while (type.more) {
        const [f, w] = type.tag();
        if (f !== 1 || w !== WIRE_LEN) {
          type.skip(w);
          continue;
        }
        const tensor = type.sub(type.length());
        while (tensor.more) {
          const [tf, tw] = tensor.tag();
          if (tf === 1 && tw === WIRE_VARINT) v.elemType = tensor.varint();
          else if (tf === 2 && tw === WIRE_LEN) {
            const shape = tensor.sub(tensor.length());
            while (shape.more) {
              const [sf, sw] = shape.tag();
              if (sf !== 1 || sw !== WIRE_LEN) {
                shape.skip(sw);
                continue;
              }
              const dim = shape.sub(shape.length());
              let d: number | string = "";
              while (dim.more) {
                const [df, dw] = dim.tag();
                if (df === 1 && dw === WIRE_VARINT) d = dim.varint();
                else if (df === 2 && dw === WIRE_LEN) d = utf8.decode(dim.bytes(dim.length()));
                else dim.skip(dw);
              }
              v.shape.push(d);
            }
          } else tensor.skip(tw);
        }
      }
    } else c.skip(wire);
  }
  v.type = elementTypeName(v.elemType);
  return v;
}

/**
 * Reads a model's top-level graph structure with ranged reads. Initializer payloads are located, not read;
 * use `readInitializer` / `readTensor` for their values.
 */
export async function readOnnxGraph(path: string): Promise<OnnxGraphSummary> {
  const win = await FileWindow.open(path);
  try {
    return await drive(win, parseModel(win));
  } finally {
    await win.close();
  }
}

function* parseModel(win: FileWindow): Reads<OnnxGraphSummary> {
  const path = win.path;
  if (win.size === 0) throw new OnnxFormatError(`${path}: empty file`);
  const summary: OnnxGraphSummary = {
    path,
    dir: dirname(path),
    irVersion: 0,
    producerName: "",
    producerVersion: "",
    opsets: new Map(),
    opset: undefined,
    nodes: [],
    initializers: new Map(),
    inputs: [],
    outputs: [],
    producers: new Map(),
    stats: { reads: 0, bytesRead: 0 },
    layout: { graph: { offset: 0, length: 0 }, fields: [] },
  };
  const declaredInputs: OnnxValueInfo[] = [];
  let sawGraph = false;
  const model = new Cursor(win, 0, win.size);
  while (model.more) {
    if (model.needs(HEADER_BYTES)) yield model.want(HEADER_BYTES);
    const fieldStart = model.pos;
    const [field, wire] = model.tag();
    if (field === 1 && wire === WIRE_VARINT) summary.irVersion = model.varint();
    else if (field === 2 && wire === WIRE_LEN) summary.producerName = yield* readString(model);
    else if (field === 3 && wire === WIRE_LEN) summary.producerVersion = yield* readString(model);
    else if (field === 8 && wire === WIRE_LEN) {
      const op = yield* subMessage(model, Number.POSITIVE_INFINITY);
      let domain = "";
      let version = 0;
      while (op.more) {
        const [f, w] = op.tag();
        if (f === 1 && w === WIRE_LEN) domain = utf8.decode(op.bytes(op.length()));
        else if (f === 2 && w === WIRE_VARINT) version = op.varint();
        else op.skip(w);
      }
      summary.opsets.set(domain === "ai.onnx" ? "" : domain, version);
    } else if (field === 7 && wire === WIRE_LEN) {
      sawGraph = true;
      const graph = model.sub(model.length());
      summary.layout.graph = { offset: fieldStart, length: graph.end - fieldStart };
      while (graph.more) {
        if (graph.needs(HEADER_BYTES)) yield graph.want(HEADER_BYTES);
        const start = graph.pos;
        const [f, w] = graph.tag();
        if (w !== WIRE_LEN) graph.skip(w);
        else if (f === 1) summary.nodes.push(yield* parseNode(yield* subMessage(graph, SMALL_MESSAGE)));
        else if (f === 5) {
          const t = yield* parseTensor(yield* subMessage(graph, 0));
          summary.initializers.set(t.name, t);
        } else if (f === 11)
          declaredInputs.push(yield* parseValueInfo(yield* subMessage(graph, SMALL_MESSAGE)));
        else if (f === 12)
          summary.outputs.push(yield* parseValueInfo(yield* subMessage(graph, SMALL_MESSAGE)));
        else graph.skip(w);
        summary.layout.fields.push({ field: f, offset: start, length: graph.pos - start });
      }
    } else model.skip(wire);
  }
  if (!sawGraph) throw new OnnxFormatError(`${path}: no graph (is this an ONNX model?)`);
  summary.opset = summary.opsets.get("");
  summary.inputs = declaredInputs.filter((v) => !summary.initializers.has(v.name));
  for (const node of summary.nodes) for (const out of node.outputs) if (out) summary.producers.set(out, node);
  summary.stats = { reads: win.reads, bytesRead: win.bytesRead };
  return summary;
}

/** IEEE half → number. */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Resolves an external data location against the model's folder. Only plain relative paths inside that
 * folder are accepted: absolute paths, drive letters and `..` segments are rejected.
 */
export function resolveExternalPath(dir: string, location: string): string {
  const parts = location.split(/[\\/]/);
  if (
    location === "" ||
    location.includes("\0") ||
    isAbsolute(location) ||
    /^[a-zA-Z]:/.test(location) ||
    location.startsWith("\\") ||
    parts.some((p) => p === "..")
  ) {
    throw new OnnxFormatError(
      `external data location "${location}" is not a relative path inside the model folder`,
    );
  }
  return join(dir, ...parts.filter((p) => p !== "" && p !== "."));
}

function toFloat32(bytes: Uint8Array, dataType: number, count: number, what: string): Float32Array {
  // Every fixed-size type converts to float32 but complex ones.
  const complex = dataType === ELEMENT_TYPES.complex64.code || dataType === ELEMENT_TYPES.complex128.code;
  const size = complex ? undefined : elementBytes(dataType);
  if (size === undefined)
    throw new OnnxFormatError(`${what}: data type ${elementTypeName(dataType)} (${dataType}) not supported`);
  if (bytes.length !== count * size)
    throw new OnnxFormatError(
      `${what}: ${bytes.length} bytes for ${count} ${elementTypeName(dataType)} values`,
    );
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const out = new Float32Array(count);
  const get = ((): ((i: number) => number) => {
    switch (dataType) {
      case ELEMENT_TYPES.float32.code:
        return (i) => view.getFloat32(i * 4, true);
      case ELEMENT_TYPES.float16.code:
        return (i) => halfToFloat(view.getUint16(i * 2, true));
      case ELEMENT_TYPES.bfloat16.code: {
        const bits = new Uint32Array(out.buffer);
        for (let i = 0; i < count; i++) bits[i] = view.getUint16(i * 2, true) << 16;
        return (i) => out[i] as number;
      }
      case ELEMENT_TYPES.float64.code:
        return (i) => view.getFloat64(i * 8, true);
      case ELEMENT_TYPES.int8.code:
        return (i) => view.getInt8(i);
      case ELEMENT_TYPES.uint16.code:
        return (i) => view.getUint16(i * 2, true);
      case ELEMENT_TYPES.int16.code:
        return (i) => view.getInt16(i * 2, true);
      case ELEMENT_TYPES.int32.code:
        return (i) => view.getInt32(i * 4, true);
      case ELEMENT_TYPES.uint32.code:
        return (i) => view.getUint32(i * 4, true);
      case ELEMENT_TYPES.int64.code:
        return (i) => Number(view.getBigInt64(i * 8, true));
      case ELEMENT_TYPES.uint64.code:
        return (i) => Number(view.getBigUint64(i * 8, true));
      default:
        return (i) => view.getUint8(i); // UINT8, BOOL
    }
  })();
  for (let i = 0; i < count; i++) out[i] = get(i);
  return out;
}

/** Converts values from the typed repeated fields (int32_data holds float16/bfloat16 bit patterns). */
function typedValuesToFloat32(values: number[], dataType: number, count: number, what: string): Float32Array {
  if (values.length !== count)
    throw new OnnxFormatError(`${what}: ${values.length} values for ${count} elements`);
  if (dataType === ELEMENT_TYPES.float16.code)
    return Float32Array.from(values, (v) => halfToFloat(v & 0xffff));
  if (dataType === ELEMENT_TYPES.bfloat16.code) {
    const bits = Uint32Array.from(values, (v) => (v & 0xffff) << 16);
    return new Float32Array(bits.buffer);
  }
  return Float32Array.from(values);
}

/** Bytes [offset, offset + length) of a file, checked against its size. */
export async function readRange(path: string, offset: number, length: number): Promise<Uint8Array> {
  const file = Bun.file(path);
  if (offset + length > file.size)
    throw new OnnxFormatError(
      `${path}: bytes ${offset}..${offset + length} lie outside the ${file.size}-byte file`,
    );
  return new Uint8Array(await file.slice(offset, offset + length).arrayBuffer());
}

/** Decodes the packed bytes of a typed repeated field. */
function decodePacked(field: number, bytes: Uint8Array): number[] {
  const out: number[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (field === 4) {
    for (let i = 0; i + 4 <= bytes.length; i += 4) out.push(view.getFloat32(i, true));
    return out;
  }
  if (field === 10) {
    for (let i = 0; i + 8 <= bytes.length; i += 8) out.push(view.getFloat64(i, true));
    return out;
  }
  let p = 0;
  while (p < bytes.length) {
    let value = 0n;
    let shift = 0n;
    for (;;) {
      const b = bytes[p++];
      if (b === undefined || shift > 63n) throw new OnnxFormatError("malformed packed varint");
      value |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if (b < 0x80) break;
    }
    out.push(field === 11 ? Number(BigInt.asUintN(64, value)) : Number(BigInt.asIntN(64, value)));
  }
  return out;
}

/** Reads a tensor (an initializer, or a Constant node's `value`) as float32. */
export async function readTensor(graph: OnnxGraphSummary, tensor: OnnxTensorRef): Promise<Float32Array> {
  const count = tensor.dims.reduce((a, b) => a * b, 1);
  const what = `${graph.path}: tensor ${tensor.name || "(unnamed)"}`;
  if (tensor.dataType === ELEMENT_TYPES.string.code)
    throw new OnnxFormatError(`${what}: string tensors are not numeric`);
  const loc = tensor.location;
  switch (loc.kind) {
    case "raw":
      return toFloat32(await readRange(graph.path, loc.offset, loc.length), tensor.dataType, count, what);
    case "external": {
      const path = resolveExternalPath(graph.dir, loc.location);
      const file = Bun.file(path);
      if (!(await file.exists()))
        throw new OnnxFormatError(`${what}: external data file ${loc.location} not found beside the model`);
      const length = loc.length ?? file.size - loc.offset;
      return toFloat32(await readRange(path, loc.offset, length), tensor.dataType, count, what);
    }
    case "packed": {
      const values: number[] = [];
      for (const r of loc.ranges) {
        for (const v of decodePacked(loc.field, await readRange(graph.path, r.offset, r.length)))
          values.push(v);
      }
      return typedValuesToFloat32(values, tensor.dataType, count, what);
    }
    case "values":
      return typedValuesToFloat32(loc.values, tensor.dataType, count, what);
    case "none":
      if (count === 0) return new Float32Array(0);
      throw new OnnxFormatError(`${what}: has no data`);
  }
}

/** Reads one initializer as float32 (float32, float16, bfloat16, double and integer types). */
export async function readInitializer(graph: OnnxGraphSummary, name: string): Promise<Float32Array> {
  const tensor = graph.initializers.get(name);
  if (!tensor) throw new OnnxFormatError(`${graph.path}: no initializer named ${name}`);
  return readTensor(graph, tensor);
}
