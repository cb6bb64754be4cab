/**
 * GET /v1/models/catalog and POST /v1/models/pull on the real server (`bun api/index.ts`), through the SDK,
 * pulling from a fake Hugging Face hub on loopback (HF_ENDPOINT) that serves the tiny fixture model.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { inspectModelFolder } from "../../api/engine/model_folder.ts";
import { modelHash } from "../../api/engine/model_hash.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { createSdxClient, type PullProgress, type SdxClient, SdxError } from "../../sdk/index.ts";
import { type FakeHub, startFakeHub } from "../helpers/fake_hub.ts";
import { TINY_SD15 } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";
import { writeRandomTaesd } from "../helpers/taesd.ts";

let hub: FakeHub;
let server: RunningServer;
let client: SdxClient;
let models: string;

beforeAll(async () => {
  // madebyollin/taesdxl as the hub holds it: the decoder sdx pulls beside the encoder.
  const taesdxl = await mkdtemp(join(tmpdir(), "sdx-hub-taesdxl-"));
  await writeRandomTaesd(join(taesdxl, "taesdxl_decoder.safetensors"));
  await writeRandomTaesd(join(taesdxl, "taesdxl_encoder.safetensors"), { seed: 5 });
  hub = await startFakeHub({
    "madebyollin/taesdxl": { dir: taesdxl, extraFiles: { "README.md": "# taesdxl\n" } },
    "acme/tiny": { dir: TINY_SD15, cutOnce: ["unet/model.onnx"], extraFiles: { "README.md": "# tiny\n" } },
    "acme/shared": { dir: TINY_SD15, chunkDelayMs: 10 },
    "acme/slow": { dir: TINY_SD15, chunkDelayMs: 20 },
    "acme/corrupt": { dir: TINY_SD15, corrupt: ["unet/model.onnx"] },
    "acme/gated": { dir: TINY_SD15, gated: true },
    // The catalog's SD-Turbo, served from the fake hub.
    "onnxruntime/sd-turbo": { dir: TINY_SD15 },
  });
  models = await mkdtemp(join(tmpdir(), "sdx-hub-api-"));
  server = await startServer(["--models-dir", models], {
    env: { HF_ENDPOINT: hub.url, HF_TOKEN: hub.token },
  });
  client = createSdxClient({ baseUrl: server.url });
});
afterAll(async () => {
  await server.stop();
  await hub.stop();
});

const visible = async () => (await readdir(models)).filter((n) => !n.startsWith("."));

async function sdxError(promise: Promise<unknown>): Promise<SdxError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof SdxError) return e;
    throw e;
  }
  throw new Error("expected an SdxError");
}

describe("the catalog", () => {
  test("lists ready ONNX models with their repository, kind and size, and which are installed", async () => {
    const catalog = await client.models.catalog();
    expect(catalog.hub).toBe(hub.url);
    const names = catalog.models.map((m) => m.name);
    expect(names).toEqual(expect.arrayContaining(["stable-diffusion-v1-5-onnx", "sd-turbo", "sdxl-turbo"]));
    expect(catalog.models.find((m) => m.name === "sd-turbo")).toMatchObject({
      type: "model",
      repo: "onnxruntime/sd-turbo",
      kind: "sd2",
      families: ["sd2"],
      installed: false,
    });
    expect(catalog.models.find((m) => m.name === "taesd")).toMatchObject({
      type: "vae_approx",
      repo: "madebyollin/taesd",
      families: ["sd1", "sd2"],
      installed: false,
    });
  });
});

describe("pulling a preview decoder", () => {
  test("taesdxl lands in the vae_approx folder, usable, and is then installed and listed", async () => {
    const result = await client.models.pull("taesdxl", { onProgress: () => {} });
    expect(result).toMatchObject({
      name: "taesdxl_decoder",
      type: "vae_approx",
      repo: "madebyollin/taesdxl",
      files: 1,
      kind: "sdxl",
      loadable: true,
      problem: null,
    });
    expect(await readdir(join(models, "vae_approx"))).toEqual(["taesdxl_decoder.safetensors"]);
    expect(await visible()).not.toContain("taesdxl");
    const catalog = await client.models.catalog();
    expect(catalog.models.find((m) => m.name === "taesdxl")?.installed).toBe(true);
    const listed = (await client.adapters()).vae_approx.find((a) => a.name === "taesdxl_decoder");
    expect(listed).toMatchObject({ format: "taesd_safetensors", family: "sdxl", usable: true });
    expect(listed?.sha256).toMatch(/^[0-9a-f]{64}$/);
    // Again: a 409 naming the file; a folder is refused, naming the field.
    const again = await sdxError(client.models.pull("taesdxl"));
    expect(again).toMatchObject({ status: 409, code: "model_exists" });
    expect(again.message).toContain("taesdxl_decoder.safetensors is already in the vae_approx folder");
    const folder = await sdxError(client.models.pull("taesdxl", { folder: "mine" }));
    expect(folder).toMatchObject({ status: 422, code: "validation_failed" });
    expect(folder.fields[0]?.field).toBe("folder");
  });
});

describe("POST /v1/models/pull", () => {
  test("pulls with progress (resuming a cut connection); the model is then listed and loadable", async () => {
    const progress: PullProgress[] = [];
    const result = await client.models.pull("acme/tiny", { onProgress: (p) => progress.push(p) });
    expect(result).toMatchObject({
      name: "tiny",
      repo: "acme/tiny",
      files: 14,
      joined: false,
      kind: "sd1",
      loadable: true,
      problem: null,
    });
    expect(progress.length).toBeGreaterThan(0);
    expect(progress.at(-1)).toMatchObject({ bytes: result.size_bytes, files_done: 14, files_total: 14 });
    // The unet's transfer was cut half-way and resumed with Range on the CDN.
    expect(hub.requests.some((r) => r.server === "cdn" && r.range !== null)).toBe(true);
    const listed = (await client.models.list()).models.find((m) => m.name === "tiny");
    expect(listed).toMatchObject({ format: "onnx", kind: "sd1", loadable: true });
    // The hashes verified while downloading are cached: the model's hash is known before it is ever loaded,
    // and is the one hashing every file from scratch gives.
    const scratch = await mkdtemp(join(tmpdir(), "sdx-hash-"));
    const entry = await inspectModelFolder("tiny", join(models, "tiny"));
    expect(listed?.hash).toBe(await modelHash(entry, scratch));
    expect(
      Buffer.compare(
        await readFile(join(models, "tiny", "unet/model.onnx")),
        await readFile(join(TINY_SD15, "unet/model.onnx")),
      ),
    ).toBe(0);
  });

  test("a catalog name pulls its repository, and the catalog then marks it installed", async () => {
    const result = await client.models.pull("sd-turbo");
    expect(result).toMatchObject({ name: "sd-turbo", repo: "onnxruntime/sd-turbo", loadable: true });
    const catalog = await client.models.catalog();
    expect(catalog.models.find((m) => m.name === "sd-turbo")?.installed).toBe(true);
  });

  test("an existing folder is a 409 and stays untouched", async () => {
    await mkdir(join(models, "gated"));
    await writeFile(join(models, "gated", "mine.txt"), "keep me");
    const error = await sdxError(client.models.pull("acme/gated"));
    expect(error).toMatchObject({ status: 409, code: "model_exists" });
    expect(await readdir(join(models, "gated"))).toEqual(["mine.txt"]);
    // Into another folder it works, with the server's HF_TOKEN sent to the hub and not to the CDN.
    const before = hub.requests.length;
    const result = await client.models.pull("acme/gated", { folder: "gated-2" });
    expect(result.name).toBe("gated-2");
    const sent = hub.requests.slice(before);
    expect(
      sent.filter((r) => r.server === "hub").every((r) => r.authorization === `Bearer ${hub.token}`),
    ).toBe(true);
    expect(sent.filter((r) => r.server === "cdn").length).toBeGreaterThan(0);
    expect(sent.filter((r) => r.server === "cdn").every((r) => r.authorization === null)).toBe(true);
  });

  test("concurrent pulls of one model share one download", async () => {
    const [a, b] = await Promise.all([
      client.models.pull("acme/shared", { onProgress: () => {} }),
      Bun.sleep(100).then(() => client.models.pull("acme/shared")),
    ]);
    expect([a.joined, b.joined].sort()).toEqual([false, true]);
    expect(a.commit).toBe(b.commit);
    expect(hub.requests.filter((r) => r.path.startsWith("/acme/shared/resolve/")).length).toBe(14);
    const unetOnCdn = hub.requests.filter(
      (r) => r.server === "cdn" && r.path.startsWith("/repos/acme%2Fshared/"),
    );
    expect(unetOnCdn.length).toBe(4);
  });

  test("a file failing its SHA-256 is a 502 and no model appears", async () => {
    const before = await visible();
    const error = await sdxError(client.models.pull("acme/corrupt"));
    expect(error).toMatchObject({ status: 502, code: "download_failed" });
    expect(error.message).toContain("unet/model.onnx");
    expect(await visible()).toEqual(before);
    expect((await client.models.list()).models.map((m) => m.name)).not.toContain("corrupt");
  });

  test("unknown repositories, names and bad input are clear errors", async () => {
    expect(await sdxError(client.models.pull("acme/unknown"))).toMatchObject({
      status: 404,
      code: "hub_not_found",
      message: expect.stringContaining("acme/unknown"),
    });
    const notInCatalog = await sdxError(client.models.pull("no-such-model"));
    expect(notInCatalog).toMatchObject({ status: 404, code: "not_in_catalog" });
    expect(notInCatalog.message).toContain("sd-turbo");
    const traversal = await sdxError(client.models.pull("acme/../etc"));
    expect(traversal).toMatchObject({ status: 422, code: "validation_failed" });
    expect(traversal.fields[0]?.field).toBe("name");
    const folder = await sdxError(client.models.pull("acme/tiny", { folder: "../evil" }));
    expect(folder).toMatchObject({ status: 422, code: "validation_failed" });
    // Errors of a streamed pull come before the stream, as plain JSON.
    const streamed = await sdxError(client.models.pull("acme/unknown", { onProgress: () => {} }));
    expect(streamed).toMatchObject({ status: 404, code: "hub_not_found" });
  });

  test("the event stream ends with done", async () => {
    const events: string[] = [];
    for await (const event of client.models.pullStream("acme/tiny", { folder: "tiny-stream" })) {
      events.push(event.type);
    }
    expect(events.at(-1)).toBe("done");
    expect(events.filter((e) => e === "progress").length).toBeGreaterThan(0);
  });

  test("a client that leaves stops the pull; the next pull resumes it", async () => {
    for await (const event of client.models.pullStream("acme/slow")) {
      if (event.type === "progress" && event.file === "unet/model.onnx" && event.file_bytes > 1_000_000)
        break;
    }
    // The server notices the closed stream and stops downloading: the staged file stops growing.
    const part = join(models, ".sdx-downloads", "slow", "unet", "model.onnx.part");
    await Bun.sleep(300);
    const size = (await stat(part)).size;
    await Bun.sleep(300);
    expect((await stat(part)).size).toBe(size);
    expect(await visible()).not.toContain("slow");
    const result = await client.models.pull("acme/slow");
    expect(result.resumed_bytes).toBeGreaterThan(1_000_000);
    expect(result.loadable).toBe(true);
  });
});

describe("with an API key", () => {
  test("the catalog and pulls need the key, like every other route", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdx-hub-key-"));
    const app = createApp(new ModelHost({ modelsDir: dir, provider: "cpu" }), {
      security: { apiKey: "secret" },
      hub: { endpoint: hub.url },
    });
    const fetchApp = (request: Request) => app.handle(request);
    const anonymous = createSdxClient({ baseUrl: "http://127.0.0.1", fetch: fetchApp });
    expect(await sdxError(anonymous.models.catalog())).toMatchObject({ status: 401, code: "unauthorized" });
    expect(await sdxError(anonymous.models.pull("acme/tiny"))).toMatchObject({ status: 401 });
    expect(await readdir(dir)).toEqual([]);
    const keyed = createSdxClient({ baseUrl: "http://127.0.0.1", fetch: fetchApp, apiKey: "secret" });
    expect((await keyed.models.catalog()).models.length).toBeGreaterThan(0);
  });
});
