/**
 * Pulls from a fake Hugging Face hub on loopback that serves the tiny fixture model as huggingface.co does:
 * files land whole and verified or not at all, cut transfers resume with Range, the token never reaches the CDN.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { resolvePullName } from "../../api/engine/hub/catalog.ts";
import { HubError } from "../../api/engine/hub/errors.ts";
import { fetchSnapshot, isSdxFile } from "../../api/engine/hub/hub_api.ts";
import { type PullOptions, type PullProgress, pullModel } from "../../api/engine/hub/pull.ts";
import { SOURCE_FILE, STAGING_DIR } from "../../api/engine/hub/staging.ts";
import { scanModelsDir } from "../../api/engine/model_folder.ts";
import { type FakeHub, startFakeHub } from "../helpers/fake_hub.ts";
import { TINY_SD15 } from "../helpers/fixtures.ts";
import { writeRandomTaesd } from "../helpers/taesd.ts";

/** madebyollin/taesd as the hub holds it: the decoder sdx pulls beside the encoder, diffusers' file and docs. */
const TAESD_REPO = await mkdtemp(join(tmpdir(), "sdx-hub-taesd-"));
await writeRandomTaesd(join(TAESD_REPO, "taesd_decoder.safetensors"));
await writeRandomTaesd(join(TAESD_REPO, "taesd_encoder.safetensors"), { seed: 2 });
await writeRandomTaesd(join(TAESD_REPO, "diffusion_pytorch_model.safetensors"), { keys: "diffusers" });
await writeFile(join(TAESD_REPO, "config.json"), '{"_class_name": "AutoencoderTiny"}\n');

const EXTRA = {
  "README.md": "# tiny\n",
  ".gitattributes": "*.onnx filter=lfs diff=lfs merge=lfs -text\n",
  "unet/diffusion_pytorch_model.safetensors": "not needed",
  "text_encoder/model.fp16.bin": "not needed",
  // An empty file sdx keeps (nothing to fetch, still verified).
  "scheduler/empty.txt": "",
};

let hub: FakeHub;
beforeAll(async () => {
  hub = await startFakeHub({
    "acme/tiny": { dir: TINY_SD15, extraFiles: EXTRA, revisions: ["onnx"] },
    "acme/cut": { dir: TINY_SD15, cutOnce: ["unet/model.onnx", "tokenizer/vocab.json"] },
    "acme/slow": { dir: TINY_SD15, chunkDelayMs: 15 },
    "acme/norange": { dir: TINY_SD15, chunkDelayMs: 15, noRange: true },
    "acme/corrupt": { dir: TINY_SD15, corrupt: ["vae_decoder/model.onnx"] },
    "acme/corrupt-git": { dir: TINY_SD15, corrupt: ["tokenizer/merges.txt"] },
    "acme/gated": { dir: TINY_SD15, gated: true },
    "acme/not-onnx": { dir: join(TINY_SD15, "tokenizer") },
    "madebyollin/taesd": { dir: TAESD_REPO, extraFiles: { "README.md": "# taesd\n" } },
    "acme/taesd-cut": { dir: TAESD_REPO, cutOnce: ["taesd_decoder.safetensors"] },
    "acme/taesd-corrupt": { dir: TAESD_REPO, corrupt: ["taesd_decoder.safetensors"] },
  });
});
afterAll(() => hub.stop());

const tempModels = () => mkdtemp(join(tmpdir(), "sdx-hub-"));
const options = (modelsDir: string, extra: Partial<PullOptions> = {}): PullOptions => ({
  modelsDir,
  endpoint: hub.url,
  retryDelayMs: 5,
  progressIntervalMs: 0,
  ...extra,
});
/** What a user sees in the models directory: no hidden staging. */
const visible = async (dir: string) => (await readdir(dir)).filter((n) => !n.startsWith("."));

async function expectSameAsFixture(folder: string) {
  for (const rel of [
    "model_index.json",
    "unet/model.onnx",
    "tokenizer/vocab.json",
    "vae_decoder/model.onnx",
  ]) {
    expect(Buffer.compare(await readFile(join(folder, rel)), await readFile(join(TINY_SD15, rel)))).toBe(0);
  }
}

async function hubError(promise: Promise<unknown>): Promise<HubError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof HubError) return e;
    throw e;
  }
  throw new Error("expected a HubError");
}

describe("pull names", () => {
  test("catalog names, org/name and org/name@revision, and safe folder names", () => {
    expect(resolvePullName("sd-turbo")).toMatchObject({ repo: "onnxruntime/sd-turbo", folder: "sd-turbo" });
    expect(resolvePullName("acme/tiny")).toMatchObject({
      repo: "acme/tiny",
      revision: "main",
      folder: "tiny",
    });
    expect(resolvePullName("CompVis/stable-diffusion-v1-4@onnx")).toMatchObject({
      revision: "onnx",
      folder: "stable-diffusion-v1-4-onnx",
    });
    expect(resolvePullName("acme/tiny@refs/pr/1").folder).toBe("tiny-refs-pr-1");
    expect(resolvePullName("acme/tiny", "mine").folder).toBe("mine");
    for (const bad of [
      "nope",
      "acme/../etc",
      "../x/y",
      "/abs/path",
      "acme/tiny@../../x",
      "a/b/c",
      "acme/x.git",
    ]) {
      expect(() => resolvePullName(bad)).toThrow();
    }
    for (const folder of ["../evil", ".hidden", "a/b", ""])
      expect(() => resolvePullName("acme/tiny", folder)).toThrow();
  });

  test("only the ONNX folder's files are kept", () => {
    for (const p of [
      "model_index.json",
      "unet/model.onnx",
      "unet/weights.pb",
      "text_encoder_2/model.onnx.data",
    ]) {
      expect(isSdxFile(p)).toBe(true);
    }
    for (const p of [
      "README.md",
      ".gitattributes",
      "unet/diffusion_pytorch_model.safetensors",
      "unet/diffusion_pytorch_model.fp16.bin",
      "safety_checker/model.onnx",
      "vae/diffusion_pytorch_model.safetensors",
      "unet/sub/model.onnx",
      "unet/.hidden",
      "unet/..",
    ]) {
      expect(isSdxFile(p)).toBe(false);
    }
  });
});

describe("pullModel", () => {
  test("downloads the ONNX folder whole, verified, and the model then loads", async () => {
    const models = await tempModels();
    const progress: PullProgress[] = [];
    const result = await pullModel(
      resolvePullName("acme/tiny"),
      options(models, { onProgress: (p) => progress.push(p) }),
    );
    expect(result).toMatchObject({ name: "tiny", repo: "acme/tiny", files: 15, resumedBytes: 0 });
    expect(result.entry).toMatchObject({ kind: "sd1", problem: null });
    await expectSameAsFixture(join(models, "tiny"));
    // Docs and other weight formats are skipped; the staging folder is gone.
    const files = await readdir(join(models, "tiny"), { recursive: true });
    expect(files).not.toContain("README.md");
    expect(files).not.toContain("unet/diffusion_pytorch_model.safetensors");
    expect((await readdir(models)).filter((n) => n !== ".sdx-cache")).toEqual(["tiny"]);
    const source = JSON.parse(await readFile(join(models, "tiny", SOURCE_FILE), "utf8"));
    expect(source).toMatchObject({ repo: "acme/tiny", revision: "main", commit: result.commit });
    expect((await scanModelsDir(models)).map((e) => [e.name, e.problem])).toEqual([["tiny", null]]);
    // Progress only grows and ends at the total.
    const last = progress.at(-1) as PullProgress;
    expect(last).toMatchObject({ bytes: result.bytes, total: result.bytes, filesDone: 15, filesTotal: 15 });
    expect((await readFile(join(models, "tiny", "scheduler/empty.txt"))).byteLength).toBe(0);
    for (let i = 1; i < progress.length; i++) {
      expect((progress[i] as PullProgress).bytes).toBeGreaterThanOrEqual(
        (progress[i - 1] as PullProgress).bytes,
      );
    }
  });

  test("a revision other than main is fetched at its commit", async () => {
    const models = await tempModels();
    const snapshot = await fetchSnapshot({ repo: "acme/tiny", revision: "onnx" }, { endpoint: hub.url });
    const result = await pullModel(resolvePullName("acme/tiny@onnx"), options(models));
    expect(result).toMatchObject({ name: "tiny-onnx", revision: "onnx", commit: snapshot.commit });
    const resolves = hub.requests.filter((r) => r.path.startsWith(`/acme/tiny/resolve/${snapshot.commit}/`));
    expect(resolves.length).toBeGreaterThan(0);
  });

  test("a connection cut mid-file resumes with Range where it stopped", async () => {
    const models = await tempModels();
    const result = await pullModel(resolvePullName("acme/cut"), options(models));
    expect(result.entry?.problem).toBeNull();
    await expectSameAsFixture(join(models, "cut"));
    const unetSize = (await readFile(join(TINY_SD15, "unet/model.onnx"))).byteLength;
    // The LFS file resumes on the CDN, the git file on the hub, each from half its size.
    const cdnRanges = hub.requests.filter((r) => r.server === "cdn" && r.range !== null).map((r) => r.range);
    expect(cdnRanges).toContain(`bytes=${unetSize >> 1}-`);
    const vocabSize = (await readFile(join(TINY_SD15, "tokenizer/vocab.json"))).byteLength;
    const vocab = hub.requests.filter(
      (r) => r.path.startsWith("/acme/cut/resolve/") && r.path.endsWith("/vocab.json"),
    );
    expect(vocab.map((r) => r.range)).toEqual([null, `bytes=${vocabSize >> 1}-`]);
  });

  test("an interrupted pull resumes on the next run, keeping what was downloaded", async () => {
    const models = await tempModels();
    const controller = new AbortController();
    const first = pullModel(
      resolvePullName("acme/slow"),
      options(models, {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.file === "unet/model.onnx" && p.fileBytes > 2_000_000) controller.abort();
        },
      }),
    );
    await expect(first).rejects.toThrow();
    expect(await visible(models)).toEqual([]);
    const staged = await readdir(join(models, STAGING_DIR, "slow", "unet"));
    expect(staged).toContain("model.onnx.part");
    const result = await pullModel(resolvePullName("acme/slow"), options(models));
    expect(result.resumedBytes).toBeGreaterThan(2_000_000);
    await expectSameAsFixture(join(models, "slow"));
    expect((await readdir(models)).filter((n) => n !== ".sdx-cache")).toEqual(["slow"]);
    const ranges = hub.requests.filter((r) => r.server === "cdn" && r.range !== null).map((r) => r.range);
    expect(ranges.some((r) => Number(/\d+/.exec(r ?? "")?.[0]) > 2_000_000)).toBe(true);
  });

  test("a server that ignores Range restarts the file, and the result is still right", async () => {
    const models = await tempModels();
    const controller = new AbortController();
    const first = pullModel(
      resolvePullName("acme/norange"),
      options(models, {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.file === "unet/model.onnx" && p.fileBytes > 1_000_000) controller.abort();
        },
      }),
    );
    await first.catch(() => undefined);
    const result = await pullModel(resolvePullName("acme/norange"), options(models));
    expect(result.entry?.problem).toBeNull();
    await expectSameAsFixture(join(models, "norange"));
  });

  test("a file whose SHA-256 differs fails the pull and nothing appears in the models directory", async () => {
    const models = await tempModels();
    const error = await hubError(pullModel(resolvePullName("acme/corrupt"), options(models)));
    expect(error.kind).toBe("corrupt");
    expect(error.message).toContain("vae_decoder/model.onnx");
    expect(error.message).toContain("SHA-256");
    expect(await visible(models)).toEqual([]);
    expect(await scanModelsDir(models)).toEqual([]);
    // The bad bytes are gone; verified files stay staged for the next pull.
    const staged = await readdir(join(models, STAGING_DIR, "corrupt"), { recursive: true });
    expect(staged.some((p) => p.startsWith("vae_decoder/model.onnx"))).toBe(false);
    expect(staged).toContain("unet/model.onnx");
  });

  test("a git file whose blob SHA-1 differs fails too", async () => {
    const models = await tempModels();
    const error = await hubError(pullModel(resolvePullName("acme/corrupt-git"), options(models)));
    expect(error.kind).toBe("corrupt");
    expect(error.message).toContain("tokenizer/merges.txt");
    expect(await visible(models)).toEqual([]);
  });

  test("an existing folder is never touched", async () => {
    const models = await tempModels();
    await mkdir(join(models, "tiny"));
    await writeFile(join(models, "tiny", "mine.txt"), "keep me");
    const before = hub.requests.length;
    const error = await hubError(pullModel(resolvePullName("acme/tiny"), options(models)));
    expect(error.kind).toBe("exists");
    expect(hub.requests.length).toBe(before);
    expect(await readdir(join(models, "tiny"))).toEqual(["mine.txt"]);
  });

  test("HF_TOKEN goes to the hub but never to the CDN it redirects to", async () => {
    const models = await tempModels();
    const before = hub.requests.length;
    await pullModel(resolvePullName("acme/gated"), options(models, { token: hub.token }));
    const sent = hub.requests.slice(before);
    const toHub = sent.filter((r) => r.server === "hub");
    const toCdn = sent.filter((r) => r.server === "cdn");
    expect(toHub.length).toBeGreaterThan(0);
    expect(toCdn.length).toBeGreaterThan(0);
    expect(toHub.every((r) => r.authorization === `Bearer ${hub.token}`)).toBe(true);
    expect(toCdn.every((r) => r.authorization === null)).toBe(true);
  });

  test("the hub's refusals say what to do", async () => {
    const models = await tempModels();
    const gated = await hubError(pullModel(resolvePullName("acme/gated"), options(models)));
    expect(gated.kind).toBe("forbidden");
    expect(gated.message).toContain("HF_TOKEN");
    const unknown = await hubError(pullModel(resolvePullName("acme/unknown"), options(models)));
    expect(unknown.kind).toBe("not_found");
    expect(unknown.message).toContain("no repository acme/unknown");
    const revision = await hubError(pullModel(resolvePullName("acme/tiny@nope"), options(models)));
    expect(revision).toMatchObject({ kind: "not_found", message: 'acme/tiny has no revision "nope"' });
    const notOnnx = await hubError(pullModel(resolvePullName("acme/not-onnx"), options(models)));
    expect(notOnnx.kind).toBe("not_onnx");
    const down = await hubError(
      pullModel(resolvePullName("acme/tiny"), options(models, { endpoint: "http://127.0.0.1:9" })),
    );
    expect(down.kind).toBe("unreachable");
    expect((await readdir(models)).filter((n) => n !== ".sdx-cache")).toEqual([]);
  });
});

describe("pulling a preview decoder (one file into the vae_approx folder)", () => {
  test("only the decoder, verified, lands in models/vae_approx/; no staging is left", async () => {
    const models = await tempModels();
    const result = await pullModel(resolvePullName("taesd"), options(models));
    const file = join(models, "vae_approx", "taesd_decoder.safetensors");
    expect(result).toMatchObject({
      name: "taesd",
      repo: "madebyollin/taesd",
      files: 1,
      entry: null,
      paths: [file],
    });
    expect(
      Buffer.compare(await readFile(file), await readFile(join(TAESD_REPO, "taesd_decoder.safetensors"))),
    ).toBe(0);
    expect(await readdir(join(models, "vae_approx"))).toEqual(["taesd_decoder.safetensors"]);
    expect(await visible(models)).toEqual(["vae_approx"]);
    // Its SHA-256 is known from the hub, as for a model's files.
    const hashes = JSON.parse(await readFile(join(models, ".sdx-cache", "hashes.json"), "utf8"));
    expect(JSON.stringify(hashes)).toContain("taesd_decoder.safetensors");
    // Pulled again: the file is there, nothing is touched or fetched.
    const before = hub.requests.length;
    const again = await hubError(pullModel(resolvePullName("taesd"), options(models)));
    expect(again.kind).toBe("exists");
    expect(again.message).toContain("taesd_decoder.safetensors is already in");
    expect(hub.requests.length).toBe(before);
  });

  test("into the folder --vae-approx-dir names; a cut transfer resumes", async () => {
    const models = await tempModels();
    const elsewhere = await mkdtemp(join(tmpdir(), "sdx-approx-elsewhere-"));
    const target = { ...resolvePullName("taesd"), repo: "acme/taesd-cut" };
    const before = hub.requests.length;
    const result = await pullModel(target, options(models, { adapterFolders: { vae_approx: elsewhere } }));
    expect(result.paths).toEqual([join(elsewhere, "taesd_decoder.safetensors")]);
    expect(hub.requests.slice(before).filter((r) => r.server === "cdn" && r.range !== null)).toHaveLength(1);
    expect(await readdir(elsewhere)).toEqual(["taesd_decoder.safetensors"]);
    expect(await visible(models)).toEqual([]);
  });

  test("a corrupt file never lands; a repository without the file is not_found; folder does not apply", async () => {
    const models = await tempModels();
    const corrupt = await hubError(
      pullModel({ ...resolvePullName("taesd"), repo: "acme/taesd-corrupt" }, options(models)),
    );
    expect(corrupt.kind).toBe("corrupt");
    expect(await readdir(join(models, "vae_approx"))).toEqual([".sdx-downloads"]);
    const missing = await hubError(
      pullModel({ ...resolvePullName("taesd"), repo: "acme/tiny" }, options(models)),
    );
    expect(missing).toMatchObject({
      kind: "not_found",
      message: "acme/tiny has no taesd_decoder.safetensors",
    });
    expect(() => resolvePullName("taesd", "mine")).toThrow(/folder does not apply to taesd/);
  });
});
