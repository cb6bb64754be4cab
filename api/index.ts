/** `bun api/index.ts`: the only place that reads the process's arguments and listens. */
import { resolve } from "node:path";
import { createApp } from "./app.ts";
import { ConfigError, readServerConfig, SERVER_USAGE, unauthenticatedBindRefusal } from "./config.ts";
import { ModelHost, ModelNotFoundError } from "./engine/model_host.ts";
import { chooseProvider } from "./engine/onnx/runtime.ts";
import { isLoopbackAddress } from "./security/service.ts";
import { MenuCancelled, startupMenu } from "./startup/menu.ts";

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
  const refusal = unauthenticatedBindRefusal(config);
  if (refusal) {
    console.error(`sdx: ${refusal}`);
    return 2;
  }
  if (!isLoopbackAddress(config.host) && !config.apiKey) {
    console.warn(
      `sdx: WARNING: binding ${config.host}, which other machines can reach, without an API key: anyone on the network can use this server. Set --api-key or SDX_API_KEY, or bind 127.0.0.1.`,
    );
  }
  const chosen = await chooseProvider(config.provider);
  const { provider } = chosen;
  for (const f of chosen.fallbacks)
    console.log(`sdx: execution provider ${f.provider} passed over: ${f.reason}`);
  console.log(`sdx: execution provider ${provider} (${chosen.reason})`);
  if (chosen.float16Note) console.log(`sdx: webgpu: ${chosen.float16Note}`);
  // On a terminal with no --model: the startup menu (local models and the online catalog, downloaded on choice).
  if (config.menu && config.model === undefined && process.stdin.isTTY && process.stdout.isTTY) {
    try {
      const hub = { endpoint: config.hubEndpoint, token: config.hfToken };
      config.model = (await startupMenu({ modelsDir: resolve(config.modelsDir), hub })) ?? undefined;
    } catch (e) {
      if (!(e instanceof MenuCancelled)) throw e;
      return 130;
    }
  }
  const host = new ModelHost({
    modelsDir: resolve(config.modelsDir),
    adapterFolders: Object.fromEntries(
      Object.entries(config.adapterFolders).map(([kind, dir]) => [kind, resolve(dir)]),
    ),
    provider,
    float16: chosen.float16,
    float16Note: chosen.float16Note,
    providerFallbacks: chosen.fallbacks,
    model: config.model,
    warmUp: config.warmUp,
    ...(config.attention ? { attention: config.attention } : {}),
    ...(config.residency ? { residency: config.residency } : {}),
    ...(config.maxLoadedModels !== undefined ? { maxLoadedModels: config.maxLoadedModels } : {}),
    concurrency: config.concurrency,
    maxQueue: config.maxQueue,
    stepTimeoutMs: config.stepTimeoutMs,
    log: (line) => console.log(line),
  });
  let entry: Awaited<ReturnType<ModelHost["choose"]>>;
  try {
    entry = await host.choose();
  } catch (e) {
    if (!(e instanceof ModelNotFoundError)) throw e;
    console.error(`sdx: ${e.message}`);
    return 2;
  }
  const app = createApp(host, {
    limits: config.limits,
    security: {
      apiKey: config.apiKey,
      corsOrigins: config.corsOrigins,
      allowedHosts: config.allowedHosts,
      bindHost: config.host,
    },
    hub: { endpoint: config.hubEndpoint, token: config.hfToken },
  }).listen({
    hostname: config.host,
    port: config.port,
    // The app answers oversized bodies with a JSON 413 (counting chunked ones as they arrive); Bun's own
    // limit is only a backstop.
    maxRequestBodySize: 2 * config.limits.bodyMaxBytes,
    // Generations can take minutes on CPU: Bun's idle timeout must never cut a waiting client.
    idleTimeout: 0,
  });
  const url = `http://${config.host}:${app.server?.port ?? config.port}`;
  console.log(`sdx listening on ${url} (Swagger UI: ${url}/swagger)`);
  drainOnSignals(host, app, config.drainTimeoutMs);
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

/**
 * SIGTERM/SIGINT: /health turns "draining" (503), new generations get 503, running and queued ones finish
 * (up to `drainTimeoutMs`), then the server stops and the process exits 0. A second signal exits at once.
 */
function drainOnSignals(
  host: ModelHost,
  app: { stop(closeActive?: boolean): Promise<unknown> },
  drainTimeoutMs: number,
) {
  let draining = false;
  const onSignal = async (signal: string) => {
    if (draining) {
      console.log(`sdx: ${signal} again; exiting now`);
      process.exit(1);
    }
    draining = true;
    const { running, queued } = host.admission;
    console.log(
      `sdx: ${signal}: draining (${running} running, ${queued} queued; up to ${drainTimeoutMs / 1000} s)`,
    );
    host.admission.drain();
    const finished = await Promise.race([
      host.admission.idle().then(() => true),
      Bun.sleep(drainTimeoutMs).then(() => false),
    ]);
    console.log(finished ? "sdx: drained; exiting" : "sdx: drain timeout; exiting with work unfinished");
    // Let the last answers leave before the listener closes.
    await Promise.race([app.stop(false), Bun.sleep(2000)]);
    host.close();
    process.exit(0);
  };
  process.on("SIGTERM", () => void onSignal("SIGTERM"));
  process.on("SIGINT", () => void onSignal("SIGINT"));
}

const code = await main();
if (code !== null) process.exit(code);
