/**
 * ONNX tensor element types: each TensorProto.DataType code (onnx/onnx.proto) under onnxruntime's name for it
 * (as in `InferenceSession.inputMetadata`), with its bytes per element (none for string).
 */
export const ELEMENT_TYPES = {
  float32: { code: 1, bytes: 4 },
  uint8: { code: 2, bytes: 1 },
  int8: { code: 3, bytes: 1 },
  uint16: { code: 4, bytes: 2 },
  int16: { code: 5, bytes: 2 },
  int32: { code: 6, bytes: 4 },
  int64: { code: 7, bytes: 8 },
  string: { code: 8, bytes: undefined },
  bool: { code: 9, bytes: 1 },
  float16: { code: 10, bytes: 2 },
  float64: { code: 11, bytes: 8 },
  uint32: { code: 12, bytes: 4 },
  uint64: { code: 13, bytes: 8 },
  complex64: { code: 14, bytes: 8 },
  complex128: { code: 15, bytes: 16 },
  bfloat16: { code: 16, bytes: 2 },
} as const;
export type ElemType = keyof typeof ELEMENT_TYPES;

const BY_CODE: ReadonlyMap<number, { name: ElemType; bytes: number | undefined }> = new Map(
  Object.entries(ELEMENT_TYPES).map(([name, t]) => [t.code, { name: name as ElemType, bytes: t.bytes }]),
);

/** The TensorProto.DataType code of an element type (of a compute precision: "float32" → 1, "float16" → 10). */
export function elementTypeCode(type: ElemType): number {
  return ELEMENT_TYPES[type].code;
}

/** onnxruntime's name for a TensorProto.DataType code, or "unknown". */
export function elementTypeName(code: number): string {
  return BY_CODE.get(code)?.name ?? "unknown";
}

/** Bytes per element of a TensorProto.DataType code; undefined for string and unknown codes. */
export function elementBytes(code: number): number | undefined {
  return BY_CODE.get(code)?.bytes;
}
