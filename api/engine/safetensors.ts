/**
 * Reader for the safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian
 * header length, a JSON header naming each tensor's dtype, shape and byte range, then the raw data.
 * Only the header is read eagerly; tensors are read one at a time with ranged reads.
 */
import { halfBitsToFloats } from "./half.ts";

export const SAFETENSORS_DTYPES = [
  "F64",
  "F32",
  "F16",
  "BF16",
  "I64",
  "I32",
  "I16",
  "I8",
  "U8",
  "BOOL",
] as const;
export type SafetensorsDtype = (typeof SAFETENSORS_DTYPES)[number];

const DTYPE_BYTES: Record<SafetensorsDtype, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  path: string;
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Byte offset where the data section starts. */
  dataOffset: number;
}

const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  const file = Bun.file(path);
  const size = file.size;
  if (size < 8) throw new SafetensorsError(`${path}: too small to be a safetensors file (${size} bytes)`);
  const lenBytes = new DataView(await file.slice(0, 8).arrayBuffer());
  const headerLen = Number(lenBytes.getBigUint64(0, true));
  if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > size) {
    throw new SafetensorsError(`${path}: header length ${headerLen} does not fit a ${size}-byte file`);
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(await file.slice(8, 8 + headerLen).text()) as Record<string, unknown>;
    if (typeof json !== "object" || json === null || Array.isArray(json))
      throw new Error("not a JSON object");
  } catch (e) {
    throw new SafetensorsError(`${path}: header is not valid JSON (${(e as Error).message})`);
  }
  const dataOffset = 8 + headerLen;
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(json)) {
    if (name === "__metadata__") {
      metadata = (value ?? {}) as Record<string, string>;
      continue;
    }
    const v = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!SAFETENSORS_DTYPES.includes(v.dtype as SafetensorsDtype)) {
      throw new SafetensorsError(
        `${path}: tensor ${name} has dtype ${String(v.dtype)}; supported: ${SAFETENSORS_DTYPES.join(", ")}`,
      );
    }
    const offsets = v.data_offsets;
    const shape = v.shape;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isInteger(o) && o >= 0) ||
      !Array.isArray(shape) ||
      !shape.every((d) => Number.isInteger(d) && d >= 0)
    ) {
      throw new SafetensorsError(`${path}: tensor ${name} has a malformed entry in the header`);
    }
    const begin = dataOffset + (offsets[0] as number);
    const end = dataOffset + (offsets[1] as number);
    if (!(begin <= end && end <= size)) {
      throw new SafetensorsError(
        `${path}: tensor ${name} lies outside the file (bytes ${begin}–${end} of ${size}); the file is truncated or corrupt`,
      );
    }
    const dtype = v.dtype as SafetensorsDtype;
    const expected = (shape as number[]).reduce((n, d) => n * d, 1) * DTYPE_BYTES[dtype];
    if (end - begin !== expected) {
      throw new SafetensorsError(
        `${path}: tensor ${name} holds ${end - begin} bytes but ${dtype}[${shape.join(", ")}] needs ${expected}; the file is corrupt`,
      );
    }
    tensors.set(name, { name, dtype, shape: shape as number[], begin, end });
  }
  return { path, tensors, metadata, dataOffset };
}

/** Reads one tensor and converts it to float32 (F32, F16, BF16, F64 and integer types). */
export async function readTensorAsFloat32(header: SafetensorsHeader, name: string): Promise<Float32Array> {
  const info = header.tensors.get(name);
  if (!info) throw new SafetensorsError(`${header.path}: no tensor named ${name}`);
  const buf = await Bun.file(header.path).slice(info.begin, info.end).arrayBuffer();
  const view = new DataView(buf);
  switch (info.dtype) {
    case "F32":
      return new Float32Array(buf);
    case "F64":
      return Float32Array.from(new Float64Array(buf));
    case "F16":
      return halfBitsToFloats(new Uint16Array(buf));
    case "BF16": {
      const out = new Float32Array(buf.byteLength / 2);
      const u32 = new Uint32Array(out.buffer);
      for (let i = 0; i < out.length; i++) u32[i] = view.getUint16(i * 2, true) << 16;
      return out;
    }
    case "I64":
      return Float32Array.from(new BigInt64Array(buf), (x) => Number(x));
    case "I32":
      return Float32Array.from(new Int32Array(buf));
    case "I16":
      return Float32Array.from(new Int16Array(buf));
    case "I8":
      return Float32Array.from(new Int8Array(buf));
    case "U8":
    case "BOOL":
      return Float32Array.from(new Uint8Array(buf));
  }
}

/** Convenience for tests and tools: header plus every tensor as float32. */
export async function loadSafetensors(
  path: string,
): Promise<Map<string, { shape: number[]; data: Float32Array }>> {
  const header = await readSafetensorsHeader(path);
  const out = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const [name, info] of header.tensors) {
    out.set(name, { shape: info.shape, data: await readTensorAsFloat32(header, name) });
  }
  return out;
}
