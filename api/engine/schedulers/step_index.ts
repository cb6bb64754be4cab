/**
 * The step bookkeeping diffusers copies between its schedulers (`_step_index`, `_begin_index`, `_init_step_index`,
 * `index_for_timestep`), written once. Classes differ only in what an unknown timestep means: the σ-indexed
 * k-diffusion samplers and LCM refuse it, DPM-Solver and UniPC fall back to the last index (diffusers'
 * `len(schedule_timesteps) - 1`). Also the argument checks at the top of `setTimesteps` and `step`.
 */

/**
 * `index_for_timestep`: where `timestep` sits in the schedule; when it occurs more than once the second
 * occurrence is taken, so that a run started mid-schedule (img2img) does not skip a σ. Undefined when absent.
 */
export function findTimestepIndex(timesteps: readonly number[], timestep: number): number | undefined {
  const hits: number[] = [];
  timesteps.forEach((t, k) => {
    if (t === timestep) hits.push(k);
  });
  return hits.length > 1 ? hits[1] : hits[0];
}

/** What `StepIndex` does with a first timestep that is not in the schedule: return an index or throw. */
export type UnknownTimestep = (timesteps: readonly number[], timestep: number) => number;

/** The index of the step being taken: found from the first timestep seen (or `setBegin`), then one up per step. */
export class StepIndex {
  private index: number | null = null;
  private begin: number | null = null;

  constructor(private readonly unknown: UnknownTimestep) {}

  /** For img2img: the first step uses this index instead of looking its timestep up. */
  setBegin(beginIndex: number): void {
    this.begin = beginIndex;
  }

  /** Forgets both indices (after a new schedule). */
  reset(): void {
    this.index = null;
    this.begin = null;
  }

  /** The current index, initialised on first use (`_init_step_index`). */
  current(timesteps: readonly number[], timestep: number): number {
    if (this.index === null) {
      this.index = this.begin ?? findTimestepIndex(timesteps, timestep) ?? this.unknown(timesteps, timestep);
    }
    return this.index;
  }

  /**
   * The index `add_noise` reads, by diffusers' three cases: no begin index (a pipeline without `set_begin_index`, e.g.
   * SDXL img2img) → looked up from `timestep`; after a step (inpainting's blend) → the advanced step index; before
   * the first step (img2img's initial latents) → the begin index.
   */
  forAddNoise(timesteps: readonly number[], timestep: number): number {
    if (this.begin === null)
      return findTimestepIndex(timesteps, timestep) ?? this.unknown(timesteps, timestep);
    return this.index ?? this.begin;
  }

  /** `current`, refusing a step past the end of the schedule. */
  forStep(timesteps: readonly number[], timestep: number): number {
    const i = this.current(timesteps, timestep);
    const n = timesteps.length;
    if (i >= n) throw new Error(`step called ${i + 1} times for ${n} timesteps`);
    return i;
  }

  /** At the end of a successful step. */
  advance(): void {
    this.index = (this.index as number) + 1;
  }
}

/** The check at the top of every `setTimesteps`: a whole number of steps, at least one. */
export function checkStepCount(numInferenceSteps: number): void {
  if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1) {
    throw new RangeError(`numInferenceSteps must be a positive integer, got ${numInferenceSteps}`);
  }
}

/**
 * The checks every `step` of the ᾱ-indexed and DPM-family schedulers starts with, in this order: a schedule has
 * been set (`numInferenceSteps` is not null), and the model output matches the sample in size.
 */
export function checkStepInputs(
  numInferenceSteps: number | null,
  modelOutput: Float32Array,
  sample: Float32Array,
): asserts numInferenceSteps is number {
  if (numInferenceSteps === null) throw new Error("setTimesteps must be called before step");
  checkSameLength(modelOutput, sample);
}

/** The model output must have one value per sample value. */
export function checkSameLength(modelOutput: Float32Array, sample: Float32Array): void {
  if (modelOutput.length !== sample.length) {
    throw new RangeError(`model output has ${modelOutput.length} values, sample has ${sample.length}`);
  }
}

/** The checks at the top of every σ-indexed `addNoise`: a schedule has been set, and the sizes match. */
export function checkNoiseInputs(
  timesteps: readonly number[],
  original: Float32Array,
  noise: Float32Array,
): void {
  if (timesteps.length === 0) throw new Error("setTimesteps must be called before addNoise");
  checkNoiseLength(original, noise);
}

/** The noise must have one value per sample value. */
export function checkNoiseLength(original: Float32Array, noise: Float32Array): void {
  if (noise.length !== original.length) {
    throw new RangeError(`noise has ${noise.length} values, sample has ${original.length}`);
  }
}
