/**
 * `bun run bench engine`: the engine's own overhead. Runs the full text-to-image pipeline in this thread on a
 * model (default: the tiny SD 1.x fixture) and splits wall time into time inside onnxruntime's `run` and time
 * outside it (tokenizing, CFG arithmetic, scheduler steps, tensor conversion, PNG encoding). Then image-to-image
 * from the last image at strength 0.5 and 1, side by side with text-to-image: strength 0.5 should cost about
 * half the denoising (plus one VAE encode).
 *
 *   bun run bench engine [--model DIR] [--size 512] [--steps 30] [--scheduler dpmsolver++] [--runs 2]
 */

import sharp from "sharp";
import { runStats } from "../api/engine/onnx/runtime.ts";
import { runPipeline } from "../api/engine/pipeline/run.ts";
import { generate } from "../api/engine/pipeline/text_to_image.ts";
import type { GenerateOutput } from "../api/engine/pipeline/types.ts";
import { GENERATE_DEFAULTS } from "../contract/index.ts";
import { textRun } from "./text_run.ts";

export async function benchEngine(argv: string[]): Promise<void> {
  const { path, pipeline, provider, input, runs } = await textRun(argv, {
    steps: GENERATE_DEFAULTS.num_steps,
  });
  const { width: size, numSteps: steps, scheduler } = input;
  // One warm-up run (first-run allocations, graph caches), then the measured ones.
  await generate(pipeline, { ...input, numSteps: 2 });
  const rows: string[][] = [];
  let last: GenerateOutput | null = null;
  let textWall = 0;
  for (let r = 0; r < runs; r++) {
    const before = { ...runStats };
    const t0 = performance.now();
    const out = await generate(pipeline, input);
    const wall = performance.now() - t0;
    last = out;
    textWall = wall;
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
    `engine: ${path} on ${provider}, ${size}×${size}, ${steps} steps of ${scheduler}, CFG ${GENERATE_DEFAULTS.guidance_scale}, batch 1`,
  );
  printTable([header, ...rows]);
  console.log("target: outside share under 3 %");

  // Image-to-image from the last image, beside the last text-to-image run.
  const png = (last as GenerateOutput).images[0]?.png as Uint8Array;
  const rgb = new Uint8Array(await sharp(png).removeAlpha().raw().toBuffer());
  const image = { rgb, mask: null, maskedContent: "original" as const, overlay: null };
  const imageRows: string[][] = [["text-to-image", String(steps), (textWall / 1000).toFixed(2), "1.00"]];
  for (const strength of [0.5, 1]) {
    await runPipeline(pipeline, { ...input, numSteps: 2, image: { ...image, strength } });
    const t0 = performance.now();
    const out = await runPipeline(pipeline, { ...input, image: { ...image, strength } });
    const wall = performance.now() - t0;
    imageRows.push([
      `image-to-image, strength ${strength}`,
      String(out.timesteps.length),
      (wall / 1000).toFixed(2),
      (wall / textWall).toFixed(2),
    ]);
  }
  printTable([["pipeline", "steps run", "wall s", "× text-to-image"], ...imageRows]);
  console.log("target: strength 0.5 about half of text-to-image's denoising, plus one VAE encode");
}

/** The middle value (the lower of the two middle ones for an even count). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)] as number;
}

export function printTable(rows: string[][]): void {
  const widths = (rows[0] ?? []).map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  for (const [i, row] of rows.entries()) {
    console.log(row.map((cell, j) => cell.padStart(widths[j] ?? 0)).join("  "));
    if (i === 0) console.log(widths.map((w) => "-".repeat(w)).join("  "));
  }
}
