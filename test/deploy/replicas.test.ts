/**
 * Scale-out: two real sdx servers behind a real nginx running deploy/nginx.conf (addresses and logs replaced,
 * see test/helpers/nginx.ts). Requests spread over both; server-sent events stream through; one replica is
 * sent SIGTERM while generations run on it and requests keep coming: none fails (the draining one finishes its
 * own, nginx passes its 503 `draining` and then its refused connections to the other).
 * Needs nginx (Debian: apt-get install nginx; .ci/run installs it): without it this test fails, it never skips.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createSdxClient, type GenerateEvent, type GenerateRequest } from "../../sdk/index.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";
import { type RunningNginx, startNginx } from "../helpers/nginx.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const QUICK: GenerateRequest = { prompt: "a cat", width: 64, height: 64, num_steps: 3, seed: 1 };
/** A few seconds at 256×256: long enough to still be running when the signal comes. */
const SLOW: GenerateRequest = { prompt: "a cat", width: 256, height: 256, num_steps: 6, seed: 3 };

interface Answer {
  status: number;
  /** nginx's $upstream_addr: the replica(s) tried, in order ("127.0.0.1:1, 127.0.0.1:2" after a retry). */
  upstreams: string[];
  /** nginx's $upstream_status, in the same order. */
  statuses: string[];
  body: string;
}

/** POST /v1/generate through nginx; `stream`: as server-sent events (the body is then the whole event text). */
async function generate(url: string, body: GenerateRequest, stream = false): Promise<Answer> {
  const res = await fetch(`${url}/v1/generate`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(stream ? { accept: "text/event-stream" } : {}) },
    body: JSON.stringify(body),
  });
  const list = (name: string) => (res.headers.get(name) ?? "").split(/\s*,\s*/).filter(Boolean);
  return {
    status: res.status,
    upstreams: list("x-upstream-addr"),
    statuses: list("x-upstream-status"),
    body: await res.text(),
  };
}

/** Every sample of a server's /metrics, by full series name. */
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

async function waitFor(what: string, check: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(20);
  }
}

/** Generations running or queued on one replica. */
async function busy(url: string): Promise<number> {
  const m = await metrics(url);
  return (m.get("sdx_running") ?? 0) + (m.get("sdx_queue_depth") ?? 0);
}

describe("two replicas behind nginx (deploy/nginx.conf)", () => {
  let a: RunningServer;
  let b: RunningServer;
  let nginx: RunningNginx;
  const host = (s: RunningServer) => new URL(s.url).host;

  beforeAll(async () => {
    [a, b] = await Promise.all([
      startServer(["--models-dir", MODELS_DIR, "--drain-timeout", "60"]),
      startServer(["--models-dir", MODELS_DIR, "--drain-timeout", "60"]),
    ]);
    nginx = await startNginx([host(a), host(b)]);
  });
  afterAll(async () => {
    await nginx?.stop();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  test("requests spread over both replicas", async () => {
    const answers: Answer[] = [];
    for (let i = 0; i < 6; i++) answers.push(await generate(nginx.url, { ...QUICK, seed: i }));
    for (const answer of answers) expect(answer.status).toBe(200);
    const served = new Set(answers.map((x) => x.upstreams.at(-1)));
    expect(served).toEqual(new Set([host(a), host(b)]));
    // Each replica's own count agrees.
    const route = 'sdx_http_requests_total{route="/v1/generate",method="POST",status="200"}';
    expect((await metrics(a.url)).get(route)).toBeGreaterThanOrEqual(1);
    expect((await metrics(b.url)).get(route)).toBeGreaterThanOrEqual(1);
  }, 60_000);

  test("server-sent events pass through as they happen", async () => {
    const client = createSdxClient({ baseUrl: nginx.url });
    const t0 = performance.now();
    const seen: { event: GenerateEvent; at: number }[] = [];
    for await (const event of client.generateStream({ ...SLOW, num_steps: 4 })) {
      seen.push({ event, at: performance.now() - t0 });
    }
    expect(seen.map((s) => s.event.type)).toEqual([
      "queued",
      "started",
      "step",
      "step",
      "step",
      "step",
      "image",
      "done",
    ]);
    const firstStep = seen.find((s) => s.event.type === "step")?.at ?? 0;
    const done = seen.at(-1)?.at ?? 0;
    // Buffered, every event would arrive at once at the end.
    expect(done - firstStep).toBeGreaterThan(100);
  }, 60_000);

  test("SIGTERM to one replica mid-generation: in-flight requests finish, new ones go to the other, none fails", async () => {
    await waitFor("both replicas idle", async () => (await busy(a.url)) === 0 && (await busy(b.url)) === 0);
    // Two slow generations on each replica (nginx sends each to the one with fewer connections).
    const inFlight: Promise<Answer>[] = [];
    for (let i = 0; i < 4; i++) {
      inFlight.push(generate(nginx.url, { ...SLOW, seed: 10 + i }));
      await waitFor(
        `generation ${i + 1} admitted`,
        async () => (await busy(a.url)) + (await busy(b.url)) === i + 1,
      );
    }
    expect(await busy(a.url)).toBe(2);
    expect(await busy(b.url)).toBe(2);

    a.process.kill("SIGTERM");
    await waitFor("replica A draining", async () => (await fetch(`${a.url}/health`)).status === 503);

    // New work while A drains, in bursts, plain and streamed. In each burst nginx sends a request to A
    // (when A and B hold as many connections, or A fewer) until A's 503 marks it failed.
    const during: Promise<Answer>[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 3; i++) {
        during.push(generate(nginx.url, { ...QUICK, seed: 20 + round * 3 + i }, i === 2));
      }
      await Bun.sleep(150);
    }

    const finished = await Promise.all(inFlight);
    const answered = await Promise.all(during);
    for (const answer of [...finished, ...answered]) {
      expect({ status: answer.status, body: answer.body.slice(0, 300) }).toMatchObject({ status: 200 });
    }
    const streams = answered.filter((_, i) => i % 3 === 2);
    for (const answer of streams) expect(answer.body).toContain("event: done");

    // A finished its own two while draining.
    expect(finished.filter((x) => x.upstreams.at(-1) === host(a))).toHaveLength(2);
    // Every new request was answered by B; at least one reached A first, got 503 draining and was passed on.
    for (const answer of answered) expect(answer.upstreams.at(-1)).toBe(host(b));
    const retried = answered.filter((x) => x.statuses[0] === "503");
    expect(retried.length).toBeGreaterThanOrEqual(1);
    for (const answer of retried) expect(answer.upstreams[0]).toBe(host(a));

    // A exits cleanly once its work is done.
    expect(await a.process.exited).toBe(0);
    expect(a.output()).toContain("sdx: drained; exiting");

    // With A gone (connections refused), requests still succeed through nginx.
    for (let i = 0; i < 4; i++) {
      const answer = await generate(nginx.url, { ...QUICK, seed: 40 + i });
      expect(answer.status).toBe(200);
      expect(answer.upstreams.at(-1)).toBe(host(b));
    }
  }, 120_000);
});
