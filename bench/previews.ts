/**
 * `bun run bench previews`: what live previews cost. First a generation's time per denoising step without
 * previews and with an `approx` preview after every step, side by side in one process (alternating runs, after a
 * warm-up); then one preview's parts at SD 1.x's 512² (64×64 latents) and SDXL's 1024² (128×128 latents): the
 * approx projection alone (target: well under a millisecond at 64×64), a taesd decode (random weights of the
 * released shapes, as `bench taesd`), and the PNG encode of each's result.
 *
 *   bun run bench previews [--model DIR] [--size 512] [--steps 10] [--runs 2] [--provider cpu|cuda]
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runStats } from "../api/engine/onnx/runtime.ts";
import { encodePng } from "../api/engine/pipeline/image.ts";
import { releasePipeline } from "../api/engine/pipeline/load.ts";
import { runPipeline } from "../api/engine/pipeline/run.ts";
import type { GenerateInput } from "../api/engine/pipeline/types.ts";
import { approxRgb, SD_APPROX, SDXL_APPROX } from "../api/engine/previews/approx.ts";
import { loadTaesdDecoder } from "../api/engine/previews/taesd.ts";
import { TorchGenerator } from "../api/engine/rng/torch_generator.ts";
import { printTable } from "./engine.ts";
import { writeRandomTaesdDecoder } from "./taesd.ts";
import { textRun } from "./text_run.ts";

/** Mean ms of `fn` over `n` calls, after `n / 10` unmeasured ones. */
async function meanMs(n: number, fn: () => unknown): Promise<number> {
  for (let i = 0; i < Math.ceil(n / 10); i++) await fn();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - t0) / n;
}

export async function benchPreviews(argv: string[]): Promise<void> {
  const { path, pipeline, provider, input, runs } = await textRun(argv, { steps: 10 });
  const { width: size, numSteps: steps, scheduler } = input;
  const dir = await mkdtemp(join(tmpdir(), "sdx-bench-taesd-"));
  const taesdPath = join(dir, "taesd_decoder.safetensors");
  await writeRandomTaesdDecoder(taesdPath);
  const withPreviews: GenerateInput = {
    ...input,
    preview: { every: 1, method: "approx", decoderPath: null },
  };
  const withTaesd: GenerateInput = {
    ...input,
    preview: { every: 1, method: "taesd", decoderPath: taesdPath },
  };

  // Per step, from the first step's end to the last's: the wall time and the part spent outside onnxruntime
  // (the sampler, guidance, previews), which a busy machine disturbs far less. Runs alternate so drift hits both.
  const perStep = async (run: GenerateInput) => {
    let first: { at: number; inside: number } | null = null;
    let last = { at: 0, inside: 0 };
    let previews = 0;
    await runPipeline(pipeline, run, {
      onStep: (e) => {
        const now = { at: performance.now(), inside: runStats.ms };
        first ??= now;
        last = now;
        previews += e.previews?.length ?? 0;
      },
    });
    const start = first ?? last;
    const wall = (last.at - start.at) / (steps - 1);
    return { wall, outside: wall - (last.inside - start.inside) / (steps - 1), previews };
  };
  await runPipeline(pipeline, { ...withPreviews, numSteps: 2 });
  await runPipeline(pipeline, { ...withTaesd, numSteps: 2 });
  const sum = {
    plain: { wall: 0, outside: 0 },
    approx: { wall: 0, outside: 0 },
    taesd: { wall: 0, outside: 0 },
  };
  let previews = 0;
  for (let r = 0; r < runs; r++) {
    for (const [key, run] of [
      ["plain", input],
      ["approx", withPreviews],
      ["taesd", withTaesd],
    ] as const) {
      const t = await perStep(run);
      sum[key].wall += t.wall / runs;
      sum[key].outside += t.outside / runs;
      if (key === "approx") previews += t.previews;
    }
  }
  await releasePipeline(pipeline);
  console.log(
    `previews: ${path} on ${provider}, ${size}×${size}, ${steps} steps of ${scheduler}, batch 1, ${runs} runs each (${previews / runs} previews a run)`,
  );
  const { plain, approx, taesd } = sum;
  printTable([
    ["generation", "ms / step", "× without", "outside onnxruntime ms / step", "added ms / step"],
    ["without previews", plain.wall.toFixed(1), "1.000", plain.outside.toFixed(2), "0"],
    [
      "approx every step",
      approx.wall.toFixed(1),
      (approx.wall / plain.wall).toFixed(3),
      approx.outside.toFixed(2),
      (approx.outside - plain.outside).toFixed(2),
    ],
    [
      "taesd every step",
      taesd.wall.toFixed(1),
      (taesd.wall / plain.wall).toFixed(3),
      taesd.outside.toFixed(2),
      (taesd.outside - plain.outside).toFixed(2),
    ],
  ]);

  // One preview's parts, on latents drawn as a generation's are (N(0, 1), the spread of its early steps).
  const rows: string[][] = [];
  const decoder = await loadTaesdDecoder(taesdPath, { provider });
  for (const [label, latent, factors] of [
    ["SD 1.x 512² (64×64)", 64, SD_APPROX],
    ["SDXL 1024² (128×128)", 128, SDXL_APPROX],
  ] as const) {
    const z = new TorchGenerator(7).randn([1, 4, latent, latent]);
    const rgb = approxRgb(z, latent, latent, factors);
    const projectMs = await meanMs(2000, () => approxRgb(z, latent, latent, factors));
    const pngMs = await meanMs(200, () => encodePng(rgb.data, rgb.width, rgb.height));
    rows.push([label, "approx", projectMs.toFixed(4), pngMs.toFixed(3), (projectMs + pngMs).toFixed(3)]);
    const full = await decoder.decode(z, latent, latent);
    const decodeMs = await meanMs(5, () => decoder.decode(z, latent, latent));
    const fullPngMs = await meanMs(10, () => encodePng(full.data, full.width, full.height));
    rows.push([label, "taesd", decodeMs.toFixed(1), fullPngMs.toFixed(3), (decodeMs + fullPngMs).toFixed(1)]);
  }
  await decoder.release();
  await rm(dir, { recursive: true, force: true });
  printTable([["latents", "method", "decode ms", "PNG ms", "preview ms"], ...rows]);
  console.log("target: the approx projection well under 1 ms at 64×64");
}
