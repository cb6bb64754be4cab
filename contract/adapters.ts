/**
 * Adapters: the LoRA, textual-inversion embedding, VAE and preview-decoder files dropped beside the checkpoints
 * (`models/loras/`, `models/embeddings/`, `models/vae/`, `models/vae_approx/`, as ComfyUI names them), how a
 * request names them, and how the server lists and reports them.
 */
import { Type } from "@sinclair/typebox";
import { MODEL_KINDS } from "./lists.ts";
import { Enum } from "./schema.ts";

/**
 * The kinds of adapter file, each in its own folder: `vae_approx` holds the tiny autoencoder decoders that
 * `taesd` previews use (madebyollin/taesd: taesd for SD 1.x/2.x, taesdxl for SDXL).
 */
export const ADAPTER_KINDS = ["lora", "embedding", "vae", "vae_approx"] as const;
export type AdapterKind = (typeof ADAPTER_KINDS)[number];

/** Folder of each kind under the models directory (each configurable). */
export const ADAPTER_FOLDERS = {
  lora: "loras",
  embedding: "embeddings",
  vae: "vae",
  vae_approx: "vae_approx",
} as const satisfies Record<AdapterKind, string>;

/**
 * File formats sdx reads: kohya/A1111 LoRA (incl. LoCon), diffusers/PEFT LoRA, A1111 embeddings, VAE weights,
 * and TAESD decoders as madebyollin/taesd publishes them (taesd.py's `Decoder` keys in a .safetensors or a
 * torch .pth file) or as diffusers' AutoencoderTiny (`decoder.layers.N…`).
 */
export const ADAPTER_FORMATS = [
  "kohya",
  "peft",
  "embedding_safetensors",
  "embedding_pt",
  "vae_safetensors",
  "taesd_safetensors",
  "taesd_pth",
  "taesd_diffusers",
] as const;
export type AdapterFormat = (typeof ADAPTER_FORMATS)[number];

/** File extensions each kind may have. */
export const ADAPTER_EXTENSIONS = {
  lora: [".safetensors"],
  embedding: [".safetensors", ".pt"],
  vae: [".safetensors"],
  vae_approx: [".safetensors", ".pth"],
} as const satisfies Record<AdapterKind, readonly string[]>;

/**
 * Words of the `vae` field that name no file: "automatic" (the model's sidecar default if it names one, else its
 * own VAE) and "none" (the model's own VAE, whatever its sidecar says: A1111's "None"). A VAE file with one of
 * these names is listed unusable.
 */
export const VAE_KEYWORDS = ["automatic", "none"] as const;
export type VaeKeyword = (typeof VAE_KEYWORDS)[number];

/** Most LoRAs in one request; the weight range A1111's UI offers, widened. */
export const LORA_LIMITS = { maxPerRequest: 16, weightMin: -4, weightMax: 4 } as const;

/** Adapter names are file stems: no paths. */
const adapterName = (what: string) =>
  Type.String({
    minLength: 1,
    maxLength: 255,
    pattern: "^[^/\\\\\\x00]+$",
    description: `${what}: a file name without its extension, as GET /v1/adapters lists it (never a path).`,
  });

export const LoraRequestSchema = Type.Object(
  {
    name: adapterName("A LoRA in the loras folder"),
    weight: Type.Optional(
      Type.Number({
        minimum: LORA_LIMITS.weightMin,
        maximum: LORA_LIMITS.weightMax,
        default: 1,
        description:
          "Multiplier of its deltas (A1111's `<lora:name:weight>`), for the UNet and text encoders alike.",
      }),
    ),
  },
  { additionalProperties: false },
);

/** The request fields that choose adapters. */
export function adapterFieldsSchema() {
  return {
    loras: Type.Optional(
      Type.Array(LoraRequestSchema, {
        maxItems: LORA_LIMITS.maxPerRequest,
        description:
          'LoRAs merged into the model for this request: W + weight · (alpha / rank) · up · down on every layer each names (text encoders included). With prompt_syntax "a1111", `<lora:name:weight>` tags in the prompts add to this list and are removed from the text. Needs a single-file checkpoint.',
      }),
    ),
    vae: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 255,
        pattern: "^[^/\\\\\\x00]+$",
        description:
          'A VAE file from the vae folder (its name without the extension, as GET /v1/adapters lists it), used for decoding and encoding instead of the model\'s own; "automatic" or omitted: the model\'s sidecar default if it names one, else its own VAE; "none": the model\'s own VAE even when its sidecar names another (A1111\'s "None").',
      }),
    ),
  };
}

export const AdapterInfoSchema = Type.Object({
  name: Type.String({ description: "The file name without its extension: what requests use." }),
  kind: Enum(ADAPTER_KINDS),
  file: Type.String({ description: "The file name in its folder." }),
  format: Type.Union([Enum(ADAPTER_FORMATS), Type.Null()], {
    description: "null when the file is not readable as its kind.",
  }),
  family: Type.Union([Enum(MODEL_KINDS), Type.Null()], {
    description:
      "The model family it fits, read from its tensor shapes (a vae_approx decoder: from its file name, see details.families); null when it fits any (a VAE), several (taesd: SD 1.x and 2.x) or is unreadable.",
  }),
  size_bytes: Type.Integer(),
  sha256: Type.Union([Type.String(), Type.Null()], {
    description: "SHA-256 of the file (its first 10 digits are A1111's short hash); null until computed.",
  }),
  usable: Type.Boolean(),
  reason: Type.Union([Type.String(), Type.Null()], { description: "Why it cannot be used, when it cannot." }),
  details: Type.Object(
    {
      rank: Type.Optional(Type.Integer({ description: "LoRA: the largest rank among its modules." })),
      modules: Type.Optional(Type.Integer({ description: "LoRA: the layers it changes." })),
      text_encoder: Type.Optional(Type.Boolean({ description: "LoRA: whether it changes a text encoder." })),
      vectors: Type.Optional(Type.Integer({ description: "Embedding: vectors per use of its name." })),
      families: Type.Optional(
        Type.Array(Enum(MODEL_KINDS), {
          description:
            "vae_approx: the model families whose previews it decodes. taesd and taesdxl both take 4-channel latents, so the file name tells them apart: a name with `taesdxl` is SDXL's, one with `taesd` SD 1.x/2.x's.",
        }),
      ),
    },
    { description: "What the file holds." },
  ),
});

export const AdapterListSchema = Type.Object({
  loras: Type.Array(AdapterInfoSchema),
  embeddings: Type.Array(AdapterInfoSchema),
  vaes: Type.Array(AdapterInfoSchema),
  vae_approx: Type.Array(AdapterInfoSchema, {
    description: "The preview decoders (TAESD) that `taesd` previews use.",
  }),
  folders: Type.Object(
    { loras: Type.String(), embeddings: Type.String(), vae: Type.String(), vae_approx: Type.String() },
    { description: "Where the server looks for each kind." },
  ),
});

const usedAdapter = {
  name: Type.String(),
  sha256: Type.String(),
};

export const AdaptersReportSchema = Type.Object(
  {
    loras: Type.Array(
      Type.Object({
        ...usedAdapter,
        weight: Type.Number(),
        source: Enum(["request", "prompt"] as const, {
          description: "Named in `loras`, or by a `<lora:…>` tag in a prompt.",
        }),
        modules: Type.Integer({ description: "Layers it changed." }),
      }),
    ),
    embeddings: Type.Array(
      Type.Object({
        ...usedAdapter,
        vectors: Type.Integer(),
        uses: Type.Integer({ description: "Times the name occurs in the prompts." }),
      }),
    ),
    vae: Type.Union(
      [
        Type.Object({
          ...usedAdapter,
          default: Type.Boolean({ description: "Chosen by the model's sidecar." }),
        }),
        Type.Null(),
      ],
      {
        description: "The VAE file used instead of the model's own; null: the model's own.",
      },
    ),
    cost: Type.Object(
      {
        sessions_created: Type.Integer({
          description:
            "Model sessions created to put these adapters in place: 0 when the previous request used the same ones.",
        }),
        ms: Type.Number({
          description: "Time spent merging weights, building graphs and creating sessions.",
        }),
      },
      { description: "What switching to this request's adapters cost." },
    ),
  },
  { description: "The adapters that changed this generation, with their hashes." },
);

export type AdapterInfo = typeof AdapterInfoSchema.static;
export type AdapterList = typeof AdapterListSchema.static;
export type AdaptersReport = typeof AdaptersReportSchema.static;
export type LoraRequest = typeof LoraRequestSchema.static;
