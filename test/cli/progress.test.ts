/**
 * `sdx gen`'s feedback (issue #6, point 5), run in-process against the real server (tiny model) with fake
 * terminals: bars fed by the server's event stream on a TTY, plain lines elsewhere, one JSON object per image
 * with --json, and Ctrl-C (the context's signal) cancelling the running request while keeping finished images.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { Cli } from "clipanion";
import YAML from "yaml";
import { runCli } from "../../cli/index.ts";
import { BarView, formatDuration, LineView } from "../../cli/progress.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";
import { startProxy, untilAborted } from "../helpers/proxy.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

/** A stream that keeps what is written; `tty` makes it look like a terminal `columns` wide. */
class Capture extends Writable {
  text = "";
  isTTY: boolean;
  columns: number;
  constructor(tty: boolean, columns = 120) {
    super();
    this.isTTY = tty;
    this.columns = columns;
  }
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

const CSI = "\x1b[";
const plain = (text: string) => Bun.stripANSI(text);

async function sdx(
  args: string[],
  options: { tty: boolean; signal?: AbortSignal },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture(options.tty);
  const stderr = new Capture(options.tty);
  const code = await runCli(args, {
    ...Cli.defaultContext,
    // Not the test runner's terminal: `sdx gen` would ask it whether it shows images.
    stdin: new PassThrough(),
    stdout,
    stderr,
    env: {},
    isTTY: options.tty,
    stderrIsTTY: options.tty,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

let server: RunningServer;
let proxy: ReturnType<typeof Bun.serve>;
let work: string;
let projects: string;
let generates = 0;
/** Whether the proxy's `hang`-th generate request saw the client go away. */
let hang = 0;
let cancelled = false;
/** The proxy's `failInStream`-th generate request ends its stream with an error event. */
let failInStream = 0;
let hangArrived: () => void = () => {};

/**
 * In front of the real server: every streamed generation first says it waits in the queue (#2, then #1), as
 * a busy server would; the `hang`-th generation never answers, to be cancelled.
 */
function startBusyProxy(): ReturnType<typeof Bun.serve> {
  return startProxy(server.url, {
    async generate(_body, req) {
      if (++generates === failInStream) {
        // Admitted, started, then the engine fails: the error arrives as the stream's last event.
        const error = { status: 500, code: "generation_failed", message: "the engine failed: out of memory" };
        const events = `event: started\ndata: {}\n\nevent: error\ndata: ${JSON.stringify(error)}\n\n`;
        return new Response(events, { headers: { "content-type": "text/event-stream" } });
      }
      if (generates !== hang) return undefined;
      hangArrived();
      const answer = await untilAborted(req);
      cancelled = true;
      return answer;
    },
    prepend: () => [2, 1].map((p) => `event: queued\ndata: {"position":${p}}\n\n`).join(""),
  });
}

beforeAll(async () => {
  server = await startServer(["--models-dir", MODELS_DIR]);
  proxy = startBusyProxy();
  work = await mkdtemp(join(tmpdir(), "sdx-progress-"));
  projects = join(work, "projects");
  await mkdir(join(projects, "bars"), { recursive: true });
  await writeFile(
    join(projects, "bars", "config.yaml"),
    `server_url: http://127.0.0.1:${proxy.port}\ndefault_params: {width: 64, height: 64, num_steps: 2}\n`,
  );
  await writeFile(join(projects, "bars", "prompts.yaml"), "prompt_sets:\n  - name: dots\n    prompt: dots\n");
});
afterAll(async () => {
  await proxy.stop(true);
  await server.stop();
});

const gen = (out: string, ...more: string[]) => [
  "gen",
  ...["--project", "bars", "--prompt", "dots", "--input", projects, "--output", join(work, out)],
  ...more,
];

async function runFiles(out: string): Promise<{ images: string[]; metadata: string[] }> {
  const promptDir = join(work, out, "bars", "dots");
  const [run] = await readdir(promptDir);
  const dir = join(promptDir, run as string);
  return { images: await readdir(join(dir, "images")), metadata: await readdir(join(dir, "metadata")) };
}

describe("sdx gen feedback", () => {
  test("a terminal gets a batch bar and a step bar fed by the server's stream", async () => {
    const res = await sdx(gen("tty", "--batch", "3", "--seed", "9"), { tty: true });
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`${CSI}?25l`); // cursor hidden while drawing…
    expect(res.stdout.lastIndexOf(`${CSI}?25h`)).toBeGreaterThan(res.stdout.lastIndexOf(`${CSI}?25l`));
    const text = plain(res.stdout);
    expect(text).toMatch(/images 1-3 +[█░]+ queued #2/);
    expect(text).toMatch(/images 1-3 +[█░]+ queued #1/);
    expect(text).toMatch(/images 1-3 +█+ step 2\/2 · done/);
    expect(text).toMatch(/batch +[█░]+ 0\/3 images/);
    expect(text).toMatch(/batch +█+ 3\/3 images/);
    for (const [i, seed] of [9, 10, 11].entries()) {
      expect(text).toMatch(new RegExp(`image ${i + 1}/3: \\S+\\.png \\(seed ${seed}\\)`));
    }
    // The summary comes after the bars' last drawing, on its own line.
    expect(text).toMatch(/step 2\/2 · done\s*\n+3 of 3 images made in \S+\n$/);
    const files = await runFiles("tty");
    expect(files.images).toHaveLength(3);
    expect(files.metadata).toHaveLength(3);
  });

  test("not a terminal: plain lines, no control characters, no line per step", async () => {
    const res = await sdx(gen("lines", "--batch", "2", "--seed", "3"), { tty: false });
    expect(res.code).toBe(0);
    expect(res.stdout + res.stderr).not.toContain("\x1b");
    expect(res.stderr).toBe("");
    const lines = res.stdout.trim().split("\n");
    expect(lines[0]).toBe("images 1-2: queued #2 on the server");
    expect(lines[1]).toBe("images 1-2: started");
    expect(lines[2]).toMatch(/^image 1\/2: \S+\.png \(seed 3\)$/);
    expect(lines[3]).toMatch(/^image 2\/2: \S+\.png \(seed 4\)$/);
    expect(lines[4]).toMatch(/^2 of 2 images made in /);
    expect(lines).toHaveLength(5);
  });

  test("--json, even on a terminal: one JSON object per image and nothing else on stdout", async () => {
    const res = await sdx(gen("json", "--batch", "2", "--seed", "5", "--json"), { tty: true });
    expect(res.code).toBe(0);
    expect(res.stdout).not.toContain("\x1b");
    const events = res.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; index: number; seed: number; image: string });
    expect(events.map((e) => [e.event, e.index, e.seed])).toEqual([
      ["image", 0, 5],
      ["image", 1, 6],
    ]);
    expect(res.stderr).toMatch(/^2 of 2 images made in /);
  });

  test("Ctrl-C on a terminal: the running request is cancelled, the bars stop, finished images stay", async () => {
    // Requests of 16 and 1 images: the second hangs on the server until the client goes away.
    generates = 0;
    hang = 2;
    cancelled = false;
    const arrived = new Promise<void>((resolve) => {
      hangArrived = resolve;
    });
    const controller = new AbortController();
    const running = sdx(gen("interrupted", "--batch", "17", "--seed", "1"), {
      tty: true,
      signal: controller.signal,
    });
    await arrived;
    controller.abort();
    const res = await running;
    hang = 0;
    expect(res.code).toBe(130);
    const text = plain(res.stdout);
    expect(text).toMatch(/batch +[█░]+ 16\/17 images/);
    expect(text).toMatch(/image 17 +░+ (sending|queued #\d)/);
    expect(res.stdout.lastIndexOf(`${CSI}?25h`)).toBeGreaterThan(res.stdout.lastIndexOf(`${CSI}?25l`));
    expect(res.stderr).toMatch(/16 of 17 images made .*; interrupted, 1 not made/);
    for (let i = 0; i < 50 && !cancelled; i++) await Bun.sleep(20);
    expect(cancelled).toBe(true);
    const files = await runFiles("interrupted");
    expect(files.images).toHaveLength(16);
    expect(files.metadata).toHaveLength(16);
  }, 60_000);

  test("an error event fails its request: errors/ is written, the batch goes on, exit 1", async () => {
    generates = 0;
    failInStream = 1;
    const res = await sdx(gen("failed", "--batch", "17", "--seed", "1"), { tty: true });
    failInStream = 0;
    expect(res.code).toBe(1);
    const text = plain(res.stdout);
    // stderr is the same terminal: the failures are listed above the bars.
    expect(text).toContain("image 1/17 failed: server error 500 (generation_failed): the engine failed");
    expect(text).toMatch(/images 1-16 +░+ failed/);
    expect(text).toMatch(/batch +█+ 17\/17 images · 16 failed/);
    expect(text).toMatch(/image 17\/17: \S+\.png \(seed 17\)/);
    expect(res.stderr).toMatch(/^1 of 17 images made in (\S+); 16 failed \(see errors\/\)\n$/);
    const runDir = join(
      work,
      "failed",
      "bars",
      "dots",
      (await readdir(join(work, "failed", "bars", "dots")))[0] as string,
    );
    const [errorFile] = await readdir(join(runDir, "errors"));
    const error = YAML.parse(await readFile(join(runDir, "errors", errorFile as string), "utf8"));
    expect(error.request).toMatchObject({ prompt: "dots", seed: 1, batch_size: 16 });
    expect(error.error).toMatchObject({ status: 500, code: "generation_failed" });
    expect((await runFiles("failed")).images).toHaveLength(1);
  }, 60_000);

  test("an unreachable server exits 3 and draws nothing", async () => {
    const res = await sdx(gen("none", "--server", "http://127.0.0.1:1"), { tty: true });
    expect(res.code).toBe(3);
    expect(res.stdout).toBe("");
    expect(res.stderr).toContain("cannot reach the sdx server");
  });
});

describe("views", () => {
  test("the batch ETA: the running request's rest, then the images after it at the measured pace", () => {
    let now = 0;
    const stdout = new Capture(true, 200);
    const stderr = new Capture(true);
    const view = new BarView({ stdout, stderr, total: 8, now: () => now, fps: 1, stderrIsTTY: false });
    view.progress({ type: "request", index: 0, count: 4 });
    view.progress({ type: "queued", position: 3 });
    expect(plain(stdout.text)).toMatch(/images 1-4 +░+ queued #3/);
    view.progress({ type: "started" });
    now = 1000;
    view.progress({ type: "step", image: 0, step: 1, total: 4, elapsed_ms: 1000, eta_ms: 3000 });
    view.warn("a warning"); // stderr is not this terminal: straight there
    expect(stderr.text).toBe("warning: a warning\n");
    view.close(); // draws the last state
    const text = plain(stdout.text);
    // 4 s per 4 images so far: 3 s left of this request, then 4 images at 1 s.
    expect(text).toMatch(/batch +░+ 0\/8 images · ETA 7s/);
    expect(text).toMatch(/images 1-4 +█+░+ step 1\/4 · ETA 3s/);
    // Closed: later lines go below, nothing is drawn any more.
    view.progress({ type: "finished", ok: true });
    expect(plain(stdout.text)).toBe(text);
  });

  test("plain lines say when a request waits, once, and never per step", () => {
    const stdout = new Capture(false);
    const stderr = new Capture(false);
    const view = new LineView({ stdout, stderr });
    view.progress({ type: "request", index: 16, count: 1 });
    view.progress({ type: "queued", position: 2 });
    view.progress({ type: "queued", position: 1 });
    view.progress({ type: "started" });
    view.progress({ type: "step", image: 0, step: 1, total: 2, elapsed_ms: 5, eta_ms: 5 });
    view.progress({ type: "finished", ok: true });
    view.progress({ type: "request", index: 17, count: 1 });
    view.progress({ type: "queued", position: 0 });
    view.progress({ type: "started" });
    expect(stdout.text).toBe("image 17: queued #2 on the server\nimage 17: started\n");
  });

  test("durations", () => {
    expect([0, 400, 42_000, 185_000, 3_725_000].map(formatDuration)).toEqual([
      "0s",
      "<1s",
      "42s",
      "3m05s",
      "1h02m",
    ]);
  });
});
