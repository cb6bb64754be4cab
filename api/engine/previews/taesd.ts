/**
 * `taesd` previews: one image's latents to full-size RGB with the tiny autoencoder's decoder (taesd_graph.ts
 * builds its graph from the vae_approx file; AdapterCatalog.resolvePreviewDecoder says which file a model
 * family uses), on the model's execution provider.
 */
import type { ExecutionProvider } from "../../../contract/index.ts";
import { OnnxModel } from "../onnx/runtime.ts";
import { decodedToRgb } from "../pipeline/image.ts";
import type { RgbPixels } from "../pipeline/types.ts";
import { prepareTaesd } from "./taesd_graph.ts";

/** Pixels per latent cell along each axis: three ×2 upsamples. */
export const TAESD_SCALE = 8;

export interface TaesdDecoder {
  /** The vae_approx file the decoder was built from. */
  readonly path: string;
  /**
   * One image: `latents` [C, latentH, latentW] (C = 4, row-major) as the denoiser has them — not divided by the
   * VAE's scaling factor — to RGB of 8·latentW × 8·latentH.
   */
  decode(latents: Float32Array, latentH: number, latentW: number): Promise<RgbPixels>;
  /** Frees the session. */
  release(): Promise<void>;
}

export interface TaesdLoadOptions {
  provider: ExecutionProvider;
  /** Where the built graph is cached (default: `.sdx-cache` beside the file). */
  cacheRoot?: string;
}

/**
 * A decoder for the TAESD file at `path` (its graph built on first use, then cached). AdapterError says why the
 * file cannot be used; OnnxRunError why a session could not be created or run.
 */
export async function loadTaesdDecoder(path: string, options: TaesdLoadOptions): Promise<TaesdDecoder> {
  const { graph } = await prepareTaesd(path, options.cacheRoot);
  const model = await OnnxModel.load(graph, { provider: options.provider });
  const channels = model.fixedDim("latent_sample", 1) ?? 4;
  return {
    path,
    async decode(latents, latentH, latentW) {
      if (!Number.isInteger(latentH) || !Number.isInteger(latentW) || latentH < 1 || latentW < 1)
        throw new RangeError(`taesd: latent size ${latentH}×${latentW} is not a positive whole size`);
      if (latents.length !== channels * latentH * latentW)
        throw new RangeError(
          `taesd: ${latents.length} latent values for [${channels}, ${latentH}, ${latentW}] (${channels * latentH * latentW})`,
        );
      const { sample } = await model.run(
        { latent_sample: { data: latents, dims: [1, channels, latentH, latentW] } },
        ["sample"],
      );
      const width = latentW * TAESD_SCALE;
      const height = latentH * TAESD_SCALE;
      return { data: decodedToRgb((sample as { data: Float32Array }).data, 0, width, height), width, height };
    },
    release: () => model.release(),
  };
}
