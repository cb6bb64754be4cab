/**
 * Which VAE a loaded model decodes (and encodes) with: its own, or a replacement VAE file (vae.ts builds the
 * file's graphs). The swap replaces the `vaeDecoder` session and points `paths` at the chosen graphs, so model
 * CPU offload (residency.ts) creates the right sessions again; the VAE encoder stays lazy (created on first
 * image-to-image use from `paths.vae_encoder`). The latents' scaling factor stays the model's, as in
 * AUTOMATIC1111. The file's graphs do not depend on the model's layout, so ONNX folders and checkpoints alike
 * take one.
 */

import { CheckpointError } from "../checkpoint/weights.ts";
import { OnnxModel } from "../onnx/runtime.ts";
import type { PipelineComponents } from "../pipeline/types.ts";
import { prepareVae } from "./vae.ts";

export interface VaeChoice {
  name: string;
  /** The .safetensors file. */
  path: string;
}

interface VaeState {
  /** Sessions useVae created, for reports and tests. */
  builds: number;
  /** Latent channels of the model's own decoder, or null when its graph leaves them dynamic. */
  ownLatentChannels: number | null;
  /** The swap in progress, so concurrent calls run one after the other. */
  queue: Promise<void>;
}

const states = new WeakMap<PipelineComponents, VaeState>();

function stateOf(components: PipelineComponents): VaeState {
  let state = states.get(components);
  if (!state) {
    // Only useVae replaces the decoder, so on the first call the components hold the model's own.
    state = {
      builds: 0,
      ownLatentChannels: components.vaeDecoder.fixedDim("latent_sample", 1),
      queue: Promise.resolve(),
    };
    states.set(components, state);
  }
  return state;
}

/** VAE sessions useVae has created for these components. */
export function vaeSessionBuilds(components: PipelineComponents): number {
  return states.get(components)?.builds ?? 0;
}

/**
 * Makes `components` decode and encode with the VAE file `vae` (null: the model's own VAE). Sessions are only
 * created when the choice changes; the replaced decoder and encoder sessions are released. A file without an
 * encoder leaves image-to-image encoding to the model's own encoder. A CheckpointError says why a file does not
 * fit the model.
 */
export function useVae(
  components: PipelineComponents,
  vae: VaeChoice | null,
  cacheRoot: string,
): Promise<void> {
  const state = stateOf(components);
  const run = state.queue.then(() => swap(components, state, vae, cacheRoot));
  state.queue = run.catch(() => undefined);
  return run;
}

async function swap(
  components: PipelineComponents,
  state: VaeState,
  vae: VaeChoice | null,
  cacheRoot: string,
): Promise<void> {
  const { files, paths } = components;
  let decoder = files.vaeDecoder;
  let encoder = files.vaeEncoder;
  if (vae) {
    const built = await prepareVae(vae.path, cacheRoot);
    if (built.blocks !== files.vae.blocks) {
      throw new CheckpointError(
        `VAE ${vae.name} has ${built.blocks} resolutions (${2 ** (built.blocks - 1)} pixels per latent); the model's VAE has ${files.vae.blocks}`,
      );
    }
    if (state.ownLatentChannels !== null && built.latentChannels !== state.ownLatentChannels) {
      throw new CheckpointError(
        `VAE ${vae.name} takes ${built.latentChannels}-channel latents; the model makes ${state.ownLatentChannels}-channel ones`,
      );
    }
    decoder = built.decoder;
    encoder = built.encoder ?? files.vaeEncoder;
  }
  if (decoder === paths.vae_decoder && encoder === paths.vae_encoder) return;

  if (decoder !== paths.vae_decoder) {
    const previous = components.vaeDecoder;
    // A decoder released by model CPU offload is created again from paths.vae_decoder when decoding next runs.
    if (!previous.released) {
      components.vaeDecoder = await OnnxModel.load(decoder, { provider: components.provider });
      state.builds++;
      await previous.release();
    }
    paths.vae_decoder = decoder;
  }
  if (encoder !== paths.vae_encoder) {
    await components.vaeEncoder?.release();
    components.vaeEncoder = null;
    paths.vae_encoder = encoder;
  }
}
