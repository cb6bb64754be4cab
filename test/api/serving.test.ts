/**
 * The serving core against the real server on loopback: admission (bounded queue, 429 with Retry-After),
 * server-sent progress through the SDK, cancellation by disconnect (no slot leaks, the steps counter proves the
 * work stopped), drain on SIGTERM, /metrics and the stuck-generation health check.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readServerConfig } from "../../api/config.ts";
import { createSdxClient, type GenerateEvent, type GenerateRequest, SdxError } from "../../sdk/index.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const QUICK: GenerateRequest = { prompt: "a cat", width: 64, height: 64, num_steps: 3, seed: 1 };
/** ~20 steps of the tiny model at 64×64: long enough to abort mid-run, short enough for many clients. */
const MEDIUM: GenerateRequest = { prompt: "a cat", width: 64, height: 64, num_steps: 20, seed: 2 };
/** A second or two at 256×256. */
const LONG: GenerateRequest = { prompt: "a cat", width: 256, height: 256, num_steps: 3, seed: 3 };

function post(url: string, body: GenerateRequest, init: RequestInit = {}): Promise<Response> {
  return fetch(`${url}/v1/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...init,
  });
}

/** Every un-labelled sample of /metrics, and labelled ones by their full series name. */
async function metrics(url: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function settled(url: string): Promise<Map<string, number>> {
  const deadline = Date.now() + 20_000;
  while (true) {
    const m = await metrics(url);
    if (m.get("sdx_running") === 0 && m.get("sdx_queue_depth") === 0) return m;
    if (Date.now() > deadline) throw new Error("the server did not settle: a slot leaked");
    await Bun.sleep(20);
  }
}

async function collect(stream: AsyncIterable<GenerateEvent>): Promise<GenerateEvent[]> {
  const events: GenerateEvent[] = [];
  for await (const e of stream) events.push(e);
  return events;
}

describe("config", () => {
  test("admission and shutdown flags, variables and defaults", () => {
    const defaults = readServerConfig([], {});
    expect(defaults).toMatchObject({
      concurrency: 1,
      maxQueue: 16,
      drainTimeoutMs: 60_000,
      stepTimeoutMs: 120_000,
    });
    const set = readServerConfig(["--concurrency", "2", "--drain-timeout", "5"], {
      SDX_MAX_QUEUE: "4",
      SDX_STEP_TIMEOUT: "9",
    });
    expect(set).toMatchObject({ concurrency: 2, maxQueue: 4, drainTimeoutMs: 5000, stepTimeoutMs: 9000 });
    expect(() => readServerConfig(["--concurrency", "0"], {})).toThrow("--concurrency must be an integer");
  });

  test("model cache, warm-up, attention and weights flags, variables and defaults", () => {
    expect(readServerConfig([], {})).toMatchObject({
      maxLoadedModels: undefined,
      warmUp: "auto",
      attention: undefined,
    });
    expect(
      readServerConfig(["--max-loaded-models", "3", "--attention", "fused"], { SDX_WARM_UP: "off" }),
    ).toMatchObject({ maxLoadedModels: 3, warmUp: "off", attention: "fused" });
    expect(readServerConfig([], { SDX_ATTENTION: "auto" })).toMatchObject({ attention: undefined });
    expect(() => readServerConfig(["--attention", "flash"], {})).toThrow(
      '--attention must be one of auto, plain, fused; got "flash"',
    );
    expect(readServerConfig([], {})).toMatchObject({ residency: undefined });
    expect(readServerConfig(["--weights", "folded"], {})).toMatchObject({ residency: "folded" });
    expect(readServerConfig([], { SDX_WEIGHTS: "lean" })).toMatchObject({ residency: "lean" });
    expect(() => readServerConfig(["--weights", "int8"], {})).toThrow(
      '--weights must be one of auto, folded, lean; got "int8"',
    );
    expect(() => readServerConfig(["--max-loaded-models", "0"], {})).toThrow(
      "--max-loaded-models must be an integer of at least 1",
    );
  });
});

describe("admission, progress and cancellation", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(["--models-dir", MODELS_DIR, "--max-queue", "2"]);
    // One generation first, so Retry-After has a step time to go by.
    expect((await post(server.url, QUICK)).status).toBe(200);
  });
  afterAll(() => server.stop());

  test("a full queue answers 429 queue_full with Retry-After at once; /health never waits", async () => {
    const running = [post(server.url, LONG), post(server.url, LONG), post(server.url, LONG)];
    while ((await metrics(server.url)).get("sdx_queue_depth") !== 2) await Bun.sleep(10);
    const t0 = performance.now();
    const refused = await post(server.url, QUICK);
    const refusedMs = performance.now() - t0;
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({ status: 429, code: "queue_full" });
    expect(refusedMs).toBeLessThan(500);
    const h0 = performance.now();
    const health = await fetch(`${server.url}/health`);
    expect(performance.now() - h0).toBeLessThan(500);
    expect(await health.json()).toMatchObject({
      status: "ok",
      queue: { running: 1, queued: 2, max_queue: 2 },
    });
    for (const res of await Promise.all(running)) expect(res.status).toBe(200);
    const m = await settled(server.url);
    expect(m.get('sdx_admission_rejections_total{reason="queue_full"}')).toBeGreaterThanOrEqual(1);
    expect(
      m.get('sdx_http_requests_total{route="/v1/generate",method="POST",status="429"}'),
    ).toBeGreaterThanOrEqual(1);
  }, 60_000);

  test("generateStream yields queued, started, steps, images and done", async () => {
    const client = createSdxClient({ baseUrl: server.url });
    const series = 'sdx_http_request_duration_seconds_sum{route="/v1/generate"}';
    const before = (await metrics(server.url)).get(series) ?? 0;
    const t0 = performance.now();
    const events = await collect(client.generateStream({ ...QUICK, batch_size: 2 }));
    const streamSeconds = (performance.now() - t0) / 1000;
    // The request's time in /metrics is the whole stream's, not the time to its first byte.
    const observed = ((await metrics(server.url)).get(series) ?? 0) - before;
    expect(observed).toBeGreaterThan(streamSeconds * 0.5);
    expect(observed).toBeLessThanOrEqual(streamSeconds + 0.05);
    const types = events.map((e) => e.type);
    expect(types).toEqual(["queued", "started", "step", "step", "step", "image", "image", "done"]);
    const steps = events.filter((e) => e.type === "step");
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3]);
    expect(steps.every((s) => s.total === 3 && s.eta_ms >= 0 && s.elapsed_ms >= 0)).toBe(true);
    const images = events.filter((e) => e.type === "image");
    expect(images.map((i) => i.seed)).toEqual([1, 2]);
    expect(
      Buffer.from(images[0]?.png ?? "", "base64")
        .subarray(1, 4)
        .toString(),
    ).toBe("PNG");
    const done = events.at(-1);
    if (done?.type !== "done") throw new Error("expected done");
    expect(done.metadata.seeds).toEqual([1, 2]);
    expect(done).not.toHaveProperty("images");
    // The same generation as JSON gives the same pixels.
    const json = await client.generate({ ...QUICK, batch_size: 2 });
    expect(json.images[1]?.png).toBe(images[1]?.png);
  });

  test("a refused stream throws SdxError before any event", async () => {
    const client = createSdxClient({ baseUrl: server.url });
    const error = await collect(client.generateStream({ ...QUICK, width: 65 })).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SdxError);
    expect((error as SdxError).status).toBe(422);
  });

  test("a plain request whose client disconnects stops running and frees its slot", async () => {
    const before = await settled(server.url);
    const controller = new AbortController();
    const long = post(
      server.url,
      { ...LONG, width: 256, height: 256, num_steps: 40 },
      { signal: controller.signal },
    ).catch((e: unknown) => e);
    const queued = post(server.url, QUICK);
    const stepsSince = async () =>
      ((await metrics(server.url)).get("sdx_steps_total") ?? 0) - (before.get("sdx_steps_total") ?? 0);
    let atAbort = 0;
    while (atAbort < 1) {
      await Bun.sleep(20);
      atAbort = await stepsSince();
    }
    controller.abort();
    expect(((await long) as Error).name).toBe("AbortError");
    expect((await queued).status).toBe(200);
    const after = await settled(server.url);
    const steps = (after.get("sdx_steps_total") ?? 0) - (before.get("sdx_steps_total") ?? 0);
    // The quick one's 3 steps, and the long one's steps up to the abort plus the ones in flight while the
    // disconnect travelled (each step of this size takes a few hundred ms).
    expect(steps).toBeLessThanOrEqual(3 + atAbort + 3);
    expect(steps).toBeLessThan(3 + 40);
    expect(after.get('sdx_cancellations_total{where="running"}')).toBeGreaterThanOrEqual(1);
  }, 60_000);
});

describe("cancellation under load", () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await startServer(["--models-dir", MODELS_DIR]);
  });
  afterAll(() => server.stop());

  for (const share of [0.1, 0.5]) {
    test(`${share * 100}% of 10 streaming clients abort (mid-run or queued): no leaks, survivors finish`, async () => {
      const before = await settled(server.url);
      const client = createSdxClient({ baseUrl: server.url });
      const clients = 10;
      const aborting = new Set(Array.from({ length: Math.round(clients * share) }, (_, i) => i * 2));
      const outcomes = await Promise.all(
        Array.from({ length: clients }, async (_, i) => {
          const controller = new AbortController();
          const events: GenerateEvent[] = [];
          try {
            for await (const e of client.generateStream(
              { ...MEDIUM, seed: i },
              { signal: controller.signal },
            )) {
              events.push(e);
              // Odd aborters leave while queued, even ones after their first step.
              if (
                aborting.has(i) &&
                ((i % 4 === 0 && e.type === "step") || (i % 4 === 2 && e.type === "queued"))
              )
                controller.abort();
            }
            return { i, events, aborted: false };
          } catch (e) {
            if ((e as Error).name !== "AbortError") throw e;
            return { i, events, aborted: true };
          }
        }),
      );
      for (const o of outcomes) {
        expect(o.aborted).toBe(aborting.has(o.i));
        if (!o.aborted) expect(o.events.at(-1)?.type).toBe("done");
      }
      const after = await settled(server.url);
      const delta = (name: string) => (after.get(name) ?? 0) - (before.get(name) ?? 0);
      const survivors = clients - aborting.size;
      const steps = delta("sdx_steps_total");
      expect(steps).toBeGreaterThanOrEqual(survivors * 20);
      // An aborted run stops before its next step once the disconnect reaches the server; steps that ran while
      // the abort was on its way are allowed, up to half a run — a run that was not stopped adds all 20.
      expect(steps).toBeLessThanOrEqual(survivors * 20 + aborting.size * 10);
      expect(delta("sdx_images_total")).toBe(survivors);
      expect(
        delta('sdx_cancellations_total{where="running"}') + delta('sdx_cancellations_total{where="queued"}'),
      ).toBe(aborting.size);
      // The next request starts and finishes.
      expect((await post(server.url, QUICK)).status).toBe(200);
    }, 90_000);
  }
});

describe("drain and health", () => {
  test("SIGTERM: health draining, new generations 503, the in-flight one finishes, exit 0", async () => {
    const server = await startServer(["--models-dir", MODELS_DIR]);
    try {
      const client = createSdxClient({ baseUrl: server.url });
      const events: GenerateEvent[] = [];
      let started!: () => void;
      const running = new Promise<void>((resolve) => {
        started = resolve;
      });
      const stream = (async () => {
        for await (const e of client.generateStream(LONG)) {
          events.push(e);
          if (e.type === "step") started();
        }
      })();
      await running;
      server.process.kill("SIGTERM");
      await Bun.sleep(200);
      const health = await fetch(`${server.url}/health`);
      expect(health.status).toBe(503);
      expect(await health.json()).toMatchObject({ status: "draining" });
      const refused = await post(server.url, QUICK);
      expect(refused.status).toBe(503);
      expect(await refused.json()).toMatchObject({ code: "draining" });
      await stream;
      expect(events.at(-1)?.type).toBe("done");
      expect(await server.process.exited).toBe(0);
    } finally {
      await server.stop();
    }
  }, 60_000);

  test("a generation with no step for --step-timeout makes /health 503 stuck", async () => {
    const server = await startServer(["--models-dir", MODELS_DIR, "--step-timeout", "1"]);
    try {
      const slow = post(server.url, { prompt: "a cat", width: 512, height: 512, num_steps: 2, seed: 1 });
      let seen: { status: number; body: { status: string } } | null = null;
      const deadline = Date.now() + 30_000;
      while (!seen && Date.now() < deadline) {
        const res = await fetch(`${server.url}/health`);
        const body = (await res.json()) as { status: string };
        if (body.status === "stuck") seen = { status: res.status, body };
        await Bun.sleep(100);
      }
      expect(seen?.status).toBe(503);
      expect((await slow).status).toBe(200);
      expect(((await (await fetch(`${server.url}/health`)).json()) as { status: string }).status).toBe("ok");
    } finally {
      await server.stop();
    }
  }, 60_000);
});
