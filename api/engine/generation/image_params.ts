/**
 * The image inputs of a request resolved against its model: the files decoded, the sizes decided, the hires
 * target computed, and the engine's ImageInput built (resize, mask blur, masked content, only-masked cropping).
 * Every problem is a 422 naming the field; every change the request did not spell out is a warning.
 */
import {
  type AppliedHires,
  type AppliedParams,
  type FieldError,
  type GenerateRequest,
  IMAGE_DEFAULTS,
  type InputImageReport,
  type Limits,
  validationFailed,
} from "../../../contract/index.ts";
import { resizeRgb } from "../pipeline/image.ts";
import { blurMask, cropRegion, cropResize, cropResizeGray, fillMasked } from "../pipeline/inpaint_area.ts";
import type { ImageInput, RgbPixels } from "../pipeline/types.ts";
import { type DecodedImage, decodeImage, reportOf, toGray } from "./input_images.ts";

/** The request's image files, decoded. */
export interface InputImages {
  init: DecodedImage | null;
  mask: DecodedImage | null;
}

/** Decodes init_image and mask_image; a mask needs an init image of its size. */
export async function readInputImages(
  req: GenerateRequest,
  limits: Pick<Limits, "imageMaxPixels">,
): Promise<InputImages> {
  if (req.mask_image !== undefined && req.init_image === undefined) {
    throw validationFailed([
      {
        field: "mask_image",
        message: "needs init_image: a mask says which part of the init image to repaint",
      },
    ]);
  }
  const init =
    req.init_image === undefined
      ? null
      : await decodeImage("init_image", req.init_image, limits.imageMaxPixels);
  const mask =
    req.mask_image === undefined
      ? null
      : await decodeImage("mask_image", req.mask_image, limits.imageMaxPixels);
  if (init && mask && (init.width !== mask.width || init.height !== mask.height)) {
    throw validationFailed([
      {
        field: "mask_image",
        message: `is ${mask.width}×${mask.height}; it must have init_image's size, ${init.width}×${init.height}`,
      },
    ]);
  }
  return { init, mask };
}

/** A side taken from the init image: rounded down to the model's size multiple. */
export function sideFromImage(pixels: number, multiple: number): number {
  return Math.floor(pixels / multiple) * multiple;
}

/** The image-to-image parameters as applied (null where the request has no such input). */
export function appliedImageParams(
  req: GenerateRequest,
  images: InputImages,
): Pick<
  AppliedParams,
  "strength" | "mask_blur" | "masked_content" | "inpaint_full_res" | "inpaint_full_res_padding"
> {
  const masked = images.mask !== null;
  const fullRes = masked ? (req.inpaint_full_res ?? IMAGE_DEFAULTS.inpaint_full_res) : null;
  return {
    strength: images.init ? (req.strength ?? IMAGE_DEFAULTS.strength) : null,
    mask_blur: masked ? (req.mask_blur ?? IMAGE_DEFAULTS.mask_blur) : null,
    masked_content: masked ? (req.masked_content ?? IMAGE_DEFAULTS.masked_content) : null,
    inpaint_full_res: fullRes,
    inpaint_full_res_padding: fullRes
      ? (req.inpaint_full_res_padding ?? IMAGE_DEFAULTS.inpaint_full_res_padding)
      : null,
  };
}

/** The hires fix as applied: the final size from scale (each side rounded down to a multiple of 8) or given. */
export function appliedHires(
  req: GenerateRequest,
  width: number,
  height: number,
  numSteps: number,
): AppliedHires | null {
  const h = req.hires;
  if (!h) return null;
  const given = h.width !== undefined && h.height !== undefined;
  const scale = given ? null : (h.scale ?? IMAGE_DEFAULTS.hires.scale);
  return {
    upscaler: h.upscaler ?? IMAGE_DEFAULTS.hires.upscaler,
    scale,
    width: given ? (h.width as number) : sideFromImage(width * (scale as number), 8),
    height: given ? (h.height as number) : sideFromImage(height * (scale as number), 8),
    strength: h.strength ?? IMAGE_DEFAULTS.hires.strength,
    steps: h.steps || numSteps,
  };
}

/** What the model and server must allow for the request's image inputs; the field errors, if any. */
export function imageFieldErrors(
  req: GenerateRequest,
  applied: AppliedParams,
  model: {
    name: string;
    sizeMultiple: number;
    vaeEncoder: boolean;
    sizeRange?: { min: number; max: number };
  },
): FieldError[] {
  const fields: FieldError[] = [];
  if (req.init_image !== undefined && !model.vaeEncoder) {
    fields.push({
      field: "init_image",
      message: `${model.name} has no VAE encoder (vae_encoder/model.onnx), so it cannot start from an image`,
    });
  }
  if (applied.strength !== null && Math.trunc(applied.num_steps * applied.strength) < 1) {
    fields.push({
      field: "strength",
      message: `strength ${applied.strength} × num_steps ${applied.num_steps} runs no step (int(num_steps × strength) must be at least 1)`,
    });
  }
  const h = req.hires;
  const hires = applied.hires;
  if (h && hires) {
    if (req.init_image !== undefined) {
      fields.push({
        field: "hires",
        message:
          "the hires fix is for text-to-image; with init_image, send the final width and height instead",
      });
    }
    if ((h.width === undefined) !== (h.height === undefined)) {
      fields.push({
        field: h.width === undefined ? "hires.width" : "hires.height",
        message: "send both hires.width and hires.height, or hires.scale",
      });
    }
    const which = hires.scale === null ? "hires.width" : "hires.scale";
    const range = model.sizeRange;
    for (const [side, value] of [
      ["width", hires.width],
      ["height", hires.height],
    ] as const) {
      if (range && (value < range.min || value > range.max)) {
        fields.push({
          field: which,
          message: `gives a final ${side} of ${value}, outside this server's limits ${range.min}–${range.max}`,
        });
      } else if (value % model.sizeMultiple !== 0) {
        fields.push({
          field: which,
          message: `gives a final ${side} of ${value}; ${model.name} needs multiples of ${model.sizeMultiple}`,
        });
      }
    }
    if (hires.upscaler === "lanczos" && !model.vaeEncoder) {
      fields.push({
        field: "hires.upscaler",
        message: `lanczos encodes the upscaled image, and ${model.name} has no VAE encoder; use latent or latent_nearest`,
        allowed: ["latent", "latent_nearest"],
      });
    }
    if (Math.trunc(hires.steps * hires.strength) < 1) {
      fields.push({
        field: "hires.strength",
        message: `strength ${hires.strength} × ${hires.steps} steps runs no step in the second pass`,
      });
    }
  }
  return fields;
}

/** The engine's image input and what the response says about the files, with one warning per silent change. */
export interface PreparedImages {
  image: ImageInput | null;
  inputs: { init_image?: InputImageReport; mask_image?: InputImageReport };
  warnings: string[];
}

/** Builds the engine's ImageInput: resize to the generation size, mask blur, only-masked crop, masked content. */
export async function prepareImages(applied: AppliedParams, images: InputImages): Promise<PreparedImages> {
  const { init, mask } = images;
  if (!init || applied.strength === null) return { image: null, inputs: {}, warnings: [] };
  const { width, height } = applied;
  const warnings: string[] = [];
  const resized = init.width !== width || init.height !== height;
  const inputs: PreparedImages["inputs"] = { init_image: reportOf(init, resized) };
  if (!mask) {
    if (resized) warnings.push(resizeWarning("init_image", init, width, height));
    const rgb = await resizeRgb(init, width, height);
    return {
      image: {
        rgb: rgb.data,
        strength: applied.strength,
        mask: null,
        maskedContent: "original",
        overlay: null,
      },
      inputs,
      warnings,
    };
  }
  inputs.mask_image = reportOf(mask, resized);
  const blur = applied.mask_blur ?? 0;
  const fullMask = await blurMask({ data: toGray(mask), width: mask.width, height: mask.height }, blur);
  let picture: RgbPixels;
  let gray: typeof fullMask;
  let overlay: ImageInput["overlay"] = null;
  if (applied.inpaint_full_res) {
    const region = cropRegion(fullMask, applied.inpaint_full_res_padding ?? 0, width, height);
    if (region === null) {
      throw validationFailed([{ field: "mask_image", message: "is all black: nothing to repaint" }]);
    }
    picture = await cropResize(init, region, width, height);
    gray = await cropResizeGray(fullMask, region, width, height);
    // The result goes back into the whole picture, through the (blurred) mask.
    overlay = {
      image: { data: init.data, width: init.width, height: init.height },
      mask: fullMask.data,
      region,
    };
  } else {
    if (resized) warnings.push(resizeWarning("init_image and mask_image", init, width, height));
    picture = await resizeRgb(init, width, height);
    gray = resized
      ? await cropResizeGray(fullMask, { x1: 0, y1: 0, x2: mask.width, y2: mask.height }, width, height)
      : fullMask;
    // AUTOMATIC1111 composites through clip(2·mask), so the blur's outer half stays the original.
    if (blur > 0)
      overlay = { image: picture, mask: gray.data.map((v) => Math.min(255, 2 * v)), region: null };
  }
  if (applied.masked_content === "fill") picture = await fillMasked(picture, gray);
  return {
    image: {
      rgb: picture.data,
      strength: applied.strength,
      mask: gray.data,
      maskedContent: applied.masked_content ?? "original",
      overlay,
    },
    inputs,
    warnings,
  };
}

function resizeWarning(field: string, image: DecodedImage, width: number, height: number): string {
  const aspect =
    Math.abs(image.width / image.height - width / height) > 1e-6
      ? ", stretched: the aspect ratio differs"
      : "";
  return `${field} ${image.width}×${image.height} was resized to ${width}×${height} (Lanczos-3${aspect}); send width and height equal to its size to use it as it is.`;
}
