/**
 * Galleries of `sdx gen` runs against the real server (tiny model, 64 px, 2 steps), read back by headless
 * Chromium: every image of a run shown, every link leading to a file, user text escaped, a gallery left by an
 * interrupted run, `sdx gallery` rebuilding a project (its page newest first, `--open`, no system fonts needed,
 * nothing of a user's overwritten), and the pieces: A1111's grid shape, changed parameters, the file guard.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import { Cli } from "clipanion";
import sharp from "sharp";
import { GalleryFileError, writeGalleryFile } from "../../cli/gallery/files.ts";
import { escapeHtml } from "../../cli/gallery/pages.ts";
import { changedParameters, projectDefaults } from "../../cli/gallery/parameters.ts";
import { gridShape } from "../../cli/gallery/sheet.ts";
import { runCli } from "../../cli/index.ts";
import { dumpDom } from "../helpers/chromium.ts";
import { sdx } from "../helpers/cli.ts";
import { type FakeOllama, startFakeOllama } from "../helpers/fake_ollama.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";
import { brokenLinks, hasText, imageRows, imgCount, pageLinks } from "../helpers/gallery.ts";
import { startProxy, untilAborted } from "../helpers/proxy.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const XSS_PROMPT = `<script>alert("x")</script><img src=x onerror=alert(1)> & 'quoted'`;

let server: RunningServer;
let ollama: FakeOllama;
let work: string;
let projects: string;
let outputs: string;
/** The generate request on which the proxy hangs until the client goes away (0: none). */
let hangAt = 0;
let generates = 0;
let hangArrived: () => void = () => {};
let proxy: ReturnType<typeof Bun.serve>;

beforeAll(async () => {
  server = await startServer(["--models-dir", MODELS_DIR]);
  ollama = startFakeOllama({ answers: { tiny: "a red fox in fresh snow" } });
  proxy = startProxy(server.url, {
    generate(_body, req) {
      if (++generates !== hangAt) return undefined;
      hangArrived();
      return untilAborted(req);
    },
  });
  work = await mkdtemp(join(tmpdir(), "sdx-gallery-"));
  projects = join(work, "projects");
  outputs = join(work, "outputs");
  await mkdir(join(projects, "gal"), { recursive: true });
  await writeFile(
    join(projects, "gal", "config.yaml"),
    `server_url: http://127.0.0.1:${proxy.port}
default_params: {width: 64, height: 64, num_steps: 2, guidance_scale: 7}
ollama: {server_url: "${ollama.url}", model: tiny, prompt: a prompt, fallback_prompt: a fallback}
`,
  );
  await writeFile(
    join(projects, "gal", "prompts.yaml"),
    `prompt_sets:
  - name: fox
    prompt: a red fox, watercolor
    negative_prompt: blurry
    params: {guidance_scale: 5}
  - name: xss
    prompt: ${JSON.stringify(XSS_PROMPT)}
    negative_prompt: "</textarea><b>bold</b>"
`,
  );
});
afterAll(async () => {
  await proxy.stop(true);
  await ollama.stop();
  await server.stop();
  await rm(work, { recursive: true, force: true });
});

const common = () => ["--project", "gal", "--input", projects, "--output", outputs];

async function onlyRun(promptName: string): Promise<string> {
  const runs = await readdir(join(outputs, "gal", promptName));
  expect(runs).toHaveLength(1);
  return join(outputs, "gal", promptName, runs[0] as string);
}

describe("a run's gallery", () => {
  test("index.html shows every image in Chromium, every link resolves, grid.png has A1111's shape", async () => {
    const res = await sdx(["gen", ...common(), "--prompt", "fox", "--batch", "3", "--seed", "5"]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const run = await onlyRun("fox");
    const page = join(run, "index.html");
    const html = await readFile(page, "utf8");
    expect(html).not.toMatch(/https?:|<script|<link/);
    expect(await readdir(join(run, "thumbs"))).toHaveLength(3);
    const dom = await dumpDom(`file://${page}`);
    expect(imgCount(dom)).toBe(3);
    expect(brokenLinks(page, dom)).toEqual([]);
    const links = pageLinks(dom);
    for (const image of await readdir(join(run, "images"))) expect(links).toContain(`images/${image}`);
    for (const meta of await readdir(join(run, "metadata"))) expect(links).toContain(`metadata/${meta}`);
    expect(links).toContain("grid.png");
    for (const seed of [5, 6, 7]) expect(dom).toContain(`seed ${seed}`);
    expect(dom).toContain("a red fox, watercolor");
    expect(dom).toContain("blurry");
    // The set's guidance_scale differs from the project's default; its size and steps do not.
    expect(dom).toMatch(/<th>guidance_scale<\/th><td>5<\/td>/);
    expect(dom).not.toContain("<th>num_steps</th>");
    expect(dom).not.toContain("<th>width</th>");

    // Three images: round(√3) = 2 rows of ⌈3/2⌉ = 2 columns of 64 px, each row with its seeds beneath.
    const grid = join(run, "grid.png");
    expect((await sharp(grid).metadata()).width).toBe(128);
    const rows = await imageRows(grid, 0);
    expect(rows.map(([, height]) => height)).toEqual([64, 64]);
    expect(await hasText(grid, 64, (rows[1] as [number, number])[0])).toBe(true);

    // Moved elsewhere, the gallery still works: every link is relative to its folder.
    const moved = join(work, "moved");
    await cp(run, moved, { recursive: true });
    expect(brokenLinks(join(moved, "index.html"), await readFile(join(moved, "index.html"), "utf8"))).toEqual(
      [],
    );
  });

  test("prompts are shown as text, never as markup", async () => {
    const res = await sdx(["gen", ...common(), "--prompt", "xss", "--seed", "1"]);
    expect(res.code).toBe(0);
    const page = join(await onlyRun("xss"), "index.html");
    const html = await readFile(page, "utf8");
    expect(html).not.toContain("<script>");
    expect(html).toContain(escapeHtml(XSS_PROMPT));
    const dom = await dumpDom(`file://${page}`);
    // The prompt's <img> stays text: the page has the run's one image and no other.
    expect(imgCount(dom)).toBe(1);
    expect(dom).not.toContain("<b>bold</b>");
    expect(dom).toContain("&lt;/textarea&gt;&lt;b&gt;bold&lt;/b&gt;");
  });

  test("an interrupted run keeps a gallery of the image it wrote", async () => {
    // --ollama sends one request per image; the second one hangs until Ctrl-C cancels it.
    generates = 0;
    hangAt = 2;
    const arrived = new Promise<void>((resolve) => {
      hangArrived = resolve;
    });
    const controller = new AbortController();
    const sink = () =>
      new Writable({
        write(_chunk, _encoding, done) {
          done();
        },
      });
    const running = runCli(["gen", ...common(), "--ollama", "--batch", "3", "--seed", "2"], {
      ...Cli.defaultContext,
      stdin: new PassThrough(),
      stdout: sink(),
      stderr: sink(),
      env: {},
      signal: controller.signal,
    });
    await arrived;
    controller.abort();
    expect(await running).toBe(130);
    hangAt = 0;
    const run = await onlyRun("ollama");
    expect(await readdir(join(run, "images"))).toHaveLength(1);
    const page = join(run, "index.html");
    const html = await readFile(page, "utf8");
    expect(imgCount(html)).toBe(1);
    expect(html).toContain("seed 2");
    expect(brokenLinks(page, html)).toEqual([]);
    expect((await sharp(join(run, "grid.png")).metadata()).width).toBe(64);
  });
});

describe("sdx gallery", () => {
  test("rebuilds every run's gallery and a project page listing the runs newest first", async () => {
    const fox = await onlyRun("fox");
    await rm(join(fox, "index.html"));
    await rm(join(fox, "grid.png"));
    await rm(join(fox, "thumbs"), { recursive: true });
    // No font at all: the seeds are drawn all the same.
    const fonts = join(work, "fonts.conf");
    await writeFile(
      fonts,
      '<?xml version="1.0"?><!DOCTYPE fontconfig SYSTEM "fonts.dtd"><fontconfig></fontconfig>',
    );
    const res = await sdx(["gallery", ...common()], undefined, { FONTCONFIG_FILE: fonts, DISPLAY: "" });
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    const index = join(outputs, "gal", "index.html");
    expect(res.stdout).toBe(`3 runs: ${index}\n`);
    expect(await readdir(join(fox, "thumbs"))).toHaveLength(3);
    const rows = await imageRows(join(fox, "grid.png"), 0);
    expect(rows).toHaveLength(2);
    expect(await hasText(join(fox, "grid.png"), 64, (rows[1] as [number, number])[0])).toBe(true);
    expect(imgCount(await readFile(join(fox, "index.html"), "utf8"))).toBe(3);

    const dom = await dumpDom(`file://${index}`);
    expect(brokenLinks(index, dom)).toEqual([]);
    expect(imgCount(dom)).toBe(3);
    const listed = pageLinks(dom)
      .filter((l) => l.endsWith("/index.html"))
      .filter((l, i, all) => all.indexOf(l) === i);
    const runs = ["fox", "xss", "ollama"].map(
      async (p) => `${p}/${(await readdir(join(outputs, "gal", p)))[0]}`,
    );
    // Newest first: by the run folders' timestamps, whatever their prompt set.
    const folder = (path: string) => path.slice(path.indexOf("/") + 1);
    const newestFirst = (await Promise.all(runs)).sort((a, b) => folder(b).localeCompare(folder(a)));
    expect(listed).toEqual(newestFirst.map((r) => `${r}/index.html`));
  });

  test("--open opens the page where there is a desktop, and says why not elsewhere", async () => {
    const none = await sdx(["gallery", ...common(), "--open"], undefined, {
      DISPLAY: "",
      WAYLAND_DISPLAY: "",
    });
    expect(none.code).toBe(0);
    expect(none.stderr).toContain("not opened: no graphical session");
    const bin = join(work, "bin");
    await mkdir(bin, { recursive: true });
    const opened = join(work, "opened.txt");
    await writeFile(join(bin, "xdg-open"), `#!/bin/sh\nprintf '%s' "$1" > '${opened}'\n`);
    await chmod(join(bin, "xdg-open"), 0o755);
    const res = await sdx(["gallery", ...common(), "--open"], undefined, {
      DISPLAY: ":0",
      PATH: `${bin}:${process.env.PATH}`,
    });
    expect(res.stderr).toBe("");
    for (let i = 0; i < 100 && !(await Bun.file(opened).exists()); i++) await Bun.sleep(20);
    expect(await readFile(opened, "utf8")).toBe(join(outputs, "gal", "index.html"));
  });

  test("a page that is not sdx's is never overwritten", async () => {
    const mine = join(outputs, "gal", "fox", "20200101_000000_000_mine");
    await mkdir(join(mine, "images"), { recursive: true });
    await writeFile(join(mine, "index.html"), "<p>my notes</p>");
    const res = await sdx(["gallery", ...common()]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("is not sdx's");
    expect(await readFile(join(mine, "index.html"), "utf8")).toBe("<p>my notes</p>");
    await rm(mine, { recursive: true });
  });
});

describe("pieces", () => {
  test("rows and columns as AUTOMATIC1111's image_grid picks them", () => {
    const shapes = [1, 2, 3, 4, 5, 6, 7, 9, 10, 16, 17].map((n) => [n, gridShape(n).rows, gridShape(n).cols]);
    expect(shapes).toEqual([
      [1, 1, 1],
      [2, 1, 2],
      [3, 2, 2],
      [4, 2, 2],
      [5, 2, 3],
      [6, 2, 3],
      [7, 3, 3],
      [9, 3, 3],
      [10, 3, 4],
      [16, 4, 4],
      [17, 4, 5],
    ]);
  });

  test("changed parameters: against the schema's defaults and default_params; null, false and previews are no change", () => {
    const defaults = projectDefaults({ width: 64, guidance_scale: 7 });
    const applied = {
      prompt: "p",
      seed: 3,
      batch_size: 1,
      width: 64,
      num_steps: 30,
      guidance_scale: 5,
      eta: null,
      enable_vae_tiling: false,
      karras_sigmas: true,
      hires: { scale: 2 },
      preview: { every: 3, method: "approx" },
    };
    expect(changedParameters(applied, defaults)).toEqual([
      ["guidance_scale", 5],
      ["karras_sigmas", true],
      ["hires", { scale: 2 }],
    ]);
  });

  test("gallery files replace only their own kind", async () => {
    const dir = await mkdtemp(join(work, "guard-"));
    await writeGalleryFile(dir, "index.html", "<!doctype html><p>x</p>");
    // A page without sdx's mark, just written, is now someone else's: it stays.
    await expect(writeGalleryFile(dir, "index.html", "new")).rejects.toBeInstanceOf(GalleryFileError);
    await writeFile(join(dir, "grid.png"), "not a png");
    await expect(writeGalleryFile(dir, "grid.png", new Uint8Array(8))).rejects.toBeInstanceOf(
      GalleryFileError,
    );
    const png = await sharp({ create: { width: 1, height: 1, channels: 3, background: "#000" } })
      .png()
      .toBuffer();
    await rm(join(dir, "grid.png"));
    await writeGalleryFile(dir, "grid.png", png);
    await writeGalleryFile(dir, "grid.png", png);
    expect(await readFile(join(dir, "grid.png"))).toEqual(png);
  });
});
