/** A minimal protobuf writer for hand-built ONNX files in tests (field numbers from onnx/onnx.proto). */
import { type ElemType, elementTypeCode } from "../../api/engine/onnx/dtypes.ts";

export type Bytes = Uint8Array;

export function cat(...parts: Bytes[]): Bytes {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function varint(value: number | bigint): Bytes {
  let v = BigInt.asUintN(64, BigInt(value));
  const out: number[] = [];
  while (v >= 0x80n) {
    out.push(Number(v & 0x7fn) | 0x80);
    v >>= 7n;
  }
  out.push(Number(v));
  return Uint8Array.from(out);
}

export const pb = {
  int: (field: number, value: number | bigint) => cat(varint(field * 8), varint(value)),
  len: (field: number, ...body: Bytes[]) => {
    const b = cat(...body);
    return cat(varint(field * 8 + 2), varint(b.length), b);
  },
  str: (field: number, s: string) => pb.len(field, new TextEncoder().encode(s)),
  f32: (field: number, value: number) => {
    const b = new Uint8Array(5 + 4);
    const key = varint(field * 8 + 5);
    b.set(key);
    new DataView(b.buffer).setFloat32(key.length, value, true);
    return b.subarray(0, key.length + 4);
  },
  /** The 5-byte tag + length prefix of a length-delimited field whose body is written separately. */
  lenHeader: (field: number, length: number) => cat(varint(field * 8 + 2), varint(length)),
};

export const f32Bytes = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

/** TensorProto: dims 1, data_type 2, name 8, raw_data 9, external_data 13, data_location 14. */
export function tensor(name: string, dims: number[], type: ElemType, ...data: Bytes[]): Bytes {
  return cat(...dims.map((d) => pb.int(1, d)), pb.int(2, elementTypeCode(type)), pb.str(8, name), ...data);
}

export function external(location: string, offset: number, length: number): Bytes {
  const entry = (k: string, v: string) => pb.len(13, pb.str(1, k), pb.str(2, v));
  return cat(
    entry("location", location),
    entry("offset", String(offset)),
    entry("length", String(length)),
    pb.int(14, 1),
  );
}

/** NodeProto: input 1, output 2, name 3, op_type 4, attribute 5 (name 1, f 2, ints 8, type 20). */
export function node(op: string, inputs: string[], outputs: string[], ...attributes: Bytes[]): Bytes {
  return cat(
    ...inputs.map((i) => pb.str(1, i)),
    ...outputs.map((o) => pb.str(2, o)),
    pb.str(3, `${op}_${outputs[0]}`),
    pb.str(4, op),
    ...attributes.map((a) => pb.len(5, a)),
  );
}

/** ValueInfoProto for a float tensor: name 1, type 2 → tensor_type 1 → elem_type 1, shape 2 → dim 1 → dim_value 1. */
export function floatValue(name: string, dims: (number | string)[], type: ElemType = "float32"): Bytes {
  // Dimension: dim_value 1 or dim_param 2 (a symbolic, dynamic axis).
  const shape = pb.len(2, ...dims.map((d) => pb.len(1, typeof d === "number" ? pb.int(1, d) : pb.str(2, d))));
  return cat(pb.str(1, name), pb.len(2, pb.len(1, pb.int(1, elementTypeCode(type)), shape)));
}

/** ModelProto: ir_version 1, producer_name 2, graph 7 (node 1, name 2, initializer 5, input 11, output 12), opset_import 8. */
export function model(
  opset: number,
  nodes: Bytes[],
  initializers: Bytes[],
  inputs: Bytes[],
  outputs: Bytes[],
): Bytes {
  const graph = cat(
    ...nodes.map((n) => pb.len(1, n)),
    pb.str(2, "g"),
    ...initializers.map((t) => pb.len(5, t)),
    ...inputs.map((v) => pb.len(11, v)),
    ...outputs.map((v) => pb.len(12, v)),
  );
  return cat(
    pb.int(1, 8),
    pb.str(2, "handmade"),
    pb.len(7, graph),
    pb.len(8, pb.str(1, ""), pb.int(2, opset)),
  );
}
