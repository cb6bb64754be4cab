/**
 * `bun run bench cpu --tiny`: the CPU benchmark's whole code path (random-weight checkpoint, the export-shaped
 * ONNX folder, one child process per variant, stage peaks, table) on the tiny fixture model's shapes. Its times
 * mean nothing; that every variant runs and reports does.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { REPO_ROOT } from "../helpers/fixtures.ts";

const cache = mkdtempSync(join(tmpdir(), "sdx-bench-cpu-test-"));
afterAll(() => rmSync(cache, { recursive: true, force: true }));

test("--tiny runs every variant in its own process and prints one row each", async () => {
  const child = Bun.spawn(
    [
      process.execPath,
      join(REPO_ROOT, "bench", "index.ts"),
      "cpu",
      "--tiny",
      "--steps",
      "2",
      "--cache",
      cache,
    ],
    { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", env: process.env },
  );
  const [stdout, stderr, code] = await Promise.all([
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
    child.exited,
  ]);
  expect({ code, stderr: code === 0 ? "" : stderr }).toEqual({ code: 0, stderr: "" });
  const variants = [
    "plain-folded",
    "fused-folded",
    "fused-lean",
    "fused-lean-release",
    "folder",
    "folder-fused",
  ];
  for (const name of variants) {
    // variant, load s, RSS, text enc s, 1st step s, s/step, VAE s, peak RSS, stage peaks
    const row = stdout.split("\n").find((line) => line.trim().startsWith(`${name} `));
    expect(row).toBeDefined();
    expect(row).not.toContain("FAILED");
    const numbers = (row as string).trim().split(/\s+/).slice(1, 8).map(Number);
    expect(numbers.every((n) => Number.isFinite(n) && n >= 0)).toBe(true);
  }
  expect(stdout).toContain("tiny_sd15 64×64");
}, 180_000);
