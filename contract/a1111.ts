/**
 * Schemas of the AUTOMATIC1111 compatibility routes (`/sdapi/v1/*`): A1111's own field names and JSON shapes
 * (modules/api/models.py of stable-diffusion-webui), so A1111 clients work unchanged. A1111's pydantic models
 * make every field Optional: a JSON `null` means "the default", as there. sdx removes null fields before
 * validation, so each field is declared `nullable` and typed by its non-null value.
 */
import { type TSchema, Type } from "@sinclair/typebox";
import {
  HIRES_SCALE_MAX,
  HIRES_UPSCALER_A1111_NAMES,
  HIRES_UPSCALERS,
  type HiresUpscaler,
  INPAINT_PADDING_MAX,
  MASK_BLUR_MAX,
  type MaskedContent,
} from "./images.ts";
import { DEFAULT_LIMITS, FIXED_LIMITS, type Limits } from "./limits.ts";
import { PREVIEW_EVERY_MAX, type PreviewMethod } from "./previews.ts";
import { Enum } from "./schema.ts";
import { RANDOM_SEED, SEED_MAX, SEED_SPACE } from "./seeds.ts";

/** Most iterations (`n_iter`) one txt2img or img2img request may ask for; each is one sdx generation. */
export const N_ITER_MAX = 100;

/** The OpenAPI 3.0 way to say a field may be `null` (TypeBox ignores the keyword; nulls are removed first). */
const nullable = <T extends TSchema>(schema: T) => Type.Optional({ ...schema, nullable: true } as T);

/** Every property of a set `nullable`. */
const nullableAll = <P extends Record<string, TSchema>>(properties: P) =>
  Object.fromEntries(Object.entries(properties).map(([k, v]) => [k, nullable(v)])) as {
    [K in keyof P]: ReturnType<typeof nullable<P[K]>>;
  };

/** A1111's VAE choices besides the files: the checkpoint's own VAE (or its sidecar's default), or its own always. */
export const A1111_SD_VAE_AUTOMATIC = "Automatic";
export const A1111_SD_VAE_NONE = "None";

/** A1111's `sd_vae` setting: "Automatic", "None" or a file name from GET /sdapi/v1/sd-vae. */
const A1111SdVaeSetting = (what: string) =>
  Type.String({
    minLength: 1,
    maxLength: 300,
    description: `${what}: "Automatic" (sdx's vae omitted: the model's sidecar default if it names one, else its own VAE), "None" (vae "none": the model's own VAE) or a file name from GET /sdapi/v1/sd-vae ("name.safetensors"; the name without its extension is accepted too), sdx's vae field. Never a path; an unknown one is a 422.`,
    examples: ["vae-ft-mse-840000-ema-pruned.safetensors", "Automatic"],
  });

/**
 * A1111's live-preview methods (its `show_progress_type` choices) and the sdx preview method each is made with:
 * sdx neither decodes with the full VAE mid-run ("Full") nor has A1111's VAE-approx network ("Approx NN", A1111's
 * default), so both are made as "Approx cheap" is, with the linear projection.
 */
export const A1111_PREVIEW_TYPES = ["Full", "Approx NN", "Approx cheap", "TAESD"] as const;
export type A1111PreviewType = (typeof A1111_PREVIEW_TYPES)[number];
export const A1111_PREVIEW_METHODS: Record<A1111PreviewType, PreviewMethod> = {
  Full: "approx",
  "Approx NN": "approx",
  "Approx cheap": "approx",
  TAESD: "taesd",
};

/** A1111's live-preview settings and their defaults (modules/shared_options.py, section "Live previews"). */
export const A1111_PREVIEW_DEFAULTS = {
  live_previews_enable: true,
  show_progress_every_n_steps: 10,
  show_progress_type: "Approx NN",
} as const satisfies {
  live_previews_enable: boolean;
  show_progress_every_n_steps: number;
  show_progress_type: A1111PreviewType;
};

const PREVIEW_TYPES_TEXT = A1111_PREVIEW_TYPES.map((t) => `"${t}" (${A1111_PREVIEW_METHODS[t]})`).join(", ");

/** The live-preview settings' schemas, as GET /sdapi/v1/options reports them. */
const a1111PreviewSettings = (scope: string) => ({
  live_previews_enable: Type.Boolean({
    description: `Live previews of ${scope} (A1111's default: ${A1111_PREVIEW_DEFAULTS.live_previews_enable}): GET /sdapi/v1/progress's current_image.`,
  }),
  show_progress_every_n_steps: Type.Integer({
    minimum: -1,
    maximum: PREVIEW_EVERY_MAX,
    description: `A preview after every N-th sampling step (A1111's default: ${A1111_PREVIEW_DEFAULTS.show_progress_every_n_steps}); 0: every step; -1: only once an iteration has finished sampling, as in A1111 (sdx: after its last step).`,
  }),
  show_progress_type: Enum(A1111_PREVIEW_TYPES, {
    description: `How previews are made (A1111's default: "${A1111_PREVIEW_DEFAULTS.show_progress_type}"), with sdx's preview method for each: ${PREVIEW_TYPES_TEXT}. sdx has neither A1111's full-VAE previews nor its Approx NN network, so both are the linear projection ("Approx cheap"); a method the server cannot make is a 422.`,
  }),
});

const ACCEPTED =
  "Accepted for compatibility; sdx has no such feature, so any value other than A1111's default is rejected with a 422 naming this field.";

/**
 * A1111's defaults of the fields both txt2img and img2img take: StableDiffusionProcessing's and the API's own
 * (modules/api/models.py). `parameters` echoes them for the fields a request leaves out.
 */
const A1111_COMMON_DEFAULTS = {
  prompt: "",
  negative_prompt: "",
  styles: null,
  seed: RANDOM_SEED,
  subseed: RANDOM_SEED,
  subseed_strength: 0,
  seed_resize_from_h: -1,
  seed_resize_from_w: -1,
  sampler_name: null,
  scheduler: null,
  batch_size: 1,
  n_iter: 1,
  steps: 50,
  cfg_scale: 7,
  width: 512,
  height: 512,
  restore_faces: null,
  tiling: null,
  do_not_save_samples: false,
  do_not_save_grid: false,
  eta: null,
  denoising_strength: 0.75,
  s_min_uncond: null,
  s_churn: null,
  s_tmax: null,
  s_tmin: null,
  s_noise: null,
  override_settings: null,
  override_settings_restore_afterwards: true,
  refiner_checkpoint: null,
  refiner_switch_at: null,
  disable_extra_networks: false,
  firstpass_image: null,
  comments: null,
  force_task_id: null,
  sampler_index: "Euler",
  script_name: null,
  script_args: [],
  send_images: true,
  save_images: false,
  alwayson_scripts: {},
  infotext: null,
} as const satisfies Record<string, unknown>;

/** A1111's defaults of txt2img's fields (StableDiffusionProcessingTxt2Img and the API's). */
export const A1111_TXT2IMG_DEFAULTS = {
  ...A1111_COMMON_DEFAULTS,
  enable_hr: false,
  firstphase_width: 0,
  firstphase_height: 0,
  hr_scale: 2,
  hr_upscaler: null,
  hr_second_pass_steps: 0,
  hr_resize_x: 0,
  hr_resize_y: 0,
  hr_checkpoint_name: null,
  hr_sampler_name: null,
  hr_scheduler: null,
  hr_prompt: "",
  hr_negative_prompt: "",
} as const satisfies Record<string, unknown>;

/**
 * A1111's defaults of img2img's fields (StableDiffusionProcessingImg2Img and the API's). `mask_blur` is null
 * there: it sets mask_blur_x and mask_blur_y, which default to 4.
 */
export const A1111_IMG2IMG_DEFAULTS = {
  ...A1111_COMMON_DEFAULTS,
  init_images: null,
  resize_mode: 0,
  image_cfg_scale: null,
  mask: null,
  mask_blur_x: 4,
  mask_blur_y: 4,
  mask_blur: null,
  inpainting_fill: 0,
  inpaint_full_res: true,
  inpaint_full_res_padding: 0,
  inpainting_mask_invert: 0,
  initial_noise_multiplier: null,
  latent_mask: null,
  include_init_images: false,
} as const satisfies Record<string, unknown>;

/** A1111 draws random seeds with `random.randrange(4294967294)`: two short of every seed. */
export const A1111_RANDOM_SEED_SPACE = SEED_SPACE - 2;

/**
 * A1111's hires-fix upscaler names (`hr_upscaler`) that sdx has, and sdx's upscaler for each: sdx's own upscalers
 * under their A1111 names (HIRES_UPSCALER_A1111_NAMES), the latent modes of GET /sdapi/v1/latent-upscale-modes and
 * the image upscalers of GET /sdapi/v1/upscalers, plus A1111's "None", which resizes the decoded image with PIL's
 * Lanczos filter as its "Lanczos" upscaler does. In A1111's order: "None" first.
 */
export const A1111_HIRES_UPSCALERS: readonly { name: string; upscaler: HiresUpscaler; latent: boolean }[] = [
  { name: "None", upscaler: "lanczos", latent: false },
  ...HIRES_UPSCALERS.map((upscaler) => ({
    name: HIRES_UPSCALER_A1111_NAMES[upscaler],
    upscaler,
    latent: upscaler.startsWith("latent"),
  })),
];

/** The names `hr_upscaler` takes. */
export const A1111_HIRES_UPSCALER_NAMES = A1111_HIRES_UPSCALERS.map((u) => u.name);

/** A1111's hires upscaler when hr_upscaler is null (its latent_upscale_default_mode). */
export const A1111_DEFAULT_HIRES_UPSCALER = "Latent";

/** A1111's `inpainting_fill` values 0–3, in order, as sdx's masked_content. */
export const A1111_INPAINTING_FILLS = [
  "fill",
  "original",
  "latent_noise",
  "latent_nothing",
] as const satisfies readonly MaskedContent[];

/** A1111's `resize_mode`s; sdx does 0, "Just resize" (stretch to width × height). */
export const A1111_RESIZE_MODES = [
  "Just resize",
  "Crop and resize",
  "Resize and fill",
  "Just resize (latent upscale)",
];

/** A1111's setting values that mean "the same as the first pass" for the hires fix's own checkpoint, sampler, schedule. */
export const A1111_HIRES_SAME = {
  hr_checkpoint_name: "Use same checkpoint",
  hr_sampler_name: "Use same sampler",
  hr_scheduler: "Use same scheduler",
} as const;

/** The fields txt2img and img2img share, with the server's limits. */
function commonFields(limits: Limits) {
  const size = (name: string) =>
    nullable(
      Type.Integer({
        minimum: limits.sizeMin,
        maximum: limits.sizeMax,
        multipleOf: 8,
        description: `Image ${name} in pixels (a multiple of the model's own multiple, 64 for SD UNets). Default: ${A1111_COMMON_DEFAULTS.width}, as in A1111.`,
      }),
    );
  const text = (description: string) =>
    nullable(Type.String({ maxLength: limits.promptMaxChars, description }));
  return {
    prompt: text("What to draw (A1111 prompt syntax: `(word:1.3)`, `[word]`, `BREAK`). Default: empty."),
    negative_prompt: text("What the image should not show. Default: empty."),
    styles: nullable(
      Type.Array(Type.String(), {
        description:
          "A1111 prompt styles. sdx has none: a non-empty list is accepted and named in `info.sdx_warnings` (A1111 also skips style names it does not know).",
      }),
    ),
    seed: nullable(
      Type.Integer({
        minimum: -1,
        maximum: SEED_MAX,
        description:
          "Seed of the first image; -1 (the default) draws one at random. Image i of iteration j uses seed + j × batch_size + i (`info.all_seeds`).",
      }),
    ),
    subseed: nullable(
      Type.Integer({ description: "Variation seed; only reported back (`info.all_subseeds`), -1 random." }),
    ),
    subseed_strength: nullable(
      Type.Number({
        minimum: 0,
        maximum: 1,
        description: "Variation strength. sdx has no variation seeds: only 0 (the default) is accepted.",
      }),
    ),
    seed_resize_from_h: nullable(
      Type.Integer({ description: "Resize seed from height. Only 0 or -1 (off) is accepted." }),
    ),
    seed_resize_from_w: nullable(
      Type.Integer({ description: "Resize seed from width. Only 0 or -1 (off) is accepted." }),
    ),
    sampler_name: nullable(
      Type.String({
        description: `A1111 sampler name (GET /sdapi/v1/samplers: name or alias, case-insensitive). A1111 ≥ 1.9 sends the schedule separately in \`scheduler\`; older clients write it into the name ("DPM++ 2M Karras"), which works too. A sampler sdx does not have is a 422 listing the ones it has. Default: \`sampler_index\`, else "${A1111_COMMON_DEFAULTS.sampler_index}".`,
        examples: ["DPM++ 2M", "Euler a", "DPM++ 2M Karras"],
      }),
    ),
    sampler_index: nullable(
      Type.String({ description: "Deprecated spelling of `sampler_name`, used when that is empty." }),
    ),
    scheduler: nullable(
      Type.String({
        description:
          'Schedule type (GET /sdapi/v1/schedulers: name or label). sdx offers "automatic" and "karras". "automatic" (the default) is the sampler\'s own, as in A1111: Karras for DPM++ 2M and DPM2; A1111\'s Exponential for DPM++ 2M SDE is not in sdx, so there sdx keeps the sampler\'s diffusers schedule and says so in `info.sdx_warnings`. DDIM, PLMS and UniPC ignore the schedule, as in A1111.',
        examples: ["automatic", "karras", "Karras"],
      }),
    ),
    batch_size: nullable(
      Type.Integer({
        minimum: 1,
        maximum: limits.batchMax,
        description: `Images per iteration. Default: ${A1111_COMMON_DEFAULTS.batch_size}.`,
      }),
    ),
    n_iter: nullable(
      Type.Integer({
        minimum: 1,
        maximum: N_ITER_MAX,
        description: `Iterations (A1111's batch count); each is one sdx generation of batch_size images, queued on its own. Default: ${A1111_COMMON_DEFAULTS.n_iter}.`,
      }),
    ),
    steps: nullable(
      Type.Integer({
        minimum: 1,
        maximum: limits.stepsMax,
        description: `Sampling steps. Default: ${A1111_COMMON_DEFAULTS.steps}, as in A1111.`,
      }),
    ),
    cfg_scale: nullable(
      Type.Number({
        minimum: 0,
        maximum: FIXED_LIMITS.guidanceMax,
        description: `Classifier-free guidance scale (sdx's guidance_scale). Default: ${A1111_COMMON_DEFAULTS.cfg_scale}.`,
      }),
    ),
    width: size("width"),
    height: size("height"),
    restore_faces: nullable(
      Type.Boolean({
        description:
          "Face restoration. sdx has none: true is accepted (the image is otherwise the same) and said in `info.sdx_warnings`.",
      }),
    ),
    tiling: nullable(Type.Boolean({ description: `Seamless tiling. ${ACCEPTED}` })),
    do_not_save_samples: nullable(Type.Boolean({ description: "sdx never saves images on the server." })),
    do_not_save_grid: nullable(Type.Boolean({ description: "sdx never saves images on the server." })),
    eta: nullable(
      Type.Number({
        description:
          "DDIM's η (0–1; A1111's eta_ddim). Euler a and DPM++ 2M SDE always run at η 1 in sdx (A1111's eta_ancestral default); another value there is said in `info.sdx_warnings`. Other samplers ignore it, as in A1111.",
      }),
    ),
    s_min_uncond: nullable(
      Type.Number({ description: "A1111 NGMS; a value above 0 is said in `info.sdx_warnings`." }),
    ),
    s_churn: nullable(
      Type.Number({
        description:
          "k-diffusion churn; sdx's samplers run at 0 (a value above 0 is said in `info.sdx_warnings`).",
      }),
    ),
    s_tmax: nullable(Type.Number({ description: "k-diffusion churn range; accepted (churn is off)." })),
    s_tmin: nullable(Type.Number({ description: "k-diffusion churn range; accepted (churn is off)." })),
    s_noise: nullable(
      Type.Number({
        description:
          "k-diffusion noise multiplier; sdx's samplers run at 1 (another value is said in `info.sdx_warnings`).",
      }),
    ),
    override_settings: nullable(
      Type.Object(
        {
          sd_model_checkpoint: nullable(
            Type.String({
              minLength: 1,
              maxLength: 300,
              description:
                'The checkpoint for this request only: a title ("name.safetensors [hash10]"), model name, file name, short hash or SHA-256 from GET /sdapi/v1/sd-models, matched leniently as A1111 does. Never a path. An unknown one is a 422 (A1111 would fall back to the current model).',
              examples: ["v1-5-pruned-emaonly.safetensors [6ce0161689]", "v1-5-pruned-emaonly"],
            }),
          ),
          CLIP_stop_at_last_layers: nullable(
            Type.Integer({
              minimum: 1,
              maximum: FIXED_LIMITS.clipSkipMax,
              description: "Clip skip, counted as A1111 counts it (1 = last layer); sdx's clip_skip.",
            }),
          ),
          sd_vae: nullable(A1111SdVaeSetting("The VAE for this request only")),
          ...nullableAll(a1111PreviewSettings("this request")),
        },
        {
          additionalProperties: true,
          description:
            "A1111 settings for this request only. sd_model_checkpoint, CLIP_stop_at_last_layers, sd_vae and the live-preview settings (live_previews_enable, show_progress_every_n_steps, show_progress_type) are applied; a setting GET /sdapi/v1/options reports as fixed must keep its value (422 otherwise); any other key is not applied and is named in `info.sdx_warnings`.",
        },
      ),
    ),
    override_settings_restore_afterwards: nullable(
      Type.Boolean({
        description:
          "Default true: the overrides apply to this request only. false keeps them afterwards, as A1111 does: sd_model_checkpoint becomes the server's default model, CLIP_stop_at_last_layers, sd_vae and the live-preview settings the A1111 routes' defaults.",
      }),
    ),
    refiner_checkpoint: nullable(
      Type.String({ description: `SDXL refiner. ${ACCEPTED} ("", "None" are off)` }),
    ),
    refiner_switch_at: nullable(Type.Number({ description: "Used with refiner_checkpoint only." })),
    disable_extra_networks: nullable(Type.Boolean()),
    comments: nullable(Type.Object({}, { additionalProperties: true })),
    force_task_id: nullable(Type.String({ description: "A1111's task id; accepted and ignored." })),
    script_name: nullable(Type.String({ description: `A1111 script. ${ACCEPTED} ("" is off)` })),
    script_args: nullable(
      Type.Array(Type.Unknown(), { description: "Arguments of script_name; ignored without it." }),
    ),
    send_images: nullable(Type.Boolean({ description: "false: `images` is empty. Default: true." })),
    save_images: nullable(
      Type.Boolean({ description: "sdx never saves on the server; true is said in `info.sdx_warnings`." }),
    ),
    alwayson_scripts: nullable(
      Type.Object(
        {},
        { additionalProperties: true, description: `A1111 extension scripts. ${ACCEPTED} ({} is off)` },
      ),
    ),
    infotext: nullable(Type.String({ description: `Parameters as infotext. ${ACCEPTED}` })),
  };
}

/** A txt2img request as A1111 takes it, with the server's limits. */
export function txt2imgRequestSchema(limits: Limits = DEFAULT_LIMITS) {
  const hiresOnly = "Read with enable_hr only.";
  return Type.Object(
    {
      ...commonFields(limits),
      denoising_strength: nullable(
        Type.Number({
          description: `The hires fix's second-pass strength, in (0, 1] (sdx's hires.strength). Default: ${A1111_TXT2IMG_DEFAULTS.denoising_strength}, as in A1111. Ignored without enable_hr.`,
        }),
      ),
      firstpass_image: nullable(
        Type.String({ description: `Hires-fix first pass image, instead of generating it. ${ACCEPTED}` }),
      ),
      enable_hr: nullable(
        Type.Boolean({
          description:
            "Hires fix (sdx's `hires`): generate at width × height, upscale with hr_upscaler to hr_scale × that (or hr_resize_x × hr_resize_y), then run image-to-image there at denoising_strength, with the same seed. The hr_* fields are read only while it is on.",
        }),
      ),
      firstphase_width: nullable(
        Type.Integer({
          description:
            "Deprecated in A1111 (the first pass is width × height). 0 (the default) only; another value is a 422 naming it.",
        }),
      ),
      firstphase_height: nullable(Type.Integer({ description: "As firstphase_width." })),
      hr_scale: nullable(
        Type.Number({
          description: `Final size = width × hr_scale, height × hr_scale (rounded down to a multiple of 8), from 1 to ${HIRES_SCALE_MAX}. Default: ${A1111_TXT2IMG_DEFAULTS.hr_scale}. Ignored when hr_resize_x or hr_resize_y is set. ${hiresOnly}`,
        }),
      ),
      hr_upscaler: nullable(
        Type.String({
          description: `The hires fix's upscaler, by A1111's name: ${A1111_HIRES_UPSCALERS.map((u) => `"${u.name}" (${u.upscaler})`).join(", ")}. A1111's other latent modes (antialiased, bicubic, nearest-exact), "Nearest" and model upscalers (ESRGAN, SwinIR, …) are 422s naming this field. Default: "${A1111_DEFAULT_HIRES_UPSCALER}". GET /sdapi/v1/upscalers and /sdapi/v1/latent-upscale-modes list them. ${hiresOnly}`,
          examples: ["Latent", "Latent (nearest)", "Lanczos"],
        }),
      ),
      hr_second_pass_steps: nullable(
        Type.Integer({
          description: `Steps of the second pass's schedule (sdx's hires.steps); 0 (the default): steps. ${hiresOnly}`,
        }),
      ),
      hr_resize_x: nullable(
        Type.Integer({
          description: `Final width instead of hr_scale; with hr_resize_y 0 the height follows the aspect ratio, as in A1111. Both set must keep width:height (A1111 would crop; sdx does not). A multiple of 8. Default: 0 (use hr_scale). ${hiresOnly}`,
        }),
      ),
      hr_resize_y: nullable(
        Type.Integer({ description: `Final height instead of hr_scale; as hr_resize_x.` }),
      ),
      hr_checkpoint_name: nullable(
        Type.String({
          description: `A second-pass checkpoint. sdx's second pass uses the same model: null, "" or "${A1111_HIRES_SAME.hr_checkpoint_name}" only (422 otherwise). ${hiresOnly}`,
        }),
      ),
      hr_sampler_name: nullable(
        Type.String({
          description: `A second-pass sampler. sdx's second pass uses the first pass's: null, "", "${A1111_HIRES_SAME.hr_sampler_name}" or the same name only (422 otherwise). ${hiresOnly}`,
        }),
      ),
      hr_scheduler: nullable(
        Type.String({
          description: `A second-pass schedule type: null, "", "${A1111_HIRES_SAME.hr_scheduler}" or the same as scheduler only (422 otherwise). ${hiresOnly}`,
        }),
      ),
      hr_prompt: nullable(
        Type.String({
          description: `A second-pass prompt: "" (the default) or the prompt itself only (422 otherwise). ${hiresOnly}`,
        }),
      ),
      hr_negative_prompt: nullable(
        Type.String({
          description: `A second-pass negative prompt: "" or the negative prompt itself only (422 otherwise). ${hiresOnly}`,
        }),
      ),
    },
    {
      additionalProperties: true,
      description:
        "AUTOMATIC1111's StableDiffusionTxt2ImgProcessingAPI. Every field may be null (= its default). Fields A1111 does not have either are accepted, not applied, and named in `info.sdx_warnings` (A1111 ignores them silently). Examples: the A1111 wiki's two payloads, what sdwebuiapi's WebUIApi.txt2img() posts, and a hires fix.",
      example: { prompt: "maltese puppy", steps: 5 },
      examples: [
        { prompt: "maltese puppy", steps: 5 },
        {
          prompt: "cirno",
          steps: 20,
          override_settings: { filter_nsfw: true, CLIP_stop_at_last_layers: 2 },
        },
        {
          enable_hr: false,
          denoising_strength: 0.7,
          firstphase_width: 0,
          firstphase_height: 0,
          hr_scale: 2,
          hr_upscaler: "Latent",
          hr_second_pass_steps: 0,
          hr_resize_x: 0,
          hr_resize_y: 0,
          hr_checkpoint_name: null,
          hr_sampler_name: null,
          hr_scheduler: null,
          hr_prompt: "",
          hr_negative_prompt: "",
          prompt: "a lighthouse at dawn",
          styles: [],
          seed: 42,
          subseed: -1,
          subseed_strength: 0,
          seed_resize_from_h: 0,
          seed_resize_from_w: 0,
          sampler_name: "DPM++ 2M",
          scheduler: "karras",
          batch_size: 2,
          n_iter: 2,
          steps: 25,
          cfg_scale: 7,
          width: 512,
          height: 512,
          restore_faces: false,
          tiling: false,
          do_not_save_samples: false,
          do_not_save_grid: false,
          negative_prompt: "blurry",
          eta: 1,
          s_churn: 0,
          s_tmax: 0,
          s_tmin: 0,
          s_noise: 1,
          override_settings: {},
          override_settings_restore_afterwards: true,
          sampler_index: "DPM++ 2M",
          script_name: null,
          script_args: [],
          send_images: true,
          save_images: false,
          alwayson_scripts: {},
        },
        {
          prompt: "a lighthouse at dawn",
          seed: 42,
          steps: 20,
          width: 512,
          height: 512,
          enable_hr: true,
          hr_upscaler: "Latent",
          hr_scale: 2,
          hr_second_pass_steps: 10,
          denoising_strength: 0.6,
        },
      ],
    },
  );
}

/** A tiny PNG (8×8 gray) for the img2img examples. */
const EXAMPLE_PNG =
  "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAACXBIWXMAAAPoAAAD6AG1e1JrAAAAD0lEQVQImWNowAEYhpYEAILzYAEeEbvlAAAAAElFTkSuQmCC";

/** An img2img request as A1111 takes it, with the server's limits: txt2img's fields less the hires fix, plus the images. */
export function img2imgRequestSchema(limits: Limits = DEFAULT_LIMITS) {
  const image = (description: string) =>
    Type.String({
      minLength: 1,
      maxLength: limits.bodyMaxBytes,
      description: `${description} PNG, JPEG or WebP, base64, raw or as a data URL (data:image/png;base64,…), as A1111 takes it (not an http(s) URL); at most ${limits.imageMaxPixels} pixels.`,
    });
  const maskOnly = "Read with a mask only.";
  const blur = (description: string) =>
    nullable(Type.Integer({ minimum: 0, maximum: MASK_BLUR_MAX, description: `${description} ${maskOnly}` }));
  const flag = (description: string) =>
    nullable(
      Type.Union([Type.Boolean(), Type.Integer({ minimum: 0, maximum: 1 })], {
        description: `${description} true/false or 1/0, as A1111 takes it.`,
      }),
    );
  return Type.Object(
    {
      init_images: Type.Array(
        image(
          "The picture to start from (sdx's init_image). It is resized to width × height (Lanczos, stretching when the aspect ratio differs), as A1111's resize_mode 0.",
        ),
        {
          minItems: 1,
          maxItems: N_ITER_MAX,
          description:
            "The init images. sdx starts every image of the request from one picture, as A1111 does with one: several identical entries are the same; different ones are a 422 naming this field.",
        },
      ),
      resize_mode: nullable(
        Type.Integer({
          minimum: 0,
          maximum: A1111_RESIZE_MODES.length - 1,
          description: `How the init image is fitted to width × height: ${A1111_RESIZE_MODES.map((m, i) => `${i} "${m}"`).join(", ")}. sdx does 0 (the default); another is a 422 naming this field.`,
        }),
      ),
      denoising_strength: nullable(
        Type.Number({
          exclusiveMinimum: 0,
          maximum: 1,
          description: `How much of the picture is repainted, in (0, 1] (sdx's strength): the sampler runs int(steps × denoising_strength) of its steps. Default: ${A1111_IMG2IMG_DEFAULTS.denoising_strength}, as in A1111.`,
        }),
      ),
      image_cfg_scale: nullable(
        Type.Number({
          description:
            "instruct-pix2pix image guidance. A1111 reads it for instruct-pix2pix models only; sdx has none, so it is accepted and has no effect, as in A1111 with other models.",
        }),
      ),
      mask: nullable(
        image(
          "Inpainting mask (sdx's mask_image): white is repainted, black kept (with inpainting_mask_invert 1 the other way round). It must have the init image's size (422 naming this field otherwise; A1111 would resize it), and is resized to width × height with it.",
        ),
      ),
      mask_blur: blur(
        `Gaussian blur σ of the mask in pixels (sdx's mask_blur); sets mask_blur_x and mask_blur_y, as in A1111. Default: ${A1111_IMG2IMG_DEFAULTS.mask_blur_x}.`,
      ),
      mask_blur_x: blur(
        `Horizontal mask blur. sdx blurs both directions alike, so it must equal mask_blur_y (422 otherwise). Default: ${A1111_IMG2IMG_DEFAULTS.mask_blur_x}.`,
      ),
      mask_blur_y: blur(
        `Vertical mask blur; as mask_blur_x. Default: ${A1111_IMG2IMG_DEFAULTS.mask_blur_y}.`,
      ),
      inpainting_fill: nullable(
        Type.Integer({
          minimum: 0,
          maximum: A1111_INPAINTING_FILLS.length - 1,
          description: `What the masked region starts from (sdx's masked_content): ${A1111_INPAINTING_FILLS.map((m, i) => `${i} ${m}`).join(", ")}. Default: ${A1111_IMG2IMG_DEFAULTS.inpainting_fill}, as in A1111. ${maskOnly}`,
        }),
      ),
      inpaint_full_res: flag(
        `A1111's "Only masked": inpaint the mask's bounding box plus inpaint_full_res_padding at width × height and paste it back (sdx's inpaint_full_res). Default: true, as in A1111. ${maskOnly}`,
      ),
      inpaint_full_res_padding: nullable(
        Type.Integer({
          minimum: 0,
          maximum: INPAINT_PADDING_MAX,
          description: `Pixels of context around the mask with inpaint_full_res. Default: ${A1111_IMG2IMG_DEFAULTS.inpaint_full_res_padding}, as in A1111 (sdx's own default is 32). ${maskOnly}`,
        }),
      ),
      inpainting_mask_invert: flag(
        "1: repaint the black part of the mask instead of the white (the mask is inverted before it is used). Default: 0.",
      ),
      initial_noise_multiplier: nullable(
        Type.Number({
          description:
            "Scales the initial noise. sdx does not: only 1 (or null) is accepted; another value is a 422.",
        }),
      ),
      latent_mask: nullable(
        Type.String({ description: `A separate mask for the latents. ${ACCEPTED} (null is off)` }),
      ),
      include_init_images: nullable(
        Type.Boolean({
          description:
            "true: `parameters` echoes init_images and mask; false (the default): they are null there, as in A1111.",
        }),
      ),
      ...commonFields(limits),
      firstpass_image: nullable(
        Type.String({ description: "A txt2img field; img2img ignores it, as A1111 does." }),
      ),
    },
    {
      additionalProperties: true,
      description:
        "AUTOMATIC1111's StableDiffusionImg2ImgProcessingAPI: image-to-image, and inpainting with a mask. Every field may be null (= its default). Fields A1111 does not have either are accepted, not applied, and named in `info.sdx_warnings`. Example: what sdwebuiapi's WebUIApi.img2img(images=[…], mask_image=…) posts.",
      example: { init_images: [EXAMPLE_PNG], prompt: "a watercolor", denoising_strength: 0.6, steps: 20 },
      examples: [
        { init_images: [EXAMPLE_PNG], prompt: "a watercolor", denoising_strength: 0.6, steps: 20 },
        {
          init_images: [EXAMPLE_PNG],
          resize_mode: 0,
          denoising_strength: 0.75,
          mask_blur: 4,
          inpainting_fill: 0,
          inpaint_full_res: true,
          inpaint_full_res_padding: 0,
          inpainting_mask_invert: 0,
          initial_noise_multiplier: 1,
          prompt: "a red door",
          styles: [],
          seed: 42,
          subseed: -1,
          subseed_strength: 0,
          seed_resize_from_h: 0,
          seed_resize_from_w: 0,
          batch_size: 1,
          n_iter: 1,
          steps: 20,
          cfg_scale: 7,
          image_cfg_scale: 1.5,
          width: 512,
          height: 512,
          restore_faces: false,
          tiling: false,
          do_not_save_samples: false,
          do_not_save_grid: false,
          negative_prompt: "",
          eta: 1,
          s_churn: 0,
          s_tmax: 0,
          s_tmin: 0,
          s_noise: 1,
          override_settings: {},
          override_settings_restore_afterwards: true,
          sampler_name: "Euler a",
          scheduler: "automatic",
          sampler_index: "Euler a",
          include_init_images: false,
          script_name: null,
          script_args: [],
          send_images: true,
          save_images: false,
          alwayson_scripts: {},
          mask: EXAMPLE_PNG,
        },
      ],
    },
  );
}

export const A1111InfoSchema = Type.Object(
  {
    prompt: Type.String(),
    all_prompts: Type.Array(Type.String()),
    negative_prompt: Type.String(),
    all_negative_prompts: Type.Array(Type.String()),
    seed: Type.Integer(),
    all_seeds: Type.Array(Type.Integer(), {
      description: "Every image's seed, iteration after iteration: seed + j × batch_size + i (mod 2³²).",
    }),
    subseed: Type.Integer(),
    all_subseeds: Type.Array(Type.Integer()),
    subseed_strength: Type.Number(),
    width: Type.Integer(),
    height: Type.Integer(),
    sampler_name: Type.String({ description: "A1111's sampler name, without the schedule." }),
    cfg_scale: Type.Number(),
    steps: Type.Integer(),
    batch_size: Type.Integer(),
    restore_faces: Type.Boolean(),
    face_restoration_model: Type.Null(),
    sd_model_name: Type.String({ description: "The sdx model name (A1111's model_name)." }),
    sd_model_hash: Type.Union([Type.String(), Type.Null()], {
      description: "First 10 hex digits of the SHA-256.",
    }),
    sd_vae_name: Type.Union([Type.String(), Type.Null()], {
      description: "The VAE file used instead of the model's own (its file name), or null.",
    }),
    sd_vae_hash: Type.Union([Type.String(), Type.Null()], {
      description: "First 10 hex digits of that VAE file's SHA-256, or null.",
    }),
    seed_resize_from_w: Type.Integer(),
    seed_resize_from_h: Type.Integer(),
    denoising_strength: Type.Union([Type.Number(), Type.Null()]),
    extra_generation_params: Type.Object(
      { "Schedule type": Type.String({ description: '"Automatic" or "Karras".' }) },
      {
        additionalProperties: true,
        description:
          'As in A1111: with the hires fix "Denoising strength", "Hires upscale" or "Hires resize", "Hires steps" (when set) and "Hires upscaler"; with an img2img mask "Mask blur".',
      },
    ),
    index_of_first_image: Type.Integer(),
    infotexts: Type.Array(Type.String(), {
      description: "Each returned image's infotext, the same text as its PNG `parameters` chunk.",
    }),
    styles: Type.Array(Type.String()),
    job_timestamp: Type.String({
      description: "When the job started, YYYYMMDDhhmmss (server's local time).",
    }),
    clip_skip: Type.Integer(),
    is_using_inpainting_conditioning: Type.Boolean(),
    sdx_warnings: Type.Array(Type.String(), {
      description:
        "sdx's addition: one sentence for each request field or setting that was accepted but not applied, each sampler or schedule difference from A1111, and an interrupted or skipped iteration. A1111's response has no warnings field, so they travel here.",
    }),
  },
  {
    description:
      "The JSON object inside a txt2img or img2img response's `info` string (A1111's Processed.js()), plus `sdx_warnings`.",
  },
);

/** A txt2img or img2img answer: A1111's TextToImageResponse and ImageToImageResponse have the same fields. */
const imagesResponseSchema = (
  description: string,
  parametersNote: string,
  example: Record<string, unknown>,
) =>
  Type.Object(
    {
      images: Type.Array(Type.String(), {
        description:
          "The images, PNG base64 (no data: prefix), each carrying its infotext in the `parameters` text chunk. Empty with send_images false.",
      }),
      parameters: Type.Object(
        {},
        {
          additionalProperties: true,
          description: `The request as received, A1111's defaults filled in for the fields it leaves out.${parametersNote}`,
        },
      ),
      info: Type.String({ description: "JSON text of an `A1111Info` object (parse it with JSON.parse)." }),
    },
    { description, examples: [example] },
  );

const INFO_EXAMPLE =
  '{"prompt": "maltese puppy", "all_prompts": ["maltese puppy"], "negative_prompt": "", "all_negative_prompts": [""], "seed": 1234, "all_seeds": [1234], "subseed": 99, "all_subseeds": [99], "subseed_strength": 0, "width": 512, "height": 512, "sampler_name": "Euler", "cfg_scale": 7, "steps": 5, "batch_size": 1, "restore_faces": false, "face_restoration_model": null, "sd_model_name": "v1-5-pruned-emaonly", "sd_model_hash": "6ce0161689", "sd_vae_name": null, "sd_vae_hash": null, "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": null, "extra_generation_params": {"Schedule type": "Automatic"}, "index_of_first_image": 0, "infotexts": ["maltese puppy\\nSteps: 5, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Model type: SD1, Clip skip: 1, Version: sdx 0.1.0"], "styles": [], "job_timestamp": "20250101120000", "clip_skip": 1, "is_using_inpainting_conditioning": false, "sdx_warnings": []}';

export const A1111Txt2ImgResponseSchema = imagesResponseSchema("A1111's TextToImageResponse.", "", {
  images: ["iVBORw0KGgoAAAANSUhEUgAA…"],
  parameters: { prompt: "maltese puppy", steps: 5, seed: -1, n_iter: 1, batch_size: 1 },
  info: INFO_EXAMPLE,
});

export const A1111Img2ImgResponseSchema = imagesResponseSchema(
  "A1111's ImageToImageResponse.",
  " init_images and mask are null there unless include_init_images is true, as in A1111.",
  {
    images: ["iVBORw0KGgoAAAANSUhEUgAA…"],
    parameters: {
      init_images: null,
      mask: null,
      prompt: "maltese puppy",
      steps: 5,
      denoising_strength: 0.75,
    },
    info: INFO_EXAMPLE.replace('"denoising_strength": null', '"denoising_strength": 0.75'),
  },
);

export const A1111UpscalersSchema = Type.Array(
  Type.Object({
    name: Type.String({ description: "The name hr_upscaler takes." }),
    model_name: Type.Union([Type.String(), Type.Null()]),
    model_path: Type.Union([Type.String(), Type.Null()]),
    model_url: Type.Union([Type.String(), Type.Null()]),
    scale: Type.Union([Type.Number(), Type.Null()]),
  }),
  {
    description:
      'The image upscalers sdx has for the hires fix, as A1111\'s UpscalerItem list: "None" and "Lanczos" (both a Lanczos resize of the decoded image, as in A1111). No model upscalers (ESRGAN, SwinIR, …).',
    examples: [
      [
        { name: "None", model_name: null, model_path: null, model_url: null, scale: 4 },
        { name: "Lanczos", model_name: null, model_path: null, model_url: null, scale: 4 },
      ],
    ],
  },
);

export const A1111LatentUpscaleModesSchema = Type.Array(Type.Object({ name: Type.String() }), {
  description:
    'The latent upscale modes sdx has for the hires fix (A1111\'s LatentUpscalerModeItem list): "Latent" (bilinear) and "Latent (nearest)".',
  examples: [[{ name: "Latent" }, { name: "Latent (nearest)" }]],
});

export const A1111SdModelSchema = Type.Object({
  title: Type.String({
    description: 'A1111\'s title: "<file name> [<hash10>]", or the file name until the hash is known.',
  }),
  model_name: Type.String({ description: "The sdx model name." }),
  hash: Type.Union([Type.String(), Type.Null()], {
    description: "First 10 hex digits of the SHA-256; null until the model has been loaded once.",
  }),
  sha256: Type.Union([Type.String(), Type.Null()]),
  filename: Type.String({
    description: "The file or folder name inside the models directory (never a full path).",
  }),
  config: Type.Null(),
});

export const A1111SdModelsSchema = Type.Array(A1111SdModelSchema, {
  description: "The loadable models of GET /v1/models, as A1111's SDModelItem list.",
  examples: [
    [
      {
        title: "v1-5-pruned-emaonly.safetensors [6ce0161689]",
        model_name: "v1-5-pruned-emaonly",
        hash: "6ce0161689",
        sha256: "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
        filename: "v1-5-pruned-emaonly.safetensors",
        config: null,
      },
    ],
  ],
});

export const A1111SamplersSchema = Type.Array(
  Type.Object({
    name: Type.String({ description: "A1111's sampler name." }),
    aliases: Type.Array(Type.String(), {
      description: "A1111's aliases, then sdx's own name (scheduler_type).",
    }),
    options: Type.Object(
      {},
      { additionalProperties: true, description: "A1111's sampler options (e.g. its default schedule)." },
    ),
  }),
  {
    description: "The samplers sdx has, under A1111's names (SamplerItem).",
    examples: [
      [{ name: "DPM++ 2M", aliases: ["k_dpmpp_2m", "dpmsolver++"], options: { scheduler: "karras" } }],
    ],
  },
);

export const A1111SchedulersSchema = Type.Array(
  Type.Object({
    name: Type.String(),
    label: Type.String(),
    aliases: Type.Union([Type.Array(Type.String()), Type.Null()]),
    default_rho: Type.Number(),
    need_inner_model: Type.Boolean(),
  }),
  {
    description: "The schedule types sdx has (SchedulerItem): automatic and karras.",
    examples: [
      [
        { name: "automatic", label: "Automatic", aliases: null, default_rho: -1, need_inner_model: false },
        { name: "karras", label: "Karras", aliases: null, default_rho: 7, need_inner_model: false },
      ],
    ],
  },
);

export const A1111OptionsSchema = Type.Object(
  {
    sd_model_checkpoint: Type.Union([Type.String(), Type.Null()], {
      description: "Title of the server's default model (null while it has none).",
    }),
    sd_checkpoint_hash: Type.Union([Type.String(), Type.Null()], {
      description: "SHA-256 of the default model, once known.",
    }),
    CLIP_stop_at_last_layers: Type.Integer({
      description: "Clip skip of A1111 requests that do not override it.",
    }),
    sd_checkpoints_limit: Type.Integer({
      description: "Models kept loaded at once (--max-loaded-models); fixed.",
    }),
    sd_vae: Type.String({
      description:
        'The VAE of A1111 requests that do not override it: "Automatic" (the default), "None" or a file name from GET /sdapi/v1/sd-vae.',
    }),
    samples_format: Type.String({ description: '"png"; fixed.' }),
    randn_source: Type.String({
      description: '"CPU": noise is drawn as torch\'s CPU generator draws it; fixed.',
    }),
    eta_noise_seed_delta: Type.Integer({ description: "0; fixed." }),
    eta_ddim: Type.Number({ description: "DDIM's η when a request sends no eta: 0; fixed." }),
    eta_ancestral: Type.Number({ description: "η of Euler a and DPM++ 2M SDE: 1; fixed." }),
    s_churn: Type.Number({ description: "0; fixed." }),
    s_tmin: Type.Number({ description: "0; fixed." }),
    s_tmax: Type.Number({ description: "0 (= infinity); fixed." }),
    s_noise: Type.Number({ description: "1; fixed." }),
    s_min_uncond: Type.Number({ description: "0; fixed." }),
    ...a1111PreviewSettings("A1111 requests that do not override it"),
  },
  {
    description:
      "The A1111 settings sdx has. sd_model_checkpoint, CLIP_stop_at_last_layers, sd_vae and the live-preview settings can be set; the others are fixed.",
  },
);

export const A1111OptionsUpdateSchema = Type.Object(
  {
    sd_model_checkpoint: nullable(
      Type.String({
        minLength: 1,
        maxLength: 300,
        description:
          "Makes this model the server's default (for /v1 requests too) and loads it; answers once it has loaded, as A1111 does. Matched like override_settings.sd_model_checkpoint; an unknown one is a 422.",
      }),
    ),
    CLIP_stop_at_last_layers: nullable(
      Type.Integer({
        minimum: 1,
        maximum: FIXED_LIMITS.clipSkipMax,
        description: "Clip skip for A1111 requests that do not override it.",
      }),
    ),
    sd_vae: nullable(A1111SdVaeSetting("The VAE of A1111 requests that do not override it")),
    ...nullableAll(a1111PreviewSettings("A1111 requests that do not override it")),
  },
  {
    additionalProperties: true,
    description:
      "Settings to change. The fixed settings of GET /sdapi/v1/options must keep their value (422 naming the key otherwise). Any other key is accepted and not applied (A1111's UI settings), and named in the `X-Sdx-Ignored-Options` response header.",
    examples: [
      { sd_model_checkpoint: "v1-5-pruned-emaonly.safetensors [6ce0161689]", CLIP_stop_at_last_layers: 2 },
    ],
  },
);

export const A1111ProgressQuerySchema = Type.Object({
  skip_current_image: Type.Optional(
    Type.Boolean({ description: "true: current_image is null (no preview is sent)." }),
  ),
});

export const A1111ProgressSchema = Type.Object(
  {
    progress: Type.Number({
      description: "0 to 1, A1111's formula (0.01 + finished iterations + the running one's steps).",
    }),
    eta_relative: Type.Number({ description: "Estimated seconds left." }),
    state: Type.Object({
      skipped: Type.Boolean(),
      interrupted: Type.Boolean(),
      stopping_generation: Type.Boolean(),
      job: Type.String({ description: 'e.g. "Batch 2 out of 3"; "" when idle.' }),
      job_count: Type.Integer({ description: "Iterations of the job (0 when idle)." }),
      job_timestamp: Type.String(),
      job_no: Type.Integer({ description: "The running iteration, from 0." }),
      sampling_step: Type.Integer(),
      sampling_steps: Type.Integer(),
    }),
    current_image: Type.Union([Type.String(), Type.Null()], {
      description:
        "The latest live preview of the batch's first image, a PNG base64-encoded: of the A1111 job reported (its live-preview settings), or of the running /v1 generation when it asks for previews on its event stream. null when there is none yet, when previews are off, or with skip_current_image=true.",
    }),
    textinfo: Type.Union([Type.String(), Type.Null()]),
  },
  {
    description:
      "A1111's ProgressResponse for the oldest running A1111 txt2img or img2img, else for a running /v1 generation, else idle (progress 0, job_count 0).",
    examples: [
      {
        progress: 0.51,
        eta_relative: 2.4,
        state: {
          skipped: false,
          interrupted: false,
          stopping_generation: false,
          job: "Batch 2 out of 2",
          job_count: 2,
          job_timestamp: "20250101120000",
          job_no: 1,
          sampling_step: 0,
          sampling_steps: 20,
        },
        current_image: null,
        textinfo: null,
      },
    ],
  },
);

export const A1111LorasSchema = Type.Array(
  Type.Object({
    name: Type.String({
      description: "The file name without its extension: `<lora:name:weight>` in a prompt.",
    }),
    alias: Type.String({
      description:
        "kohya's `ss_output_name` from the file's metadata when it has one, else the name (as A1111).",
    }),
    path: Type.String({
      description:
        "The file name in the loras folder (A1111 sends the full path; sdx never sends server paths).",
    }),
    metadata: Type.Object(
      {},
      {
        additionalProperties: true,
        description:
          "The safetensors `__metadata__` (kohya's ss_* training notes); values that are JSON text parsed, as A1111 does.",
      },
    ),
  }),
  {
    description:
      "The usable LoRA files of GET /v1/adapters in A1111's shape (its Lora extension's /sdapi/v1/loras).",
    examples: [
      [
        {
          name: "detail_tweaker",
          alias: "detail_tweaker",
          path: "detail_tweaker.safetensors",
          metadata: { ss_network_dim: "4", ss_base_model_version: "sd_v1" },
        },
      ],
    ],
  },
);

export const A1111EmbeddingItemSchema = Type.Object({
  step: Type.Union([Type.Integer(), Type.Null()], { description: "Training steps, when the file says." }),
  sd_checkpoint: Type.Union([Type.String(), Type.Null()], {
    description: "Hash of the checkpoint it was trained on, when the file says.",
  }),
  sd_checkpoint_name: Type.Union([Type.String(), Type.Null()], {
    description: "Name of the checkpoint it was trained on, when the file says.",
  }),
  shape: Type.Integer({ description: "Width of each vector (768 for SD 1.x, 1024 for SD 2.x)." }),
  vectors: Type.Integer({ description: "Vectors per use of its name." }),
});

export const A1111EmbeddingsSchema = Type.Object(
  {
    loaded: Type.Record(Type.String(), A1111EmbeddingItemSchema, {
      description: "Embeddings usable with the default model, by name.",
    }),
    skipped: Type.Record(Type.String(), A1111EmbeddingItemSchema, {
      description: "Embeddings made for another model family than the default model's.",
    }),
  },
  {
    description:
      "The embedding files of GET /v1/adapters in A1111's EmbeddingsResponse. An embedding whose family is unknown (its width is none of SD's) counts as loaded; files that cannot be read are in neither (GET /v1/adapters says why).",
    examples: [
      {
        loaded: {
          tinystyle: { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 768, vectors: 1 },
        },
        skipped: {},
      },
    ],
  },
);

export const A1111SdVaesSchema = Type.Array(
  Type.Object({
    model_name: Type.String({
      description:
        'The file name in the vae folder ("name.safetensors"), as A1111 keys its VAEs: what sd_vae takes.',
    }),
    filename: Type.String({
      description: "The file name again (A1111 sends the full path; sdx never sends server paths).",
    }),
  }),
  {
    description: "The usable VAE files of GET /v1/adapters as A1111's SDVaeItem list.",
    examples: [
      [
        {
          model_name: "vae-ft-mse-840000-ema-pruned.safetensors",
          filename: "vae-ft-mse-840000-ema-pruned.safetensors",
        },
      ],
    ],
  },
);

export const A1111EmptySchema = Type.Object({}, { description: "An empty object, as A1111 answers." });

export type A1111Txt2ImgRequest = ReturnType<typeof txt2imgRequestSchema>["static"];
export type A1111Txt2ImgResponse = typeof A1111Txt2ImgResponseSchema.static;
export type A1111Img2ImgRequest = ReturnType<typeof img2imgRequestSchema>["static"];
export type A1111Img2ImgResponse = typeof A1111Img2ImgResponseSchema.static;
export type A1111Upscalers = typeof A1111UpscalersSchema.static;
export type A1111LatentUpscaleModes = typeof A1111LatentUpscaleModesSchema.static;
export type A1111Info = typeof A1111InfoSchema.static;
export type A1111SdModel = typeof A1111SdModelSchema.static;
export type A1111Samplers = typeof A1111SamplersSchema.static;
export type A1111Schedulers = typeof A1111SchedulersSchema.static;
export type A1111Options = typeof A1111OptionsSchema.static;
export type A1111OptionsUpdate = typeof A1111OptionsUpdateSchema.static;
/** The live-preview settings of A1111 requests. */
export type A1111PreviewSettings = Pick<A1111Options, keyof typeof A1111_PREVIEW_DEFAULTS>;
export type A1111Progress = typeof A1111ProgressSchema.static;
export type A1111Loras = typeof A1111LorasSchema.static;
export type A1111Embeddings = typeof A1111EmbeddingsSchema.static;
export type A1111EmbeddingItem = typeof A1111EmbeddingItemSchema.static;
export type A1111SdVaes = typeof A1111SdVaesSchema.static;
