/**
 * Request and response schemas of POST /v1/generate. The request keeps the seed project's parameter names.
 * These TypeBox schemas are the single source: Elysia validates with them, the spec is written from them,
 * the SDK types are generated from the spec and the CLI validates project files against them.
 */
import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { MODEL_KINDS } from "../engine/model_kinds.ts";
import { PROMPT_SYNTAXES } from "../engine/prompt/chunks.ts";
import { SCHEDULER_CHOICES, SCHEDULER_NAMES } from "../engine/schedulers/index.ts";
import { TIMESTEP_SPACINGS } from "../engine/schedulers/schedule_utils.ts";
import { Enum } from "../schema.ts";

export const LIMITS = {
  promptMaxChars: 10_000,
  sizeMin: 64,
  sizeMax: 2048,
  stepsMax: 150,
  batchMax: 16,
  guidanceMax: 50,
  seedMax: 4_294_967_295,
} as const;

const size = (name: string) =>
  Type.Integer({
    minimum: LIMITS.sizeMin,
    maximum: LIMITS.sizeMax,
    multipleOf: 8,
    description: `Image ${name} in pixels, a multiple of 8 (and of the model's own multiple, 64 for SD UNets). Default: the model's native size.`,
  });

/** Largest value accepted in SDXL's micro-conditioning pairs (pixels). */
const MICRO_MAX = 16_384;

const pair = (min: number, description: string) =>
  t.Optional(
    t.Array(Type.Integer({ minimum: min, maximum: MICRO_MAX }), {
      minItems: 2,
      maxItems: 2,
      description,
    }),
  );

const SDXL_ONLY = "SDXL only; on an SD 1.x/2.x model it has no effect and says so in warnings.";

const memorySwitch = (what: string) => t.Optional(t.Boolean({ description: what }));

export const GenerateParamsSchema = t.Object(
  {
    negative_prompt: t.Optional(
      t.String({
        maxLength: LIMITS.promptMaxChars,
        description: "What the image should not show. Used with guidance_scale > 1.",
      }),
    ),
    prompt_2: t.Optional(
      t.String({
        maxLength: LIMITS.promptMaxChars,
        description: `What SDXL's second text encoder (OpenCLIP bigG) reads. Omitted or empty: the prompt, as in diffusers. ${SDXL_ONLY}`,
      }),
    ),
    negative_prompt_2: t.Optional(
      t.String({
        maxLength: LIMITS.promptMaxChars,
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
    seed: t.Optional(
      Type.Integer({
        minimum: -1,
        maximum: LIMITS.seedMax,
        description:
          "Seed of image 0; image i uses seed + i (wrapping at 2³²). Omitted or -1: drawn at random and returned.",
      }),
    ),
    batch_size: t.Optional(
      Type.Integer({ minimum: 1, maximum: LIMITS.batchMax, default: 1, description: "Images to make." }),
    ),
    width: t.Optional(size("width")),
    height: t.Optional(size("height")),
    num_steps: t.Optional(
      Type.Integer({ minimum: 1, maximum: LIMITS.stepsMax, default: 30, description: "Denoising steps." }),
    ),
    guidance_scale: t.Optional(
      t.Number({
        minimum: 0,
        maximum: LIMITS.guidanceMax,
        default: 7.5,
        description: "Classifier-free guidance scale; 1 or less turns guidance off (one UNet pass per step).",
      }),
    ),
    scheduler_type: t.Optional(
      Enum(SCHEDULER_CHOICES, {
        default: "dpmsolver++",
        description:
          'Sampler: an sdx name or an AUTOMATIC1111 display name ("DPM++ 2M Karras" implies karras_sigmas). GET /v1/schedulers lists them.',
      }),
    ),
    timestep_spacing: t.Optional(
      Enum(TIMESTEP_SPACINGS, {
        description: "Overrides the model's scheduler_config timestep_spacing (Lin et al. 2024, Table 2).",
      }),
    ),
    eta: t.Optional(
      t.Number({
        minimum: 0,
        maximum: 1,
        description:
          "DDIM's η: 0 is deterministic DDIM, 1 adds DDPM-like noise each step. Only ddim reads it.",
      }),
    ),
    prompt_syntax: t.Optional(
      Enum(PROMPT_SYNTAXES, {
        default: "a1111",
        description:
          "a1111: (word:1.3) weights, [word], \\( escapes, BREAK, prompts over 75 tokens in 75-token chunks. diffusers: the text taken literally and cut at 77 tokens.",
      }),
    ),
    karras_sigmas: t.Optional(
      t.Boolean({
        description:
          'Use the Karras et al. (2022) noise schedule for the sampler\'s sigmas. Default: false, or true when scheduler_type is an alias ending in "Karras".',
      }),
    ),
    scheduler_scale: t.Optional(
      t.Number({
        minimum: 0,
        maximum: 100,
        description:
          "Accepted for compatibility with the seed's configs; Stable Diffusion samplers have no such scale, so it is reported in warnings and has no effect.",
      }),
    ),
    clip_skip: t.Optional(
      Type.Integer({
        minimum: 1,
        maximum: 12,
        default: 1,
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
  },
  { additionalProperties: false },
);

export const GenerateRequestSchema = t.Composite(
  [
    t.Object({
      prompt: t.String({
        maxLength: LIMITS.promptMaxChars,
        description: "What to draw. May be empty (unconditional generation).",
      }),
      model: t.Optional(
        t.String({
          minLength: 1,
          maxLength: 255,
          description:
            "A model name from GET /v1/models (never a path). Default: the server's default model. A model that is not loaded is loaded first (the `loading` event of the stream, `timings.load_ms`); the least recently used one is unloaded when more than `--max-loaded-models` would be.",
          examples: ["stable-diffusion-v1-5"],
        }),
      ),
    }),
    GenerateParamsSchema,
  ],
  { additionalProperties: false },
);

export const AppliedParamsSchema = t.Object(
  {
    prompt: t.String(),
    negative_prompt: t.Union([t.String(), t.Null()]),
    prompt_2: t.Union([t.String(), t.Null()], {
      description: "SDXL: the text the second encoder read. null on SD 1.x/2.x.",
    }),
    negative_prompt_2: t.Union([t.String(), t.Null()], {
      description:
        "SDXL: the text the second encoder read for the unconditional pass; null when that pass used zero embeddings (or would have, with guidance off), or on SD 1.x/2.x.",
    }),
    original_size: t.Union([t.Array(Type.Integer()), t.Null()], {
      description: "SDXL: [height, width] fed as time ids. null on SD 1.x/2.x.",
    }),
    crops_coords_top_left: t.Union([t.Array(Type.Integer()), t.Null()], {
      description: "SDXL: [top, left] fed as time ids. null on SD 1.x/2.x.",
    }),
    target_size: t.Union([t.Array(Type.Integer()), t.Null()], {
      description: "SDXL: [height, width] fed as time ids. null on SD 1.x/2.x.",
    }),
    seed: Type.Integer(),
    batch_size: Type.Integer(),
    width: Type.Integer(),
    height: Type.Integer(),
    num_steps: Type.Integer(),
    guidance_scale: t.Number(),
    scheduler_type: Enum(SCHEDULER_NAMES),
    karras_sigmas: t.Boolean(),
    timestep_spacing: t.Union([Enum(TIMESTEP_SPACINGS), t.Null()], { description: "null: the model's own." }),
    eta: t.Union([t.Number(), t.Null()]),
    prompt_syntax: Enum(PROMPT_SYNTAXES),
    scheduler_scale: t.Union([t.Number(), t.Null()]),
    clip_skip: Type.Integer(),
    enable_attention_slicing: t.Boolean(),
    enable_vae_slicing: t.Boolean(),
    enable_vae_tiling: t.Boolean(),
    enable_model_cpu_offload: t.Boolean(),
    enable_sequential_cpu_offload: t.Boolean(),
  },
  { description: "Every parameter as the engine applied it, defaults filled in." },
);

export const PromptReportSchema = t.Object({
  tokens: Type.Integer({ description: "Text tokens, without start, end and padding tokens." }),
  chunks: Type.Integer({ description: "77-token rows the text encoder read." }),
  truncated_tokens: Type.Integer({ description: "Tokens cut off (prompt_syntax diffusers only)." }),
});

const MemorySwitchReportSchema = t.Object({
  requested: t.Boolean(),
  applied: t.Boolean(),
  note: t.String({ description: "What the switch did, or why it does not apply." }),
});

export const MemoryReportSchema = t.Object(
  {
    attention_slicing: MemorySwitchReportSchema,
    vae_slicing: MemorySwitchReportSchema,
    vae_tiling: MemorySwitchReportSchema,
    model_cpu_offload: MemorySwitchReportSchema,
    sequential_cpu_offload: MemorySwitchReportSchema,
    retried_after_out_of_memory: t.Boolean({
      description:
        "The first attempt ran out of memory and the generation was retried with VAE slicing and tiling.",
    }),
  },
  { description: "What each of diffusers' memory switches did for this generation." },
);

export const GeneratedImageSchema = t.Object({
  png: t.String({ description: "The PNG file, base64-encoded." }),
  seed: Type.Integer({ description: "The seed this image was drawn from; send it back to remake it alone." }),
});

export const GenerateMetadataSchema = t.Object({
  model: t.Object({
    name: t.String(),
    kind: Enum(MODEL_KINDS),
    hash: t.String({
      description:
        "SHA-256 of the checkpoint file (AUTOMATIC1111's and Civitai's model hash; its first 10 digits are the infotext's `Model hash`), or of an ONNX folder's sha256sum-style file manifest.",
    }),
  }),
  parameters: AppliedParamsSchema,
  seeds: t.Array(Type.Integer()),
  prompt_tokens: Type.Integer({ description: "CLIP tokens in the prompt (without start and end tokens)." }),
  prompt: PromptReportSchema,
  negative_prompt: PromptReportSchema,
  scheduler: t.Object({
    name: Enum(SCHEDULER_NAMES),
    display_name: t.String({
      description: 'AUTOMATIC1111\'s name, with " Karras" when Karras sigmas were used.',
    }),
  }),
  memory: MemoryReportSchema,
  timesteps: t.Array(t.Number(), { description: "The sampler's timesteps, in order." }),
  timings: t.Object({
    queue_ms: t.Number(),
    load_ms: t.Number({
      description: "Time spent loading the model for this request (0 when it was loaded).",
    }),
    encode_ms: t.Number(),
    denoise_ms: t.Number(),
    decode_ms: t.Number(),
    png_ms: t.Number(),
    total_ms: t.Number(),
  }),
  execution_provider: t.String(),
  sdx_version: t.String(),
});

export const GenerateResponseSchema = t.Object({
  images: t.Array(GeneratedImageSchema),
  metadata: GenerateMetadataSchema,
  warnings: t.Array(t.String(), {
    description: "One sentence per parameter that did not change the result, saying why.",
  }),
});

export type GenerateRequest = typeof GenerateRequestSchema.static;
export type GenerateParams = typeof GenerateParamsSchema.static;
export type AppliedParams = typeof AppliedParamsSchema.static;
export type GenerateResponse = typeof GenerateResponseSchema.static;
