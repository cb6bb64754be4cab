/**
 * The `sdx` command line as a user runs it: a real process, real project files in a temp folder, a real
 * server on loopback, and the outputs tree checked on disk against the diffusers reference image.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import YAML from "yaml";
import { sdx } from "../helpers/cli.ts";
import { imageDiff, MODELS_DIR, REPO_ROOT, referenceCase } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

async function writeProject(root: string, name: string, config: string, prompts: string): Promise<void> {
  await mkdir(join(root, name), { recursive: true });
  await writeFile(join(root, name, "config.yaml"), config);
  await writeFile(join(root, name, "prompts.yaml"), prompts);
}

let server: RunningServer;
let work: string;
let projects: string;

beforeAll(async () => {
  server = await startServer(["--models-dir", MODELS_DIR]);
  work = await mkdtemp(join(tmpdir(), "sdx-cli-"));
  projects = join(work, "projects");
  const ref = await referenceCase("p14_dpmpp2m15_promptlist");
  await writeProject(
    projects,
    "tiny",
    `server_url: ${server.url}
name: tiny-project
default_params:
  width: ${ref.width}
  height: ${ref.height}
  num_steps: ${ref.num_inference_steps}
  guidance_scale: ${ref.guidance_scale}
  scheduler_type: dpmsolver++
  karras_sigmas: false
`,
    `prompt_sets:
  - name: cat
    prompt: ${(ref.prompt as string[])[0]}
    negative_prompt: ${(ref.negative_prompt as string[])[0]}
    params:
      seed: ${ref.seed}
  - name: dog
    prompt: a dog
`,
  );
});
afterAll(() => server.stop());

describe("sdx gen", () => {
  test("writes image and metadata under <output>/<project>/<prompt>/<timestamp>_<model>/, equal to diffusers", async () => {
    const outputs = join(work, "outputs");
    const res = await sdx([
      "gen",
      "--project",
      "tiny",
      "--prompt",
      "cat",
      "--input",
      projects,
      "--output",
      outputs,
    ]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const promptDir = join(outputs, "tiny-project", "cat");
    const runs = await readdir(promptDir);
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatch(/^\d{8}_\d{6}_\d{3}_tiny_sd15$/);
    const runDir = join(promptDir, runs[0] as string);
    const images = await readdir(join(runDir, "images"));
    const metas = await readdir(join(runDir, "metadata"));
    expect(images).toHaveLength(1);
    const stamp = (images[0] as string).replace(/^image_(.*)\.png$/, "$1");
    expect(metas).toEqual([`metadata_${stamp}.yaml`]);

    const ref = await referenceCase("p14_dpmpp2m15_promptlist");
    const diff = await imageDiff(join(runDir, "images", images[0] as string), join(ref.dir, "image_0.png"));
    expect(diff.mean).toBeLessThanOrEqual(0.5);

    const meta = YAML.parse(await Bun.file(join(runDir, "metadata", metas[0] as string)).text());
    expect(meta).toMatchObject({
      prompt: "a cat",
      negative_prompt: "ugly",
      seed: 16,
      model: { name: "tiny_sd15", kind: "sd1" },
      parameters: {
        width: 64,
        height: 64,
        num_steps: 15,
        guidance_scale: 7.5,
        scheduler_type: "dpmsolver++",
        seed: 16,
      },
    });
    expect(typeof meta.timestamp).toBe("string");
  });

  test("--batch and --seed: one run folder per invocation, one image per seed, nothing overwritten", async () => {
    const outputs = join(work, "outputs-batch");
    const args = ["gen", "--project", "tiny", "--prompt", "dog", "--input", projects, "--output", outputs];
    const first = await sdx([...args, "--batch", "3", "--seed", "100", "--json"]);
    expect(first.code).toBe(0);
    // One JSON object per image, one per line.
    const images = first.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { event: string; image: string; seed: number });
    const report = { images };
    expect(images.every((i) => i.event === "image")).toBe(true);
    expect(report.images.map((i) => i.seed)).toEqual([100, 101, 102]);
    expect(new Set(report.images.map((i) => i.image)).size).toBe(3);
    expect((await sdx([...args, "--seed", "100"])).code).toBe(0);
    const runs = await readdir(join(outputs, "tiny-project", "dog"));
    expect(runs).toHaveLength(2);
    // Image 1 of the batch (seed 101) is remade alone by seed 101.
    const alone = await sdx([...args, "--seed", "101", "--json"]);
    const aloneImage = (JSON.parse(alone.stdout) as { image: string }).image;
    expect((await imageDiff(report.images[1]?.image as string, aloneImage)).max).toBeLessThanOrEqual(1);
  });

  test("a bad option value is a usage error", async () => {
    const res = await sdx([
      "gen",
      "--project",
      "tiny",
      "--prompt",
      "cat",
      "--input",
      projects,
      "--batch",
      "0",
    ]);
    expect(res.code).not.toBe(0);
    expect(res.stdout + res.stderr).toContain("--batch");
  });

  test("an unknown prompt set lists the sets", async () => {
    const res = await sdx(["gen", "--project", "tiny", "--prompt", "bird", "--input", projects]);
    expect(res.code).not.toBe(0);
    expect(res.stdout + res.stderr).toContain("cat, dog");
  });
});

describe("sdx list and health", () => {
  test("list shows each set with its effective parameters", async () => {
    const res = await sdx(["list", "--project", "tiny", "--input", projects]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("cat");
    expect(res.stdout).toContain("seed: 16");
    expect(res.stdout).toContain("num_steps: 15");
  });

  test("health reports the server", async () => {
    const res = await sdx(["health", "--server", server.url]);
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("ok");
  });

  test("the example project is valid", async () => {
    const res = await sdx(["list", "--project", "example", "--input", join(REPO_ROOT, "projects"), "--json"]);
    expect(res.code).toBe(0);
    expect(JSON.parse(res.stdout).prompt_sets.length).toBeGreaterThan(0);
  });
});

describe("project validation", () => {
  test("errors name the file, line, column and key, before any request", async () => {
    await writeProject(
      projects,
      "broken",
      `server_url: http://127.0.0.1:1
default_params:
  widht: 512
  num_steps: many
  scheduler_type: euler_x
`,
      `prompt_sets:
  - name: a
    prompt: one
  - name: a
    prompt: two
  - name: ../escape
    prompt: three
`,
    );
    const res = await sdx(["list", "--project", "broken", "--input", projects]);
    expect(res.code).not.toBe(0);
    const out = res.stdout + res.stderr;
    expect(out).toMatch(/config\.yaml:3:3: default_params\.widht: unknown key; did you mean "width"\?/);
    expect(out).toMatch(/config\.yaml:4:3: default_params\.num_steps: /);
    expect(out).toMatch(
      /config\.yaml:5:3: default_params\.scheduler_type: must be one of: ddim, .*dpmsolver\+\+/,
    );
    expect(out).toMatch(/prompts\.yaml:4:5: prompt_sets\.1\.name: duplicate prompt-set name "a"/);
    expect(out).toMatch(/prompts\.yaml:6:5: prompt_sets\.2\.name: must be a safe folder name/);
  });

  test("a project name that is a path is refused", async () => {
    const res = await sdx(["list", "--project", "../projects", "--input", projects]);
    expect(res.code).not.toBe(0);
    expect(res.stdout + res.stderr).toContain("project names are");
  });
});
