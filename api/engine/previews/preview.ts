/**
 * Live previews of a run: a method's decoder turns one image's latents into RGB pixels (`approx`: the linear
 * projection of approx.ts, at latent size; `taesd`: the tiny autoencoder, at image size), and every due step's
 * latents become one PNG per image.
 */
import { GenerationInvalid } from "../pipeline/errors.ts";
import { encodePng } from "../pipeline/image.ts";
import type {
  PipelineComponents,
  Previewer,
  PreviewImage,
  PreviewInput,
  RgbPixels,
} from "../pipeline/types.ts";
import { approxRgb, SD_APPROX, SDXL_APPROX } from "./approx.ts";

/** One image's latents `[4, h, w]` (flat, as the UNet sees them) to RGB pixels. */
export interface PreviewDecoder {
  decode(latents: Float32Array, latentH: number, latentW: number): Promise<RgbPixels>;
}

/** The decoder of a preview method for a model (its family picks the approx factors and the taesd weights). */
export async function previewDecoder(
  components: Pick<PipelineComponents, "xl">,
  preview: PreviewInput,
): Promise<PreviewDecoder> {
  switch (preview.method) {
    case "approx": {
      const factors = components.xl ? SDXL_APPROX : SD_APPROX;
      return { decode: (z, h, w) => Promise.resolve(approxRgb(z, h, w, factors)) };
    }
    case "taesd":
      // The tiny autoencoder's decoder plugs in here (from preview.decoderPath); until it does, the server
      // refuses taesd before admission (generation/preview_params.ts), so no request gets this far.
      throw new GenerationInvalid("taesd previews are not available in this engine yet");
  }
}

/**
 * The previews of one run: due after every `every`-th step (numbered over the whole run) and after the last;
 * a PNG of each image's latents.
 */
export async function createPreviewer(
  components: Pick<PipelineComponents, "xl">,
  preview: PreviewInput,
): Promise<Previewer> {
  const decoder = await previewDecoder(components, preview);
  return {
    due: (e) => e.step % preview.every === 0 || e.step === e.total,
    make: async (latents, latentH, latentW) => {
      const previews: PreviewImage[] = [];
      for (const [image, z] of latents.entries()) {
        const { data, width, height } = await decoder.decode(z, latentH, latentW);
        previews.push({ image, width, height, png: await encodePng(data, width, height) });
      }
      return previews;
    },
  };
}
