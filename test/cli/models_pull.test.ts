/**
 * `sdx models pull`, `sdx models catalog` and `sdx models` as a user runs them: real processes, a real server
 * whose HF_ENDPOINT is a fake Hugging Face hub on loopback serving the tiny fixture model.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sdx } from "../helpers/cli.ts";
import { type FakeHub, startFakeHub } from "../helpers/fake_hub.ts";
import { TINY_SD15 } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";
import { writeRandomTaesd } from "../helpers/taesd.ts";

let hub: FakeHub;
let server: RunningServer;
let models: string;

beforeAll(async () => {
  const taesd = await mkdtemp(join(tmpdir(), "sdx-cli-taesd-"));
  await writeRandomTaesd(join(taesd, "taesd_decoder.safetensors"));
  hub = await startFakeHub({
    "madebyollin/taesd": { dir: taesd },
    "acme/tiny": { dir: TINY_SD15, cutOnce: ["vae_decoder/model.onnx"] },
    "acme/corrupt": { dir: TINY_SD15, corrupt: ["text_encoder/model.onnx"] },
  });
  models = await mkdtemp(join(tmpdir(), "sdx-cli-pull-"));
  server = await startServer(["--models-dir", models], { env: { HF_ENDPOINT: hub.url, HF_TOKEN: "" } });
});
afterAll(async () => {
  await server.stop();
  await hub.stop();
});

describe("sdx models pull", () => {
  test("downloads into the server's models directory, a line per file when not on a terminal", async () => {
    const res = await sdx(["models", "pull", "acme/tiny", "--server", server.url]);
    expect(res.stderr).toContain("[1/14] model_index.json");
    expect(res.stderr).toContain("[14/14] vae_encoder/model.onnx");
    expect(res.stdout).toMatch(/^tiny: 14 files, 24\.3 MiB from acme\/tiny@[0-9a-f]{10}\n/);
    expect(res.stdout).toContain("sd1 ready");
    expect(res.code).toBe(0);
    const list = await sdx(["models", "--server", server.url]);
    expect(list.stdout).toMatch(/ tiny {2}sd1 {2}onnx/);
    expect((await sdx(["models", "list", "--server", server.url, "--json"])).stdout).toContain(
      '"name": "tiny"',
    );
  });

  test("--json prints the result; --folder names the folder", async () => {
    const res = await sdx([
      "models",
      "pull",
      "acme/tiny",
      "--folder",
      "tiny-2",
      "--server",
      server.url,
      "--json",
    ]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout)).toMatchObject({
      name: "tiny-2",
      repo: "acme/tiny",
      files: 14,
      loadable: true,
    });
  });

  test("user mistakes exit 2; an existing model or a failed download exit 1 with the server's reason", async () => {
    const unknown = await sdx(["models", "pull", "no-such-model", "--server", server.url]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("is not in the catalog");
    const badFolder = await sdx([
      "models",
      "pull",
      "acme/tiny",
      "--folder",
      "../evil",
      "--server",
      server.url,
    ]);
    expect(badFolder.code).toBe(2);
    expect(badFolder.stderr).toContain("not a safe folder name");
    const exists = await sdx(["models", "pull", "acme/tiny", "--server", server.url]);
    expect(exists.code).toBe(1);
    expect(exists.stderr).toContain("server error 409 (model_exists)");
    const corrupt = await sdx(["models", "pull", "acme/corrupt", "--server", server.url]);
    expect(corrupt.code).toBe(1);
    expect(corrupt.stderr).toContain("server error 502 (download_failed)");
    expect(corrupt.stderr).toContain("text_encoder/model.onnx");
    expect((await readdir(models)).filter((n) => !n.startsWith(".")).sort()).toEqual(["tiny", "tiny-2"]);
    const missing = await sdx(["models", "pull", "acme/missing", "--server", server.url]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain("server error 404 (hub_not_found): no repository acme/missing");
  });

  test("sdx models catalog lists what can be pulled by name", async () => {
    const res = await sdx(["models", "catalog", "--server", server.url]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain(`models to pull from ${hub.url}`);
    expect(res.stdout).toMatch(/ sd-turbo {2}sd2 {2}~2\.40 GiB {2}onnxruntime\/sd-turbo@main/);
    expect(res.stdout).toMatch(
      / {2}taesd {2}sd1\/sd2 preview decoder {2}~4\.7 MiB {2}madebyollin\/taesd@main/,
    );
  });

  test("a preview decoder lands in the vae_approx folder, and sdx models lists it", async () => {
    const res = await sdx(["models", "pull", "taesd", "--server", server.url]);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^taesd_decoder: 1 files, 4\.7 MiB from madebyollin\/taesd@[0-9a-f]{10}\n/);
    expect(res.stdout).toContain("preview decoder taesd_decoder ready in the server's vae_approx folder");
    expect(await readdir(join(models, "vae_approx"))).toEqual(["taesd_decoder.safetensors"]);
    const list = await sdx(["models", "--server", server.url]);
    expect(list.stdout).toContain(`Preview decoders (taesd) (1 in ${join(models, "vae_approx")})`);
    expect(list.stdout).toMatch(/ {2}taesd_decoder {2}sd1\/sd2 {2}taesd_safetensors {2}4\.7 MiB\n/);
    const folder = await sdx(["models", "pull", "taesd", "--folder", "x", "--server", server.url]);
    expect(folder.code).toBe(2);
    expect(folder.stderr).toContain("folder does not apply to taesd");
  });
});
