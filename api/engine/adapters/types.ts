export interface WeightOverride {
  shape: number[];
  data: Float32Array;
}
export type WeightOverrides = Map<string, WeightOverride>;
export class AdapterError extends Error {
  constructor(
    readonly adapter: string,
    message: string,
  ) {
    super(message);
  }
  override name = "AdapterError";
}
