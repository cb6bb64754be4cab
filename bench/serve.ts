/**
 * `bun run bench serve`: the server under overload and over time, against the real server process and the tiny
 * fixture model.
 * - Overload: 3× more concurrent clients than the queue and the running slots hold, for `--seconds`, each posting
 *   64×64 / 4-step generations back to back while a prober reads /health every 20 ms. Targets: zero 5xx, every
 *   refused request answered 429 within 50 ms, /health p99 under 50 ms.
 * - Soak: `--generations` sequential generations (64×64, 2 steps); the server's RSS after a 20-generation warm-up
 *   and at the end. Target: growth under 50 MB.
 *
 *   bun run bench serve [--seconds 20] [--max-queue 4] [--generations 500]
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { printTable } from "./engine.ts";

const ROOT = join(import.meta.dir, "..");
const MODELS_DIR = join(ROOT, "test", "fixtures", "models");
const MB = 1024 * 1024;

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

function rssOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
}

async function startServer(maxQueue: number) {
  const proc = Bun.spawn(
    [
      "bun",
      join(ROOT, "api/index.ts"),
      "--models-dir",
      MODELS_DIR,
      "--port",
      "0",
      "--max-queue",
      String(maxQueue),
    ],
    { cwd: ROOT, stdout: "pipe", stderr: "pipe", env: { ...process.env, SDX_MODEL: "" } },
  );
  let text = "";
  const decoder = new TextDecoder();
  void (async () => {
    for await (const chunk of proc.stdout) text += decoder.decode(chunk);
  })();
  const deadline = Date.now() + 30_000;
  while (!/sdx: serving/.test(text)) {
    if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`server did not start:\n${text}`);
    await Bun.sleep(25);
  }
  const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(text)?.[1] as string;
  return { proc, url };
}

const body = (steps: number, seed: number) =>
  JSON.stringify({ prompt: "a lighthouse", width: 64, height: 64, num_steps: steps, seed });

async function generate(url: string, steps: number, seed: number): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}/v1/generate`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body(steps, seed),
  });
  await res.arrayBuffer();
  return { status: res.status, ms: performance.now() - t0 };
}

export async function benchServe(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      seconds: { type: "string", default: "20" },
      "max-queue": { type: "string", default: "4" },
      generations: { type: "string", default: "500" },
    },
  });
  const seconds = Number(values.seconds);
  const maxQueue = Number(values["max-queue"]);
  const generations = Number(values.generations);
  const { proc, url } = await startServer(maxQueue);
  try {
    // Overload.
    const clients = 3 * (maxQueue + 1);
    const until = performance.now() + seconds * 1000;
    const ok: number[] = [];
    const refused: number[] = [];
    const other = new Map<number, number>();
    const health: number[] = [];
    const client = async (i: number) => {
      let n = 0;
      while (performance.now() < until) {
        const r = await generate(url, 4, i * 100_000 + n++);
        if (r.status === 200) ok.push(r.ms);
        else if (r.status === 429) {
          refused.push(r.ms);
          // A short pause, as a client would before retrying; a tight loop would only measure CPU contention.
          await Bun.sleep(50);
        } else other.set(r.status, (other.get(r.status) ?? 0) + 1);
      }
    };
    const prober = async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        await (await fetch(`${url}/health`)).arrayBuffer();
        health.push(performance.now() - t0);
        await Bun.sleep(20);
      }
    };
    await Promise.all([...Array.from({ length: clients }, (_, i) => client(i)), prober()]);
    const fivexx = [...other].filter(([s]) => s >= 500).reduce((a, [, n]) => a + n, 0);

    // Soak.
    for (let i = 0; i < 20; i++) await generate(url, 2, i);
    Bun.gc(true);
    const rss0 = rssOf(proc.pid);
    const t0 = performance.now();
    let failures = 0;
    for (let i = 0; i < generations; i++) if ((await generate(url, 2, i)).status !== 200) failures++;
    const soakS = (performance.now() - t0) / 1000;
    await Bun.sleep(500);
    const rss1 = rssOf(proc.pid);

    const rows = [
      ["measure", "figure", "target"],
      ["clients (queue + slot ×3)", String(clients), ""],
      ["duration s", String(seconds), ""],
      ["200 answers", String(ok.length), ""],
      ["200 latency p50 / p99 ms", `${percentile(ok, 50).toFixed(0)} / ${percentile(ok, 99).toFixed(0)}`, ""],
      ["429 answers", String(refused.length), "> 0"],
      [
        "429 latency p99 / max ms",
        `${percentile(refused, 99).toFixed(1)} / ${Math.max(...refused, 0).toFixed(1)}`,
        "max < 50",
      ],
      ["5xx answers", String(fivexx), "0"],
      ["other statuses", [...other].map(([s, n]) => `${s}×${n}`).join(" ") || "none", "none"],
      [
        "/health p50 / p99 / max ms",
        `${percentile(health, 50).toFixed(1)} / ${percentile(health, 99).toFixed(1)} / ${Math.max(...health).toFixed(1)}`,
        "p99 < 50",
      ],
      ["soak generations (failed)", `${generations} (${failures})`, "0 failed"],
      ["soak s", soakS.toFixed(1), ""],
      ["server RSS before / after MB", `${(rss0 / MB).toFixed(1)} / ${(rss1 / MB).toFixed(1)}`, ""],
      ["RSS growth MB", ((rss1 - rss0) / MB).toFixed(1), "< 50"],
    ];
    printTable(rows);
  } finally {
    proc.kill();
    await proc.exited;
  }
}
