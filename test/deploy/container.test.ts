/**
 * What the Docker image relies on, with real processes: SDX_REQUIRE_API_KEY=1 (set by Dockerfile.cuda with
 * SDX_HOST=0.0.0.0) refuses to start without an API key unless SDX_ALLOW_NO_AUTH=1, and
 * scripts/healthcheck.ts (the image's HEALTHCHECK and the k8s readiness probe) reads /health.
 */
import { describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readServerConfig, unauthenticatedBindRefusal } from "../../api/config.ts";
import { MODELS_DIR, REPO_ROOT } from "../helpers/fixtures.ts";
import { startServer } from "../helpers/server.ts";

/** Runs `bun api/index.ts` with only these SDX_* variables; resolves when it exits or starts listening. */
async function launch(env: Record<string, string>, args: string[] = []) {
  const proc = Bun.spawn(["bun", join(REPO_ROOT, "api/index.ts"), ...args], {
    cwd: REPO_ROOT,
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: {
      ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SDX_"))),
      SDX_PORT: "0",
      SDX_MODELS_DIR: MODELS_DIR,
      ...env,
    },
  });
  let output = "";
  const decoder = new TextDecoder();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) output += decoder.decode(chunk);
  };
  const pumped = Promise.all([pump(proc.stdout), pump(proc.stderr)]);
  const deadline = Date.now() + 30_000;
  while (proc.exitCode === null && !/listening on http:\/\/\S+:\d+/.test(output)) {
    if (Date.now() > deadline) break;
    await Bun.sleep(20);
  }
  const listening = /listening on (http:\/\/\S+:\d+)/.exec(output)?.[1] ?? null;
  if (listening) {
    proc.kill();
    await proc.exited;
  } else await pumped;
  return { exitCode: proc.exitCode, listening, output };
}

const MESSAGE = /refusing to bind 0\.0\.0\.0 without an API key.*SDX_API_KEY.*SDX_ALLOW_NO_AUTH=1/s;

describe("SDX_REQUIRE_API_KEY (the Docker image's setting)", () => {
  test("binding 0.0.0.0 without a key: exit 2 naming SDX_API_KEY and SDX_ALLOW_NO_AUTH, nothing listens", async () => {
    const run = await launch({ SDX_HOST: "0.0.0.0", SDX_REQUIRE_API_KEY: "1" });
    expect(run).toMatchObject({ exitCode: 2, listening: null });
    expect(run.output).toMatch(MESSAGE);
    // The same with the flags.
    const flags = await launch({}, ["--host", "0.0.0.0", "--require-api-key"]);
    expect(flags).toMatchObject({ exitCode: 2, listening: null });
    expect(flags.output).toMatch(MESSAGE);
  }, 60_000);

  test("it starts with a key, with SDX_ALLOW_NO_AUTH=1 (warning), or on loopback", async () => {
    const keyed = await launch({ SDX_HOST: "0.0.0.0", SDX_REQUIRE_API_KEY: "1", SDX_API_KEY: "s3cret" });
    expect(keyed.listening).toStartWith("http://0.0.0.0:");
    const allowed = await launch({ SDX_HOST: "0.0.0.0", SDX_REQUIRE_API_KEY: "1", SDX_ALLOW_NO_AUTH: "1" });
    expect(allowed.listening).toStartWith("http://0.0.0.0:");
    expect(allowed.output).toContain("WARNING: binding 0.0.0.0");
    const loopback = await launch({ SDX_HOST: "127.0.0.1", SDX_REQUIRE_API_KEY: "1" });
    expect(loopback.listening).toStartWith("http://127.0.0.1:");
  }, 60_000);

  test("a value that is not on or off is a usage error", async () => {
    const run = await launch({ SDX_HOST: "127.0.0.1", SDX_REQUIRE_API_KEY: "maybe" });
    expect(run.exitCode).toBe(2);
    expect(run.output).toContain(
      'SDX_REQUIRE_API_KEY must be 1 or 0 (true/false, yes/no, on/off); got "maybe"',
    );
  }, 30_000);

  test("the settings as read", () => {
    const read = (env: Record<string, string>, argv: string[] = []) => {
      const config = readServerConfig(argv, env);
      if (config === "help") throw new Error("help");
      return config;
    };
    expect(read({})).toMatchObject({ requireApiKey: false, allowNoAuth: false });
    expect(read({ SDX_REQUIRE_API_KEY: "true", SDX_ALLOW_NO_AUTH: "0" })).toMatchObject({
      requireApiKey: true,
      allowNoAuth: false,
    });
    expect(read({}, ["--require-api-key", "--allow-no-auth"])).toMatchObject({
      requireApiKey: true,
      allowNoAuth: true,
    });
    const base = { host: "0.0.0.0", apiKey: undefined, requireApiKey: true, allowNoAuth: false };
    expect(unauthenticatedBindRefusal(base)).toMatch(MESSAGE);
    expect(unauthenticatedBindRefusal({ ...base, host: "::" })).toContain("refusing to bind ::");
    expect(unauthenticatedBindRefusal({ ...base, host: "localhost" })).toBeNull();
    expect(unauthenticatedBindRefusal({ ...base, requireApiKey: false })).toBeNull();
  });
});

describe("scripts/healthcheck.ts", () => {
  const check = (args: string[], env: Record<string, string> = {}) =>
    Bun.spawnSync(["bun", join(REPO_ROOT, "scripts/healthcheck.ts"), ...args], {
      env: { ...process.env, ...env },
    });

  test("healthy and ready with a model; 503 while draining fails both", async () => {
    const server = await startServer(["--models-dir", MODELS_DIR]);
    try {
      expect(check([`${server.url}/health`]).exitCode).toBe(0);
      expect(check(["--ready", `${server.url}/health`]).exitCode).toBe(0);
      // The default URL: 127.0.0.1 on SDX_PORT, as in the image.
      expect(check([], { SDX_PORT: new URL(server.url).port }).exitCode).toBe(0);
      // Draining: a generation keeps the server up after SIGTERM.
      const running = fetch(`${server.url}/v1/generate`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "a cat", width: 256, height: 256, num_steps: 6, seed: 1 }),
      });
      const queue = async () =>
        ((await (await fetch(`${server.url}/health`)).json()) as { queue: { running: number } }).queue;
      while ((await queue()).running === 0) await Bun.sleep(20);
      server.process.kill("SIGTERM");
      while ((await fetch(`${server.url}/health`)).status !== 503) await Bun.sleep(20);
      const draining = check([`${server.url}/health`]);
      expect(draining.exitCode).toBe(1);
      expect(draining.stderr.toString()).toContain("503 draining");
      expect(check(["--ready", `${server.url}/health`]).exitCode).toBe(1);
      expect((await running).status).toBe(200);
      expect(await server.process.exited).toBe(0);
    } finally {
      await server.stop();
    }
  }, 60_000);

  test("with no model: healthy but not ready; nothing listening: unhealthy", async () => {
    const empty = await mkdtemp(join(tmpdir(), "sdx-no-models-"));
    const server = await startServer(["--models-dir", empty]);
    try {
      expect(check([`${server.url}/health`]).exitCode).toBe(0);
      const ready = check(["--ready", `${server.url}/health`]);
      expect(ready.exitCode).toBe(1);
      expect(ready.stderr.toString()).toContain("200 no_model");
    } finally {
      await server.stop();
      await rm(empty, { recursive: true, force: true });
    }
    const down = check([`${server.url}/health`]);
    expect(down.exitCode).toBe(1);
  }, 60_000);
});
