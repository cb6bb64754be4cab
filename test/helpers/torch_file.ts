/**
 * torch.save's files, written by hand for the reader's tests: a zip of STORED entries and, for a state dict,
 * the pickle torch.save writes for `module.state_dict()` (protocol 2): an OrderedDict of
 * `_rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` tensors, one storage each in
 * `<archive>/data/<n>`, then BUILD with the dict's `_metadata` attribute.
 */
import { cat } from "./onnx_writer.ts";

/** A minimal zip (no zip64, CRCs left 0: the reader does not check them) with the given entries. */
export function zip(entries: Record<string, Uint8Array>, method = 0): Uint8Array {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(entries)) {
    const n = enc.encode(name);
    const local = new Uint8Array(30 + n.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(8, method, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, n.length, true);
    local.set(n, 30);
    const central = new Uint8Array(46 + n.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(10, method, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, n.length, true);
    cv.setUint32(42, offset, true);
    central.set(n, 46);
    locals.push(local, data);
    centrals.push(central);
    offset += local.length + data.length;
  }
  const cdSize = centrals.reduce((s, c) => s + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, centrals.length, true);
  ev.setUint16(10, centrals.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  return cat(...locals, ...centrals, eocd);
}

/** Pickle opcodes as bytes. */
class Pickler {
  private readonly bytes: number[] = [];
  raw(...parts: (string | number[])[]): this {
    for (const part of parts) {
      if (typeof part === "string") for (const ch of part) this.bytes.push(ch.charCodeAt(0));
      else this.bytes.push(...part);
    }
    return this;
  }
  /** BINUNICODE. */
  str(s: string): this {
    const utf8 = new TextEncoder().encode(s);
    const n = utf8.length;
    return this.raw("X", [n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >>> 24], [...utf8]);
  }
  /** BININT. */
  int(v: number): this {
    return this.raw("J", [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >>> 24) & 0xff]);
  }
  global(module: string, name: string): this {
    return this.raw(`c${module}\n${name}\n`);
  }
  tuple(items: number[]): this {
    this.raw("(");
    for (const i of items) this.int(i);
    return this.raw("t");
  }
  finish(): Uint8Array {
    return Uint8Array.from(this.bytes);
  }
}

export interface StateTensor {
  shape: number[];
  data: Float32Array;
}

/** A torch.save zip of `tensors` as a state dict (float32 or float16 storages), under the folder `archive`. */
export function torchSaveStateDict(
  tensors: ReadonlyMap<string, StateTensor>,
  archive: string,
  dtype: "F32" | "F16" = "F32",
): Uint8Array {
  const p = new Pickler().raw([0x80, 2]).global("collections", "OrderedDict").raw(")R(");
  const storages: Record<string, Uint8Array> = {};
  let n = 0;
  for (const [key, t] of tensors) {
    const id = String(n++);
    const strides = t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    p.str(key).global("torch._utils", "_rebuild_tensor_v2").raw("((");
    p.str("storage").global("torch", dtype === "F32" ? "FloatStorage" : "HalfStorage");
    p.str(id).str("cpu").int(t.data.length).raw("tQ").int(0).tuple(t.shape).tuple(strides);
    p.raw([0x89]).global("collections", "OrderedDict").raw(")RtR");
    const values = dtype === "F32" ? t.data : new Float16Array(t.data);
    storages[`${archive}/data/${id}`] = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  }
  // SETITEMS, then the state dict's `_metadata` ({"": {"version": 1}}) as the OrderedDict's state.
  p.raw("u}")
    .str("_metadata")
    .global("collections", "OrderedDict")
    .raw(")R(")
    .str("")
    .raw("}")
    .str("version");
  p.raw("K", [1], "su").raw("sb.");
  const enc = new TextEncoder();
  return zip({
    [`${archive}/data.pkl`]: p.finish(),
    [`${archive}/byteorder`]: enc.encode("little"),
    ...storages,
    [`${archive}/version`]: enc.encode("3\n"),
  });
}
