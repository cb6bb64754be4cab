/**
 * POST /sdapi/v1/img2img: A1111's image-to-image and inpainting request mapped onto sdx's init_image, mask_image
 * and their fields, run like txt2img (one sdx generation per iteration), answered in A1111's shape.
 */
import sharp from "sharp";
import {
  A1111_IMG2IMG_DEFAULTS,
  A1111_INPAINTING_FILLS,
  A1111_RESIZE_MODES,
  type A1111Img2ImgRequest,
  type A1111Img2ImgResponse,
  type FieldError,
  type GenerateRequest,
  type Limits,
  validationFailed,
} from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { type A1111Route, type InfoExtras, mapRequest, runIterations } from "./generation.ts";
import type { A1111Session } from "./session.ts";

const ROUTE: A1111Route = { name: "img2img", defaults: A1111_IMG2IMG_DEFAULTS };

const DATA_URL = /^data:[^,]*,/;

/** The base64 payload of an image field, without a data URL's header (A1111's decode_base64_to_image). */
function payloadOf(image: string): string {
  return image.trim().replace(DATA_URL, "");
}

/** A1111 reads `true`/`false` and 1/0 alike. */
function flag(value: boolean | number | undefined, fallback: boolean): boolean {
  return value === undefined ? fallback : Boolean(value);
}

/** The image fields of sdx's generation request, the 422s of A1111's, and what A1111 reports. */
interface MappedImages {
  image: Pick<
    GenerateRequest,
    | "init_image"
    | "mask_image"
    | "strength"
    | "mask_blur"
    | "masked_content"
    | "inpaint_full_res"
    | "inpaint_full_res_padding"
  >;
  invertMask: boolean;
  fields: FieldError[];
  extras: InfoExtras;
}

function mapImages(req: A1111Img2ImgRequest): MappedImages {
  const fields: FieldError[] = [];
  const no = (field: string, message: string, allowed?: FieldError["allowed"]) =>
    fields.push({ field, message, ...(allowed ? { allowed } : {}) });
  const [first = ""] = req.init_images;
  req.init_images.forEach((image, i) => {
    if (/^https?:\/\//i.test(image.trim()))
      no(`init_images.${i}`, "sdx does not fetch images from URLs; send the image itself, base64-encoded");
  });
  if (req.init_images.some((image) => payloadOf(image) !== payloadOf(first)))
    no(
      "init_images",
      "sdx starts every image of a request from one picture; send one init image (or the same one repeated), and one request per picture",
    );
  if (req.mask && /^https?:\/\//i.test(req.mask.trim()))
    no("mask", "sdx does not fetch images from URLs; send the mask itself, base64-encoded");
  const resizeMode = req.resize_mode ?? A1111_IMG2IMG_DEFAULTS.resize_mode;
  if (resizeMode !== 0)
    no(
      "resize_mode",
      `sdx fits the init image as A1111's resize_mode 0 "${A1111_RESIZE_MODES[0]}" only, not ${resizeMode} "${A1111_RESIZE_MODES[resizeMode] ?? "?"}"`,
      [0],
    );
  if (req.initial_noise_multiplier !== undefined && req.initial_noise_multiplier !== 1)
    no("initial_noise_multiplier", "sdx does not scale the initial noise", [1]);
  if (req.latent_mask) no("latent_mask", "sdx has no separate latent mask; send the mask only");
  const blur =
    req.mask_blur ?? req.mask_blur_x ?? req.mask_blur_y ?? (A1111_IMG2IMG_DEFAULTS.mask_blur_x as number);
  if (
    req.mask_blur === undefined &&
    (req.mask_blur_x ?? A1111_IMG2IMG_DEFAULTS.mask_blur_x) !==
      (req.mask_blur_y ?? A1111_IMG2IMG_DEFAULTS.mask_blur_y)
  )
    no(
      "mask_blur_x",
      "sdx blurs the mask alike in both directions; send mask_blur, or equal mask_blur_x and mask_blur_y",
    );
  const strength = req.denoising_strength ?? A1111_IMG2IMG_DEFAULTS.denoising_strength;
  const masked = req.mask
    ? {
        mask_image: req.mask,
        mask_blur: blur,
        masked_content: A1111_INPAINTING_FILLS[req.inpainting_fill ?? A1111_IMG2IMG_DEFAULTS.inpainting_fill],
        inpaint_full_res: flag(req.inpaint_full_res, A1111_IMG2IMG_DEFAULTS.inpaint_full_res),
        inpaint_full_res_padding:
          req.inpaint_full_res_padding ?? A1111_IMG2IMG_DEFAULTS.inpaint_full_res_padding,
      }
    : {};
  return {
    image: { init_image: first, strength, ...masked },
    invertMask: req.mask !== undefined && flag(req.inpainting_mask_invert, false),
    fields,
    extras: {
      denoisingStrength: strength,
      extraGenerationParams: req.mask ? { "Mask blur": blur } : {},
    },
  };
}

/** inpainting_mask_invert: the mask with black and white swapped (sharp's negate), as a PNG in base64. */
async function invertedMask(mask: string, limits: Limits): Promise<string> {
  try {
    const bytes = Buffer.from(payloadOf(mask), "base64");
    const png = await sharp(bytes, { limitInputPixels: limits.imageMaxPixels })
      .negate({ alpha: false })
      .png()
      .toBuffer();
    return png.toString("base64");
  } catch (e) {
    throw validationFailed([
      { field: "mask", message: `is not a PNG, JPEG or WebP image sdx can read (${(e as Error).message})` },
    ]);
  }
}

/**
 * POST /sdapi/v1/img2img: n_iter sdx generations of batch_size images from init_images[0] (and the mask), as
 * runIterations runs them. `parameters` leaves the images out unless include_init_images, as A1111 does.
 */
export async function img2img(
  host: ModelHost,
  session: A1111Session,
  req: A1111Img2ImgRequest,
  raw: Record<string, unknown>,
  signal: AbortSignal | undefined,
  limits: Limits,
): Promise<A1111Img2ImgResponse> {
  const images = mapImages(req);
  const mapped = await mapRequest(host, session, req, raw, limits, ROUTE, images.fields);
  const image = { ...images.image };
  if (images.invertMask && image.mask_image) image.mask_image = await invertedMask(image.mask_image, limits);
  mapped.base = { ...mapped.base, ...image };
  const result = await runIterations(host, session, ROUTE, req, mapped, images.extras, signal, limits);
  const parameters: Record<string, unknown> = { ...A1111_IMG2IMG_DEFAULTS, ...raw };
  if (req.include_init_images !== true) Object.assign(parameters, { init_images: null, mask: null });
  return { images: result.images, parameters, info: result.info };
}
