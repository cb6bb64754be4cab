import { stat } from "node:fs/promises";

/** The size of the file at `path`, or null when there is none. */
export async function sizeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).size;
  } catch {
    return null;
  }
}
