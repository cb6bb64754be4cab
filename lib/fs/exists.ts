import { lstat, stat } from "node:fs/promises";

/** Whether anything is at `path` (a file, a folder, a dangling link). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Whether `path` is a folder (or a link to one). */
export async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}
