/**
 * A generation request resolved against its model: every default filled in (the model's native size among
 * them) and every check that depends on the model, as the 422s the API answers.
 */
import {
  type AppliedParams,
  type FieldError,
  GENERATE_DEFAULTS,
  type GenerateRequest,
  RANDOM_SEED,
  randomSeed,
  resolveSchedulerChoice,
  validationFailed,
} from "../../../contract/index.ts";
import { xlPromptTexts } from "../pipeline/stable_diffusion_xl.ts";
import type { ModelCapabilities } from "../pipeline/types.ts";
import { SCHEDULERS } from "../schedulers/index.ts";
import {
  appliedHires,
  appliedImageParams,
  type InputImages,
  imageFieldErrors,
  sideFromImage,
} from "./image_params.ts";

/** What the checks need to know of the model. */
export interface ModelFacts {
  name: string;
  nativeSize: number;
  sizeMultiple: number;
  capabilities: ModelCapabilities;
  /** The server's width/height limits, which a default (the native size) must respect too. */
  sizeRange?: { min: number; max: number };
}

const NO_IMAGES: InputImages = { init: null, mask: null };

/**
 * Fills defaults (the model's native size, or the init image's, among them) and checks everything that depends
 * on the model.
 */
export function resolveParams(
  req: GenerateRequest,
  model: ModelFacts,
  images: InputImages = NO_IMAGES,
): AppliedParams {
  const init = images.init;
  const fields: FieldError[] = [];
  const choice = resolveSchedulerChoice(req.scheduler_type ?? GENERATE_DEFAULTS.scheduler_type);
  const entry = SCHEDULERS[choice.scheduler];
  if (choice.karras !== null && req.karras_sigmas === false) {
    fields.push({
      field: "karras_sigmas",
      message: `"${req.scheduler_type}" names the Karras schedule; send karras_sigmas true or leave it out, or use "${choice.scheduler}"`,
    });
  }
  const applied: AppliedParams = {
    prompt: req.prompt,
    negative_prompt: req.negative_prompt ?? null,
    prompt_2: null,
    negative_prompt_2: null,
    original_size: null,
    crops_coords_top_left: null,
    target_size: null,
    seed: req.seed === undefined || req.seed === RANDOM_SEED ? randomSeed() : req.seed,
    batch_size: req.batch_size ?? GENERATE_DEFAULTS.batch_size,
    width: req.width ?? (init ? sideFromImage(init.width, model.sizeMultiple) : model.nativeSize),
    height: req.height ?? (init ? sideFromImage(init.height, model.sizeMultiple) : model.nativeSize),
    num_steps: req.num_steps ?? GENERATE_DEFAULTS.num_steps,
    guidance_scale: req.guidance_scale ?? GENERATE_DEFAULTS.guidance_scale,
    scheduler_type: choice.scheduler,
    karras_sigmas: choice.karras ?? req.karras_sigmas ?? false,
    timestep_spacing: req.timestep_spacing ?? null,
    eta: req.eta ?? null,
    prompt_syntax: req.prompt_syntax ?? GENERATE_DEFAULTS.prompt_syntax,
    scheduler_scale: req.scheduler_scale ?? null,
    clip_skip: req.clip_skip ?? GENERATE_DEFAULTS.clip_skip,
    enable_attention_slicing: req.enable_attention_slicing ?? false,
    enable_vae_slicing: req.enable_vae_slicing ?? false,
    enable_vae_tiling: req.enable_vae_tiling ?? false,
    enable_model_cpu_offload: req.enable_model_cpu_offload ?? false,
    enable_sequential_cpu_offload: req.enable_sequential_cpu_offload ?? false,
    ...appliedImageParams(req, images),
    hires: null,
  };
  applied.hires = appliedHires(req, applied.width, applied.height, applied.num_steps);
  const xl = model.capabilities.xl;
  if (xl) {
    // SDXL: what each encoder read and the micro-conditioning, defaults filled in (diffusers' order).
    const texts = xlPromptTexts(
      applied.prompt_syntax,
      {
        prompt: req.prompt,
        prompt2: req.prompt_2 ?? null,
        negativePrompt: req.negative_prompt ?? null,
        negativePrompt2: req.negative_prompt_2 ?? null,
      },
      xl.forceZerosForEmptyPrompt,
    );
    applied.prompt_2 = texts.prompt2;
    applied.negative_prompt_2 = texts.negative2;
    applied.original_size = req.original_size ?? [applied.height, applied.width];
    applied.crops_coords_top_left = req.crops_coords_top_left ?? [0, 0];
    applied.target_size = req.target_size ?? [applied.height, applied.width];
  }
  for (const key of ["width", "height"] as const) {
    const range = model.sizeRange;
    if (req[key] === undefined && range && (applied[key] < range.min || applied[key] > range.max)) {
      fields.push({
        field: key,
        message: init
          ? `taken from init_image (${init[key]} px, rounded down to a multiple of ${model.sizeMultiple}) is ${applied[key]}, outside this server's limits ${range.min}–${range.max}; send ${key}`
          : `defaults to ${model.name}'s native size ${applied[key]}, outside this server's limits ${range.min}–${range.max}; send ${key}`,
      });
      continue;
    }
    if (applied[key] % model.sizeMultiple !== 0) {
      fields.push({
        field: key,
        message: `must be a multiple of ${model.sizeMultiple} for ${model.name} (its UNet downsamples by that factor); got ${applied[key]}`,
      });
    }
  }
  if (applied.karras_sigmas && !entry.karras) {
    fields.push({
      field: "karras_sigmas",
      message: `${applied.scheduler_type} has no Karras variant in diffusers; samplers with one: ${karrasSchedulers().join(", ")}`,
      allowed: karrasSchedulers(),
    });
  }
  const { clipSkipMax, clipSkipUnavailable } = model.capabilities;
  if (applied.clip_skip > clipSkipMax) {
    fields.push({
      field: "clip_skip",
      message:
        clipSkipUnavailable !== null
          ? `${model.name} cannot skip text-encoder layers: ${clipSkipUnavailable}; only clip_skip 1 works`
          : `${model.name}'s text encoder has ${clipSkipMax} layers; clip_skip must be from 1 to ${clipSkipMax}`,
      allowed: Array.from({ length: clipSkipMax }, (_, i) => i + 1),
    });
  }
  fields.push(
    ...imageFieldErrors(req, applied, {
      name: model.name,
      sizeMultiple: model.sizeMultiple,
      vaeEncoder: model.capabilities.vaeEncoder,
      ...(model.sizeRange ? { sizeRange: model.sizeRange } : {}),
    }),
  );
  if (fields.length > 0) throw validationFailed(fields);
  return applied;
}

function karrasSchedulers(): string[] {
  return Object.entries(SCHEDULERS)
    .filter(([, s]) => s.karras)
    .map(([name]) => name);
}
