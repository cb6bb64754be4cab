/**
 * Seeds: 32-bit, as torch's `manual_seed` takes them for the CPU generator. Image i of a batch uses seed + i,
 * wrapping at 2³², so any image can be remade alone.
 */

/** How many seeds there are: 0 … 2³² − 1. */
export const SEED_SPACE = 2 ** 32;
/** The largest seed. */
export const SEED_MAX = SEED_SPACE - 1;
/** The seed value that asks for a random one. */
export const RANDOM_SEED = -1;

/** A seed drawn at random from [0, space) (default: every seed). */
export function randomSeed(space: number = SEED_SPACE): number {
  return (crypto.getRandomValues(new Uint32Array(1))[0] as number) % space;
}

/** The seed of image `offset` of a run that starts at `seed`: seed + offset, wrapping at 2³². */
export function seedAt(seed: number, offset: number): number {
  return (seed + offset) % SEED_SPACE;
}
