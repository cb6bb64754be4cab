/**
 * Schemas of the AUTOMATIC1111 compatibility routes (`/sdapi/v1/*`): A1111's own field names and JSON shapes
 * (modules/api/models.py of stable-diffusion-webui), so A1111 clients work unchanged. A1111's pydantic models
 * make every field Optional: a JSON `null` means "the default", as there. sdx removes null fields before
 * validation, so each field is declared `nullable` and typed by its non-null value.
 */
import { type TSchema, Type } from "@sinclair/typebox";
import { DEFAULT_LIMITS, FIXED_LIMITS, type Limits } from "./limits.ts";
import { RANDOM_SEED, SEED_MAX, SEED_SPACE } from "./seeds.ts";

/** Most iterations (`n_iter`) one txt2img request may ask for; each is one sdx generation. */
export const N_ITER_MAX = 100;

/** The OpenAPI 3.0 way to say a field may be `null` (TypeBox ignores the keyword; nulls are removed first). */
const nullable = <T extends TSchema>(schema: T) => Type.Optional({ ...schema, nullable: true } as T);

const ACCEPTED =
  "Accepted for compatibility; sdx has no such feature, so any value other than A1111's default is rejected with a 422 naming this field.";

/** A1111's defaults of the fields txt2img's `parameters` echoes (StableDiffusionProcessingTxt2Img and the API's). */
export const A1111_DEFAULTS = {
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
  force_task_id: null,
  sampler_index: "Euler",
  script_name: null,
  script_args: [],
  send_images: true,
  save_images: false,
  alwayson_scripts: {},
  infotext: null,
} as const satisfies Record<string, unknown>;

/** A1111 draws random seeds with `random.randrange(4294967294)`: two short of every seed. */
export const A1111_RANDOM_SEED_SPACE = SEED_SPACE - 2;

/** A txt2img request as A1111 takes it, with the server's limits. */
export function txt2imgRequestSchema(limits: Limits = DEFAULT_LIMITS) {
  const size = (name: string) =>
    nullable(
      Type.Integer({
        minimum: limits.sizeMin,
        maximum: limits.sizeMax,
        multipleOf: 8,
        description: `Image ${name} in pixels (a multiple of the model's own multiple, 64 for SD UNets). Default: ${A1111_DEFAULTS.width}, as in A1111.`,
      }),
    );
  const text = (description: string) =>
    nullable(Type.String({ maxLength: limits.promptMaxChars, description }));
  return Type.Object(
    {
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
          description: `A1111 sampler name (GET /sdapi/v1/samplers: name or alias, case-insensitive). A1111 ≥ 1.9 sends the schedule separately in \`scheduler\`; older clients write it into the name ("DPM++ 2M Karras"), which works too. A sampler sdx does not have is a 422 listing the ones it has. Default: \`sampler_index\`, else "${A1111_DEFAULTS.sampler_index}".`,
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
          description: `Images per iteration. Default: ${A1111_DEFAULTS.batch_size}.`,
        }),
      ),
      n_iter: nullable(
        Type.Integer({
          minimum: 1,
          maximum: N_ITER_MAX,
          description: `Iterations (A1111's batch count); each is one sdx generation of batch_size images, queued on its own. Default: ${A1111_DEFAULTS.n_iter}.`,
        }),
      ),
      steps: nullable(
        Type.Integer({
          minimum: 1,
          maximum: limits.stepsMax,
          description: `Sampling steps. Default: ${A1111_DEFAULTS.steps}, as in A1111.`,
        }),
      ),
      cfg_scale: nullable(
        Type.Number({
          minimum: 0,
          maximum: FIXED_LIMITS.guidanceMax,
          description: `Classifier-free guidance scale (sdx's guidance_scale). Default: ${A1111_DEFAULTS.cfg_scale}.`,
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
      denoising_strength: nullable(
        Type.Number({ description: "Used by the hires fix only; accepted and ignored." }),
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
          },
          {
            additionalProperties: true,
            description:
              "A1111 settings for this request only. sd_model_checkpoint and CLIP_stop_at_last_layers are applied; a setting GET /sdapi/v1/options reports as fixed must keep its value (422 otherwise); any other key is not applied and is named in `info.sdx_warnings`.",
          },
        ),
      ),
      override_settings_restore_afterwards: nullable(
        Type.Boolean({
          description:
            "Default true: the overrides apply to this request only. false keeps them afterwards, as A1111 does: sd_model_checkpoint becomes the server's default model and CLIP_stop_at_last_layers the A1111 routes' default.",
        }),
      ),
      refiner_checkpoint: nullable(
        Type.String({ description: `SDXL refiner. ${ACCEPTED} ("", "None" are off)` }),
      ),
      refiner_switch_at: nullable(Type.Number({ description: "Used with refiner_checkpoint only." })),
      disable_extra_networks: nullable(Type.Boolean()),
      firstpass_image: nullable(Type.String({ description: `Hires-fix first pass image. ${ACCEPTED}` })),
      comments: nullable(Type.Object({}, { additionalProperties: true })),
      enable_hr: nullable(
        Type.Boolean({
          description: `Hires fix. ${ACCEPTED} Generate at the final size instead. The hr_* fields are accepted and ignored while it is off.`,
        }),
      ),
      firstphase_width: nullable(Type.Integer()),
      firstphase_height: nullable(Type.Integer()),
      hr_scale: nullable(Type.Number()),
      hr_upscaler: nullable(Type.String()),
      hr_second_pass_steps: nullable(Type.Integer()),
      hr_resize_x: nullable(Type.Integer()),
      hr_resize_y: nullable(Type.Integer()),
      hr_checkpoint_name: nullable(Type.String()),
      hr_sampler_name: nullable(Type.String()),
      hr_scheduler: nullable(Type.String()),
      hr_prompt: nullable(Type.String()),
      hr_negative_prompt: nullable(Type.String()),
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
    },
    {
      additionalProperties: true,
      description:
        "AUTOMATIC1111's StableDiffusionTxt2ImgProcessingAPI. Every field may be null (= its default). Fields A1111 does not have either are accepted, not applied, and named in `info.sdx_warnings` (A1111 ignores them silently). Examples: the A1111 wiki's two payloads, and what sdwebuiapi's WebUIApi.txt2img() posts.",
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
    sd_vae_name: Type.Null(),
    sd_vae_hash: Type.Null(),
    seed_resize_from_w: Type.Integer(),
    seed_resize_from_h: Type.Integer(),
    denoising_strength: Type.Union([Type.Number(), Type.Null()]),
    extra_generation_params: Type.Object(
      { "Schedule type": Type.String({ description: '"Automatic" or "Karras".' }) },
      { additionalProperties: true },
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
      "The JSON object inside a txt2img response's `info` string (A1111's Processed.js()), plus `sdx_warnings`.",
  },
);

export const A1111Txt2ImgResponseSchema = Type.Object(
  {
    images: Type.Array(Type.String(), {
      description:
        "The images, PNG base64 (no data: prefix), each carrying its infotext in the `parameters` text chunk. Empty with send_images false.",
    }),
    parameters: Type.Object(
      {},
      {
        additionalProperties: true,
        description: "The request as received, A1111's defaults filled in for the fields it leaves out.",
      },
    ),
    info: Type.String({ description: "JSON text of an `A1111Info` object (parse it with JSON.parse)." }),
  },
  {
    description: "A1111's TextToImageResponse.",
    examples: [
      {
        images: ["iVBORw0KGgoAAAANSUhEUgAA…"],
        parameters: { prompt: "maltese puppy", steps: 5, seed: -1, n_iter: 1, batch_size: 1 },
        info: '{"prompt": "maltese puppy", "all_prompts": ["maltese puppy"], "negative_prompt": "", "all_negative_prompts": [""], "seed": 1234, "all_seeds": [1234], "subseed": 99, "all_subseeds": [99], "subseed_strength": 0, "width": 512, "height": 512, "sampler_name": "Euler", "cfg_scale": 7, "steps": 5, "batch_size": 1, "restore_faces": false, "face_restoration_model": null, "sd_model_name": "v1-5-pruned-emaonly", "sd_model_hash": "6ce0161689", "sd_vae_name": null, "sd_vae_hash": null, "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": null, "extra_generation_params": {"Schedule type": "Automatic"}, "index_of_first_image": 0, "infotexts": ["maltese puppy\\nSteps: 5, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: 1234, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Model type: SD1, Clip skip: 1, Version: sdx 0.1.0"], "styles": [], "job_timestamp": "20250101120000", "clip_skip": 1, "is_using_inpainting_conditioning": false, "sdx_warnings": []}',
      },
    ],
  },
);

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
      description: 'Always the model\'s own VAE: "Automatic" ("None" is accepted too); fixed.',
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
  },
  {
    description:
      "The A1111 settings sdx has. sd_model_checkpoint and CLIP_stop_at_last_layers can be set; the others are fixed.",
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
    Type.Boolean({ description: "Accepted; sdx makes no previews, so current_image is always null." }),
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
    current_image: Type.Null({ description: "sdx makes no previews." }),
    textinfo: Type.Union([Type.String(), Type.Null()]),
  },
  {
    description:
      "A1111's ProgressResponse for the oldest running A1111 txt2img, else for a running /v1 generation, else idle (progress 0, job_count 0).",
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

export const A1111EmptySchema = Type.Object({}, { description: "An empty object, as A1111 answers." });

export type A1111Txt2ImgRequest = ReturnType<typeof txt2imgRequestSchema>["static"];
export type A1111Txt2ImgResponse = typeof A1111Txt2ImgResponseSchema.static;
export type A1111Info = typeof A1111InfoSchema.static;
export type A1111SdModel = typeof A1111SdModelSchema.static;
export type A1111Samplers = typeof A1111SamplersSchema.static;
export type A1111Schedulers = typeof A1111SchedulersSchema.static;
export type A1111Options = typeof A1111OptionsSchema.static;
export type A1111OptionsUpdate = typeof A1111OptionsUpdateSchema.static;
export type A1111Progress = typeof A1111ProgressSchema.static;
