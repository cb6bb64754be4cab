/**
 * `bun run bench taesd`: what one `taesd` preview costs on the CPU — the TAESD decoder (random float32 weights of
 * the released shapes, graph built by sdx) decoding one image's latents to RGB at 64×64 and 128×128 latents
 * (512² and 1024² images), side by side with SD 1.5's own VAE decoder (random fp16 weights of the released
 * shapes, float32 graph as sdx builds it) at 64×64. Also the first use's graph build and session creation.
 *
 *   bun run bench taesd [--runs 5] [--cache DIR]
 */
import { mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { prepareVae } from "../api/engine/adapters/vae.ts";
import { VAE_PREFIX } from "../api/engine/checkpoint/keys.ts";
import { ldmTensors, PRESETS, writeRandomCheckpoint } from "../api/engine/checkpoint/ldm_layout.ts";
import { cacheDirOf } from "../api/engine/model_folder.ts";
import { OnnxModel } from "../api/engine/onnx/runtime.ts";
import { loadTaesdDecoder } from "../api/engine/previews/taesd.ts";
import { taesdDecoderShapes } from "../api/engine/previews/taesd_weights.ts";
import { median, printTable } from "./engine.ts";

const ms = (x: number) => x.toFixed(1);

/** Latents of one image, [4, h, w], spread like a denoiser's (about ±3). */
const latentsOf = (h: number, w: number) =>
  Float32Array.from({ length: 4 * h * w }, (_, i) => 3 * Math.sin(i * 12.9898 + 1.7));

/** A taesd.py decoder file of random float32 weights of the released shapes, as the benches decode with. */
export async function writeRandomTaesdDecoder(path: string): Promise<void> {
  await writeRandomCheckpoint(
    path,
    [...taesdDecoderShapes(4)].map(([key, shape]) => ({ key, shape, dtype: "float" as const })),
    { dtype: "F32" },
  );
}

async function timed(runs: number, run: () => Promise<unknown>): Promise<number> {
  await run(); // warm-up: onnxruntime plans the shapes on the first run
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  return median(times);
}

export async function benchTaesd(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      runs: { type: "string", default: "5" },
      cache: { type: "string", default: join(tmpdir(), "sdx-bench-taesd") },
    },
  });
  const runs = Number(values.runs);
  const dir = values.cache;
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });

  const taesdFile = join(dir, "taesd_decoder.safetensors");
  await writeRandomTaesdDecoder(taesdFile);
  const t0 = performance.now();
  const decoder = await loadTaesdDecoder(taesdFile, { provider: "cpu" });
  const firstUse = performance.now() - t0;
  await decoder.release();
  const t1 = performance.now();
  const taesd = await loadTaesdDecoder(taesdFile, { provider: "cpu" });
  const cachedUse = performance.now() - t1;

  // SD 1.5's VAE decoder alone, as a VAE file (post_quant_conv + decoder), for the side-by-side.
  const vaeFile = join(dir, "sd15_vae.safetensors");
  const vaeKeys = ldmTensors(PRESETS.sd15).filter(
    (t) => t.key.startsWith(`${VAE_PREFIX}decoder.`) || t.key.startsWith(`${VAE_PREFIX}post_quant_conv.`),
  );
  await writeRandomCheckpoint(vaeFile, vaeKeys, { dtype: "F16" });
  const vaeGraph = (await prepareVae(vaeFile, cacheDirOf(dir))).decoder;
  const vae = await OnnxModel.load(vaeGraph, { provider: "cpu" });

  const rows = [["latents", "image", "taesd decode, ms", "VAE decoder, ms", "× VAE"]];
  for (const size of [64, 128]) {
    const latents = latentsOf(size, size);
    const taesdMs = await timed(runs, () => taesd.decode(latents, size, size));
    let vaeMs: number | null = null;
    if (size === 64) {
      const feed = { latent_sample: { data: latents, dims: [1, 4, size, size] } };
      vaeMs = await timed(Math.min(runs, 2), () => vae.run(feed, ["sample"]));
    }
    rows.push([
      `${size}×${size}`,
      `${size * 8}²`,
      ms(taesdMs),
      vaeMs === null ? "—" : ms(vaeMs),
      vaeMs === null ? "—" : (taesdMs / vaeMs).toFixed(3),
    ]);
  }
  await taesd.release();
  await vae.release();
  printTable(rows);
  console.log(
    `\nfirst use (graph built from the file, session created): ${ms(firstUse)} ms; cached graph: ${ms(cachedUse)} ms. ` +
      `Medians of ${runs} runs after a warm-up (the VAE: of ${Math.min(runs, 2)}); the taesd figure includes the RGB conversion.`,
  );
  await rm(dir, { recursive: true, force: true });
}
