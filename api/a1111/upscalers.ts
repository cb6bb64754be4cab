/** The hires fix's upscalers under A1111's names: its image upscalers and its latent upscale modes. */
import {
  A1111_HIRES_UPSCALERS,
  type A1111LatentUpscaleModes,
  type A1111Upscalers,
} from "../../contract/index.ts";

/** A1111's scale of its PIL upscalers (UpscalerData's default). */
const PIL_UPSCALER_SCALE = 4;

/** GET /sdapi/v1/upscalers: the image upscalers sdx has, as A1111's UpscalerItem. */
export function listUpscalers(): A1111Upscalers {
  return A1111_HIRES_UPSCALERS.filter((u) => !u.latent).map((u) => ({
    name: u.name,
    model_name: null,
    model_path: null,
    model_url: null,
    scale: PIL_UPSCALER_SCALE,
  }));
}

/** GET /sdapi/v1/latent-upscale-modes: the latent modes sdx has, as A1111's LatentUpscalerModeItem. */
export function listLatentUpscaleModes(): A1111LatentUpscaleModes {
  return A1111_HIRES_UPSCALERS.filter((u) => u.latent).map((u) => ({ name: u.name }));
}
