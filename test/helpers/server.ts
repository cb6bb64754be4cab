/** Starts the real server (`bun api/index.ts`) on a free loopback port and stops it after the tests. */

import { join } from "node:path";
import type { Subprocess } from "bun";
import { REPO_ROOT } from "./fixtures.ts";

export interface RunningServer {
  url: string;
  process: Subprocess<"ignore", "pipe", "pipe">;
  output: () => string;
  stop: () => Promise<void>;
}

export async function startServer(
  args: string[],
  options: { waitForReady?: boolean; env?: Record<string, string> } = {},
): Promise<RunningServer> {
  const proc = Bun.spawn(
    ["bun", join(REPO_ROOT, "api/index.ts"), "--host", "127.0.0.1", "--port", "0", ...args],
    {
      cwd: REPO_ROOT,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: {
        ...process.env,
        SDX_MODEL: "",
        SDX_MODELS_DIR: "",
        SDX_PORT: "",
        SDX_HOST: "",
        SDX_API_KEY: "",
        SDX_LORAS_DIR: "",
        SDX_EMBEDDINGS_DIR: "",
        SDX_VAE_DIR: "",
        SDX_VAE_APPROX_DIR: "",
        ...options.env,
      },
    },
  );
  let text = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk);
  };
  void pump(proc.stdout);
  void pump(proc.stderr);
  const deadline = Date.now() + 30_000;
  let url: string | undefined;
  while (!url) {
    const match = /listening on (http:\/\/[\d.]+:\d+)/.exec(text);
    if (match?.[1]) url = match[1];
    else if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}:\n${text}`);
    else if (Date.now() > deadline) throw new Error(`server did not start:\n${text}`);
    else await Bun.sleep(25);
  }
  if (options.waitForReady !== false) {
    while (true) {
      const health = (await (await fetch(`${url}/health`)).json()) as { status: string };
      if (health.status !== "loading") break;
      if (Date.now() > deadline) throw new Error(`model did not load:\n${text}`);
      await Bun.sleep(50);
    }
  }
  return {
    url,
    process: proc,
    output: () => text,
    stop: async () => {
      proc.kill();
      await proc.exited;
    },
  };
}
