/**
 * `bun run bench lora`: what switching LoRA sets costs on a full-size SD 1.5 checkpoint (random fp16 weights of
 * the released shapes) with a typical kohya LoRA: rank 32 on every attention, feed-forward and projection layer
 * of the UNet's transformers and on the text encoder's attention and MLP layers, as kohya's default network
 * trains, and the same LoRA's UNet layers alone. Side by side with loading the whole model: a set in use costs
 * nothing again; the first set with UNet layers puts the LoRA-ready UNet in place (one session), after which a
 * set only merges into and re-creates the text encoder when it changes it, and feeds the UNet's branches its
 * factors. Then the cost of the branches: one UNet run at 512² (batch 2, as with guidance) on the plain graph,
 * on the LoRA-ready graph fed zero rank, and fed the rank-r factors.
 *
 *   bun run bench lora [--cache DIR] [--rank 32]
 */
import { mkdir, rename, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { applyAdapters } from "../api/engine/adapters/apply.ts";
import { layerNames } from "../api/engine/adapters/layers.ts";
import { PRESETS, type TensorSpec, writeRandomCheckpoint } from "../api/engine/checkpoint/ldm_layout.ts";
import { inspectCheckpoint } from "../api/engine/model_folder.ts";
import { type FeedValue, OnnxModel } from "../api/engine/onnx/runtime.ts";
import { loadOnnxPipeline, releasePipeline } from "../api/engine/pipeline/load.ts";
import { Residency } from "../api/engine/pipeline/residency.ts";
import type { AdapterInput } from "../api/engine/pipeline/types.ts";
import { readSafetensorsHeader } from "../api/engine/safetensors.ts";
import { printTable } from "./engine.ts";
import { randomCheckpoint } from "./full_size.ts";

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
  const { path: checkpoint } = await randomCheckpoint("sd15", dir);
  const header = await readSafetensorsHeader(checkpoint);

  // The LoRA: kohya names of the checkpoint's layers, down [r, in(, k, k)] and up [out, r(, 1, 1)].
  const lora = join(dir, `lora_rank${rank}.safetensors`);
  const tensors: TensorSpec[] = [];
  let modules = 0;
  let textModules = 0;
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
    if (!name.startsWith("lora_unet_")) textModules++;
  }
  await once(lora, (p) => writeRandomCheckpoint(p, tensors));
  const loraBytes = (await stat(lora)).size;
  const unetLora = join(dir, `lora_rank${rank}_unet.safetensors`);
  await once(unetLora, (p) =>
    writeRandomCheckpoint(
      p,
      tensors.filter((t) => t.key.startsWith("lora_unet_")),
    ),
  );

  const t0 = performance.now();
  const entry = await inspectCheckpoint("sd15", checkpoint);
  const components = await loadOnnxPipeline(entry, "cpu");
  const loadMs = performance.now() - t0;
  const residency = new Residency(components);
  const set = (key: string, weight: number, path = lora): AdapterInput => ({
    key,
    loras: key ? [{ name: "lora", path, weight }] : [],
    embeddings: [],
    vae: null,
  });
  const rows: string[][] = [["model load (text encoder, UNet, VAE)", seconds(loadMs), "1.00", "3"]];
  for (const [what, adapters] of [
    ["first LoRA (text encoder merged, LoRA-ready UNet)", set("a", 1)],
    ["the same LoRA again", set("a", 1)],
    ["back to no LoRA (own text encoder, zero branches)", set("", 0)],
    ["the LoRA again (text encoder graph reused)", set("a", 1)],
    ["the LoRA at weight 0.5 (text encoder merged)", set("b", 0.5)],
    ["its UNet layers only (own text encoder)", set("c", 1, unetLora)],
    ["its UNet layers only at weight 0.5", set("d", 0.5, unetLora)],
  ] as const) {
    const start = performance.now();
    const { cost } = await applyAdapters(components, residency, adapters);
    const ms = performance.now() - start;
    rows.push([what, seconds(ms), (ms / loadMs).toFixed(2), String(cost?.sessionsCreated ?? 0)]);
  }
  console.log(
    `lora: random SD 1.5 (${PRESETS.sd15.mirrors}), CPU, a kohya LoRA of rank ${rank} on ${modules} layers (${(loraBytes / 1e6).toFixed(0)} MB)`,
  );
  printTable([["step", "s", "× model load", "sessions created"], ...rows]);
  console.log("target: the same set again costs 0; a switch costs less than loading the model");

  // One UNet run at 512² with batch 2, after one to warm the session: the LoRA-ready graph fed the UNet-only
  // set (rank r) and zero rank, then the plain graph.
  const unetFeeds = {
    sample: { data: new Float32Array(2 * 4 * 64 * 64).fill(0.1), dims: [2, 4, 64, 64] },
    timestep: { data: [500], dims: [] },
    encoder_hidden_states: { data: new Float32Array(2 * 77 * 768).fill(0.01), dims: [2, 77, 768] },
  };
  const stepMs = async (model: OnnxModel, extra: Record<string, FeedValue>) => {
    await model.run({ ...unetFeeds, ...extra }, ["out_sample"]);
    const start = performance.now();
    await model.run({ ...unetFeeds, ...extra }, ["out_sample"]);
    return performance.now() - start;
  };
  const loraMs = await stepMs(components.unet, components.unetLora ?? {});
  await applyAdapters(components, residency, set("", 0));
  const zeroMs = await stepMs(components.unet, components.unetLora ?? {});
  await releasePipeline(components);
  const plain = await OnnxModel.load(components.files.unet, { provider: "cpu" });
  const plainMs = await stepMs(plain, {});
  await plain.release();
  printTable([
    ["UNet run, 512², batch 2", "s", "× plain graph"],
    ["plain graph", seconds(plainMs), "1.00"],
    ["LoRA-ready, zero rank", seconds(zeroMs), (zeroMs / plainMs).toFixed(2)],
    [
      `LoRA-ready, rank ${rank} on ${modules - textModules} layers`,
      seconds(loraMs),
      (loraMs / plainMs).toFixed(2),
    ],
  ]);
}
