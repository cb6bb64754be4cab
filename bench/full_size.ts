/**
 * What the full-size benchmarks (gpu, cpu) share: random-weight checkpoints of the released models' exact keys and
 * shapes (api/engine/checkpoint/ldm_layout.ts presets), written once into a cache folder, and the default request.
 */
import { rename, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  ldmTensors,
  PRESETS,
  type PresetName,
  writeRandomCheckpoint,
} from "../api/engine/checkpoint/ldm_layout.ts";
import type { GenerateInput } from "../api/engine/pipeline/types.ts";
import { GENERATE_DEFAULTS } from "../contract/index.ts";

/**
 * The preset's random-weight checkpoint in `cacheDir`, written once (a `.complete` marker beside it says the write
 * finished) and reused by later runs: SD 1.5's is 2.1 GB, SDXL's 6.9 GB. `sidecar`: the JSON beside it, if any.
 */
export async function randomCheckpoint(
  preset: PresetName,
  cacheDir: string,
  sidecar?: Record<string, unknown>,
): Promise<{ path: string; note: string }> {
  const arch = PRESETS[preset];
  const path = join(cacheDir, `${preset}.safetensors`);
  if (sidecar) await Bun.write(path.replace(/\.safetensors$/, ".json"), JSON.stringify(sidecar));
  const done = `${path}.complete`;
  if ((await Bun.file(done).exists()) && (await Bun.file(path).exists())) {
    const bytes = (await stat(path)).size;
    return {
      path,
      note: `preset ${preset} (${arch.mirrors}), random fp16 weights, ${(bytes / 1e9).toFixed(2)} GB (reused)`,
    };
  }
  const partial = `${path}.partial`;
  const started = performance.now();
  const { bytes } = await writeRandomCheckpoint(partial, ldmTensors(arch), { arch });
  await rename(partial, path);
  await Bun.write(done, String(bytes));
  return {
    path,
    note: `preset ${preset} (${arch.mirrors}), random fp16 weights, ${(bytes / 1e9).toFixed(2)} GB written in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  };
}

/** The benchmarks' request: the contract's defaults (sampler, CFG), a fixed prompt and negative prompt, batch 1. */
export function benchRequest(size: number, steps: number, seed: number): GenerateInput {
  return {
    prompt: "a lighthouse on a rocky coast at dawn, dramatic clouds, oil painting",
    negativePrompt: "blurry, low quality",
    promptSyntax: GENERATE_DEFAULTS.prompt_syntax,
    seeds: [seed],
    width: size,
    height: size,
    numSteps: steps,
    guidanceScale: GENERATE_DEFAULTS.guidance_scale,
    scheduler: GENERATE_DEFAULTS.scheduler_type,
    schedulerOptions: {},
    clipSkip: 1,
    vaeSlicing: false,
    vaeTiling: false,
  };
}
