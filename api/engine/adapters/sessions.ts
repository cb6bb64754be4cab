/**
 * Puts an adapter set's weights into a loaded checkpoint. The text encoder(s) run graphs that read the set's
 * merged overrides (LoRA layers, token tables with embedding rows), re-created only when the set changes them.
 * The UNet runs LoRAs as low-rank branches (unet_graph.ts `loraSlots`): the first set with UNet layers puts the
 * LoRA-ready graph in place of the checkpoint's, once; from then on a set is only what the branches are fed.
 * The VAE, tokenizers and scheduler stay. The same set twice in a row costs nothing.
 */
import { buildAdapterGraphs, buildLoraUNetGraph } from "../checkpoint/build.ts";
import { loraInputNames } from "../checkpoint/unet_graph.ts";
import type { FeedValue, OnnxModel } from "../onnx/runtime.ts";
import type { Residency } from "../pipeline/residency.ts";
import type { PipelineComponents } from "../pipeline/types.ts";
import type { LoraFactor } from "./lora.ts";
import { AdapterError, type WeightOverrides } from "./types.ts";

/** Component sessions adapter-set changes re-created, since the process started. */
export const adapterStats = { sessionsCreated: 0 };

/** What an adapter set changes: merged text-encoder (and embedding) overrides, and the UNet's LoRA factors. */
export interface AdapterWeights {
  overrides: WeightOverrides;
  unet: ReadonlyMap<string, LoraFactor>;
}

const DOWN = loraInputNames("").down;
const UP = loraInputNames("").up;

/**
 * The feeds of every LoRA branch of `unet`, by the input names its session declares: `factors` where the set
 * has them, zeros of rank `zeroRank` elsewhere (the branch adds nothing). onnxruntime's CPU MatMul and Conv take
 * rank 0 (an empty product: zeros); GPU providers get rank 1, as zero-sized cuDNN and WebGPU convolutions were
 * never tried.
 */
export function loraFeeds(
  unet: Pick<OnnxModel, "inputs" | "path">,
  factors: ReadonlyMap<string, LoraFactor>,
  zeroRank = 0,
): Record<string, FeedValue> {
  const feeds: Record<string, FeedValue> = {};
  const fed = new Set<string>();
  for (const [name, info] of unet.inputs) {
    const down = name.startsWith(DOWN);
    if (!down && !name.startsWith(UP)) continue;
    const key = name.slice((down ? DOWN : UP).length);
    const factor = factors.get(key);
    if (factor) {
      feeds[name] = down
        ? { data: factor.down, dims: factor.downShape }
        : { data: factor.up, dims: factor.upShape };
      fed.add(key);
    } else {
      const dims = info.shape.map((d) => (typeof d === "number" ? d : zeroRank));
      feeds[name] = { data: new Float32Array(dims.reduce((n, d) => n * d, 1)), dims };
    }
  }
  const missing = [...factors.keys()].filter((key) => !fed.has(key));
  if (missing.length > 0)
    throw new Error(`${unet.path}: no LoRA branch for ${missing.slice(0, 3).join(", ")}`);
  return feeds;
}

/**
 * Makes `components` compute with the checkpoint's weights plus the set `weights` gives, known by `key` ("":
 * the checkpoint's own; `weights` is only called when the set changes). `what` names the adapters for the
 * error an ONNX folder gets.
 */
export async function useWeightOverrides(
  components: PipelineComponents,
  residency: Residency,
  key: string,
  weights: () => Promise<AdapterWeights>,
  what: string,
): Promise<void> {
  if (components.adapterKey === key) return;
  const build = components.checkpoint;
  if (build === null) {
    throw new AdapterError(
      what,
      `${what} needs a single-file checkpoint (.safetensors): sdx merges adapters into the graphs it builds, and an ONNX folder's graphs are fixed`,
    );
  }
  const { files } = components;
  const set: AdapterWeights = key === "" ? { overrides: new Map(), unet: new Map() } : await weights();
  const graphs =
    set.overrides.size === 0
      ? { text_encoder: null, text_encoder_2: null, unet: null }
      : await buildAdapterGraphs(build, set.overrides, key);
  const textEncoder = graphs.text_encoder ?? files.textEncoder;
  const textEncoder2 = graphs.text_encoder_2 ?? files.xl?.textEncoder2 ?? null;
  if (
    textEncoder !== components.paths.text_encoder ||
    textEncoder2 !== (components.xl?.textEncoder2Path ?? null)
  ) {
    await residency.replace("text_encoder", textEncoder, textEncoder2);
    adapterStats.sessionsCreated += components.xl ? 2 : 1;
  }
  if (set.unet.size > 0 && components.unetLora === null) {
    await residency.replace("unet", await buildLoraUNetGraph(build));
    adapterStats.sessionsCreated++;
  }
  // Once LoRA-ready the UNet stays so: a set without UNet layers (or none) feeds zero-rank branches.
  if (components.unetLora !== null || set.unet.size > 0)
    components.unetLora = loraFeeds(components.unet, set.unet, components.provider === "cpu" ? 0 : 1);
  components.adapterKey = key;
}
