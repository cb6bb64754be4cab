/** Server options from flags, then SDX_* environment variables, then defaults. */
import { parseArgs } from "node:util";
import {
  ADAPTER_FOLDERS,
  type AdapterKind,
  DEFAULT_LIMITS,
  type Limits,
  SERVER_DEFAULTS,
} from "../contract/index.ts";
import {
  ATTENTION_VARIANTS,
  type AttentionVariant,
  isAttentionVariant,
} from "./engine/checkpoint/attention_variant.ts";
import { WEIGHT_RESIDENCIES, type WeightResidency } from "./engine/checkpoint/weight_residency.ts";
import { WARM_UP_MODES, type WarmUpMode } from "./engine/model_host.ts";
import { PROVIDER_CHOICES, type ProviderChoice } from "./engine/onnx/runtime.ts";
import {
  commaList,
  isLoopbackAddress,
  normalizeOrigin,
  resolveLimits,
  SettingError,
} from "./security/service.ts";

/** The defaults every option falls back to. */
const D = SERVER_DEFAULTS;

export interface ServerConfig {
  modelsDir: string;
  /** The adapter folders given; a missing kind is `<modelsDir>/<ADAPTER_FOLDERS[kind]>`. */
  adapterFolders: Partial<Record<AdapterKind, string>>;
  model: string | undefined;
  host: string;
  port: number;
  provider: ProviderChoice;
  /** Attention of the UNet (checkpoint graphs, ONNX folders' UNets); undefined: by provider. */
  attention: AttentionVariant | undefined;
  /** Which float16 checkpoint weights float32 graphs keep as float32; undefined: by provider (lean on the CPU). */
  residency: WeightResidency | undefined;
  /** A warm-up generation after the startup load: auto (GPU providers only), on, off. */
  warmUp: WarmUpMode;
  /** Models kept loaded at once; undefined: 1 on a GPU, 2 on the CPU. */
  maxLoadedModels: number | undefined;
  /** Generations that run at once. */
  concurrency: number;
  /** Generations that may wait for a slot; more get 429. */
  maxQueue: number;
  /** On SIGTERM/SIGINT, how long running and queued generations may take to finish, ms. */
  drainTimeoutMs: number;
  /** A generation with no step for this long makes /health report "stuck", ms. */
  stepTimeoutMs: number;
  /** Bearer key; unset: no auth. */
  apiKey: string | undefined;
  /** Refuse to start bound to a non-loopback address without an API key (the Docker image sets this). */
  requireApiKey: boolean;
  /** With requireApiKey: start without a key anyway, deliberately. */
  allowNoAuth: boolean;
  corsOrigins: string[];
  allowedHosts: string[];
  limits: Limits;
  /** On a terminal with no --model, show the startup menu (off: --no-menu or SDX_NO_MENU=1). */
  menu: boolean;
  /** The Hugging Face hub models are pulled from (HF_ENDPOINT). */
  hubEndpoint: string;
  /** HF_TOKEN: sent to the hub only, for gated and private repositories. */
  hfToken: string | undefined;
}

/** The adapter folder flags, their variables and the kind each sets. */
const ADAPTER_FOLDER_FLAGS = [
  ["loras-dir", "SDX_LORAS_DIR", "lora"],
  ["embeddings-dir", "SDX_EMBEDDINGS_DIR", "embedding"],
  ["vae-dir", "SDX_VAE_DIR", "vae"],
  ["vae-approx-dir", "SDX_VAE_APPROX_DIR", "vae_approx"],
] as const satisfies readonly (readonly [string, string, AdapterKind])[];

/** The limit flags, their variables and the Limits key each sets. */
const LIMIT_FLAGS = [
  ["min-size", "SDX_MIN_SIZE", "sizeMin"],
  ["max-size", "SDX_MAX_SIZE", "sizeMax"],
  ["max-steps", "SDX_MAX_STEPS", "stepsMax"],
  ["max-batch", "SDX_MAX_BATCH", "batchMax"],
  ["max-prompt-chars", "SDX_MAX_PROMPT_CHARS", "promptMaxChars"],
  ["max-body-bytes", "SDX_MAX_BODY_BYTES", "bodyMaxBytes"],
  ["max-image-pixels", "SDX_MAX_IMAGE_PIXELS", "imageMaxPixels"],
] as const;

export class ConfigError extends Error {
  override name = "ConfigError";
}

export const SERVER_USAGE = `Usage: bun api/index.ts [options]

  --models-dir DIR   models directory (env SDX_MODELS_DIR, default ${D.modelsDir}/)
  --model NAME       model folder to serve (env SDX_MODEL; default: the only model there)
  --loras-dir DIR    LoRA files (env SDX_LORAS_DIR, default <models-dir>/${ADAPTER_FOLDERS.lora}/)
  --embeddings-dir DIR  textual-inversion embeddings (env SDX_EMBEDDINGS_DIR, default <models-dir>/${ADAPTER_FOLDERS.embedding}/)
  --vae-dir DIR      VAE files (env SDX_VAE_DIR, default <models-dir>/${ADAPTER_FOLDERS.vae}/)
  --vae-approx-dir DIR  TAESD preview decoders (env SDX_VAE_APPROX_DIR, default <models-dir>/${ADAPTER_FOLDERS.vae_approx}/)
  --host HOST        address to bind (env SDX_HOST, default ${D.host})
  --port PORT        port (env SDX_PORT, default ${D.port})
  --provider NAME    execution provider: ${PROVIDER_CHOICES.join(" | ")} (env SDX_PROVIDER, default auto:
                     CUDA when an NVIDIA GPU and onnxruntime's CUDA libraries are there, else WebGPU when a
                     Vulkan/Metal/D3D12 adapter runs a probe graph, else CPU; each passed over is logged)
  --api-key KEY      require Authorization: Bearer KEY on every route but /health and /swagger
                     (env SDX_API_KEY, preferred: a flag is visible in the process list)
  --require-api-key  refuse to start bound to a non-loopback address without an API key
                     (env SDX_REQUIRE_API_KEY=1; the Docker image sets it)
  --allow-no-auth    with --require-api-key, start without an API key anyway (env SDX_ALLOW_NO_AUTH=1)
  --cors-origin LIST comma-separated origins (https://app.example:8080) allowed by CORS (env SDX_CORS_ORIGIN;
                     default: CORS off)
  --allowed-host LIST comma-separated Host names accepted besides 127.0.0.1, localhost and [::1] while
                     bound to loopback (env SDX_ALLOWED_HOST)
  --min-size PX      smallest width/height, a multiple of 8 (env SDX_MIN_SIZE, default ${DEFAULT_LIMITS.sizeMin})
  --max-size PX      largest width/height, a multiple of 8 (env SDX_MAX_SIZE, default ${DEFAULT_LIMITS.sizeMax})
  --max-steps N      most num_steps (env SDX_MAX_STEPS, default ${DEFAULT_LIMITS.stepsMax})
  --max-batch N      most batch_size (env SDX_MAX_BATCH, default ${DEFAULT_LIMITS.batchMax})
  --max-prompt-chars N  longest prompt (env SDX_MAX_PROMPT_CHARS, default ${DEFAULT_LIMITS.promptMaxChars})
  --max-body-bytes N largest request body (env SDX_MAX_BODY_BYTES, default ${DEFAULT_LIMITS.bodyMaxBytes})
  --max-image-pixels N  most pixels of an init image or mask, read from its header before decoding
                     (env SDX_MAX_IMAGE_PIXELS, default ${DEFAULT_LIMITS.imageMaxPixels})
  --attention MODE   how the UNet computes attention (graphs built from checkpoints, ONNX folders' UNets): auto | ${ATTENTION_VARIANTS.join(" | ")}
                     (env SDX_ATTENTION, default auto: fused MultiHeadAttention on every provider)
  --weights MODE     how a float16 checkpoint's weights are held by float32 graphs (the CPU's): auto | ${WEIGHT_RESIDENCIES.join(" | ")};
                     lean keeps most as float16 (half the memory, sessions load in seconds), folded casts all to
                     float32 at load (env SDX_WEIGHTS, default auto: lean on the CPU, folded on GPUs)
  --warm-up MODE     one short generation at the native size after the startup load, so the first request
                     is not slow: ${WARM_UP_MODES.join(" | ")} (env SDX_WARM_UP, default auto: on a GPU only)
  --max-loaded-models N  models kept loaded at once, least recently used unloaded first
                     (env SDX_MAX_LOADED_MODELS, default ${D.maxLoadedModels.gpu} on a GPU, ${D.maxLoadedModels.cpu} on the CPU)
  --concurrency N    generations that run at once (env SDX_CONCURRENCY, default ${D.concurrency})
  --max-queue N      generations that may wait; more get 429 with Retry-After (env SDX_MAX_QUEUE, default ${D.maxQueue})
  --drain-timeout S  on SIGTERM/SIGINT, seconds running and queued generations get to finish
                     (env SDX_DRAIN_TIMEOUT, default ${D.drainTimeoutS})
  --step-timeout S   seconds without a denoising step before /health reports a generation stuck
                     (env SDX_STEP_TIMEOUT, default ${D.stepTimeoutS})
  --no-menu          on a terminal with no --model, start without the model menu (env SDX_NO_MENU=1)
  --help             this text

Model downloads (the startup menu, POST /v1/models/pull, sdx models pull) read HF_ENDPOINT (default
${D.hubEndpoint}) and HF_TOKEN (sent to the hub only, for gated or private repositories).`;

/** The admission and shutdown options: integers from flags, then variables, then defaults. */
function servingOptions(
  values: Record<string, string | boolean | undefined>,
  fromEnv: (name: string) => string | undefined,
): Pick<ServerConfig, "concurrency" | "maxQueue" | "drainTimeoutMs" | "stepTimeoutMs" | "maxLoadedModels"> {
  const integer = (flag: string, variable: string, fallback: number, min: number): number => {
    const value = values[flag];
    const text = (typeof value === "string" ? value : undefined) ?? fromEnv(variable) ?? String(fallback);
    if (!/^\d+$/.test(text) || Number(text) < min) {
      throw new ConfigError(`--${flag} must be an integer of at least ${min}; got "${text}"`);
    }
    return Number(text);
  };
  const maxLoaded = values["max-loaded-models"] ?? fromEnv("SDX_MAX_LOADED_MODELS");
  return {
    maxLoadedModels:
      maxLoaded === undefined ? undefined : integer("max-loaded-models", "SDX_MAX_LOADED_MODELS", 1, 1),
    concurrency: integer("concurrency", "SDX_CONCURRENCY", D.concurrency, 1),
    maxQueue: integer("max-queue", "SDX_MAX_QUEUE", D.maxQueue, 0),
    drainTimeoutMs: integer("drain-timeout", "SDX_DRAIN_TIMEOUT", D.drainTimeoutS, 0) * 1000,
    stepTimeoutMs: integer("step-timeout", "SDX_STEP_TIMEOUT", D.stepTimeoutS, 1) * 1000,
  };
}

export function readServerConfig(
  argv: string[],
  env: Record<string, string | undefined>,
): ServerConfig | "help" {
  let values: ReturnType<typeof parse>["values"];
  try {
    values = parse(argv).values;
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  if (values.help) return "help";
  // An empty variable counts as unset, as shells and container runtimes often pass them.
  const fromEnv = (name: string) => env[name] || undefined;
  const portText = values.port ?? fromEnv("SDX_PORT") ?? String(D.port);
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) {
    throw new ConfigError(`--port must be an integer from 0 (any free port) to 65535; got "${portText}"`);
  }
  const provider = values.provider ?? fromEnv("SDX_PROVIDER") ?? "auto";
  if (!PROVIDER_CHOICES.includes(provider as ProviderChoice)) {
    throw new ConfigError(`--provider must be one of ${PROVIDER_CHOICES.join(", ")}; got "${provider}"`);
  }
  const model = values.model ?? fromEnv("SDX_MODEL");
  const attention = values.attention ?? fromEnv("SDX_ATTENTION") ?? "auto";
  if (attention !== "auto" && !isAttentionVariant(attention)) {
    throw new ConfigError(
      `--attention must be one of auto, ${ATTENTION_VARIANTS.join(", ")}; got "${attention}"`,
    );
  }
  const residency = values.weights ?? fromEnv("SDX_WEIGHTS") ?? "auto";
  if (residency !== "auto" && !WEIGHT_RESIDENCIES.includes(residency as WeightResidency)) {
    throw new ConfigError(
      `--weights must be one of auto, ${WEIGHT_RESIDENCIES.join(", ")}; got "${residency}"`,
    );
  }
  const warmUp = values["warm-up"] ?? fromEnv("SDX_WARM_UP") ?? "auto";
  if (!WARM_UP_MODES.includes(warmUp as WarmUpMode)) {
    throw new ConfigError(`--warm-up must be one of ${WARM_UP_MODES.join(", ")}; got "${warmUp}"`);
  }
  const limits: Partial<Limits> = {};
  for (const [flag, variable, key] of LIMIT_FLAGS) {
    const text = values[flag] ?? fromEnv(variable);
    if (text === undefined) continue;
    if (!/^\d+$/.test(text)) throw new ConfigError(`--${flag} must be a positive integer; got "${text}"`);
    limits[key] = Number(text);
  }
  let security: Pick<ServerConfig, "corsOrigins" | "limits">;
  try {
    security = {
      corsOrigins: commaList(values["cors-origin"] ?? fromEnv("SDX_CORS_ORIGIN")).map(normalizeOrigin),
      limits: resolveLimits(limits),
    };
  } catch (e) {
    if (e instanceof SettingError || e instanceof TypeError) throw new ConfigError((e as Error).message);
    throw e;
  }
  const serving = servingOptions(values, fromEnv);
  const adapterFolders: Partial<Record<AdapterKind, string>> = {};
  for (const [flag, variable, kind] of ADAPTER_FOLDER_FLAGS) {
    const dir = values[flag] ?? fromEnv(variable);
    if (dir !== undefined) adapterFolders[kind] = dir;
  }
  return {
    ...serving,
    modelsDir: values["models-dir"] ?? fromEnv("SDX_MODELS_DIR") ?? D.modelsDir,
    adapterFolders,
    model,
    warmUp: warmUp as WarmUpMode,
    attention: attention === "auto" ? undefined : attention,
    residency: residency === "auto" ? undefined : (residency as WeightResidency),
    host: values.host ?? fromEnv("SDX_HOST") ?? D.host,
    port,
    provider: provider as ProviderChoice,
    apiKey: values["api-key"] ?? fromEnv("SDX_API_KEY"),
    requireApiKey: values["require-api-key"] ?? envSwitch("SDX_REQUIRE_API_KEY", fromEnv),
    allowNoAuth: values["allow-no-auth"] ?? envSwitch("SDX_ALLOW_NO_AUTH", fromEnv),
    allowedHosts: commaList(values["allowed-host"] ?? fromEnv("SDX_ALLOWED_HOST")),
    menu: !(values["no-menu"] ?? envSwitch("SDX_NO_MENU", fromEnv)),
    hubEndpoint: hubEndpoint(fromEnv("HF_ENDPOINT")),
    hfToken: fromEnv("HF_TOKEN"),
    ...security,
  };
}

/** HF_ENDPOINT without its trailing slash; an http(s) URL. */
function hubEndpoint(text: string | undefined): string {
  const value = (text ?? D.hubEndpoint).trim().replace(/\/+$/, "");
  if (!/^https?:\/\/[^/]/.test(value) || !URL.canParse(value)) {
    throw new ConfigError(`HF_ENDPOINT must be an http(s) URL such as https://huggingface.co; got "${text}"`);
  }
  return value;
}

/** An on/off variable: 1/true/yes/on or 0/false/no/off (unset: off). */
function envSwitch(variable: string, fromEnv: (name: string) => string | undefined): boolean {
  const text = fromEnv(variable)?.trim().toLowerCase();
  if (text === undefined || ["0", "false", "no", "off"].includes(text)) return false;
  if (["1", "true", "yes", "on"].includes(text)) return true;
  throw new ConfigError(
    `${variable} must be 1 or 0 (true/false, yes/no, on/off); got "${fromEnv(variable)}"`,
  );
}

/**
 * Why the server must not start, or null: with --require-api-key (SDX_REQUIRE_API_KEY=1), binding an address
 * other machines can reach without an API key is refused unless SDX_ALLOW_NO_AUTH=1 says it is meant.
 */
export function unauthenticatedBindRefusal(
  config: Pick<ServerConfig, "host" | "apiKey" | "requireApiKey" | "allowNoAuth">,
): string | null {
  if (!config.requireApiKey || config.apiKey || config.allowNoAuth || isLoopbackAddress(config.host)) {
    return null;
  }
  return (
    `refusing to bind ${config.host} without an API key: SDX_REQUIRE_API_KEY (--require-api-key) is set and ` +
    "other machines can reach this address. Set SDX_API_KEY to a secret (clients then send " +
    "Authorization: Bearer <key>), or set SDX_ALLOW_NO_AUTH=1 to serve without authentication anyway."
  );
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      "models-dir": { type: "string" },
      "loras-dir": { type: "string" },
      "embeddings-dir": { type: "string" },
      "vae-dir": { type: "string" },
      "vae-approx-dir": { type: "string" },
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      provider: { type: "string" },
      "api-key": { type: "string" },
      "require-api-key": { type: "boolean" },
      "allow-no-auth": { type: "boolean" },
      "cors-origin": { type: "string" },
      "allowed-host": { type: "string" },
      "min-size": { type: "string" },
      "max-size": { type: "string" },
      "max-steps": { type: "string" },
      "max-batch": { type: "string" },
      "max-prompt-chars": { type: "string" },
      "max-body-bytes": { type: "string" },
      "max-image-pixels": { type: "string" },
      "max-loaded-models": { type: "string" },
      "warm-up": { type: "string" },
      attention: { type: "string" },
      weights: { type: "string" },
      concurrency: { type: "string" },
      "max-queue": { type: "string" },
      "drain-timeout": { type: "string" },
      "step-timeout": { type: "string" },
      "no-menu": { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
}
