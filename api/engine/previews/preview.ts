/**
 * Live previews of a run: a method's decoder turns one image's latents into RGB pixels (`approx`: the linear
 * projection of approx.ts, at latent size; `taesd`: the tiny autoencoder, at image size), and every due step's
 * latents become one PNG per image.
 */
import { stat } from "node:fs/promises";
import type { ExecutionProvider } from "../../../contract/index.ts";
import { GenerationFailed } from "../pipeline/errors.ts";
import { encodePng } from "../pipeline/image.ts";
import type {
  PipelineComponents,
  Previewer,
  PreviewImage,
  PreviewInput,
  RgbPixels,
} from "../pipeline/types.ts";
import { approxRgb, SD_APPROX, SDXL_APPROX } from "./approx.ts";
import { loadTaesdDecoder, type TaesdDecoder } from "./taesd.ts";

/** One image's latents `[4, h, w]` (flat, as the UNet sees them) to RGB pixels. */
export interface PreviewDecoder {
  decode(latents: Float32Array, latentH: number, latentW: number): Promise<RgbPixels>;
}

/** TAESD decoders kept between runs (one per family, so two), by provider, file and the file's size and time. */
const TAESD_KEPT = 2;
const taesdDecoders = new Map<string, Promise<TaesdDecoder>>();

async function taesdDecoder(path: string, provider: ExecutionProvider): Promise<TaesdDecoder> {
  const info = await stat(path).catch(() => null);
  if (!info) throw new GenerationFailed(`the taesd decoder ${path} is gone`);
  const key = `${provider}\0${path}\0${info.size}\0${info.mtimeMs}`;
  let decoder = taesdDecoders.get(key);
  if (!decoder) {
    decoder = loadTaesdDecoder(path, { provider });
    decoder.catch(() => taesdDecoders.delete(key));
    taesdDecoders.set(key, decoder);
    for (const [old, kept] of taesdDecoders) {
      if (taesdDecoders.size <= TAESD_KEPT) break;
      taesdDecoders.delete(old);
      kept.then((d) => d.release()).catch(() => {});
    }
  } else {
    // Most recently used last.
    taesdDecoders.delete(key);
    taesdDecoders.set(key, decoder);
  }
  return decoder;
}

/** The decoder of a preview method for a model (its family picks the approx factors and the taesd weights). */
export async function previewDecoder(
  components: Pick<PipelineComponents, "xl" | "provider">,
  preview: PreviewInput,
): Promise<PreviewDecoder> {
  switch (preview.method) {
    case "approx": {
      const factors = components.xl ? SDXL_APPROX : SD_APPROX;
      return { decode: (z, h, w) => Promise.resolve(approxRgb(z, h, w, factors)) };
    }
    case "taesd":
      // generation/preview_params.ts found the family's decoder file before admission.
      if (preview.decoderPath === null) throw new GenerationFailed("taesd previews need a decoder file");
      return taesdDecoder(preview.decoderPath, components.provider);
  }
}

/**
 * The previews of one run: due after every `every`-th step (numbered over the whole run) and after the last;
 * a PNG of each image's latents.
 */
export async function createPreviewer(
  components: Pick<PipelineComponents, "xl" | "provider">,
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
