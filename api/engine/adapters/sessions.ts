/**
 * Puts an adapter set's weights into a loaded checkpoint: the text encoder(s) and UNet sessions are created
 * from graphs that read the set's overrides (merged LoRA layers, token tables with embedding rows), and the
 * checkpoint's own sessions come back when the set is empty. Only the components a set changes are
 * re-created; the VAE, tokenizers and scheduler stay. The same set twice in a row costs nothing.
 */
import { buildAdapterGraphs } from "../checkpoint/build.ts";
import type { Residency } from "../pipeline/residency.ts";
import type { PipelineComponents } from "../pipeline/types.ts";
import { AdapterError, type WeightOverrides } from "./types.ts";

/** Adapter-set changes and the component sessions they re-created, since the process started. */
export const adapterStats = { swaps: 0, sessionsCreated: 0 };

/**
 * Makes `components` compute with the checkpoint's weights plus `overrides`, known by `key` ("": the
 * checkpoint's own; `overrides` is only called when the set changes). `what` names the adapters for the error
 * an ONNX folder gets.
 */
export async function useWeightOverrides(
  components: PipelineComponents,
  residency: Residency,
  key: string,
  overrides: () => Promise<WeightOverrides>,
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
  const graphs =
    key === ""
      ? { text_encoder: null, text_encoder_2: null, unet: null }
      : await buildAdapterGraphs(build, await overrides(), key);
  const textEncoder = graphs.text_encoder ?? files.textEncoder;
  const textEncoder2 = graphs.text_encoder_2 ?? files.xl?.textEncoder2 ?? null;
  if (
    textEncoder !== components.paths.text_encoder ||
    textEncoder2 !== (components.xl?.textEncoder2Path ?? null)
  ) {
    await residency.replace("text_encoder", textEncoder, textEncoder2);
    adapterStats.sessionsCreated += components.xl ? 2 : 1;
  }
  const unet = graphs.unet ?? files.unet;
  if (unet !== components.paths.unet) {
    await residency.replace("unet", unet);
    adapterStats.sessionsCreated++;
  }
  components.adapterKey = key;
  adapterStats.swaps++;
}
