/**
 * `bun run bench gpu` where there is no GPU (CI): one clear "no CUDA" line and exit 0; and its `--cpu` smoke,
 * which runs the benchmark's whole code path (random-weight checkpoints written, graphs built with fused
 * attention, sessions, warm-up, timed generation, table) on the CPU provider with tiny models.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chooseProvider } from "../../api/engine/onnx/runtime.ts";
import { REPO_ROOT } from "../helpers/fixtures.ts";

const cache = mkdtempSync(join(tmpdir(), "sdx-bench-gpu-test-"));
afterAll(() => rmSync(cache, { recursive: true, force: true }));

async function bench(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = Bun.spawn([process.execPath, join(REPO_ROOT, "bench", "index.ts"), "gpu", ...args], {
    cwd: REPO_ROOT,
    stdout: "pipe",
    stderr: "pipe",
    env: process.env,
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  return { code, stdout, stderr };
}

const cuda = (await chooseProvider("auto")).provider === "cuda";

test.skipIf(cuda)("without CUDA it says so in one line and exits 0", async () => {
  const { code, stdout } = await bench();
  expect(code).toBe(0);
  expect(stdout.trim()).toMatch(/^bench gpu: no CUDA \(.+\); nothing measured$/);
});

test("--cpu runs the benchmark's code on the CPU with tiny models and prints the table", async () => {
  const { code, stdout, stderr } = await bench("--cpu", "--cache", cache, "--steps", "2");
  expect(stderr).not.toContain("FAILED");
  expect(code).toBe(0);
  expect(stdout).toContain("fused MultiHeadAttention");
  expect(stdout).toMatch(/model\s+size\s+steps\s+run\s+s\/image\s+UNet it\/s\s+in ORT s\s+outside share/);
  expect(stdout).toMatch(/^\s*sd15\s+64×64\s+2\s+1\s+\d+\.\d+/m);
  expect(stdout).toMatch(/^\s*sdxl\s+64×64\s+2\s+1\s+\d+\.\d+/m);
  // A second run reuses the checkpoints and graphs.
  const again = await bench("--cpu", "--cache", cache, "--steps", "2", "--only", "sd15");
  expect(again.code).toBe(0);
  expect(again.stdout).toContain("(reused)");
  expect(again.stdout).toContain("graphs reused");
}, 120_000);
