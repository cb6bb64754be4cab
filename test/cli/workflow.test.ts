/**
 * The "done when": `sdx init` → `list` → `gen --prompt --batch 3` → `gen --ollama --batch 2` against
 * the real server (tiny model) and a fake Ollama on loopback; remaking an image from its metadata; Ollama
 * fallbacks; batches above the server's 16; exit codes; and a table of config mistakes with file and line.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { createSdxClient, type GenerateRequest } from "../../sdk/index.ts";
import { sdx } from "../helpers/cli.ts";
import { type FakeOllama, startFakeOllama } from "../helpers/fake_ollama.ts";
import { imageDiff, MODELS_DIR, REPO_ROOT } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const LONG_ANSWER = Array.from({ length: 40 }, (_, i) => `ancient${i} lighthouse, stormy sea`).join(", ");

let server: RunningServer;
let ollama: FakeOllama;
let work: string;
let projects: string;
let outputs: string;
let chats = 0;

/** Files of a run folder: images, metadata and errors, by name. */
async function runTree(dir: string): Promise<{ images: string[]; metadata: string[]; errors: string[] }> {
  const list = async (sub: string) => (await readdir(join(dir, sub)).catch(() => [] as string[])).sort();
  return { images: await list("images"), metadata: await list("metadata"), errors: await list("errors") };
}

async function onlyRun(promptDir: string): Promise<string> {
  const runs = await readdir(promptDir);
  expect(runs).toHaveLength(1);
  return join(promptDir, runs[0] as string);
}

async function readMeta(runDir: string, file: string): Promise<Record<string, unknown>> {
  return YAML.parse(await readFile(join(runDir, "metadata", file), "utf8"));
}

beforeAll(async () => {
  server = await startServer(["--models-dir", MODELS_DIR]);
  ollama = startFakeOllama({
    answers: {
      "llama3.2": () => {
        chats++;
        return chats % 2 === 1 ? '"a red fox in fresh snow, golden hour, watercolor"' : LONG_ANSWER;
      },
      slowpoke: "a slow answer",
      flaky: "never finished",
    },
    slow: { slowpoke: 3_000 },
    failMidStream: { flaky: "llama runner process has terminated: signal: killed" },
  });
  work = await mkdtemp(join(tmpdir(), "sdx-workflow-"));
  projects = join(work, "projects");
  outputs = join(work, "outputs");
});
afterAll(async () => {
  await ollama.stop();
  await server.stop();
});

/** `sdx init`'s project made fast for the tiny CPU model, pointed at the fake Ollama. */
async function initSmall(name: string, ollamaEdits: (config: string) => string = (c) => c): Promise<void> {
  const res = await sdx(["init", name, "--input", projects]);
  expect(res.stderr).toBe("");
  expect(res.code).toBe(0);
  const file = join(projects, name, "config.yaml");
  const config = (await readFile(file, "utf8"))
    .replace("width: 512", "width: 64")
    .replace("height: 512", "height: 64")
    .replace("num_steps: 30", "num_steps: 4")
    .replace("server_url: http://127.0.0.1:11434", `server_url: ${ollama.url}`);
  await writeFile(file, ollamaEdits(config));
}

describe("init → list → gen → gen --ollama", () => {
  test("init writes a commented project that works as-is on a GPU server and refuses to overwrite", async () => {
    const res = await sdx(["init", "fresh", "--input", projects]);
    expect(res.code).toBe(0);
    const config = await readFile(join(projects, "fresh", "config.yaml"), "utf8");
    expect(config).toContain("server_url: http://127.0.0.1:8001");
    expect(config).toContain("width: 512");
    expect(config).toMatch(/^# /m);
    expect(config).toMatch(/fallback_prompt: /);
    expect(await readFile(join(projects, "fresh", "prompts.yaml"), "utf8")).toMatch(/^# /m);
    expect((await sdx(["validate", "--project", "fresh", "--input", projects])).code).toBe(0);
    const again = await sdx(["init", "fresh", "--input", projects]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("exists");
    expect((await sdx(["init", "../up", "--input", projects])).code).toBe(2);
  });

  test("the whole flow makes the tree with correct metadata, and any image can be remade from it", async () => {
    await initSmall("demo");
    const list = await sdx(["list", "--project", "demo", "--input", projects]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain("lighthouse");
    expect(list.stdout).toContain("portrait");

    const common = ["--project", "demo", "--input", projects, "--output", outputs, "--server", server.url];
    const gen = await sdx(["gen", ...common, "--prompt", "portrait", "--batch", "3"]);
    expect(gen.code).toBe(0);
    expect(gen.stdout).toContain("3 of 3 images made");
    const runDir = await onlyRun(join(outputs, "demo", "portrait"));
    expect(runDir).toMatch(/\d{8}_\d{6}_\d{3}_tiny_sd15$/);
    const tree = await runTree(runDir);
    expect(tree.images).toHaveLength(3);
    expect(tree.errors).toHaveLength(0);
    const stamps = tree.images.map((f) => f.replace(/^image_(.*)\.png$/, "$1"));
    expect(new Set(stamps).size).toBe(3);
    expect(tree.metadata).toEqual(stamps.map((s) => `metadata_${s}.yaml`));

    const metas = await Promise.all(tree.metadata.map((f) => readMeta(runDir, f)));
    expect(metas.map((m) => m.seed)).toEqual([1234, 1235, 1236]);
    const meta = metas[2] as Record<string, unknown>;
    expect(meta).toMatchObject({
      prompt: "portrait of an old fisherman, weathered face, soft window light, 85mm photograph",
      negative_prompt: "cartoon, deformed hands, text",
      model: { name: "tiny_sd15", kind: "sd1" },
      seed: 1236,
      parameters: {
        width: 64,
        height: 64,
        num_steps: 4,
        guidance_scale: 6,
        scheduler_type: "dpmsolver++",
        karras_sigmas: true,
        seed: 1236,
        batch_size: 1,
      },
      scheduler: { name: "dpmsolver++" },
      batch: { index: 2, size: 3, seed: 1234 },
    });
    expect(meta.prompt_tokens).toBeGreaterThan(5);
    expect(typeof meta.timestamp).toBe("string");
    expect(typeof meta.sdx_version).toBe("string");
    expect(typeof meta.server_version).toBe("string");
    expect(meta.timings).toHaveProperty("total_ms");
    expect(Array.isArray(meta.warnings)).toBe(true);

    // Remake image 2 alone from its metadata's seed and parameters: the identical image.
    const params = Object.fromEntries(
      Object.entries(meta.parameters as Record<string, unknown>).filter(([, v]) => v !== null),
    ) as unknown as GenerateRequest;
    const again = await createSdxClient({ baseUrl: server.url }).generate(params);
    const remade = join(work, "remade.png");
    await writeFile(remade, Buffer.from(again.images[0]?.png as string, "base64"));
    expect((await imageDiff(join(runDir, "images", tree.images[2] as string), remade)).max).toBe(0);

    // Ollama: one new prompt per image, fitted to 75 CLIP tokens at a word boundary, under `ollama/`.
    const ol = await sdx(["gen", ...common, "--ollama", "--batch", "2", "--seed", "7", "--json"]);
    expect(ol.code).toBe(0);
    const events = ol.stdout
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { event: string; prompt: string; seed: number });
    expect(events.map((e) => [e.event, e.seed])).toEqual([
      ["image", 7],
      ["image", 8],
    ]);
    expect(ol.stderr).toContain("cut to 75 CLIP tokens");
    const olRun = await onlyRun(join(outputs, "demo", "ollama"));
    const olTree = await runTree(olRun);
    expect(olTree.images).toHaveLength(2);
    const [first, second] = await Promise.all(olTree.metadata.map((f) => readMeta(olRun, f)));
    expect(first).toMatchObject({
      prompt: "a red fox in fresh snow, golden hour, watercolor",
      negative_prompt: "blurry, low quality, watermark, text",
      prompt_name: "ollama",
      ollama: { model: "llama3.2", source: "ollama", fallback: false, cut_text: null },
    });
    const cutPrompt = (second as Record<string, unknown>).prompt as string;
    const cutText = ((second as Record<string, unknown>).ollama as { cut_text: string }).cut_text;
    expect((second as Record<string, unknown>).prompt_tokens).toBeLessThanOrEqual(75);
    expect((second as Record<string, unknown>).prompt_tokens).toBeGreaterThan(60);
    expect(LONG_ANSWER.startsWith(cutPrompt)).toBe(true);
    expect(LONG_ANSWER.slice(cutPrompt.length)).toMatch(/^[, ]/); // never mid-word
    expect(cutText.length).toBeGreaterThan(0);
    expect(LONG_ANSWER.endsWith(cutText)).toBe(true);
    // The chat carried the config's system message and prompt, and the image's seed.
    const chat = ollama.requests.at(-1);
    expect(chat?.path).toBe("/api/chat");
    expect(chat?.messages?.[0]?.role).toBe("system");
    expect(chat?.messages?.[1]?.content).toContain("landscape");
    expect(chat?.options?.seed).toBe(8);
  });
});

describe("ollama fallbacks", () => {
  const cases: [string, (c: string) => string, RegExp][] = [
    [
      "unknown model (404)",
      (c) => c.replace("model: llama3.2", "model: nosuchmodel"),
      /model 'nosuchmodel' not found/,
    ],
    [
      "timeout",
      (c) =>
        c
          .replace("model: llama3.2", "model: slowpoke")
          .replace("# timeout_seconds: 60", "timeout_seconds: 0.3"),
      /did not answer within 0.3 s/,
    ],
    [
      "unreachable",
      (c) =>
        c.replace(
          /server_url: http:\/\/127\.0\.0\.1:\d+\n {2}model/,
          "server_url: http://127.0.0.1:1\n  model",
        ),
      /cannot reach Ollama/,
    ],
    [
      "error line in the stream",
      (c) => c.replace("model: llama3.2", "model: flaky"),
      /llama runner process has terminated/,
    ],
  ];
  for (const [name, edit, reason] of cases) {
    test(name, async () => {
      const project = `fb-${name.replace(/\W+/g, "-")}`;
      await initSmall(project, edit);
      const res = await sdx([
        "gen",
        "--project",
        project,
        "--ollama",
        "--input",
        projects,
        "--output",
        outputs,
        "--server",
        server.url,
      ]);
      expect(res.code).toBe(0);
      expect(res.stderr).toMatch(/warning: ollama: .*using fallback_prompt/);
      expect(res.stderr).toMatch(reason);
      const runDir = await onlyRun(join(outputs, project, "ollama"));
      const tree = await runTree(runDir);
      const meta = await readMeta(runDir, tree.metadata[0] as string);
      expect(meta.prompt).toBe("a quiet mountain lake at sunrise, mist, pine forest, oil painting");
      expect(meta.ollama).toMatchObject({ fallback: true, source: "fallback" });
      expect(String((meta.ollama as { fallback_reason: string }).fallback_reason)).toMatch(reason);
      expect((meta.warnings as string[]).join("\n")).toContain("fallback_prompt");
    }, 30_000);
  }
});

describe("batches, failures and exit codes", () => {
  test("a batch above 16 is split into several requests continuing seed + i, each image its own file", async () => {
    await mkdir(join(projects, "big"), { recursive: true });
    await writeFile(
      join(projects, "big", "config.yaml"),
      `server_url: http://127.0.0.1:1\ndefault_params: {width: 64, height: 64, num_steps: 1}\n`,
    );
    await writeFile(
      join(projects, "big", "prompts.yaml"),
      "prompt_sets:\n  - name: dots\n    prompt: dots\n",
    );
    const res = await sdx([
      "gen",
      "--project",
      "big",
      "--prompt",
      "dots",
      "--batch",
      "18",
      "--seed",
      "4294967290",
      "--input",
      projects,
      "--output",
      outputs,
      "--server",
      server.url,
      "--json",
    ]);
    expect(res.code).toBe(0);
    const seeds = res.stdout
      .trim()
      .split("\n")
      .map((l) => (JSON.parse(l) as { seed: number }).seed);
    expect(seeds).toHaveLength(18);
    expect(seeds.slice(0, 7)).toEqual([
      4294967290, 4294967291, 4294967292, 4294967293, 4294967294, 4294967295, 0,
    ]);
    expect(seeds[17]).toBe(11);
    const tree = await runTree(await onlyRun(join(outputs, "big", "dots")));
    expect(tree.images).toHaveLength(18);
    expect(tree.metadata).toHaveLength(18);
  }, 60_000);

  test("a failed request writes errors/, the batch goes on, and the exit code is 1", async () => {
    // A proxy in front of the real server that fails the second /v1/generate request as the server would.
    let generates = 0;
    const proxy = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const url = new URL(req.url);
        if (url.pathname === "/v1/generate" && ++generates === 2) {
          const body = {
            status: 500,
            code: "generation_failed",
            message: "the engine failed: out of memory",
          };
          return Response.json(body, { status: 500 });
        }
        const init: RequestInit = { method: req.method, headers: req.headers };
        if (req.method === "POST") init.body = await req.text();
        return fetch(`${server.url}${url.pathname}${url.search}`, init);
      },
    });
    try {
      await mkdir(join(projects, "half"), { recursive: true });
      await writeFile(
        join(projects, "half", "config.yaml"),
        `server_url: http://127.0.0.1:${proxy.port}\ndefault_params: {width: 64, height: 64, num_steps: 1}\n`,
      );
      await writeFile(
        join(projects, "half", "prompts.yaml"),
        "prompt_sets:\n  - name: dots\n    prompt: dots\n",
      );
      const res = await sdx([
        "gen",
        "--project",
        "half",
        "--prompt",
        "dots",
        "--batch",
        "34",
        "--seed",
        "5",
        "--input",
        projects,
        "--output",
        outputs,
      ]);
      expect(res.code).toBe(1);
      // Requests of 16, 16 and 2 images: the second fails, the third still runs.
      expect(res.stderr).toMatch(/18 of 34 images made .*16 failed/);
      expect(res.stderr).toContain("image 17/34 failed: server error 500 (generation_failed)");
      expect(generates).toBe(3);
      const runDir = await onlyRun(join(outputs, "half", "dots"));
      const tree = await runTree(runDir);
      expect(tree.images).toHaveLength(18);
      expect(tree.errors).toHaveLength(1);
      const error = YAML.parse(await readFile(join(runDir, "errors", tree.errors[0] as string), "utf8"));
      expect(error.request).toMatchObject({ prompt: "dots", seed: 21, batch_size: 16, width: 64 });
      expect(error.error).toMatchObject({ status: 500, code: "generation_failed" });
      expect(typeof error.timestamp).toBe("string");
    } finally {
      await proxy.stop(true);
    }
  }, 60_000);

  test("Ctrl-C cancels the running request and keeps the finished images", async () => {
    let generates = 0;
    let cancelled = false;
    const { promise: secondArrived, resolve: arrived } = Promise.withResolvers<void>();
    const proxy = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      idleTimeout: 0,
      async fetch(req) {
        const url = new URL(req.url);
        if (url.pathname === "/v1/generate" && ++generates === 2) {
          arrived();
          await new Promise<void>((resolve) => req.signal.addEventListener("abort", () => resolve()));
          cancelled = true;
          return new Response(null, { status: 499 });
        }
        const init: RequestInit = { method: req.method, headers: req.headers };
        if (req.method === "POST") init.body = await req.text();
        return fetch(`${server.url}${url.pathname}${url.search}`, init);
      },
    });
    try {
      const out = join(work, "interrupted");
      const proc = Bun.spawn(
        [
          "bun",
          join(REPO_ROOT, "cli/index.ts"),
          "gen",
          "--project",
          "demo",
          "--prompt",
          "lighthouse",
          "--batch",
          "20",
          "--input",
          projects,
          "--output",
          out,
          "--server",
          `http://127.0.0.1:${proxy.port}`,
        ],
        { stdout: "pipe", stderr: "pipe" },
      );
      await Promise.race([secondArrived, proc.exited]);
      proc.kill("SIGINT");
      const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
      expect(code).toBe(130);
      expect(stderr).toContain("interrupted");
      expect(stderr).toMatch(/16 of 20 images made/);
      for (let i = 0; i < 50 && !cancelled; i++) await Bun.sleep(20);
      expect(cancelled).toBe(true);
      const tree = await runTree(await onlyRun(join(out, "demo", "lighthouse")));
      expect(tree.images).toHaveLength(16);
      expect(tree.metadata).toHaveLength(16);
      expect(tree.errors).toHaveLength(0);
    } finally {
      await proxy.stop(true);
    }
  }, 60_000);

  test("an unreachable server exits 3; a usage mistake exits 2", async () => {
    const unreachable = await sdx([
      "gen",
      "--project",
      "demo",
      "--prompt",
      "portrait",
      "--input",
      projects,
      "--output",
      outputs,
      "--server",
      "http://127.0.0.1:1",
    ]);
    expect(unreachable.code).toBe(3);
    expect(unreachable.stderr).toContain("cannot reach the sdx server");
    expect((await sdx(["health", "--server", "http://127.0.0.1:1"])).code).toBe(3);
    expect((await sdx(["gen", "--project", "demo", "--input", projects, "--batch", "0"])).code).toBe(2);
    expect((await sdx(["gen", "--project", "demo", "--input", projects])).code).toBe(2);
    expect((await sdx(["--no-such-option"])).code).toBe(2);
  });

  test("the seed's option-only spelling maps to list and gen", async () => {
    const list = await sdx(["--input", projects, "--project", "demo", "--list"]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain("portrait");
    const out = join(work, "legacy-out");
    const gen = await sdx([
      "--input",
      projects,
      "--project",
      "demo",
      "--prompt",
      "lighthouse",
      "--batch",
      "2",
      "--output",
      out,
      "--server",
      server.url,
    ]);
    expect(gen.code).toBe(0);
    expect((await runTree(await onlyRun(join(out, "demo", "lighthouse")))).images).toHaveLength(2);
    expect((await sdx(["--input", projects, "--project", "demo", "--list", "--ollama"])).code).toBe(2);
  });

  test("models lists the server's models", async () => {
    const res = await sdx(["models", "--server", server.url]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/\* tiny_sd15/);
  });
});

describe("config mistakes: each names the file and the line", () => {
  const goodConfig = "server_url: http://127.0.0.1:8001\n";
  const goodPrompts = "prompt_sets:\n  - name: a\n    prompt: one\n";
  const cases: { name: string; config?: string; prompts?: string; expect: RegExp }[] = [
    {
      name: "unknown top-level key",
      config: "server_url: http://x:1\nsever_url: http://x:1\n",
      expect: /config\.yaml:2:1: sever_url: unknown key/,
    },
    { name: "missing server_url", config: "name: demo\n", expect: /config\.yaml:1:1: server_url: / },
    {
      name: "server_url not http",
      config: "server_url: ftp://x\n",
      expect: /config\.yaml:1:1: server_url: /,
    },
    {
      name: "misspelt parameter",
      config: `${goodConfig}default_params:\n  num_step: 4\n`,
      expect: /config\.yaml:3:3: default_params\.num_step: unknown key; did you mean "num_steps"\?/,
    },
    {
      name: "wrong type",
      config: `${goodConfig}default_params:\n  width: wide\n`,
      expect: /config\.yaml:3:3: default_params\.width: /,
    },
    {
      name: "out of range",
      config: `${goodConfig}default_params:\n  guidance_scale: 7\n  num_steps: 0\n`,
      expect: /config\.yaml:4:3: default_params\.num_steps: /,
    },
    {
      name: "old ollama key",
      config: `${goodConfig}ollama:\n  host: http://127.0.0.1:11434\n  model: m\n  prompt: p\n  fallback_prompt: f\n`,
      expect: /config\.yaml:3:3: ollama\.host: unknown key/,
    },
    {
      name: "ollama block without fallback_prompt",
      config: `${goodConfig}ollama:\n  model: m\n  prompt: p\n`,
      expect: /config\.yaml:2:1: ollama\.fallback_prompt: /,
    },
    {
      name: "YAML syntax error",
      config: `${goodConfig}default_params: [width: 4\n`,
      expect: /config\.yaml:\d+:\d+: /,
    },
    {
      name: "duplicate YAML key",
      config: `${goodConfig}server_url: http://y:1\n`,
      expect: /config\.yaml:2:1: .*[Uu]nique/,
    },
    { name: "custom YAML tag", config: `server_url: !!js/function "x"\n`, expect: /config\.yaml:1:\d+: / },
    {
      name: "prompt set without prompt",
      prompts: "prompt_sets:\n  - name: a\n    propmt: one\n",
      expect: /prompts\.yaml:3:5: prompt_sets\.0\.propmt: unknown key; did you mean "prompt"\?/,
    },
    { name: "no prompt sets", prompts: "prompt_sets: []\n", expect: /prompts\.yaml:1:1: prompt_sets: / },
    {
      name: "duplicate set name",
      prompts: "prompt_sets:\n  - name: a\n    prompt: one\n  - name: a\n    prompt: two\n",
      expect: /prompts\.yaml:4:5: prompt_sets\.1\.name: duplicate prompt-set name "a"/,
    },
    {
      name: "unsafe set name",
      prompts: "prompt_sets:\n  - name: ../../etc\n    prompt: one\n",
      expect: /prompts\.yaml:2:5: prompt_sets\.0\.name: must be a safe folder name/,
    },
  ];
  for (const c of cases) {
    test(c.name, async () => {
      const project = `bad-${c.name.replace(/\W+/g, "-")}`;
      await mkdir(join(projects, project), { recursive: true });
      await writeFile(join(projects, project, "config.yaml"), c.config ?? goodConfig);
      await writeFile(join(projects, project, "prompts.yaml"), c.prompts ?? goodPrompts);
      const res = await sdx(["validate", "--project", project, "--input", projects]);
      expect(res.code).toBe(2);
      expect(res.stdout + res.stderr).toMatch(c.expect);
    });
  }
});
