/**
 * `sdx gen --model` and `--all-models` against a real server holding two models: the same prompt and seeds on
 * each model, one run folder per model side by side, metadata naming the model and its hash, and one comparison
 * (page and sheet) with a row per model.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import YAML from "yaml";
import { sdx } from "../helpers/cli.ts";
import { FIXTURES, TINY_SD15 } from "../helpers/fixtures.ts";
import { brokenLinks, imageRows, imgCount } from "../helpers/gallery.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

async function sha256(path: string): Promise<string> {
  return new Bun.CryptoHasher("sha256").update(await Bun.file(path).arrayBuffer()).digest("hex");
}

let work: string;
let server: RunningServer;
let common: string[];

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sdx-all-models-"));
  const models = join(work, "models");
  await cp(TINY_SD15, join(models, "onnx_tiny"), { recursive: true });
  await cp(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), join(models, "ckpt_tiny.safetensors"));
  server = await startServer(["--models-dir", models, "--provider", "cpu"]);
  const projects = join(work, "projects");
  expect((await sdx(["init", "demo", "--input", projects])).code).toBe(0);
  const file = join(projects, "demo", "config.yaml");
  const config = (await readFile(file, "utf8"))
    .replace("width: 512", "width: 64")
    .replace("height: 512", "height: 64")
    .replace("num_steps: 30", "num_steps: 2");
  await writeFile(file, config);
  common = [
    "--project",
    "demo",
    "--input",
    projects,
    "--output",
    join(work, "outputs"),
    "--server",
    server.url,
  ];
});

afterAll(async () => {
  await server?.stop();
  await rm(work, { recursive: true, force: true });
});

async function metadataOf(runDir: string): Promise<Record<string, unknown>[]> {
  const files = (await readdir(join(runDir, "metadata"))).sort();
  return Promise.all(files.map(async (f) => YAML.parse(await readFile(join(runDir, "metadata", f), "utf8"))));
}

describe("choosing models from the command line", () => {
  test("without a default model on the server, gen says to pick one; --model picks it", async () => {
    const bare = await sdx(["gen", ...common, "--prompt", "portrait"]);
    expect(bare.code).toBe(1);
    expect(bare.stderr).toContain("--model");
    const res = await sdx(["gen", ...common, "--prompt", "portrait", "--model", "ckpt_tiny", "--seed", "9"]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const runs = await readdir(join(work, "outputs", "demo", "portrait"));
    const run = runs.find((r) => r.endsWith("_ckpt_tiny"));
    expect(run).toBeDefined();
    const [meta] = await metadataOf(join(work, "outputs", "demo", "portrait", run as string));
    expect(meta?.model).toEqual({
      name: "ckpt_tiny",
      kind: "sd1",
      hash: await sha256(join(work, "models", "ckpt_tiny.safetensors")),
    });
    const unknown = await sdx(["gen", ...common, "--prompt", "portrait", "--model", "nope"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("model");
    expect((await sdx(["gen", ...common, "--prompt", "portrait", "--model", "x", "--all-models"])).code).toBe(
      2,
    );
  });

  test("the config's model is used when --model is not given", async () => {
    const projects = join(work, "projects");
    const file = join(projects, "demo", "config.yaml");
    const before = await readFile(file, "utf8");
    await writeFile(file, before.replace("# model: my-model", "model: onnx_tiny"));
    try {
      const res = await sdx(["gen", ...common, "--prompt", "portrait", "--seed", "3"]);
      expect(res.stderr).toBe("");
      expect(res.code).toBe(0);
      const runs = await readdir(join(work, "outputs", "demo", "portrait"));
      expect(runs.filter((r) => r.endsWith("_onnx_tiny"))).toHaveLength(1);
    } finally {
      await writeFile(file, before);
    }
  });

  test("--all-models makes the same images on every model, side by side", async () => {
    const res = await sdx([
      "gen",
      ...common,
      "--prompt",
      "lighthouse",
      "--batch",
      "2",
      "--seed",
      "42",
      "--all-models",
    ]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("2 of 2 images made");
    const promptDir = join(work, "outputs", "demo", "lighthouse");
    const folders = (await readdir(promptDir)).sort();
    const runs = folders.filter((f) => !f.endsWith("_all-models"));
    expect(runs.map((r) => r.replace(/^\d{8}_\d{6}_\d{3}_/, "")).sort()).toEqual(["ckpt_tiny", "onnx_tiny"]);
    const perModel = await Promise.all(runs.map((r) => metadataOf(join(promptDir, r))));
    for (const metas of perModel) {
      expect(metas.map((m) => m.seed)).toEqual([42, 43]);
      expect(metas.map((m) => m.prompt)).toEqual(perModel[0]?.map((m) => m.prompt) ?? []);
    }
    const names = perModel.map((metas) => (metas[0]?.model as { name?: string } | undefined)?.name);
    expect(names.sort()).toEqual(["ckpt_tiny", "onnx_tiny"]);

    // One comparison beside the runs: a row per model (in the order they ran), a column per seed.
    const comparisons = folders.filter((f) => f.endsWith("_all-models"));
    expect(comparisons).toHaveLength(1);
    const comparison = join(promptDir, comparisons[0] as string);
    const listed = YAML.parse(await readFile(join(comparison, "runs.yaml"), "utf8")).runs as string[];
    expect([...listed].sort()).toEqual(runs);
    const sheet = join(comparison, "grid.png");
    const rows = await imageRows(sheet, (await sharp(sheet).metadata()).width - 128);
    expect(rows.map(([, height]) => height)).toEqual([64, 64]);
    const page = join(comparison, "index.html");
    const html = await readFile(page, "utf8");
    expect(brokenLinks(page, html)).toEqual([]);
    expect(imgCount(html)).toBe(4);
    const rowModels = [...html.matchAll(/<tr><th><a href="[^"]+">([^<]+)<\/a>/g)].map((m) => m[1]);
    expect(rowModels).toEqual(listed.map((r) => r.replace(/^\d{8}_\d{6}_\d{3}_/, "")));
    expect(html).toContain("<th>seed 42</th><th>seed 43</th>");
  });
});
