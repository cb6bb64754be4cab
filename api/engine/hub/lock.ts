import { open, readFile, unlink } from "node:fs/promises";
import { HubError } from "./errors.ts";

/** Holds `<staging>.lock` while a pull runs; a lock whose process is gone is taken over. */
export async function acquireLock(path: string, name: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, "wx");
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => unlink(path).catch(() => undefined);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number((await readFile(path, "utf8").catch(() => "")).trim());
      let alive = false;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (err) {
          alive = (err as NodeJS.ErrnoException).code === "EPERM";
        }
      }
      if (alive)
        throw new HubError("busy", `${name} is being downloaded by another sdx process (pid ${pid})`);
      await unlink(path).catch(() => undefined);
    }
  }
  throw new HubError("busy", `${name} is being downloaded by another sdx process`);
}
