/**
 * POST /v1/generate: the request (the seed project's parameter names), the response and its metadata. The
 * server validates with these, the spec is written from them, the SDK's types are generated from the spec and
 * the CLI checks project files against them.
 */
import { Type } from "@sinclair/typebox";
import { AdaptersReportSchema, adapterFieldsSchema } from "./adapters.ts";
import { GENERATE_DEFAULTS } from "./defaults.ts";
import { AppliedHiresSchema, InputImagesReportSchema, imageFieldsSchema, MASKED_CONTENTS } from "./images.ts";
import { DEFAULT_LIMITS, FIXED_LIMITS, type Limits } from "./limits.ts";
import { MODEL_KINDS, PROMPT_SYNTAXES, TIMESTEP_SPACINGS } from "./lists.ts";
import { PreviewRequestSchema } from "./previews.ts";
import { SCHEDULER_CHOICES, SCHEDULER_NAMES } from "./samplers.ts";
import { Enum } from "./schema.ts";
import { SEED_MAX } from "./seeds.ts";

const size = (name: string, limits: Limits) =>
  Type.Integer({
    minimum: limits.sizeMin,
    maximum: limits.sizeMax,
    multipleOf: 8,
    description: `Image ${name} in pixels, a multiple of 8 (and of the model's own multiple, 64 for SD UNets). Default: the model's native size.`,
  });

const pair = (min: number, description: string) =>
  Type.Optional(
    Type.Array(Type.Integer({ minimum: min, maximum: FIXED_LIMITS.microConditioningMax }), {
      minItems: 2,
      maxItems: 2,
      description,
    }),
  );

const SDXL_ONLY = "SDXL only; on an SD 1.x/2.x model it has no effect and says so in warnings.";

const memorySwitch = (what: string) => Type.Optional(Type.Boolean({ description: what }));

/** The generation parameters (every field but `prompt` and `model`), with a server's limits. */
export function generateParamsSchema(limits: Limits = DEFAULT_LIMITS) {
  return Type.Object(
    {
      negative_prompt: Type.Optional(
        Type.String({
          maxLength: limits.promptMaxChars,
          description: "What the image should not show. Used with guidance_scale > 1.",
        }),
      ),
      prompt_2: Type.Optional(
        Type.String({
          maxLength: limits.promptMaxChars,
          description: `What SDXL's second text encoder (OpenCLIP bigG) reads. Omitted or empty: the prompt, as in diffusers. ${SDXL_ONLY}`,
        }),
      ),
      negative_prompt_2: Type.Optional(
        Type.String({
          maxLength: limits.promptMaxChars,
          description: `The second text encoder's negative prompt. Omitted or empty: the negative prompt. With prompt_syntax "diffusers" and no negative_prompt, SDXL's unconditional embeddings are zeros (force_zeros_for_empty_prompt) and this is ignored, as in diffusers. ${SDXL_ONLY}`,
        }),
      ),
      original_size: pair(
        1,
        `SDXL micro-conditioning (Podell et al. 2023, §2.2): the size of the training image to imitate, [height, width] — diffusers' order. Default: [height, width] of the image. ${SDXL_ONLY}`,
      ),
      crops_coords_top_left: pair(
        0,
        `SDXL micro-conditioning: crop offset [top, left] — diffusers' order. Default: [0, 0] (centred, uncropped). ${SDXL_ONLY}`,
      ),
      target_size: pair(
        1,
        `SDXL micro-conditioning: [height, width] — diffusers' order. Default: [height, width] of the image. ${SDXL_ONLY}`,
      ),
      seed: Type.Optional(
        Type.Integer({
          minimum: -1,
          maximum: SEED_MAX,
          description:
            "Seed of image 0; image i uses seed + i (wrapping at 2³²). Omitted or -1: drawn at random and returned.",
        }),
      ),
      batch_size: Type.Optional(
        Type.Integer({
          minimum: 1,
          maximum: limits.batchMax,
          default: GENERATE_DEFAULTS.batch_size,
          description: "Images to make.",
        }),
      ),
      width: Type.Optional(size("width", limits)),
      height: Type.Optional(size("height", limits)),
      num_steps: Type.Optional(
        Type.Integer({
          minimum: 1,
          maximum: limits.stepsMax,
          default: GENERATE_DEFAULTS.num_steps,
          description: "Denoising steps.",
        }),
      ),
      guidance_scale: Type.Optional(
        Type.Number({
          minimum: 0,
          maximum: FIXED_LIMITS.guidanceMax,
          default: GENERATE_DEFAULTS.guidance_scale,
          description:
            "Classifier-free guidance scale; 1 or less turns guidance off (one UNet pass per step).",
        }),
      ),
      scheduler_type: Type.Optional(
        Enum(SCHEDULER_CHOICES, {
          default: GENERATE_DEFAULTS.scheduler_type,
          description:
            'Sampler: an sdx name or an AUTOMATIC1111 display name ("DPM++ 2M Karras" implies karras_sigmas). GET /v1/schedulers lists them.',
        }),
      ),
      timestep_spacing: Type.Optional(
        Enum(TIMESTEP_SPACINGS, {
          description: "Overrides the model's scheduler_config timestep_spacing (Lin et al. 2024, Table 2).",
        }),
      ),
      eta: Type.Optional(
        Type.Number({
          minimum: 0,
          maximum: 1,
          description:
            "DDIM's η: 0 is deterministic DDIM, 1 adds DDPM-like noise each step. Only ddim reads it.",
        }),
      ),
      prompt_syntax: Type.Optional(
        Enum(PROMPT_SYNTAXES, {
          default: GENERATE_DEFAULTS.prompt_syntax,
          description:
            "a1111: (word:1.3) weights, [word], \\( escapes, BREAK, prompts over 75 tokens in 75-token chunks. diffusers: the text taken literally and cut at 77 tokens.",
        }),
      ),
      karras_sigmas: Type.Optional(
        Type.Boolean({
          description:
            'Use the Karras et al. (2022) noise schedule for the sampler\'s sigmas. Default: false, or true when scheduler_type is an alias ending in "Karras".',
        }),
      ),
      scheduler_scale: Type.Optional(
        Type.Number({
          minimum: 0,
          maximum: 100,
          description:
            "Accepted for compatibility with the seed's configs; Stable Diffusion samplers have no such scale, so it is reported in warnings and has no effect.",
        }),
      ),
      clip_skip: Type.Optional(
        Type.Integer({
          minimum: 1,
          maximum: FIXED_LIMITS.clipSkipMax,
          default: GENERATE_DEFAULTS.clip_skip,
          description:
            "Text-encoder layer to condition on, counted from the end as in AUTOMATIC1111 (1 = last layer). diffusers' clip_skip is this minus 1. " +
            "SDXL conditions on the penultimate layer of both encoders by default, so there clip_skip k reads hidden_states[-(k + 1)] of both: " +
            "1 = diffusers' clip_skip None = hidden_states[-2], 2 = diffusers' clip_skip 1 = hidden_states[-3]. " +
            'With prompt_syntax "diffusers" the negative prompt is encoded without clip skip, as diffusers does; with "a1111" both prompts use it.',
        }),
      ),
      enable_attention_slicing: memorySwitch(
        "diffusers memory switch; see warnings for what sdx does with it.",
      ),
      enable_vae_slicing: memorySwitch(
        "Decode the batch one image at a time: lower peak memory, identical pixels.",
      ),
      enable_vae_tiling: memorySwitch("diffusers memory switch; see warnings for what sdx does with it."),
      enable_model_cpu_offload: memorySwitch(
        "diffusers memory switch; see warnings for what sdx does with it.",
      ),
      enable_sequential_cpu_offload: memorySwitch(
        "diffusers memory switch; see warnings for what sdx does with it.",
      ),
      ...imageFieldsSchema(limits),
      ...adapterFieldsSchema(),
      preview: Type.Optional(PreviewRequestSchema),
    },
    { additionalProperties: false },
  );
}

/** POST /v1/generate's body, with a server's limits. */
export function generateRequestSchema(limits: Limits = DEFAULT_LIMITS) {
  return Type.Composite(
    [
      Type.Object({
        prompt: Type.String({
          maxLength: limits.promptMaxChars,
          description: "What to draw. May be empty (unconditional generation).",
        }),
        model: Type.Optional(
          Type.String({
            minLength: 1,
            maxLength: FIXED_LIMITS.modelNameMaxChars,
            description:
              "A model name from GET /v1/models (never a path). Default: the server's default model. A model that is not loaded is loaded first (the `loading` event of the stream, `timings.load_ms`); the least recently used one is unloaded when more than `--max-loaded-models` would be.",
            examples: ["stable-diffusion-v1-5"],
          }),
        ),
      }),
      generateParamsSchema(limits),
    ],
    { additionalProperties: false },
  );
}

/** The parameters with the default limits: what the CLI checks project files against. */
export const GenerateParamsSchema = generateParamsSchema();
export const GenerateRequestSchema = generateRequestSchema();

export const AppliedParamsSchema = Type.Object(
  {
    prompt: Type.String(),
    negative_prompt: Type.Union([Type.String(), Type.Null()]),
    prompt_2: Type.Union([Type.String(), Type.Null()], {
      description: "SDXL: the text the second encoder read. null on SD 1.x/2.x.",
    }),
    negative_prompt_2: Type.Union([Type.String(), Type.Null()], {
      description:
        "SDXL: the text the second encoder read for the unconditional pass; null when that pass used zero embeddings (or would have, with guidance off), or on SD 1.x/2.x.",
    }),
    original_size: Type.Union([Type.Array(Type.Integer()), Type.Null()], {
      description: "SDXL: [height, width] fed as time ids. null on SD 1.x/2.x.",
    }),
    crops_coords_top_left: Type.Union([Type.Array(Type.Integer()), Type.Null()], {
      description: "SDXL: [top, left] fed as time ids. null on SD 1.x/2.x.",
    }),
    target_size: Type.Union([Type.Array(Type.Integer()), Type.Null()], {
      description: "SDXL: [height, width] fed as time ids. null on SD 1.x/2.x.",
    }),
    seed: Type.Integer(),
    batch_size: Type.Integer(),
    width: Type.Integer(),
    height: Type.Integer(),
    num_steps: Type.Integer(),
    guidance_scale: Type.Number(),
    scheduler_type: Enum(SCHEDULER_NAMES),
    karras_sigmas: Type.Boolean(),
    timestep_spacing: Type.Union([Enum(TIMESTEP_SPACINGS), Type.Null()], {
      description: "null: the model's own.",
    }),
    eta: Type.Union([Type.Number(), Type.Null()]),
    prompt_syntax: Enum(PROMPT_SYNTAXES),
    scheduler_scale: Type.Union([Type.Number(), Type.Null()]),
    clip_skip: Type.Integer(),
    enable_attention_slicing: Type.Boolean(),
    enable_vae_slicing: Type.Boolean(),
    enable_vae_tiling: Type.Boolean(),
    enable_model_cpu_offload: Type.Boolean(),
    enable_sequential_cpu_offload: Type.Boolean(),
    strength: Type.Union([Type.Number(), Type.Null()], {
      description: "Image-to-image denoising strength; null for text-to-image.",
    }),
    mask_blur: Type.Union([Type.Integer(), Type.Null()], {
      description: "Inpainting mask blur in pixels; null without a mask.",
    }),
    masked_content: Type.Union([Enum(MASKED_CONTENTS), Type.Null()], {
      description: "What the repainted region started from; null without a mask.",
    }),
    inpaint_full_res: Type.Union([Type.Boolean(), Type.Null()], {
      description: "Whether only the masked area was inpainted; null without a mask.",
    }),
    inpaint_full_res_padding: Type.Union([Type.Integer(), Type.Null()], {
      description: "Padding around the mask with inpaint_full_res; null otherwise.",
    }),
    hires: Type.Union([AppliedHiresSchema, Type.Null()], {
      description: "The hires fix as applied; null without one.",
    }),
  },
  {
    description:
      "Every parameter as the engine applied it, defaults filled in. Input images are in `inputs`.",
  },
);

export const PromptReportSchema = Type.Object({
  tokens: Type.Integer({ description: "Text tokens, without start, end and padding tokens." }),
  chunks: Type.Integer({ description: "77-token rows the text encoder read." }),
  truncated_tokens: Type.Integer({ description: "Tokens cut off (prompt_syntax diffusers only)." }),
});

const MemorySwitchReportSchema = Type.Object({
  requested: Type.Boolean(),
  applied: Type.Boolean(),
  note: Type.String({ description: "What the switch did, or why it does not apply." }),
});

export const MemoryReportSchema = Type.Object(
  {
    attention_slicing: MemorySwitchReportSchema,
    vae_slicing: MemorySwitchReportSchema,
    vae_tiling: MemorySwitchReportSchema,
    model_cpu_offload: MemorySwitchReportSchema,
    sequential_cpu_offload: MemorySwitchReportSchema,
    retried_after_out_of_memory: Type.Boolean({
      description:
        "The first attempt ran out of memory and the generation was retried with VAE slicing and tiling.",
    }),
  },
  { description: "What each of diffusers' memory switches did for this generation." },
);

export const GeneratedImageSchema = Type.Object({
  png: Type.String({ description: "The PNG file, base64-encoded." }),
  seed: Type.Integer({ description: "The seed this image was drawn from; send it back to remake it alone." }),
});

export const GenerateMetadataSchema = Type.Object({
  model: Type.Object({
    name: Type.String(),
    kind: Enum(MODEL_KINDS),
    hash: Type.String({
      description:
        "SHA-256 of the checkpoint file (AUTOMATIC1111's and Civitai's model hash; its first 10 digits are the infotext's `Model hash`), or of an ONNX folder's sha256sum-style file manifest.",
    }),
  }),
  parameters: AppliedParamsSchema,
  seeds: Type.Array(Type.Integer()),
  prompt_tokens: Type.Integer({ description: "CLIP tokens in the prompt (without start and end tokens)." }),
  prompt: PromptReportSchema,
  negative_prompt: PromptReportSchema,
  scheduler: Type.Object({
    name: Enum(SCHEDULER_NAMES),
    display_name: Type.String({
      description: 'AUTOMATIC1111\'s name, with " Karras" when Karras sigmas were used.',
    }),
  }),
  memory: MemoryReportSchema,
  timesteps: Type.Array(Type.Number(), {
    description:
      "The timesteps the sampler ran, in order (with init_image: the part of the schedule strength keeps; with the hires fix: the first pass).",
  }),
  hires_timesteps: Type.Optional(
    Type.Array(Type.Number(), { description: "Hires fix: the second pass's timesteps, in order." }),
  ),
  inputs: InputImagesReportSchema,
  adapters: AdaptersReportSchema,
  timings: Type.Object({
    queue_ms: Type.Number(),
    load_ms: Type.Number({
      description: "Time spent loading the model for this request (0 when it was loaded).",
    }),
    encode_ms: Type.Number(),
    denoise_ms: Type.Number(),
    decode_ms: Type.Number(),
    png_ms: Type.Number(),
    total_ms: Type.Number(),
  }),
  execution_provider: Type.String(),
  sdx_version: Type.String(),
});

export const GenerateResponseSchema = Type.Object({
  images: Type.Array(GeneratedImageSchema),
  metadata: GenerateMetadataSchema,
  warnings: Type.Array(Type.String(), {
    description: "One sentence per parameter that did not change the result, saying why.",
  }),
});

export type GenerateRequest = typeof GenerateRequestSchema.static;
export type GenerateParams = typeof GenerateParamsSchema.static;
export type AppliedParams = typeof AppliedParamsSchema.static;
export type GenerateResponse = typeof GenerateResponseSchema.static;
