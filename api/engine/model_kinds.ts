/** Model families sdx knows. This list drives the API's enum, the spec, the SDK types and the CLI. */
export const MODEL_KINDS = ["sd1", "sd2", "sdxl"] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];

export const MODEL_FORMATS = ["onnx", "safetensors"] as const;
export type ModelFormat = (typeof MODEL_FORMATS)[number];
