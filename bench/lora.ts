/**
 * `bun run bench lora`: what switching LoRA sets costs on a full-size SD 1.5 checkpoint (random fp16 weights of
 * the released shapes) with a typical kohya LoRA: rank 32 on every attention, feed-forward and projection layer
 * of the UNet's transformers and on the text encoder's attention and MLP layers, as kohya's default network
 * trains. Side by side with loading the whole model: a set in use costs nothing again, a new set merges its
 * weights and re-creates only the text encoder and UNet sessions (the VAE, tokenizer and scheduler stay), and
 * a set seen before reuses its graphs.
 *
 *   bun run bench lora [--cache DIR] [--rank 32]
 */
import { mkdir, rename, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { applyAdapters } from "../api/engine/adapters/apply.ts";
import { layerNames } from "../api/engine/adapters/layers.ts";
import {
  ldmTensors,
  PRESETS,
  type TensorSpec,
  writeRandomCheckpoint,
} from "../api/engine/checkpoint/ldm_layout.ts";
import { inspectCheckpoint } from "../api/engine/model_folder.ts";
import { loadOnnxPipeline, releasePipeline } from "../api/engine/pipeline/load.ts";
import { Residency } from "../api/engine/pipeline/residency.ts";
import type { AdapterInput } from "../api/engine/pipeline/types.ts";
import { readSafetensorsHeader } from "../api/engine/safetensors.ts";
import { printTable } from "./engine.ts";

const seconds = (ms: number) => (ms / 1000).toFixed(2);

/** Writes `path` once (a `.complete` marker says the write finished). */
async function once(path: string, write: (partial: string) => Promise<unknown>): Promise<void> {
  if ((await Bun.file(`${path}.complete`).exists()) && (await Bun.file(path).exists())) return;
  await write(`${path}.partial`);
  await rename(`${path}.partial`, path);
  await Bun.write(`${path}.complete`, "");
}

/** kohya's default LoRA layers: the UNet transformers' linear and 1×1 layers, the text encoder's attention and MLP. */
const LORA_LAYER =
  /(attn[12]_to_(q|k|v|out_0)|ff_net_(0_proj|2)|proj_(in|out)|self_attn_(q|k|v|out)_proj|mlp_fc[12])$/;

export async function benchLora(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      cache: { type: "string", default: join(tmpdir(), "sdx-bench-lora") },
      rank: { type: "string", default: "32" },
    },
  });
  const rank = Number(values.rank);
  const dir = values.cache;
  await mkdir(dir, { recursive: true });
  const checkpoint = join(dir, "sd15.safetensors");
  const arch = PRESETS.sd15;
  await once(checkpoint, (p) => writeRandomCheckpoint(p, ldmTensors(arch), { arch }));
  const header = await readSafetensorsHeader(checkpoint);

  // The LoRA: kohya names of the checkpoint's layers, down [r, in(, k, k)] and up [out, r(, 1, 1)].
  const lora = join(dir, `lora_rank${rank}.safetensors`);
  const tensors: TensorSpec[] = [];
  let modules = 0;
  for (const [name, target] of layerNames(header, "sd1")) {
    if (!name.startsWith("lora_") || !LORA_LAYER.test(name)) continue;
    const [out = 0, inp = 0, ...kernel] = target.rows
      ? [target.rows[1] - target.rows[0], ...target.shape.slice(1)]
      : target.shape;
    tensors.push(
      { key: `${name}.lora_down.weight`, shape: [rank, inp, ...kernel], dtype: "float" },
      { key: `${name}.lora_up.weight`, shape: [out, rank, ...kernel.map(() => 1)], dtype: "float" },
    );
    modules++;
  }
  await once(lora, (p) => writeRandomCheckpoint(p, tensors));
  const loraBytes = (await stat(lora)).size;

  const t0 = performance.now();
  const entry = await inspectCheckpoint("sd15", checkpoint);
  const components = await loadOnnxPipeline(entry, "cpu");
  const loadMs = performance.now() - t0;
  const residency = new Residency(components);
  const set = (key: string, weight: number): AdapterInput => ({
    key,
    loras: key ? [{ name: "lora", path: lora, weight }] : [],
    embeddings: [],
    vae: null,
  });
  const rows: string[][] = [["model load (text encoder, UNet, VAE)", seconds(loadMs), "1.00", "3"]];
  for (const [what, adapters] of [
    ["switch to the LoRA (merge, graphs, sessions)", set("a", 1)],
    ["the same LoRA again", set("a", 1)],
    ["back to no LoRA (the model's own sessions)", set("", 0)],
    ["the LoRA again (its graphs reused)", set("a", 1)],
    ["the LoRA at weight 0.5 (a new set)", set("b", 0.5)],
  ] as const) {
    const start = performance.now();
    const { cost } = await applyAdapters(components, residency, adapters);
    const ms = performance.now() - start;
    rows.push([what, seconds(ms), (ms / loadMs).toFixed(2), String(cost?.sessionsCreated ?? 0)]);
  }
  console.log(
    `lora: random SD 1.5 (${arch.mirrors}), CPU, a kohya LoRA of rank ${rank} on ${modules} layers (${(loraBytes / 1e6).toFixed(0)} MB)`,
  );
  printTable([["step", "s", "× model load", "sessions created"], ...rows]);
  console.log("target: the same set again costs 0; a switch costs less than loading the model");
  await releasePipeline(components);
}
