/**
 * POST /sdapi/v1/txt2img: A1111's request mapped onto sdx's generation (one per iteration), the hires fix
 * (enable_hr) onto sdx's `hires`, and the answer in A1111's shape with its infotexts and `info`.
 */
import {
  A1111_DEFAULT_HIRES_UPSCALER,
  A1111_HIRES_SAME,
  A1111_HIRES_UPSCALER_NAMES,
  A1111_HIRES_UPSCALERS,
  A1111_TXT2IMG_DEFAULTS,
  type A1111Txt2ImgRequest,
  type A1111Txt2ImgResponse,
  type FieldError,
  type GenerateRequest,
  HIRES_SCALE_MAX,
  type Limits,
} from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { type A1111Route, type InfoExtras, mapRequest, runIterations } from "./generation.ts";
import type { A1111Session } from "./session.ts";

const ROUTE: A1111Route = { name: "txt2img", defaults: A1111_TXT2IMG_DEFAULTS };

/** The hires fix as sdx's `hires`, the 422s of its fields, and what A1111 reports of it. */
interface MappedHires {
  hires: GenerateRequest["hires"];
  fields: FieldError[];
  extras: InfoExtras;
}

/** A second-pass setting that must be the first pass's: empty, A1111's "Use same …", or the same value. */
function same(value: string | undefined, first: string | undefined, sameWord?: string): boolean {
  if (!value || value === sameWord) return true;
  return value.trim().toLowerCase() === (first ?? "").trim().toLowerCase();
}

/**
 * enable_hr and the hr_* fields as sdx's hires fix, the way A1111's StableDiffusionProcessingTxt2Img reads them
 * (calculate_target_resolution): hr_resize_x/y win over hr_scale, one of them alone keeps the aspect ratio.
 */
function mapHires(req: A1111Txt2ImgRequest, width: number, height: number, limits: Limits): MappedHires {
  const fields: FieldError[] = [];
  const no = (field: string, message: string, allowed?: FieldError["allowed"]) =>
    fields.push({ field, message, ...(allowed ? { allowed } : {}) });
  const strength = req.denoising_strength ?? A1111_TXT2IMG_DEFAULTS.denoising_strength;
  const off: MappedHires = {
    hires: undefined,
    fields,
    extras: { denoisingStrength: req.denoising_strength ?? null, extraGenerationParams: {} },
  };
  if (req.firstpass_image) no("firstpass_image", "sdx always generates the hires fix's first pass");
  for (const key of ["firstphase_width", "firstphase_height"] as const) {
    if ((req[key] ?? 0) !== 0)
      no(
        key,
        "is deprecated in A1111; send the first pass's size as width and height, and hr_scale or hr_resize_x/hr_resize_y",
        [0],
      );
  }
  if (req.enable_hr !== true) return off;

  const upscalerName = req.hr_upscaler ?? A1111_DEFAULT_HIRES_UPSCALER;
  const upscaler = A1111_HIRES_UPSCALERS.find((u) => u.name === upscalerName);
  if (!upscaler)
    no(
      "hr_upscaler",
      `sdx has no "${upscalerName}" upscaler; it has ${A1111_HIRES_UPSCALER_NAMES.map((n) => `"${n}"`).join(", ")}`,
      [...A1111_HIRES_UPSCALER_NAMES],
    );
  if (!(strength > 0 && strength <= 1))
    no("denoising_strength", `the hires fix's strength must be in (0, 1]; got ${strength}`);
  const steps = req.hr_second_pass_steps ?? A1111_TXT2IMG_DEFAULTS.hr_second_pass_steps;
  if (steps < 0 || steps > limits.stepsMax)
    no("hr_second_pass_steps", `must be from 0 (= steps) to ${limits.stepsMax}; got ${steps}`);
  if (!same(req.hr_checkpoint_name, "", A1111_HIRES_SAME.hr_checkpoint_name))
    no("hr_checkpoint_name", "sdx's second pass uses the first pass's model", [
      "",
      A1111_HIRES_SAME.hr_checkpoint_name,
    ]);
  const sampler = req.sampler_name || req.sampler_index || A1111_TXT2IMG_DEFAULTS.sampler_index;
  if (!same(req.hr_sampler_name, sampler, A1111_HIRES_SAME.hr_sampler_name))
    no("hr_sampler_name", "sdx's second pass uses the first pass's sampler", [
      "",
      A1111_HIRES_SAME.hr_sampler_name,
      sampler,
    ]);
  if (!same(req.hr_scheduler, req.scheduler ?? "automatic", A1111_HIRES_SAME.hr_scheduler))
    no("hr_scheduler", "sdx's second pass uses the first pass's schedule", [
      "",
      A1111_HIRES_SAME.hr_scheduler,
    ]);
  if (req.hr_prompt && req.hr_prompt !== (req.prompt ?? ""))
    no("hr_prompt", "sdx's second pass uses the prompt; send an empty hr_prompt", [""]);
  if (req.hr_negative_prompt && req.hr_negative_prompt !== (req.negative_prompt ?? ""))
    no("hr_negative_prompt", "sdx's second pass uses the negative prompt; send an empty hr_negative_prompt", [
      "",
    ]);

  const extraGenerationParams: Record<string, string | number> = { "Denoising strength": strength };
  let size: { scale: number } | { width: number; height: number };
  const rx = req.hr_resize_x ?? 0;
  const ry = req.hr_resize_y ?? 0;
  if (rx === 0 && ry === 0) {
    const scale = req.hr_scale ?? A1111_TXT2IMG_DEFAULTS.hr_scale;
    if (!(scale >= 1 && scale <= HIRES_SCALE_MAX))
      no("hr_scale", `must be from 1 to ${HIRES_SCALE_MAX}; got ${scale}`);
    size = { scale };
    extraGenerationParams["Hires upscale"] = scale;
  } else {
    // A1111: one side alone keeps the first pass's aspect ratio (integer division, as there).
    const w = rx !== 0 ? rx : Math.floor((ry * width) / height);
    const h = ry !== 0 ? ry : Math.floor((rx * height) / width);
    if (rx !== 0 && ry !== 0 && rx * height !== ry * width)
      no(
        "hr_resize_x",
        `${rx}×${ry} has another aspect ratio than ${width}×${height}: A1111 would crop the upscaled image, which sdx does not; send one of hr_resize_x, hr_resize_y, or hr_scale`,
      );
    for (const [field, value, given] of [
      ["hr_resize_x", w, rx],
      ["hr_resize_y", h, ry],
    ] as const) {
      const named = given !== 0 ? field : field === "hr_resize_x" ? "hr_resize_y" : "hr_resize_x";
      const what = given !== 0 ? `${value}` : `${value} (following the aspect ratio)`;
      if (value % 8 !== 0 || value < limits.sizeMin || value > limits.sizeMax)
        no(
          named,
          `gives a final ${field === "hr_resize_x" ? "width" : "height"} of ${what}; it must be a multiple of 8 from ${limits.sizeMin} to ${limits.sizeMax}`,
        );
    }
    size = { width: w, height: h };
    extraGenerationParams["Hires resize"] = `${rx}x${ry}`;
  }
  if (steps) extraGenerationParams["Hires steps"] = steps;
  if (req.hr_upscaler !== undefined) extraGenerationParams["Hires upscaler"] = req.hr_upscaler;
  return {
    hires: upscaler ? { upscaler: upscaler.upscaler, ...size, strength, steps } : undefined,
    fields,
    extras: { denoisingStrength: strength, extraGenerationParams },
  };
}

/**
 * POST /sdapi/v1/txt2img: n_iter sdx generations of batch_size images (see runIterations), with the hires fix
 * when enable_hr is on.
 */
export async function txt2img(
  host: ModelHost,
  session: A1111Session,
  req: A1111Txt2ImgRequest,
  raw: Record<string, unknown>,
  signal: AbortSignal | undefined,
  limits: Limits,
): Promise<A1111Txt2ImgResponse> {
  const width = req.width ?? A1111_TXT2IMG_DEFAULTS.width;
  const height = req.height ?? A1111_TXT2IMG_DEFAULTS.height;
  const hires = mapHires(req, width, height, limits);
  const mapped = await mapRequest(host, session, req, raw, limits, ROUTE, hires.fields);
  if (hires.hires) mapped.base = { ...mapped.base, hires: hires.hires };
  const { images, info } = await runIterations(
    host,
    session,
    ROUTE,
    req,
    mapped,
    hires.extras,
    signal,
    limits,
  );
  return { images, parameters: { ...A1111_TXT2IMG_DEFAULTS, ...raw }, info };
}
