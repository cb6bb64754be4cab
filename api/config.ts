/** Server options from flags, then SDX_* environment variables, then defaults. */
import { parseArgs } from "node:util";
import { PROVIDER_CHOICES, type ProviderChoice } from "./engine/onnx/runtime.ts";
import { DEFAULT_LIMITS, type Limits } from "./security/model.ts";
import { commaList, normalizeOrigin, resolveLimits, SettingError } from "./security/service.ts";

export interface ServerConfig {
  modelsDir: string;
  model: string | undefined;
  host: string;
  port: number;
  provider: ProviderChoice;
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
  corsOrigins: string[];
  allowedHosts: string[];
  limits: Limits;
}

/** The limit flags, their variables and the Limits key each sets. */
const LIMIT_FLAGS = [
  ["min-size", "SDX_MIN_SIZE", "sizeMin"],
  ["max-size", "SDX_MAX_SIZE", "sizeMax"],
  ["max-steps", "SDX_MAX_STEPS", "stepsMax"],
  ["max-batch", "SDX_MAX_BATCH", "batchMax"],
  ["max-prompt-chars", "SDX_MAX_PROMPT_CHARS", "promptMaxChars"],
  ["max-body-bytes", "SDX_MAX_BODY_BYTES", "bodyMaxBytes"],
] as const;

export class ConfigError extends Error {
  override name = "ConfigError";
}

export const SERVER_USAGE = `Usage: bun api/index.ts [options]

  --models-dir DIR   models directory (env SDX_MODELS_DIR, default models/)
  --model NAME       model folder to serve (env SDX_MODEL; default: the only model there)
  --host HOST        address to bind (env SDX_HOST, default 127.0.0.1)
  --port PORT        port (env SDX_PORT, default 8001)
  --provider NAME    execution provider: ${PROVIDER_CHOICES.join(" | ")} (env SDX_PROVIDER, default auto:
                     CUDA when an NVIDIA GPU and onnxruntime's CUDA libraries are there, else CPU)
  --api-key KEY      require Authorization: Bearer KEY on every route but /health and /swagger
                     (env SDX_API_KEY, preferred: a flag is visible in the process list)
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
  --concurrency N    generations that run at once (env SDX_CONCURRENCY, default 1)
  --max-queue N      generations that may wait; more get 429 with Retry-After (env SDX_MAX_QUEUE, default 16)
  --drain-timeout S  on SIGTERM/SIGINT, seconds running and queued generations get to finish
                     (env SDX_DRAIN_TIMEOUT, default 60)
  --step-timeout S   seconds without a denoising step before /health reports a generation stuck
                     (env SDX_STEP_TIMEOUT, default 120)
  --help             this text`;

/** The admission and shutdown options: integers from flags, then variables, then defaults. */
function servingOptions(
  values: Record<string, string | boolean | undefined>,
  fromEnv: (name: string) => string | undefined,
): Pick<ServerConfig, "concurrency" | "maxQueue" | "drainTimeoutMs" | "stepTimeoutMs"> {
  const integer = (flag: string, variable: string, fallback: number, min: number): number => {
    const value = values[flag];
    const text = (typeof value === "string" ? value : undefined) ?? fromEnv(variable) ?? String(fallback);
    if (!/^\d+$/.test(text) || Number(text) < min) {
      throw new ConfigError(`--${flag} must be an integer of at least ${min}; got "${text}"`);
    }
    return Number(text);
  };
  return {
    concurrency: integer("concurrency", "SDX_CONCURRENCY", 1, 1),
    maxQueue: integer("max-queue", "SDX_MAX_QUEUE", 16, 0),
    drainTimeoutMs: integer("drain-timeout", "SDX_DRAIN_TIMEOUT", 60, 0) * 1000,
    stepTimeoutMs: integer("step-timeout", "SDX_STEP_TIMEOUT", 120, 1) * 1000,
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
  const portText = values.port ?? fromEnv("SDX_PORT") ?? "8001";
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) {
    throw new ConfigError(`--port must be an integer from 0 (any free port) to 65535; got "${portText}"`);
  }
  const provider = values.provider ?? fromEnv("SDX_PROVIDER") ?? "auto";
  if (!PROVIDER_CHOICES.includes(provider as ProviderChoice)) {
    throw new ConfigError(`--provider must be one of ${PROVIDER_CHOICES.join(", ")}; got "${provider}"`);
  }
  const model = values.model ?? fromEnv("SDX_MODEL");
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
  return {
    ...serving,
    modelsDir: values["models-dir"] ?? fromEnv("SDX_MODELS_DIR") ?? "models",
    model,
    host: values.host ?? fromEnv("SDX_HOST") ?? "127.0.0.1",
    port,
    provider: provider as ProviderChoice,
    apiKey: values["api-key"] ?? fromEnv("SDX_API_KEY"),
    allowedHosts: commaList(values["allowed-host"] ?? fromEnv("SDX_ALLOWED_HOST")),
    ...security,
  };
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    options: {
      "models-dir": { type: "string" },
      model: { type: "string" },
      host: { type: "string" },
      port: { type: "string" },
      provider: { type: "string" },
      "api-key": { type: "string" },
      "cors-origin": { type: "string" },
      "allowed-host": { type: "string" },
      "min-size": { type: "string" },
      "max-size": { type: "string" },
      "max-steps": { type: "string" },
      "max-batch": { type: "string" },
      "max-prompt-chars": { type: "string" },
      "max-body-bytes": { type: "string" },
      concurrency: { type: "string" },
      "max-queue": { type: "string" },
      "drain-timeout": { type: "string" },
      "step-timeout": { type: "string" },
      help: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
}
