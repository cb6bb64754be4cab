/** `bun api/index.ts`: the only place that reads the process's arguments and listens. */
import { resolve } from "node:path";
import { createApp, MAX_BODY_BYTES } from "./app.ts";
import { ConfigError, readServerConfig, SERVER_USAGE } from "./config.ts";
import { ModelHost, ModelNotFoundError } from "./engine/model_host.ts";
import { chooseProvider } from "./engine/onnx/runtime.ts";

async function main(): Promise<number | null> {
  let config: ReturnType<typeof readServerConfig>;
  try {
    config = readServerConfig(process.argv.slice(2), process.env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    console.error(`sdx: ${e.message}\n\n${SERVER_USAGE}`);
    return 2;
  }
  if (config === "help") {
    console.log(SERVER_USAGE);
    return 0;
  }
  const { provider, reason } = chooseProvider(config.provider);
  console.log(`sdx: execution provider ${provider} (${reason})`);
  const host = new ModelHost({ modelsDir: resolve(config.modelsDir), provider, model: config.model });
  let entry: Awaited<ReturnType<ModelHost["choose"]>>;
  try {
    entry = await host.choose();
  } catch (e) {
    if (!(e instanceof ModelNotFoundError)) throw e;
    console.error(`sdx: ${e.message}`);
    return 2;
  }
  const app = createApp(host).listen({
    hostname: config.host,
    port: config.port,
    // The app answers oversized bodies with a JSON 413; Bun's own limit stops bodies sent without a length.
    maxRequestBodySize: 2 * MAX_BODY_BYTES,
    // Generations can take minutes on CPU: Bun's idle timeout must never cut a waiting client.
    idleTimeout: 0,
  });
  const url = `http://${config.host}:${app.server?.port ?? config.port}`;
  console.log(`sdx listening on ${url} (Swagger UI: ${url}/swagger)`);
  // The server answers while the model loads; /health says "loading" until it is ready.
  if (entry) await host.load(entry);
  const state = host.state;
  console.log(
    state.status === "ready"
      ? `sdx: serving ${state.entry.name} on ${host.provider}`
      : `sdx: ${state.message}`,
  );
  return null;
}

const code = await main();
if (code !== null) process.exit(code);
