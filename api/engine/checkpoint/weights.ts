/**
 * A single-file checkpoint's tensors as graph initializers: each weight becomes an ONNX external-data reference
 * into the .safetensors file (no copy), cast in the graph when the file stores another precision than the
 * graph computes in (onnxruntime folds such casts of constants at load).
 */
import { type ElemType, elementTypeCode } from "../onnx/dtypes.ts";
import type { GraphBuilder } from "../onnx/graph_builder.ts";
import type { SafetensorsDtype, SafetensorsHeader, TensorInfo } from "../safetensors.ts";

export const COMPUTE_PRECISIONS = ["float32", "float16"] as const;
export type ComputePrecision = (typeof COMPUTE_PRECISIONS)[number];

const STORED: Partial<Record<SafetensorsDtype, ElemType>> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
};

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

/**
 * Float32 tensors that replace some of the checkpoint's (adapters: merged LoRA layers, a token table with
 * embedding rows added), stored one after another in a raw file beside the graph.
 */
export interface OverrideFile {
  /** The file's name as the graphs refer to it (relative to the graph's folder). */
  location: string;
  entries: ReadonlyMap<string, { offset: number; length: number; shape: number[] }>;
}

export class CheckpointWeights {
  /** Each key's initializer in the graph being built, so a weight used twice is declared once. */
  private readonly declared = new Map<GraphBuilder, Map<string, string>>();

  constructor(
    readonly header: SafetensorsHeader,
    /** The checkpoint's file name as the graphs refer to it (relative to the graph's folder). */
    readonly location: string,
    /** The precision graphs compute in: weights stored otherwise are cast. */
    readonly precision: ComputePrecision = "float32",
    /** Tensors read from an override file instead of the checkpoint. */
    readonly overrides: OverrideFile | null = null,
    /**
     * The checkpoint weights that stay in the file's precision in memory when it differs from the compute
     * precision, cast in every run instead of once at load (GraphBuilder.external's `overridable`): float16
     * weights take half the memory of their float32 copies, at the price of the cast and of onnxruntime's
     * load-time weight layouts (NCHWc convolutions, prepacked matrices) for those layers. See weight_residency.ts.
     */
    readonly keepStored: ((key: string) => boolean) | null = null,
  ) {}

  /** The same checkpoint with another choice of weights kept in the file's precision. */
  withKeepStored(keepStored: ((key: string) => boolean) | null): CheckpointWeights {
    return new CheckpointWeights(this.header, this.location, this.precision, this.overrides, keepStored);
  }

  has(key: string): boolean {
    return this.header.tensors.has(key);
  }

  keys(): IterableIterator<string> {
    return this.header.tensors.keys();
  }

  info(key: string): TensorInfo {
    const info = this.header.tensors.get(key);
    if (!info) throw new CheckpointError(`${this.header.path}: the checkpoint has no tensor ${key}`);
    return info;
  }

  shape(key: string): number[] {
    return this.overrides?.entries.get(key)?.shape ?? this.info(key).shape;
  }

  /** The weight `key` as a graph value in the compute precision, optionally reshaped. */
  weight(g: GraphBuilder, key: string, reshape?: readonly number[]): string {
    let byGraph = this.declared.get(g);
    if (!byGraph) {
      byGraph = new Map();
      this.declared.set(g, byGraph);
    }
    const cacheKey = reshape ? `${key}@${reshape.join(",")}` : key;
    const known = byGraph.get(cacheKey);
    if (known) return known;
    const override = this.overrides?.entries.get(key);
    let value: string;
    let stored: ElemType;
    if (override && this.overrides) {
      stored = "float32";
      const { location } = this.overrides;
      value = g.external(
        { location, offset: override.offset, length: override.length, type: stored, dims: override.shape },
        key,
      );
    } else {
      const info = this.info(key);
      const type = STORED[info.dtype];
      if (!type) {
        throw new CheckpointError(
          `${this.header.path}: tensor ${key} is ${info.dtype}; sdx reads F32, F16 and BF16 weights`,
        );
      }
      stored = type;
      value = g.external(
        {
          location: this.location,
          offset: info.begin,
          length: info.end - info.begin,
          type,
          dims: info.shape,
        },
        key,
        stored !== this.precision && (this.keepStored?.(key) ?? false),
      );
    }
    if (stored !== this.precision) value = g.node("Cast", [value], { to: elementTypeCode(this.precision) });
    if (reshape) value = g.node("Reshape", [value, g.constant(reshape, [reshape.length], "int64")]);
    byGraph.set(cacheKey, value);
    return value;
  }
}
