/**
 * Per-request models on a real server: `model` picks any loadable model of GET /v1/models, loading it on
 * demand (reported in the stream and in timings), with an LRU cache bounded by --max-loaded-models.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSdxClient, type GenerateEvent, SdxError } from "../../sdk/index.ts";
import { FIXTURES, TINY_SD15, TINY_SDXL } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

let dir: string;
let server: RunningServer;
let client: ReturnType<typeof createSdxClient>;

const small = { prompt: "a red fox", seed: 7, width: 64, height: 64, num_steps: 2 } as const;

async function sha256(path: string): Promise<string> {
  return new Bun.CryptoHasher("sha256").update(await Bun.file(path).arrayBuffer()).digest("hex");
}

async function metric(name: string): Promise<string> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return text
    .split("\n")
    .filter((line) => line.startsWith(name))
    .join("\n");
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sdx-models-"));
  await cp(TINY_SD15, join(dir, "alpha"), { recursive: true });
  await cp(TINY_SDXL, join(dir, "beta"), { recursive: true });
  await cp(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), join(dir, "gamma.safetensors"));
  server = await startServer(["--models-dir", dir, "--provider", "cpu", "--max-loaded-models", "1"]);
  client = createSdxClient({ baseUrl: server.url });
});

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("choosing the model per request", () => {
  test("with several models and no --model there is no default: the list says so and nothing is loaded", async () => {
    const list = await client.models.list();
    expect(list.default_model).toBeNull();
    expect(list.max_loaded_models).toBe(1);
    expect(list.models.map((m) => [m.name, m.loaded, m.default])).toEqual([
      ["alpha", false, false],
      ["beta", false, false],
      ["gamma", false, false],
    ]);
    const health = await client.health();
    expect(health.status).toBe("no_model");
    expect(health.message).toContain('send "model"');
    const e = await client.generate(small).catch((error: unknown) => error);
    expect(e).toBeInstanceOf(SdxError);
    expect((e as SdxError).code).toBe("no_model");
  });

  test("an unknown name, or anything path-like, is a 422 naming the field and listing the models", async () => {
    for (const model of ["delta", "../alpha", "/etc", "alpha/unet"]) {
      const e = (await client.generate({ ...small, model }).catch((error: unknown) => error)) as SdxError;
      expect(e).toBeInstanceOf(SdxError);
      expect(e.status).toBe(422);
      expect(e.fields[0]?.field).toBe("model");
      expect(e.fields[0]?.allowed).toEqual(["alpha", "beta", "gamma"]);
    }
  });

  test("a model that is not loaded loads on demand: a loading event, load_ms, and the model's hash", async () => {
    const events: GenerateEvent[] = [];
    for await (const event of client.generateStream({ ...small, model: "gamma" })) events.push(event);
    const types = events.map((e) => e.type);
    expect(types.indexOf("loading")).toBeGreaterThan(types.indexOf("started"));
    expect(types.indexOf("loading")).toBeLessThan(types.indexOf("step"));
    expect(events.find((e) => e.type === "loading")).toEqual({ type: "loading", model: "gamma" });
    const done = events.find((e) => e.type === "done");
    if (done?.type !== "done") throw new Error("no done event");
    expect(done.metadata.model.name).toBe("gamma");
    expect(done.metadata.timings.load_ms).toBeGreaterThan(0);
    const fileHash = await sha256(join(dir, "gamma.safetensors"));
    expect(done.metadata.model.hash).toBe(fileHash);
    const image = events.find((e) => e.type === "image");
    if (image?.type !== "image") throw new Error("no image event");
    const png = Buffer.from(image.png, "base64").toString("latin1");
    expect(png).toContain(`Model hash: ${fileHash.slice(0, 10)}, Model: gamma`);
    // Loaded now: the next request starts at once.
    const again = await client.generate({ ...small, model: "gamma" });
    expect(again.metadata.timings.load_ms).toBe(0);
    const listed = (await client.models.list()).models.find((m) => m.name === "gamma");
    expect(listed).toMatchObject({ loaded: true, hash: fileHash });
  });

  test("switching models per request keeps at most --max-loaded-models loaded, and images stay exact", async () => {
    const first = await client.generate({ ...small, model: "alpha" });
    expect(first.metadata.model).toMatchObject({ name: "alpha", kind: "sd1" });
    expect((await client.health()).loaded_models).toEqual(["alpha"]);
    const other = await client.generate({ ...small, model: "beta" });
    expect(other.metadata.model).toMatchObject({ name: "beta", kind: "sdxl" });
    expect(other.images[0]?.png).not.toBe(first.images[0]?.png);
    expect((await client.health()).loaded_models).toEqual(["beta"]);
    // alpha was unloaded: it loads again, and gives the same image as before.
    const back = await client.generate({ ...small, model: "alpha" });
    expect(back.metadata.timings.load_ms).toBeGreaterThan(0);
    expect(back.images[0]?.png).toBe(first.images[0]?.png ?? "");
    expect(await metric('sdx_model_loads_total{model="alpha"}')).toBe(
      'sdx_model_loads_total{model="alpha"} 2',
    );
    const list = await client.models.list();
    expect(list.models.filter((m) => m.loaded).map((m) => m.name)).toEqual(["alpha"]);
  });

  test("tokenize takes the model too", async () => {
    const res = await client.tokenize({ prompt: "a red fox", model: "beta" });
    expect(res.model).toBe("beta");
    expect(res.token_count).toBe(3);
    const e = (await client
      .tokenize({ prompt: "x", model: "nope" })
      .catch((error: unknown) => error)) as SdxError;
    expect(e.status).toBe(422);
    expect(e.fields[0]?.field).toBe("model");
  });
});

describe("a default model with others on demand", () => {
  let second: RunningServer;
  beforeAll(async () => {
    second = await startServer([
      "--models-dir",
      dir,
      "--model",
      "alpha",
      "--provider",
      "cpu",
      "--max-loaded-models",
      "1",
    ]);
  });
  afterAll(() => second?.stop());

  test("requests without model get the default, even after it was unloaded for another", async () => {
    const c = createSdxClient({ baseUrl: second.url });
    expect((await c.health()).status).toBe("ok");
    const a = await c.generate(small);
    expect(a.metadata.model.name).toBe("alpha");
    expect(a.metadata.timings.load_ms).toBe(0);
    await c.generate({ ...small, model: "gamma" });
    const health = await c.health();
    expect(health).toMatchObject({ status: "ok", model: { name: "alpha" }, loaded_models: ["gamma"] });
    const b = await c.generate(small);
    expect(b.metadata.model.name).toBe("alpha");
    expect(b.metadata.timings.load_ms).toBeGreaterThan(0);
    expect(b.images[0]?.png).toBe(a.images[0]?.png ?? "");
  });
});

describe("two models at once", () => {
  let third: RunningServer;
  beforeAll(async () => {
    third = await startServer([
      "--models-dir",
      dir,
      "--provider",
      "cpu",
      "--concurrency",
      "2",
      "--max-loaded-models",
      "1",
    ]);
  });
  afterAll(() => third?.stop());

  test("with --concurrency 2, generations on two models run together; the cache shrinks back once both end", async () => {
    const c = createSdxClient({ baseUrl: third.url });
    const [a, b] = await Promise.all([
      c.generate({ ...small, model: "alpha", num_steps: 4 }),
      c.generate({ ...small, model: "gamma", num_steps: 4 }),
    ]);
    expect(a.metadata.model.name).toBe("alpha");
    expect(b.metadata.model.name).toBe("gamma");
    // Both were loaded while both ran (a model in use is never unloaded); afterwards the bound holds again.
    const deadline = Date.now() + 5000;
    while ((await c.health()).loaded_models.length > 1 && Date.now() < deadline) await Bun.sleep(20);
    expect((await c.health()).loaded_models).toHaveLength(1);
    // Both still answer, reloading as needed, with the same images.
    const again = await c.generate({ ...small, model: "alpha", num_steps: 4 });
    expect(again.images[0]?.png).toBe(a.images[0]?.png ?? "");
  });
});
