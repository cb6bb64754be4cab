/** What every adapter kind produces for the engine, and the one error they throw. */

/** float32 values replacing a checkpoint tensor (same LDM key, same shape unless stated). */
export interface WeightOverride {
  shape: number[];
  data: Float32Array;
}

/** Checkpoint (LDM) key → its replacement. */
export type WeightOverrides = Map<string, WeightOverride>;

/** An adapter file that cannot be used as asked; `adapter` names it. */
export class AdapterError extends Error {
  override name = "AdapterError";
  constructor(
    readonly adapter: string,
    message: string,
  ) {
    super(message);
  }
}
