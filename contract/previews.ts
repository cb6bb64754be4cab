/**
 * Live previews: small pictures of the latents while a generation denoises, sent as the stream's `preview`
 * events (and kept for AUTOMATIC1111's /sdapi/v1/progress `current_image`). A preview never changes the final
 * image.
 */
import { Type } from "@sinclair/typebox";
import { Enum } from "./schema.ts";

/**
 * How a preview is made from the latents: `approx` projects each latent pixel to RGB with a per-family linear
 * map (AUTOMATIC1111's "Approx cheap", ComfyUI's latent2rgb; 1/8 of the image's size, well under a millisecond);
 * `taesd` decodes with the tiny autoencoder (madebyollin/taesd: `taesd` for SD 1.x/2.x, `taesdxl` for SDXL) from
 * the `vae_approx` models folder (full size, a few milliseconds on a GPU).
 */
export const PREVIEW_METHODS = ["approx", "taesd"] as const;
export type PreviewMethod = (typeof PREVIEW_METHODS)[number];

export const PREVIEW_DEFAULTS = { method: "approx" } as const satisfies { method: PreviewMethod };

/** Largest preview interval in steps (the most steps a request may run). */
export const PREVIEW_EVERY_MAX = 1000;

/** The `preview` field of POST /v1/generate. */
export const PreviewRequestSchema = Type.Object(
  {
    every: Type.Integer({
      minimum: 1,
      maximum: PREVIEW_EVERY_MAX,
      description:
        "A preview after every N-th denoising step (counted over the whole run, hires pass included), for each image of the batch.",
    }),
    method: Type.Optional(
      Enum(PREVIEW_METHODS, {
        default: PREVIEW_DEFAULTS.method,
        description: `How the preview is made: ${PREVIEW_METHODS.map((m) => `\`${m}\``).join(", ")}. Default: ${PREVIEW_DEFAULTS.method}.`,
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      "Live previews on the event stream (`preview` events); absent: none. A JSON (non-streamed) call sends none and says so in warnings. `approx`: a linear latent → RGB projection at 1/8 size; `taesd`: the tiny autoencoder from the vae_approx models folder (taesd for SD 1.x/2.x, taesdxl for SDXL; a 422 names the file to pull when it is missing).",
  },
);

/** The data of a `preview` event. */
export const PreviewEventSchema = Type.Object(
  {
    image: Type.Integer({ description: "Index of the image in the batch." }),
    step: Type.Integer({ description: "Denoising steps done (as the `step` event counts them)." }),
    total: Type.Integer(),
    method: Enum(PREVIEW_METHODS),
    width: Type.Integer({ description: "The preview's width in pixels." }),
    height: Type.Integer({ description: "The preview's height in pixels." }),
    png: Type.String({ description: "The preview, a PNG file base64-encoded." }),
  },
  {
    description:
      "a preview of one image's latents after `step` (requests with `preview`; every `preview.every` steps and after the last).",
  },
);
