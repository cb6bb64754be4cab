/**
 * `bun run bench engine`: the engine's own overhead. Runs the full text-to-image pipeline in this thread on a
 * model (default: the tiny SD 1.x fixture) and splits wall time into time inside onnxruntime's `run` and time
 * outside it (tokenizing, CFG arithmetic, scheduler steps, tensor conversion, PNG encoding).
 *
 *   bun run bench engine [--model DIR] [--size 512] [--steps 30] [--scheduler dpmsolver++] [--runs 2]
 */

import { parseArgs } from "node:util";
import { inspectModelFolder } from "../api/engine/model_folder.ts";
import { runStats } from "../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline } from "../api/engine/pipeline/load.ts";
import { generate } from "../api/engine/pipeline/text_to_image.ts";
import { GENERATE_DEFAULTS, isSchedulerName } from "../contract/index.ts";
import { TINY_SD15 } from "../test/helpers/fixtures.ts";

export async function benchEngine(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", default: TINY_SD15 },
      size: { type: "string", default: "512" },
      steps: { type: "string", default: String(GENERATE_DEFAULTS.num_steps) },
      scheduler: { type: "string", default: GENERATE_DEFAULTS.scheduler_type },
      runs: { type: "string", default: "2" },
      provider: { type: "string", default: "cpu" },
    },
  });
  const size = Number(values.size);
  const steps = Number(values.steps);
  const runs = Number(values.runs);
  const scheduler = values.scheduler;
  if (!isSchedulerName(scheduler)) throw new Error(`unknown scheduler ${scheduler}`);
  const provider = values.provider === "cuda" ? "cuda" : "cpu";
  const entry = await inspectModelFolder("bench", values.model);
  const pipeline = await loadOnnxPipeline(entry, provider);
  const input = {
    prompt: "a lighthouse on a rocky coast at dawn, dramatic clouds, oil painting",
    negativePrompt: "blurry, low quality",
    promptSyntax: GENERATE_DEFAULTS.prompt_syntax,
    seeds: [42],
    width: size,
    height: size,
    numSteps: steps,
    guidanceScale: GENERATE_DEFAULTS.guidance_scale,
    scheduler,
    schedulerOptions: {},
    clipSkip: GENERATE_DEFAULTS.clip_skip,
    vaeSlicing: false,
    vaeTiling: false,
  };
  // One warm-up run (first-run allocations, graph caches), then the measured ones.
  await generate(pipeline, { ...input, numSteps: 2 });
  const rows: string[][] = [];
  for (let r = 0; r < runs; r++) {
    const before = { ...runStats };
    const t0 = performance.now();
    const out = await generate(pipeline, input);
    const wall = performance.now() - t0;
    const inside = runStats.ms - before.ms;
    rows.push([
      String(r + 1),
      (wall / 1000).toFixed(2),
      (steps / (out.timings.denoiseMs / 1000)).toFixed(3),
      (inside / 1000).toFixed(2),
      ((wall - inside) / 1000).toFixed(3),
      `${(((wall - inside) / wall) * 100).toFixed(2)} %`,
      String(runStats.runs - before.runs),
    ]);
  }
  const header = ["run", "wall s", "steps/s", "in onnxruntime s", "outside s", "outside share", "ort runs"];
  console.log(
    `engine: ${entry.path} on ${provider}, ${size}×${size}, ${steps} steps of ${scheduler}, CFG ${GENERATE_DEFAULTS.guidance_scale}, batch 1`,
  );
  printTable([header, ...rows]);
  console.log("target: outside share under 3 %");
}

export function printTable(rows: string[][]): void {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((cell, j) => cell.padStart(widths[j] ?? 0)).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}
