/** Headless Debian Chromium, offline (background networking off), with a throwaway profile. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM = Bun.which("chromium") ?? Bun.which("chromium-browser");

/** Headless, sandbox off (containers), and no traffic of the browser's own (updates, sync, QUIC probes). */
export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
] as const;

/** Runs Chromium headless on `url` with `args` (e.g. --dump-dom); answers its stdout. */
export async function headlessChromium(url: string, args: string[]): Promise<string> {
  if (!CHROMIUM) throw new Error("Debian chromium is needed for this test: apt-get install chromium");
  const profile = await mkdtemp(join(tmpdir(), "sdx-chromium-"));
  try {
    const proc = Bun.spawn([CHROMIUM, ...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, ...args, url], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const out = await new Response(proc.stdout).text();
    await proc.exited;
    return out;
  } finally {
    await rm(profile, { recursive: true, force: true });
  }
}

/** The DOM Chromium builds from `url`, serialized. */
export function dumpDom(url: string, budgetMs = 5000): Promise<string> {
  return headlessChromium(url, [`--virtual-time-budget=${budgetMs}`, "--dump-dom"]);
}
