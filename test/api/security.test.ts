/**
 * Exposure safety: bearer auth (deny by default, /health and /swagger open), CORS off unless origins are
 * listed, the DNS-rebinding guard on loopback binds, configurable limits, and the startup warning when
 * binding a reachable address without a key. Real servers on loopback where the network matters.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { readServerConfig } from "../../api/config.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import {
  bearerToken,
  createKeyCheck,
  hostIsAllowed,
  isLoopbackAddress,
  isPublicPath,
  requestPath,
  resolveLimits,
} from "../../api/security/service.ts";
import { DEFAULT_LIMITS } from "../../contract/index.ts";
import { createSdxClient, SdxError } from "../../sdk/index.ts";
import { REPO_ROOT } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const KEY = "s3cret-key-for-tests";

/** Every protected route with a request that would otherwise be answered (some with 4xx/503: no model). */
const PROTECTED: { method: string; path: string; body?: unknown }[] = [
  { method: "GET", path: "/v1/models" },
  { method: "GET", path: "/v1/schedulers" },
  { method: "POST", path: "/v1/tokenize", body: { prompt: "a cat" } },
  { method: "POST", path: "/v1/generate", body: { prompt: "a cat", width: 64, height: 64, num_steps: 1 } },
  { method: "GET", path: "/metrics" },
  { method: "GET", path: "/v1/not-a-route" },
];

function init(method: string, body: unknown, headers: Record<string, string> = {}): RequestInit {
  return body === undefined
    ? { method, headers }
    : { method, headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) };
}

function expectErrorShape(value: unknown, status: number, code: string): void {
  expect(value).toMatchObject({ status, code });
  expect(typeof (value as { message: unknown }).message).toBe("string");
}

describe("pure logic", () => {
  test("bearer tokens are compared whole, scheme case-insensitively", () => {
    const check = createKeyCheck(KEY);
    expect(check(`Bearer ${KEY}`)).toBe(true);
    expect(check(`bearer ${KEY}`)).toBe(true);
    expect(check(`Bearer ${KEY}x`)).toBe(false);
    expect(check(`Bearer ${KEY.slice(0, -1)}`)).toBe(false);
    expect(check(`Basic ${KEY}`)).toBe(false);
    expect(check("Bearer ")).toBe(false);
    expect(check(null)).toBe(false);
    expect(createKeyCheck("")("Bearer ")).toBe(false);
    expect(bearerToken("Bearer a b")).toBeNull();
  });

  test("only the page, /health, /swagger, /swagger/json and their static files are public", () => {
    for (const p of [
      "/",
      "/health",
      "/swagger",
      "/swagger/json",
      "/swagger/assets/swagger-ui.css",
      "/web/app.js",
      "/web/eventsource-parser/parse.js",
    ]) {
      expect(isPublicPath(p)).toBe(true);
    }
    for (const p of [
      "//",
      "/index.html",
      "/health/",
      "/healthz",
      "/v1/models",
      "/swagger/assets/../x",
      "/swagger/assets/a/b",
      "/web/",
      "/web/a/b",
      "/web/../v1/models",
      "/web/eventsource-parser/../../v1/models",
      "/metrics",
    ]) {
      expect(isPublicPath(p)).toBe(false);
    }
    expect(requestPath("http://h:1/health?x=/v1")).toBe("/health");
    expect(requestPath("http://h/swagger/assets/%2e%2e/v1")).toBe("/swagger/assets/%2e%2e/v1");
  });

  test("the Host guard accepts loopback names with any port and configured names only", () => {
    const none = new Set<string>();
    for (const h of ["127.0.0.1", "127.0.0.1:8001", "localhost", "LOCALHOST:1", "[::1]", "[::1]:8001"]) {
      expect(hostIsAllowed(h, null, none, none).ok).toBe(true);
    }
    for (const h of [
      "evil.example",
      "evil.example:8001",
      "127.0.0.1.evil.example",
      "localhost.evil",
      "",
      "a b",
    ]) {
      expect(hostIsAllowed(h, null, none, none).ok).toBe(false);
    }
    expect(hostIsAllowed("sdx.lan:8001", null, new Set(["sdx.lan"]), none).ok).toBe(true);
    expect(hostIsAllowed("localhost", "http://evil.example", none, none)).toEqual({
      ok: false,
      header: "Origin",
    });
    expect(hostIsAllowed("localhost", "null", none, none).ok).toBe(false);
    expect(hostIsAllowed("localhost", "http://localhost:3000", none, none).ok).toBe(true);
    expect(hostIsAllowed("localhost", "https://app.example", none, new Set(["https://app.example"])).ok).toBe(
      true,
    );
    expect(isLoopbackAddress("127.0.0.1")).toBe(true);
    expect(isLoopbackAddress("::1")).toBe(true);
    expect(isLoopbackAddress("0.0.0.0")).toBe(false);
  });

  test("limits are checked", () => {
    expect(resolveLimits({})).toMatchObject({ sizeMin: 64, sizeMax: 2048, stepsMax: 150, batchMax: 16 });
    expect(() => resolveLimits({ sizeMax: 100 })).toThrow(/multiple of 8/);
    expect(() => resolveLimits({ sizeMin: 512, sizeMax: 256 })).toThrow(/larger/);
    expect(() => resolveLimits({ stepsMax: 0 })).toThrow(/positive/);
  });

  test("flags and SDX_* variables set keys, CORS, hosts and limits", () => {
    const config = readServerConfig(
      ["--cors-origin", "https://a.example, http://b.example:8080", "--max-steps", "20"],
      {
        SDX_API_KEY: "k",
        SDX_ALLOWED_HOST: "sdx.lan",
        SDX_MAX_BODY_BYTES: "2048",
      },
    );
    if (config === "help") throw new Error("unexpected help");
    expect(config.apiKey).toBe("k");
    expect(config.corsOrigins).toEqual(["https://a.example", "http://b.example:8080"]);
    expect(config.allowedHosts).toEqual(["sdx.lan"]);
    expect(config.limits).toMatchObject({ stepsMax: 20, bodyMaxBytes: 2048, batchMax: 16 });
    expect(() => readServerConfig(["--cors-origin", "*"], {})).toThrow();
    expect(() => readServerConfig(["--max-size", "1004"], {})).toThrow(/multiple of 8/);
    expect(() => readServerConfig(["--max-batch", "-1"], {})).toThrow();
  });
});

describe("in process", () => {
  const host = new ModelHost({ modelsDir: "/nonexistent", provider: "cpu" });

  test("without a key nothing needs auth and CORS is off", async () => {
    const app = createApp(host);
    const res = await app.handle(
      new Request("http://localhost/v1/models", { headers: { origin: "http://localhost:3000" } }),
    );
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBeNull();
    const pre = await app.handle(
      new Request("http://localhost/v1/generate", {
        method: "OPTIONS",
        headers: { origin: "http://localhost:3000", "access-control-request-method": "POST" },
      }),
    );
    expect(pre.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("listed origins get exactly their origin, no credentials; others nothing; preflight answered", async () => {
    const app = createApp(host, { security: { corsOrigins: ["https://app.example"] } });
    const ok = await app.handle(
      new Request("http://localhost/v1/models", { headers: { origin: "https://app.example" } }),
    );
    expect(ok.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(ok.headers.get("access-control-allow-credentials")).toBeNull();
    expect(ok.headers.get("vary")).toContain("Origin");
    const invalid = await app.handle(
      new Request("http://localhost/v1/generate", {
        ...init("POST", { prompt: 1 }),
        headers: { "content-type": "application/json", origin: "https://app.example" },
      }),
    );
    expect(invalid.status).toBe(422);
    expect(invalid.headers.get("access-control-allow-origin")).toBe("https://app.example");
    const pre = await app.handle(
      new Request("http://localhost/v1/generate", {
        method: "OPTIONS",
        headers: {
          origin: "https://app.example",
          "access-control-request-method": "POST",
          "access-control-request-headers": "authorization, content-type",
        },
      }),
    );
    expect(pre.status).toBe(204);
    expect(pre.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(pre.headers.get("access-control-allow-headers")).toContain("Authorization");
    // An unlisted origin is refused by the loopback guard and never echoed.
    const bad = await app.handle(
      new Request("http://localhost/health", { headers: { origin: "https://evil.example" } }),
    );
    expect(bad.status).toBe(403);
    expect(bad.headers.get("access-control-allow-origin")).toBeNull();
    const mine = await app.handle(
      new Request("http://localhost/health", { headers: { origin: "http://localhost:5173" } }),
    );
    expect(mine.status).toBe(200);
    expect(mine.headers.get("access-control-allow-origin")).toBeNull();
  });

  test("configured limits change the schema: 422 naming the field, 413 for the body", async () => {
    const app = createApp(host, {
      limits: { sizeMax: 512, stepsMax: 10, batchMax: 2, promptMaxChars: 20, bodyMaxBytes: 4096 },
    });
    const cases: [Record<string, unknown>, string][] = [
      [{ prompt: "a", width: 520 }, "width"],
      [{ prompt: "a", height: 1024 }, "height"],
      [{ prompt: "a", width: 100 }, "width"],
      [{ prompt: "a", num_steps: 11 }, "num_steps"],
      [{ prompt: "a", batch_size: 3 }, "batch_size"],
      [{ prompt: "a".repeat(21) }, "prompt"],
      [{ prompt: "a", negative_prompt: "b".repeat(21) }, "negative_prompt"],
    ];
    for (const [body, field] of cases) {
      const res = await app.handle(new Request("http://localhost/v1/generate", init("POST", body)));
      expect(res.status).toBe(422);
      const json = (await res.json()) as { fields: { field: string }[] };
      expect(json.fields.map((f) => f.field)).toContain(field);
    }
    const tok = await app.handle(
      new Request("http://localhost/v1/tokenize", init("POST", { prompt: "x".repeat(21) })),
    );
    expect(tok.status).toBe(422);
    const text = JSON.stringify({ prompt: "a".repeat(5000) });
    const big = await app.handle(
      new Request("http://localhost/v1/generate", {
        method: "POST",
        headers: { "content-type": "application/json", "content-length": String(text.length) },
        body: text,
      }),
    );
    expect(big.status).toBe(413);
    expect(await big.json()).toMatchObject({
      status: 413,
      code: "payload_too_large",
      fields: [{ field: "body" }],
    });
    // Within the limits the request passes validation (503: no model here).
    const ok = await app.handle(
      new Request("http://localhost/v1/generate", init("POST", { prompt: "a", width: 512, num_steps: 10 })),
    );
    expect(ok.status).toBe(503);
  });

  test("the spec documents bearer auth, public routes and the limits", async () => {
    const spec = (await (
      await createApp(host).handle(new Request("http://localhost/swagger/json"))
    ).json()) as {
      info: { description: string };
      components: { securitySchemes: Record<string, { type: string; scheme: string }> };
      security: Record<string, string[]>[];
      paths: Record<string, Record<string, { security?: unknown[] }>>;
    };
    expect(spec.components.securitySchemes.bearer).toMatchObject({ type: "http", scheme: "bearer" });
    expect(spec.security).toEqual([{ bearer: [] }]);
    expect(spec.paths["/health"]?.get?.security).toEqual([]);
    expect(spec.paths["/v1/generate"]?.post?.security).toBeUndefined();
    expect(spec.info.description).toContain(`${DEFAULT_LIMITS.bodyMaxBytes} bytes`);
  });
});

describe("a server with an API key", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(
      ["--models-dir", await mkdtemp(join(tmpdir(), "sdx-none-")), "--cors-origin", "https://app.example"],
      { env: { SDX_API_KEY: KEY } },
    );
  });
  afterAll(() => server.stop());

  test.each(PROTECTED)(
    "$method $path: 401 without a key and with a wrong one",
    async ({ method, path, body }) => {
      const attempts: Record<string, string>[] = [
        {},
        { authorization: "Bearer wrong" },
        { authorization: `Basic ${KEY}` },
      ];
      for (const headers of attempts) {
        const res = await fetch(`${server.url}${path}`, init(method, body, headers));
        expect(res.status).toBe(401);
        expect(res.headers.get("www-authenticate")).toBe('Bearer realm="sdx"');
        expectErrorShape(await res.json(), 401, "unauthorized");
      }
    },
  );

  test.each(PROTECTED)("$method $path: the key lets the request through", async ({ method, path, body }) => {
    const res = await fetch(`${server.url}${path}`, init(method, body, { authorization: `Bearer ${KEY}` }));
    expect(res.status).not.toBe(401);
    expect(res.status).not.toBe(403);
    if (path === "/v1/models" || path === "/v1/schedulers") expect(res.status).toBe(200);
  });

  test("the page, /health and /swagger stay open", async () => {
    for (const path of [
      "/",
      "/web/app.js",
      "/web/eventsource-parser/index.js",
      "/health",
      "/swagger",
      "/swagger/json",
      "/swagger/assets/swagger-ui.css",
    ]) {
      expect((await fetch(`${server.url}${path}`)).status).toBe(200);
    }
  });

  test("the SDK sends the key", async () => {
    const ok = createSdxClient({ baseUrl: server.url, apiKey: KEY });
    expect((await ok.schedulers()).schedulers.length).toBeGreaterThan(0);
    const error = await createSdxClient({ baseUrl: server.url })
      .schedulers()
      .then(
        () => null,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(SdxError);
    expect((error as SdxError).code).toBe("unauthorized");
  });

  test("a 401 to a listed origin still carries its CORS header", async () => {
    const res = await fetch(`${server.url}/v1/models`, { headers: { origin: "https://app.example" } });
    expect(res.status).toBe(401);
    expect(res.headers.get("access-control-allow-origin")).toBe("https://app.example");
  });

  test("DNS rebinding: Host evil.example is refused with 403 while bound to 127.0.0.1", async () => {
    for (const path of ["/health", "/v1/models"]) {
      const res = await fetch(`${server.url}${path}`, {
        headers: { host: "evil.example", authorization: `Bearer ${KEY}` },
      });
      expect(res.status).toBe(403);
      expectErrorShape(await res.json(), 403, "forbidden_host");
    }
    const port = new URL(server.url).port;
    const local = await fetch(`${server.url}/health`, { headers: { host: `localhost:${port}` } });
    expect(local.status).toBe(200);
  });
});

describe("startup", () => {
  async function outputUntilListening(args: string[]): Promise<string> {
    const proc = Bun.spawn(["bun", join(REPO_ROOT, "api/index.ts"), ...args], {
      cwd: REPO_ROOT,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, SDX_API_KEY: "", SDX_HOST: "", SDX_PORT: "", SDX_MODEL: "" },
    });
    let text = "";
    const decoder = new TextDecoder();
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) text += decoder.decode(chunk);
    };
    void pump(proc.stdout);
    void pump(proc.stderr);
    const deadline = Date.now() + 20_000;
    while (!text.includes("listening on") && proc.exitCode === null && Date.now() < deadline)
      await Bun.sleep(25);
    proc.kill();
    await proc.exited;
    return text;
  }

  test("binding 0.0.0.0 without a key prints a warning; with a key, or on loopback, none", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdx-none-"));
    const open = await outputUntilListening(["--host", "0.0.0.0", "--port", "0", "--models-dir", dir]);
    expect(open).toContain("listening on");
    expect(open).toMatch(/WARNING: binding 0\.0\.0\.0\b.*without an API key/);
    const keyed = await outputUntilListening([
      "--host",
      "0.0.0.0",
      "--port",
      "0",
      "--models-dir",
      dir,
      "--api-key",
      KEY,
    ]);
    expect(keyed).toContain("listening on");
    expect(keyed).not.toContain("WARNING");
    const local = await outputUntilListening(["--host", "127.0.0.1", "--port", "0", "--models-dir", dir]);
    expect(local).not.toContain("WARNING");
  });
});
