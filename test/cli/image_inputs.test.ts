/**
 * Image inputs from the clients: a project's prompt sets naming init_image and mask_image files, `sdx gen
 * --init-image/--mask/--strength/--hires-*`, and the SDK's byte and file helpers. A real server on loopback
 * (tiny model) behind a recording proxy, so each test sees the request body the CLI sent as well as the
 * outputs tree it wrote.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import YAML from "yaml";
import { imageFromFile } from "../../sdk/files.ts";
import { createSdxClient, type GenerateRequest, imageFromBytes } from "../../sdk/index.ts";
import { sdx } from "../helpers/cli.ts";
import { MODELS_DIR, pixels } from "../helpers/fixtures.ts";
import { startProxy } from "../helpers/proxy.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

let server: RunningServer;
let proxy: ReturnType<typeof Bun.serve>;
/** Bodies of the /v1/generate requests that went through the proxy, in order. */
const sent: GenerateRequest[] = [];
let work: string;
let projects: string;
let outputs: string;
let proxyUrl: string;
let initPng: Uint8Array;
let maskPng: Uint8Array;

/** The one run folder of a prompt set, and its files. */
async function onlyRun(project: string, set: string) {
  const promptDir = join(outputs, project, set);
  const runs = await readdir(promptDir);
  expect(runs).toHaveLength(1);
  const dir = join(promptDir, runs[0] as string);
  const list = async (sub: string) => (await readdir(join(dir, sub)).catch(() => [] as string[])).sort();
  const metadata = await list("metadata");
  return {
    dir,
    images: await list("images"),
    errors: await list("errors"),
    metadata: await Promise.all(
      metadata.map(async (f) => YAML.parse(await readFile(join(dir, "metadata", f), "utf8"))),
    ),
  };
}

async function writeProject(name: string, prompts: string, config = ""): Promise<string> {
  const dir = join(projects, name);
  await mkdir(join(dir, "pics"), { recursive: true });
  await writeFile(
    join(dir, "config.yaml"),
    `server_url: ${proxyUrl}\ndefault_params:\n  width: 64\n  height: 64\n  num_steps: 4\n  scheduler_type: euler\n${config}`,
  );
  await writeFile(join(dir, "prompts.yaml"), prompts);
  await writeFile(join(dir, "pics", "init.png"), initPng);
  await writeFile(join(dir, "pics", "mask.png"), maskPng);
  return dir;
}

const common = () => ["--input", projects, "--output", outputs];

beforeAll(async () => {
  server = await startServer(["--models-dir", MODELS_DIR]);
  proxy = startProxy(server.url, {
    generate(body) {
      sent.push(body as GenerateRequest);
      return undefined;
    },
  });
  proxyUrl = `http://127.0.0.1:${proxy.port}`;
  work = await mkdtemp(join(tmpdir(), "sdx-images-"));
  projects = join(work, "projects");
  outputs = join(work, "outputs");
  // A 64×64 gradient to start from, and a mask repainting a square in its middle.
  const gradient = new Uint8Array(64 * 64 * 3);
  for (let y = 0; y < 64; y++) {
    for (let x = 0; x < 64; x++) gradient.set([x * 4, y * 4, 128], (y * 64 + x) * 3);
  }
  initPng = new Uint8Array(
    await sharp(gradient, { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toBuffer(),
  );
  const square = new Uint8Array(64 * 64);
  for (let y = 16; y < 48; y++) square.fill(255, y * 64 + 16, y * 64 + 48);
  maskPng = new Uint8Array(
    await sharp(square, { raw: { width: 64, height: 64, channels: 1 } })
      .png()
      .toBuffer(),
  );
});
afterAll(async () => {
  await proxy.stop(true);
  await server.stop();
});

describe("prompt sets with image files", () => {
  test("an init image and a mask: files read, sent base64, runs written with the inputs' paths and hashes", async () => {
    await writeProject(
      "photos",
      `prompt_sets:
  - name: repaint
    prompt: a watercolor landscape
    params:
      init_image: pics/init.png
      strength: 0.5
      seed: 7
  - name: inpaint
    prompt: a red door
    params:
      init_image: pics/init.png
      mask_image: ./pics/mask.png
      strength: 1
      mask_blur: 2
`,
    );
    expect((await sdx(["validate", "--project", "photos", ...common()])).code).toBe(0);

    const before = sent.length;
    const res = await sdx(["gen", "--project", "photos", "--prompt", "repaint", "--batch", "2", ...common()]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("2 of 2 images made");
    const body = sent[before] as GenerateRequest;
    expect(sent).toHaveLength(before + 1);
    expect(body.init_image).toBe(Buffer.from(initPng).toString("base64"));
    expect(body.mask_image).toBeUndefined();
    expect(body).toMatchObject({ strength: 0.5, seed: 7, batch_size: 2, width: 64 });

    const run = await onlyRun("photos", "repaint");
    expect(run.images).toHaveLength(2);
    expect(run.metadata).toHaveLength(2);
    // The server's report of each file (its SHA-256 is the file's), beside the path as written.
    const report = { sha256: sha256(initPng), format: "png", width: 64, height: 64, resized: false };
    for (const meta of run.metadata) {
      expect(meta.inputs).toEqual({ init_image: { path: "pics/init.png", ...report } });
      expect(meta.parameters).toMatchObject({ strength: 0.5, mask_blur: null, hires: null, width: 64 });
    }
    expect(run.metadata.map((m) => m.seed).sort()).toEqual([7, 8]);

    const inpaint = await sdx(["gen", "--project", "photos", "--prompt", "inpaint", ...common()]);
    expect(inpaint.stderr).toBe("");
    expect(inpaint.code).toBe(0);
    const inpaintBody = sent.at(-1) as GenerateRequest;
    expect(inpaintBody.init_image).toBe(Buffer.from(initPng).toString("base64"));
    expect(inpaintBody.mask_image).toBe(Buffer.from(maskPng).toString("base64"));
    expect(inpaintBody).toMatchObject({ strength: 1, mask_blur: 2 });
    const inpaintRun = await onlyRun("photos", "inpaint");
    const [meta] = inpaintRun.metadata;
    expect(meta.inputs).toEqual({
      init_image: { path: "pics/init.png", ...report },
      mask_image: { path: "./pics/mask.png", ...report, sha256: sha256(maskPng) },
    });
    expect(meta.parameters).toMatchObject({ strength: 1, mask_blur: 2, masked_content: "original" });
    // With a mask blur the result is pasted over the init image through the mask: far from the repainted
    // square, the pixels are the init image's own — the files reached the engine.
    const out = await pixels(join(inpaintRun.dir, "images", inpaintRun.images[0] as string));
    const init = await pixels(initPng);
    for (const [x, y] of [
      [1, 1],
      [62, 3],
      [5, 60],
    ] as const) {
      const at = (y * 64 + x) * 3;
      expect([...out.data.subarray(at, at + 3)]).toEqual([...init.data.subarray(at, at + 3)]);
    }

    // `sdx list` shows the files by path, not their bytes.
    const list = await sdx(["list", "--project", "photos", "--json", ...common()]);
    const sets = JSON.parse(list.stdout).prompt_sets;
    expect(sets[1].request).toMatchObject({ init_image: "pics/init.png", mask_image: "./pics/mask.png" });
  }, 60_000);

  test("paths leaving the project folder are usage errors naming the prompt set and the field; nothing is sent", async () => {
    const dir = await writeProject(
      "escapes",
      `prompt_sets:
  - name: fine
    prompt: ok
  - name: up
    prompt: x
    params:
      init_image: ../outside.png
  - name: rooted
    prompt: x
    params:
      init_image: pics/init.png
      mask_image: ${join(work, "outside.png")}
  - name: linked
    prompt: x
    params:
      init_image: pics/link.png
  - name: missing
    prompt: x
    params:
      init_image: pics/nope.png
  - name: text
    prompt: x
    params:
      init_image: prompts.yaml
`,
    );
    await writeFile(join(projects, "outside.png"), initPng);
    await writeFile(join(work, "outside.png"), initPng);
    await symlink(join(work, "outside.png"), join(dir, "pics", "link.png"));
    const before = sent.length;
    for (const command of [["validate"], ["gen", "--prompt", "fine"]]) {
      const res = await sdx([...command, "--project", "escapes", ...common()]);
      expect(res.code).toBe(2);
      expect(res.stderr).toMatch(
        /prompts\.yaml:7:7: prompt_sets\.1\.params\.init_image: prompt set "up": init_image "\.\.\/outside\.png": outside the project folder/,
      );
      expect(res.stderr).toMatch(/prompt set "rooted": mask_image ".*outside\.png": an absolute path/);
      expect(res.stderr).toContain(
        'prompt set "linked": init_image "pics/link.png": a link to a file outside',
      );
      expect(res.stderr).toContain('prompt set "missing": init_image "pics/nope.png": no such file');
      expect(res.stderr).toContain('prompt set "text": init_image "prompts.yaml": not a PNG, JPEG or WebP');
    }
    expect(sent).toHaveLength(before);
    expect(await readdir(outputs).then((d) => d.includes("escapes"))).toBe(false);
  });

  test("image keys outside params say where they go; a mask needs an init image", async () => {
    await writeProject(
      "misplaced",
      `prompt_sets:
  - name: flat
    prompt: x
    init_image: pics/init.png
  - name: maskonly
    prompt: x
    params:
      mask_image: pics/mask.png
      strength: 0
`,
    );
    const res = await sdx(["validate", "--project", "misplaced", ...common()]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain(
      'prompts.yaml:4:5: prompt_sets.0.init_image: unknown key here; generation parameters such as "init_image" go under params:',
    );
    expect(res.stderr).toContain('prompt set "maskonly": mask_image needs an init_image');
    expect(res.stderr).toContain(
      "prompt_sets.1.params.strength: must be a number greater than 0 and at most 1; got 0",
    );
  });
});

describe("sdx gen --init-image", () => {
  test("a one-off run from a file relative to the working folder, with --mask and --strength", async () => {
    await writeProject("oneoff", "prompt_sets:\n  - name: plain\n    prompt: a lighthouse\n");
    await mkdir(join(work, "here"), { recursive: true });
    await writeFile(join(work, "here", "photo.png"), initPng);
    await writeFile(join(work, "here", "hole.png"), maskPng);
    const res = await sdx(
      [
        "gen",
        "--project",
        "oneoff",
        "--prompt",
        "plain",
        "--init-image",
        "photo.png",
        "--mask",
        "hole.png",
        "--strength",
        "0.6",
        "--seed",
        "3",
        ...common(),
      ],
      join(work, "here"),
    );
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const body = sent.at(-1) as GenerateRequest;
    expect(body.init_image).toBe(Buffer.from(initPng).toString("base64"));
    expect(body.mask_image).toBe(Buffer.from(maskPng).toString("base64"));
    expect(body.strength).toBe(0.6);
    const run = await onlyRun("oneoff", "plain");
    expect(run.images).toHaveLength(1);
    expect(run.metadata[0].inputs).toMatchObject({
      init_image: { path: "photo.png", sha256: sha256(initPng), format: "png", width: 64, height: 64 },
      mask_image: { path: "hole.png", sha256: sha256(maskPng), format: "png", width: 64, height: 64 },
    });
    expect(run.metadata[0].parameters).toMatchObject({ strength: 0.6, seed: 3 });
  }, 60_000);

  test("--hires-* change one knob of the set's hires block; the second pass makes the bigger image", async () => {
    await writeProject(
      "hires",
      "prompt_sets:\n  - name: big\n    prompt: a lighthouse\n    params:\n      num_steps: 2\n      hires: {steps: 2, strength: 0.5}\n",
    );
    const res = await sdx([
      "gen",
      "--project",
      "hires",
      "--prompt",
      "big",
      "--hires-scale",
      "2",
      "--hires-upscaler",
      "latent_nearest",
      ...common(),
    ]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect((sent.at(-1) as GenerateRequest).hires).toEqual({
      steps: 2,
      strength: 0.5,
      scale: 2,
      upscaler: "latent_nearest",
    });
    const run = await onlyRun("hires", "big");
    const image = await pixels(join(run.dir, "images", run.images[0] as string));
    expect([image.width, image.height]).toEqual([128, 128]);
    expect(run.metadata[0].parameters.hires).toEqual({
      upscaler: "latent_nearest",
      scale: 2,
      width: 128,
      height: 128,
      strength: 0.5,
      steps: 2,
    });
    expect(run.metadata[0].inputs).toBeUndefined();
  }, 60_000);

  test("mistakes are usage errors naming the option; nothing is sent", async () => {
    await writeFile(join(work, "notes.txt"), "not an image");
    const before = sent.length;
    const gen = (...args: string[]) =>
      sdx(["gen", "--project", "oneoff", "--prompt", "plain", ...args, ...common()], work);
    const cases: [string[], string][] = [
      [["--init-image", "nope.png"], '--init-image "nope.png": no such file'],
      [["--init-image", "notes.txt"], '--init-image "notes.txt": not a PNG, JPEG or WebP file'],
      [["--init-image", "."], '--init-image ".": not a regular file'],
      [["--mask", "here/hole.png"], "--mask needs an init image"],
      [["--strength", "0"], "--strength: must be a number greater than 0 and at most 1; got 0"],
      [["--hires-steps", "2.5"], "--hires-steps: must be an integer from 0 to 150; got 2.5"],
      [["--hires-upscaler", "bicubic"], "--hires-upscaler"],
    ];
    for (const [args, message] of cases) {
      const res = await gen(...args);
      expect(res.code).toBe(2);
      expect(res.stdout + res.stderr).toContain(message);
    }
    expect(sent).toHaveLength(before);
  }, 60_000);

  test("a failed request's error file names the input files instead of holding their bytes", async () => {
    const res = await sdx([
      "gen",
      "--project",
      "photos",
      "--prompt",
      "repaint",
      "--model",
      "no_such_model",
      ...common(),
    ]);
    expect(res.code).toBe(1);
    const promptDir = join(outputs, "photos", "repaint");
    const runs = (await readdir(promptDir)).filter((r) => r.endsWith("_no_such_model"));
    expect(runs).toHaveLength(1);
    const errorsDir = join(promptDir, runs[0] as string, "errors");
    const [file] = await readdir(errorsDir);
    const text = await readFile(join(errorsDir, file as string), "utf8");
    expect(text).not.toContain(Buffer.from(initPng).toString("base64").slice(0, 64));
    expect(YAML.parse(text).request.init_image).toEqual({ path: "pics/init.png", sha256: sha256(initPng) });
  }, 60_000);
});

describe("SDK image helpers", () => {
  test("imageFromBytes takes a Uint8Array, an ArrayBuffer or a Blob; imageFromFile a path", async () => {
    const base64 = Buffer.from(initPng).toString("base64");
    expect(imageFromBytes(initPng)).toBe(base64);
    expect(imageFromBytes(initPng.slice().buffer)).toBe(base64);
    expect(await imageFromBytes(new Blob([initPng]))).toBe(base64);
    await writeFile(join(work, "sdk.png"), initPng);
    expect(await imageFromFile(join(work, "sdk.png"))).toBe(base64);
    expect(() => imageFromBytes(new Uint8Array())).toThrow("no bytes");
    // Where Uint8Array has no toBase64 (older browsers), btoa over chunks gives the same text.
    const big = new Uint8Array(100_003).map((_, i) => (i * 7919) % 256);
    Object.defineProperty(big, "toBase64", { value: undefined });
    expect(imageFromBytes(big)).toBe(Buffer.from(big).toString("base64"));
  });

  test("generate sends image bytes base64-encoded", async () => {
    const sdk = createSdxClient({ baseUrl: proxyUrl });
    const response = await sdk.generate({
      prompt: "a lighthouse",
      width: 64,
      height: 64,
      num_steps: 2,
      init_image: initPng,
      mask_image: new Blob([maskPng]),
      strength: 0.9,
    });
    expect(response.images).toHaveLength(1);
    expect(response.metadata.inputs.mask_image?.sha256).toBe(sha256(maskPng));
    const body = sent.at(-1) as GenerateRequest;
    expect(body.init_image).toBe(Buffer.from(initPng).toString("base64"));
    expect(body.mask_image).toBe(Buffer.from(maskPng).toString("base64"));
    let done = false;
    for await (const event of sdk.generateStream({
      prompt: "x",
      width: 64,
      height: 64,
      num_steps: 2,
      init_image: initPng.buffer as ArrayBuffer,
    })) {
      if (event.type === "done") done = true;
    }
    expect(done).toBe(true);
    expect((sent.at(-1) as GenerateRequest).init_image).toBe(Buffer.from(initPng).toString("base64"));
  }, 60_000);
});
