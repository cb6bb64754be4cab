/**
 * Image inputs of a generation: the init image and mask of image-to-image and inpainting, and the hires fix's
 * second pass. The request fields, their defaults and what the response reports about each input image.
 */
import { Type } from "@sinclair/typebox";
import type { Limits } from "./limits.ts";
import { Enum } from "./schema.ts";

/** Image file formats an init image or mask may be sent in (base64, raw or as a data URL). */
export const IMAGE_FORMATS = ["png", "jpeg", "webp"] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

/**
 * The hires fix's upscalers: `latent` (bilinear) and `latent_nearest` resize the first pass's latents as
 * AUTOMATIC1111's "Latent" and "Latent (nearest)" do; `lanczos` decodes, resizes the image (Lanczos-3) and encodes
 * it again (A1111's "Lanczos"; not bit-comparable with any reference).
 */
export const HIRES_UPSCALERS = ["latent", "latent_nearest", "lanczos"] as const;
export type HiresUpscaler = (typeof HIRES_UPSCALERS)[number];

/** AUTOMATIC1111's name of each upscaler (its `hr_upscaler` values and the infotext's `Hires upscaler`). */
export const HIRES_UPSCALER_A1111_NAMES = {
  latent: "Latent",
  latent_nearest: "Latent (nearest)",
  lanczos: "Lanczos",
} as const satisfies Record<HiresUpscaler, string>;

/**
 * What fills the repainted region before denoising (AUTOMATIC1111's "Masked content"): `original` keeps the init
 * image there (diffusers' behaviour), `fill` paints it with the surrounding colours blurred inward, `latent_noise`
 * replaces its latents with fresh noise from the seed, `latent_nothing` with zeros.
 */
export const MASKED_CONTENTS = ["fill", "original", "latent_noise", "latent_nothing"] as const;
export type MaskedContent = (typeof MASKED_CONTENTS)[number];

/** What image inputs default to, as in diffusers (strength) and AUTOMATIC1111 (the hires fix). */
export const IMAGE_DEFAULTS = {
  /** diffusers' StableDiffusionImg2ImgPipeline default. */
  strength: 0.8,
  mask_blur: 0,
  masked_content: "original",
  inpaint_full_res: false,
  inpaint_full_res_padding: 32,
  hires: { upscaler: "latent", scale: 2, strength: 0.7, steps: 0 },
} as const satisfies {
  strength: number;
  mask_blur: number;
  masked_content: MaskedContent;
  inpaint_full_res: boolean;
  inpaint_full_res_padding: number;
  hires: { upscaler: HiresUpscaler; scale: number; strength: number; steps: number };
};

/** Largest mask blur radius in pixels. */
export const MASK_BLUR_MAX = 64;
/** Largest padding around the mask for inpaint_full_res, in pixels. */
export const INPAINT_PADDING_MAX = 256;
/** Largest hires-fix scale factor. */
export const HIRES_SCALE_MAX = 4;

// Fields whose absence the server must see (to warn when they cannot act) carry their default in the
// description only: a schema `default` would be filled in before the request is read.
const strengthSchema = (description: string) => Type.Number({ exclusiveMinimum: 0, maximum: 1, description });

/** The image-input fields of POST /v1/generate, with a server's limits. */
export function imageFieldsSchema(limits: Limits) {
  const image = (description: string) =>
    Type.String({
      minLength: 1,
      maxLength: limits.bodyMaxBytes,
      description: `${description} A ${IMAGE_FORMATS.map((f) => f.toUpperCase()).join(", ")} file, base64-encoded, raw or as a data URL (data:image/png;base64,…); at most ${limits.imageMaxPixels} pixels.`,
    });
  return {
    init_image: Type.Optional(
      image(
        "Image-to-image: the picture to start from. Its size is used when width and height are left out (rounded down to a multiple of the model's size multiple, with a warning); otherwise it is resized to width × height (Lanczos-3, stretching if the aspect ratio differs; also a warning).",
      ),
    ),
    mask_image: Type.Optional(
      image(
        "Inpainting: white (gray ≥ 128) is repainted, black kept, as in diffusers. Needs init_image, and the same size as it. Inpainting models (9-channel UNets) condition on it; other models blend the kept region back at every step.",
      ),
    ),
    strength: Type.Optional(
      strengthSchema(
        `With init_image: how much of the picture is repainted, in (0, 1] — the sampler runs int(num_steps × strength) of its num_steps steps, as diffusers' get_timesteps. Default ${IMAGE_DEFAULTS.strength}.`,
      ),
    ),
    mask_blur: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: MASK_BLUR_MAX,
        description:
          "Inpainting: Gaussian blur σ in pixels applied to the mask, as AUTOMATIC1111's `Mask blur`; above 0 the result is also composited over the init image through the blurred mask. 0 (default) is diffusers' behaviour exactly.",
      }),
    ),
    masked_content: Type.Optional(
      Enum(MASKED_CONTENTS, {
        description:
          "Inpainting: what the repainted region starts from (AUTOMATIC1111's inpainting_fill 0–3: fill, original, latent noise, latent nothing). original (default) is diffusers' behaviour; the others are AUTOMATIC1111's and not part of the diffusers comparison.",
      }),
    ),
    inpaint_full_res: Type.Optional(
      Type.Boolean({
        description:
          "Inpainting: AUTOMATIC1111's \"Only masked\": the mask's bounding box plus inpaint_full_res_padding is cut out, scaled to width × height, inpainted, scaled back and pasted into the init image through the (blurred) mask. Off (default): the whole picture, as diffusers.",
      }),
    ),
    inpaint_full_res_padding: Type.Optional(
      Type.Integer({
        minimum: 0,
        maximum: INPAINT_PADDING_MAX,
        description: `Pixels of context around the mask's bounding box with inpaint_full_res. Default ${IMAGE_DEFAULTS.inpaint_full_res_padding}.`,
      }),
    ),
    hires: Type.Optional(hiresSchema(limits)),
  };
}

/** The hires fix: AUTOMATIC1111's two-pass recipe. */
export function hiresSchema(limits: Limits) {
  const side = (name: string) =>
    Type.Integer({
      minimum: limits.sizeMin,
      maximum: limits.sizeMax,
      multipleOf: 8,
      description: `Final ${name} in pixels; with the other side instead of scale.`,
    });
  return Type.Object(
    {
      upscaler: Type.Optional(
        Enum(HIRES_UPSCALERS, {
          default: IMAGE_DEFAULTS.hires.upscaler,
          description:
            'latent: bilinear resize of the latents (A1111 "Latent"); latent_nearest: nearest-neighbour ("Latent (nearest)"); lanczos: decode, Lanczos-3 resize, encode ("Lanczos", not bit-comparable).',
        }),
      ),
      scale: Type.Optional(
        Type.Number({
          minimum: 1,
          maximum: HIRES_SCALE_MAX,
          description: `Final size = first-pass size × scale, each side rounded down to a multiple of 8. Ignored when width and height are given. Default ${IMAGE_DEFAULTS.hires.scale}.`,
        }),
      ),
      width: Type.Optional(side("width")),
      height: Type.Optional(side("height")),
      strength: Type.Optional(
        strengthSchema(
          `Denoising strength of the second pass, in (0, 1]. Default ${IMAGE_DEFAULTS.hires.strength}.`,
        ),
      ),
      steps: Type.Optional(
        Type.Integer({
          minimum: 0,
          maximum: limits.stepsMax,
          default: IMAGE_DEFAULTS.hires.steps,
          description:
            "Steps of the second pass's schedule, of which int(steps × strength) run; 0 (default): num_steps.",
        }),
      ),
    },
    {
      additionalProperties: false,
      description:
        "Hires fix: generate at width × height, upscale, then run image-to-image from the upscaled latents at the new size with the same seed (AUTOMATIC1111's recipe).",
    },
  );
}

export const AppliedHiresSchema = Type.Object({
  upscaler: Enum(HIRES_UPSCALERS),
  scale: Type.Union([Type.Number(), Type.Null()], {
    description: "The scale asked for; null when width and height were given.",
  }),
  width: Type.Integer({ description: "Final width." }),
  height: Type.Integer({ description: "Final height." }),
  strength: Type.Number(),
  steps: Type.Integer({ description: "The second pass's schedule length." }),
});

/** What the response says about an input image, so the run can be reproduced from the same files. */
export const InputImageReportSchema = Type.Object({
  sha256: Type.String({ description: "SHA-256 of the decoded file's bytes (the base64 payload decoded)." }),
  format: Enum(IMAGE_FORMATS),
  width: Type.Integer({ description: "The file's own width." }),
  height: Type.Integer({ description: "The file's own height." }),
  resized: Type.Boolean({ description: "Whether it was resized to the generation's size." }),
});

export const InputImagesReportSchema = Type.Object(
  {
    init_image: Type.Optional(InputImageReportSchema),
    mask_image: Type.Optional(InputImageReportSchema),
  },
  { description: "The image inputs the generation read; empty for text-to-image." },
);

export type InputImageReport = typeof InputImageReportSchema.static;
export type AppliedHires = typeof AppliedHiresSchema.static;
