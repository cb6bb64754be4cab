/**
 * The README's server-options table states each default; the contract's SERVER_DEFAULTS is where they are
 * written. This keeps the two the same, and every flag of the table one the server knows.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { SERVER_USAGE } from "../../api/config.ts";
import { SERVER_DEFAULTS } from "../../contract/index.ts";
import { REPO_ROOT } from "../helpers/fixtures.ts";

const README = await Bun.file(join(REPO_ROOT, "README.md")).text();

/** The table's rows: flag (without its argument) → the default cell. */
const rows = new Map(
  [...README.matchAll(/^\| `(--[a-z-]+)[^`]*` +\| [^|]+\| (.+?) *\|$/gm)].map((m) => [m[1], m[2]] as const),
);

const D = SERVER_DEFAULTS;
const EXPECTED: Record<string, string> = {
  "--models-dir": `\`${D.modelsDir}\``,
  "--host": `\`${D.host}\``,
  "--port": `\`${D.port}\``,
  "--max-loaded-models": `\`${D.maxLoadedModels.gpu}\` on a GPU, \`${D.maxLoadedModels.cpu}\` on the CPU`,
  "--concurrency": `\`${D.concurrency}\``,
  "--max-queue": `\`${D.maxQueue}\``,
  "--drain-timeout": `\`${D.drainTimeoutS}\``,
  "--step-timeout": `\`${D.stepTimeoutS}\``,
};

test("the README's server-options table states the defaults the server applies", () => {
  for (const [flag, value] of Object.entries(EXPECTED)) {
    expect({ flag, cell: rows.get(flag)?.startsWith(value) }).toEqual({ flag, cell: true });
  }
});

test("every flag in the README's table is one the server takes", () => {
  expect(rows.size).toBeGreaterThanOrEqual(Object.keys(EXPECTED).length);
  for (const flag of rows.keys())
    expect({ flag, known: SERVER_USAGE.includes(`${flag} `) }).toEqual({ flag, known: true });
});

test("the README's prose on the model cache states the same default", () => {
  expect(README).toContain(
    `(default ${D.maxLoadedModels.gpu} on a GPU, ${D.maxLoadedModels.cpu} on the CPU)`,
  );
});
