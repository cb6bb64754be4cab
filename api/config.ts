/** Server options from flags, then SDX_* environment variables, then defaults. */
import { parseArgs } from "node:util";
import { PROVIDER_CHOICES, type ProviderChoice } from "./engine/onnx/runtime.ts";

export interface ServerConfig {
  modelsDir: string;
  model: string | undefined;
  host: string;
  port: number;
  provider: ProviderChoice;
}

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
  --help             this text`;

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
  return {
    modelsDir: values["models-dir"] ?? fromEnv("SDX_MODELS_DIR") ?? "models",
    model,
    host: values.host ?? fromEnv("SDX_HOST") ?? "127.0.0.1",
    port,
    provider: provider as ProviderChoice,
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
      help: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
}
