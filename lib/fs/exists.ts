import { lstat } from "node:fs/promises";

/** Whether anything is at `path` (a file, a folder, a dangling link). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
