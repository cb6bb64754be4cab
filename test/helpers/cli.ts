/** Runs the real `sdx` command line (`bun cli/index.ts`) as a child process, without the caller's API key (`env` adds to the environment). */
import { join } from "node:path";
import { REPO_ROOT } from "./fixtures.ts";

export async function sdx(
  args: string[],
  cwd?: string,
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn(["bun", join(REPO_ROOT, "cli/index.ts"), ...args], {
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, SDX_API_KEY: "", ...env },
    ...(cwd ? { cwd } : {}),
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}
