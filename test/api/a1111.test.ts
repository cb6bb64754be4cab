/**
 * AUTOMATIC1111 compatibility (`/sdapi/v1/*`) on a real server on loopback, driven the way A1111 clients drive it:
 * request bodies copied from A1111's API wiki page and from mix1009/sdwebuiapi's webuiapi.py. The answers must
 * have A1111's shapes, their PNGs must decode and carry the infotext that `info` reports, and a txt2img must give
 * the same bytes as the equivalent POST /v1/generate.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { previewRequest } from "../../api/a1111/options.ts";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { readPngText } from "../../api/engine/pipeline/image.ts";
import { SCHEDULERS } from "../../api/engine/schedulers/index.ts";
import { SCHEDULER_NAMES } from "../../contract/index.ts";
import { FIXTURES, pixels, TINY_SD15 } from "../helpers/fixtures.ts";
import { sdwebuiapiTxt2img } from "../helpers/sdwebuiapi.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

let dir: string;
let server: RunningServer;
let gammaSha256: string;

interface ErrorBody {
  status: number;
  code: string;
  message: string;
  fields?: { field: string; message: string; allowed?: unknown[] }[];
}

interface Txt2Img {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}

interface Info {
  prompt: string;
  all_prompts: string[];
  seed: number;
  all_seeds: number[];
  all_subseeds: number[];
  sampler_name: string;
  cfg_scale: number;
  steps: number;
  width: number;
  height: number;
  batch_size: number;
  sd_model_name: string;
  sd_model_hash: string | null;
  clip_skip: number;
  infotexts: string[];
  extra_generation_params: Record<string, string>;
  job_timestamp: string;
  sdx_warnings: string[];
}

interface Progress {
  progress: number;
  eta_relative: number;
  state: {
    skipped: boolean;
    interrupted: boolean;
    job: string;
    job_count: number;
    job_no: number;
    sampling_step: number;
    sampling_steps: number;
  };
  current_image: string | null;
  textinfo: string | null;
}

async function call(method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method,
    ...(body === undefined
      ? {}
      : { headers: { "content-type": "application/json" }, body: JSON.stringify(body) }),
  });
}

async function ok<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await call(method, path, body);
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

async function txt2img(body: Record<string, unknown>): Promise<{ res: Txt2Img; info: Info }> {
  const res = await ok<Txt2Img>("POST", "/sdapi/v1/txt2img", body);
  return { res, info: JSON.parse(res.info) as Info };
}

async function rejected(body: Record<string, unknown>, path = "/sdapi/v1/txt2img"): Promise<ErrorBody> {
  const res = await call("POST", path, body);
  const error = (await res.json()) as ErrorBody;
  expect(res.status).toBe(422);
  expect(error.code).toBe("validation_failed");
  return error;
}

function pngText(base64: string): Record<string, string> {
  return readPngText(Buffer.from(base64, "base64"));
}

async function sha256(path: string): Promise<string> {
  return new Bun.CryptoHasher("sha256").update(await Bun.file(path).arrayBuffer()).digest("hex");
}

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return Number(line?.split(" ")[1] ?? 0);
}

/** The A1111 wiki's first txt2img payload (wiki "API" page), verbatim. */
const WIKI_PAYLOAD = { prompt: "maltese puppy", steps: 5 };
/** The wiki's override_settings example, verbatim. */
const WIKI_OVERRIDE_PAYLOAD = {
  prompt: "cirno",
  steps: 20,
  override_settings: { filter_nsfw: true, CLIP_stop_at_last_layers: 2 },
};
/** The tiny fixture model takes ~40 s at A1111's default 512×512 on a CPU; the tests ask for less. */
const SMALL = { width: 64, height: 64 };

/** The body sdwebuiapi's `WebUIApi().txt2img(…)` posts (test/helpers/sdwebuiapi.ts). */
const sdwebuiapiPayload = sdwebuiapiTxt2img;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sdx-a1111-"));
  await cp(TINY_SD15, join(dir, "alpha"), { recursive: true });
  await cp(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), join(dir, "gamma.safetensors"));
  gammaSha256 = await sha256(join(dir, "gamma.safetensors"));
  server = await startServer([
    "--models-dir",
    dir,
    "--model",
    "alpha",
    "--provider",
    "cpu",
    "--max-loaded-models",
    "2",
  ]);
});

afterAll(async () => {
  await server?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("what A1111 clients read first", () => {
  test("sd-models lists the loadable models as SDModelItem, titled as A1111 titles them", async () => {
    const models = await ok<Record<string, unknown>[]>("GET", "/sdapi/v1/sd-models");
    const alpha = models.find((m) => m.model_name === "alpha");
    expect(alpha).toEqual({
      title: expect.stringMatching(/^alpha \[[0-9a-f]{10}\]$/),
      model_name: "alpha",
      hash: expect.stringMatching(/^[0-9a-f]{10}$/),
      sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      filename: "alpha",
      config: null,
    });
    expect(alpha?.title).toBe(`alpha [${alpha?.hash}]`);
    // gamma has never been loaded, so its hash is not known yet: A1111 titles such a file by its name.
    expect(models.find((m) => m.model_name === "gamma")).toMatchObject({
      title: "gamma.safetensors",
      filename: "gamma.safetensors",
    });
    // Nothing in the list is a path on the server.
    expect(JSON.stringify(models)).not.toContain(dir);
  });

  test("samplers: every sdx sampler under A1111's name, with A1111's aliases and options", async () => {
    const samplers = await ok<{ name: string; aliases: string[]; options: Record<string, unknown> }[]>(
      "GET",
      "/sdapi/v1/samplers",
    );
    expect(samplers.map((s) => s.name).sort()).toEqual(
      SCHEDULER_NAMES.map((n) => SCHEDULERS[n].displayName).sort(),
    );
    expect(samplers.find((s) => s.name === "DPM++ 2M")).toEqual({
      name: "DPM++ 2M",
      aliases: ["k_dpmpp_2m", "dpmsolver++"],
      options: { scheduler: "karras" },
    });
    expect(samplers.find((s) => s.name === "Euler a")?.aliases).toContain("k_euler_a");
    // sdwebuiapi's util_get_sampler_names
    expect(samplers.map((s) => s.name)).toContain("Euler a");
  });

  test("schedulers: automatic and karras, as SchedulerItem", async () => {
    expect(await ok("GET", "/sdapi/v1/schedulers")).toEqual([
      { name: "automatic", label: "Automatic", aliases: null, default_rho: -1, need_inner_model: false },
      { name: "karras", label: "Karras", aliases: null, default_rho: 7, need_inner_model: false },
    ]);
  });

  test("options: the default model's title (in sd-models, as sdwebuiapi's util_get_current_model expects) and clip skip", async () => {
    const options = await ok<Record<string, unknown>>("GET", "/sdapi/v1/options");
    const models = await ok<{ title: string; sha256: string }[]>("GET", "/sdapi/v1/sd-models");
    const alpha = models.find((m) => m.title.startsWith("alpha"));
    expect(options).toMatchObject({
      sd_model_checkpoint: alpha?.title,
      sd_checkpoint_hash: alpha?.sha256,
      CLIP_stop_at_last_layers: 1,
      samples_format: "png",
      sd_vae: "Automatic",
      sd_checkpoints_limit: 2,
    });
  });

  test("progress when idle: zero progress and job_count, as sdwebuiapi's util_wait_for_ready waits for", async () => {
    const progress = await ok<Progress>("GET", "/sdapi/v1/progress?skip_current_image=false");
    expect(progress.progress).toBe(0);
    expect(progress.state.job_count).toBe(0);
    expect(progress.current_image).toBeNull();
  });
});

describe("txt2img", () => {
  test("the wiki's payload: a PNG that decodes, its infotext in info, the request echoed in parameters", async () => {
    const { res, info } = await txt2img({ ...WIKI_PAYLOAD, ...SMALL });
    expect(Object.keys(res).sort()).toEqual(["images", "info", "parameters"]);
    expect(res.images).toHaveLength(1);
    const image = await pixels(Buffer.from(res.images[0] as string, "base64"));
    expect([image.width, image.height]).toEqual([64, 64]);
    // A1111's defaults for what the payload leaves out: Euler, its automatic schedule, CFG 7, one image.
    expect(info).toMatchObject({
      prompt: "maltese puppy",
      all_prompts: ["maltese puppy"],
      sampler_name: "Euler",
      extra_generation_params: { "Schedule type": "Automatic" },
      cfg_scale: 7,
      steps: 5,
      batch_size: 1,
      width: 64,
      height: 64,
      sd_model_name: "alpha",
      clip_skip: 1,
      sdx_warnings: [],
    });
    expect(info.job_timestamp).toMatch(/^\d{14}$/);
    expect(info.all_seeds).toEqual([info.seed]);
    expect(info.seed).toBeGreaterThanOrEqual(0);
    expect(info.infotexts).toEqual([pngText(res.images[0] as string).parameters as string]);
    expect(info.infotexts[0]).toContain(
      `Steps: 5, Sampler: Euler, Schedule type: Automatic, CFG scale: 7, Seed: ${info.seed}, Size: 64x64, Model hash: ${info.sd_model_hash}, Model: alpha`,
    );
    expect(res.parameters).toMatchObject({
      prompt: "maltese puppy",
      steps: 5,
      seed: -1,
      n_iter: 1,
      sampler_index: "Euler",
      send_images: true,
    });
  });

  test("sdwebuiapi's payload: batch_size × n_iter images, image i of iteration j with seed + j × batch_size + i", async () => {
    const payload = sdwebuiapiPayload({
      prompt: "a red fox",
      seed: 1000,
      batch_size: 2,
      n_iter: 2,
      steps: 4,
      width: 64,
      height: 64,
    });
    const { res, info } = await txt2img(payload);
    // parameters echoes the request as sent, nulls included.
    expect(res.parameters).toMatchObject(payload);
    expect(res.images).toHaveLength(4);
    expect(info.all_seeds).toEqual([1000, 1001, 1002, 1003]);
    expect(info.all_prompts).toHaveLength(4);
    expect(info.all_subseeds).toHaveLength(4);
    expect(info.sampler_name).toBe("Euler a");
    const seeds = res.images.map((png) => /Seed: (\d+)/.exec(pngText(png).parameters ?? "")?.[1]);
    expect(seeds).toEqual(["1000", "1001", "1002", "1003"]);
    expect(info.infotexts).toEqual(res.images.map((png) => pngText(png).parameters as string));
    // Every field sdwebuiapi sends by default is one A1111 would accept without changing the image.
    expect(info.sdx_warnings).toEqual([]);
    // The client's parsing (WebUIApi._to_api_result): json.loads(info), every image through PIL.
    for (const png of res.images) expect((await pixels(Buffer.from(png, "base64"))).width).toBe(64);
  });

  test("an A1111 txt2img and the equivalent /v1/generate give byte-identical PNGs", async () => {
    const { res, info } = await txt2img(
      sdwebuiapiPayload({
        prompt: "a lighthouse at dawn",
        negative_prompt: "blurry",
        seed: 77,
        batch_size: 2,
        n_iter: 2,
        steps: 4,
        width: 64,
        height: 64,
        sampler_name: "DPM++ 2M",
        scheduler: "karras",
        cfg_scale: 6.5,
      }),
    );
    const v1 = async (seed: number) =>
      ok<{ images: { png: string; seed: number }[] }>("POST", "/v1/generate", {
        prompt: "a lighthouse at dawn",
        negative_prompt: "blurry",
        seed,
        batch_size: 2,
        num_steps: 4,
        width: 64,
        height: 64,
        scheduler_type: "dpmsolver++",
        karras_sigmas: true,
        guidance_scale: 6.5,
      });
    const pngs = [...(await v1(77)).images, ...(await v1(79)).images].map((i) => i.png);
    expect(res.images).toEqual(pngs);
    expect(info.all_seeds).toEqual([77, 78, 79, 80]);
    expect(info).toMatchObject({
      sampler_name: "DPM++ 2M",
      extra_generation_params: { "Schedule type": "Karras" },
    });
    // The pre-1.9 spelling, the schedule in the sampler's name, is the same request.
    const old = await txt2img({
      prompt: "a lighthouse at dawn",
      negative_prompt: "blurry",
      seed: 77,
      batch_size: 2,
      steps: 4,
      cfg_scale: 6.5,
      sampler_name: "DPM++ 2M Karras",
      ...SMALL,
    });
    expect(old.res.images).toEqual(pngs.slice(0, 2));
    // A1111's automatic schedule for DPM++ 2M is Karras, as in A1111.
    const automatic = await txt2img({
      prompt: "a lighthouse at dawn",
      negative_prompt: "blurry",
      seed: 77,
      batch_size: 2,
      steps: 4,
      cfg_scale: 6.5,
      sampler_name: "DPM++ 2M",
      scheduler: "automatic",
      ...SMALL,
    });
    expect(automatic.res.images).toEqual(pngs.slice(0, 2));
  });

  test("the model per request: override_settings.sd_model_checkpoint by model name, file name or title", async () => {
    const first = await txt2img({
      prompt: "a red fox",
      seed: 3,
      steps: 3,
      ...SMALL,
      override_settings: { sd_model_checkpoint: "gamma" },
    });
    expect(first.info.sd_model_name).toBe("gamma");
    expect(first.info.sd_model_hash).toBe(gammaSha256.slice(0, 10));
    expect(first.info.infotexts[0]).toContain(`Model hash: ${gammaSha256.slice(0, 10)}, Model: gamma`);
    // Loaded once, gamma has its A1111 title; each of its names finds it.
    const models = await ok<{ title: string; model_name: string }[]>("GET", "/sdapi/v1/sd-models");
    const title = models.find((m) => m.model_name === "gamma")?.title;
    expect(title).toBe(`gamma.safetensors [${gammaSha256.slice(0, 10)}]`);
    for (const name of [
      title,
      "gamma.safetensors",
      gammaSha256.slice(0, 10),
      gammaSha256,
      "gamma [0000000000]",
    ]) {
      const { res } = await txt2img({
        prompt: "a red fox",
        seed: 3,
        steps: 3,
        ...SMALL,
        override_settings: { sd_model_checkpoint: name },
      });
      expect(res.images).toEqual(first.res.images);
    }
    // The override is for that request only: the default is still alpha.
    const list = await ok<{ default_model: string }>("GET", "/v1/models");
    expect(list.default_model).toBe("alpha");
    expect((await txt2img({ prompt: "a red fox", seed: 3, steps: 3, ...SMALL })).info.sd_model_name).toBe(
      "alpha",
    );
  });

  test("an unknown checkpoint, or anything path-like, is a 422 naming the field and listing the titles", async () => {
    for (const name of ["delta", "../alpha", "/etc/passwd", "alpha/unet"]) {
      const error = await rejected({
        prompt: "x",
        ...SMALL,
        override_settings: { sd_model_checkpoint: name },
      });
      expect(error.fields?.[0]?.field).toBe("override_settings.sd_model_checkpoint");
      expect(error.fields?.[0]?.allowed).toContain(`gamma.safetensors [${gammaSha256.slice(0, 10)}]`);
    }
  });

  test("the wiki's override_settings example: clip skip applied, a setting sdx has not named in sdx_warnings", async () => {
    const { res, info } = await txt2img({ ...WIKI_OVERRIDE_PAYLOAD, seed: 9, ...SMALL });
    expect(info.clip_skip).toBe(2);
    expect(pngText(res.images[0] as string).parameters).toContain("Clip skip: 2");
    expect(info.sdx_warnings).toEqual([
      "override_settings filter_nsfw was not applied: sdx has no such setting (GET /sdapi/v1/options lists those it has).",
    ]);
    const v1 = await ok<{ images: { png: string }[] }>("POST", "/v1/generate", {
      prompt: "cirno",
      seed: 9,
      num_steps: 20,
      guidance_scale: 7,
      scheduler_type: "euler",
      clip_skip: 2,
      ...SMALL,
    });
    expect(res.images[0]).toBe(v1.images[0]?.png as string);
  });

  test("harmless fields sdx cannot honour are accepted and named in sdx_warnings; send_images false sends none", async () => {
    const { res, info } = await txt2img({
      prompt: "a cat",
      negative_prompt: "dog",
      steps: 2,
      cfg_scale: 1,
      ...SMALL,
      restore_faces: true,
      styles: ["Cinematic"],
      no_such_field: 1,
      send_images: false,
    });
    expect(res.images).toEqual([]);
    expect(info.infotexts).toHaveLength(1);
    const warnings = info.sdx_warnings.join("\n");
    expect(warnings).toContain("restore_faces");
    expect(warnings).toContain('styles "Cinematic"');
    expect(warnings).toContain("no_such_field is not an A1111 txt2img field");
    // sdx's own warnings speak A1111's field names.
    expect(warnings).toContain("negative_prompt was ignored: cfg_scale 1 ≤ 1");
    expect(res.parameters).toMatchObject({ no_such_field: 1, restore_faces: true });
  });

  test("a schedule A1111 picks for a sampler but sdx lacks is said, never silently swapped", async () => {
    const { info } = await txt2img({
      prompt: "x",
      seed: 1,
      steps: 2,
      ...SMALL,
      sampler_name: "DPM++ 2M SDE",
    });
    expect(info.sampler_name).toBe("DPM++ 2M SDE");
    expect(info.sdx_warnings.join("\n")).toContain("Exponential schedule, which sdx does not have");
  });
});

describe("422s name the A1111 field", () => {
  const cases: [string, Record<string, unknown>, string, unknown[]?][] = [
    ["a sampler sdx does not have", { sampler_name: "DPM++ SDE" }, "sampler_name"],
    ["an unknown sampler", { sampler_name: "Nonsense" }, "sampler_name"],
    ["an unknown sampler_index", { sampler_index: "Nonsense" }, "sampler_index"],
    [
      "a schedule sdx does not have",
      { sampler_name: "Euler", scheduler: "exponential" },
      "scheduler",
      ["automatic", "karras"],
    ],
    ["an unknown schedule", { scheduler: "sometimes" }, "scheduler"],
    [
      "Karras on a sampler without it",
      { sampler_name: "Euler a", scheduler: "karras" },
      "scheduler",
      ["automatic"],
    ],
    [
      "a hires upscaler sdx does not have",
      { enable_hr: true, hr_upscaler: "Latent (bicubic)" },
      "hr_upscaler",
      ["None", "Latent", "Latent (nearest)", "Lanczos"],
    ],
    ["a hires second-pass sampler", { enable_hr: true, hr_sampler_name: "DDIM" }, "hr_sampler_name"],
    ["tiling", { tiling: true }, "tiling", [false]],
    ["variation seeds", { subseed_strength: 0.5 }, "subseed_strength", [0]],
    ["seed resize", { seed_resize_from_w: 256, seed_resize_from_h: 256 }, "seed_resize_from_w"],
    ["a script", { script_name: "x/y/z plot" }, "script_name"],
    [
      "an extension",
      { alwayson_scripts: { ControlNet: { args: [{ enabled: true }] } } },
      "alwayson_scripts.ControlNet",
    ],
    ["a refiner", { refiner_checkpoint: "sd_xl_refiner_1.0" }, "refiner_checkpoint"],
    ["steps out of range", { steps: 0 }, "steps"],
    ["a size off the grid", { width: 65 }, "width"],
    [
      "a fixed setting changed",
      { override_settings: { eta_noise_seed_delta: 31337 } },
      "override_settings.eta_noise_seed_delta",
      [0],
    ],
    [
      "clip skip out of range",
      { override_settings: { CLIP_stop_at_last_layers: 13 } },
      "override_settings.CLIP_stop_at_last_layers",
    ],
    [
      "clip skip beyond the model",
      { override_settings: { CLIP_stop_at_last_layers: 12 } },
      "override_settings.CLIP_stop_at_last_layers",
    ],
  ];
  for (const [what, fields, field, allowed] of cases) {
    test(what, async () => {
      const error = await rejected({ prompt: "x", steps: 2, ...SMALL, ...fields });
      expect(error.fields?.map((f) => f.field)).toContain(field);
      const entry = error.fields?.find((f) => f.field === field);
      if (allowed) expect(entry?.allowed).toEqual(allowed);
      expect(error.message).toContain(field);
    });
  }

  test("a sampler 422 lists the samplers sdx has", async () => {
    const error = await rejected({ prompt: "x", sampler_name: "DPM++ SDE" });
    expect(error.message).toContain("A1111's DPM++ SDE sampler has no sdx implementation");
    expect(error.fields?.[0]?.allowed).toContain("Euler a");
  });

  test("nulls are A1111's defaults, not type errors", async () => {
    const { info } = await txt2img({
      prompt: "x",
      seed: null,
      steps: 2,
      sampler_name: null,
      scheduler: null,
      cfg_scale: null,
      ...SMALL,
      override_settings: { sd_model_checkpoint: null },
    });
    expect(info).toMatchObject({ sampler_name: "Euler", cfg_scale: 7, sd_model_name: "alpha" });
  });
});

/** GET /sdapi/v1/progress (with `query`) until `check` holds. */
async function waitFor(check: (p: Progress) => boolean, query = ""): Promise<Progress> {
  const deadline = Date.now() + 60_000;
  while (true) {
    const p = await ok<Progress>("GET", `/sdapi/v1/progress${query}`);
    if (check(p)) return p;
    if (Date.now() > deadline) throw new Error(`progress never got there: ${JSON.stringify(p)}`);
    await Bun.sleep(10);
  }
}

describe("progress, interrupt and skip", () => {
  test("progress follows a running txt2img, and interrupt stops it: 200 with the finished iterations", async () => {
    const stepsBefore = await metric("sdx_steps_total");
    const running = txt2img({ prompt: "a castle", seed: 5, steps: 40, n_iter: 3, width: 256, height: 256 });
    const during = await waitFor((p) => p.state.sampling_step >= 2);
    expect(during.state).toMatchObject({
      job: "Batch 1 out of 3",
      job_count: 3,
      job_no: 0,
      sampling_steps: 40,
      interrupted: false,
    });
    expect(during.progress).toBeGreaterThan(0.01);
    expect(during.progress).toBeLessThan(1 / 3 + 0.01);
    expect(during.eta_relative).toBeGreaterThan(0);
    // A1111's default live previews: one every 10 steps, so none before step 10.
    expect(during.current_image !== null).toBe(during.state.sampling_step >= 10);
    const later = await waitFor((p) => p.state.sampling_step > during.state.sampling_step);
    expect(later.progress).toBeGreaterThan(during.progress);

    // sdwebuiapi's interrupt(): a POST with no body.
    const interrupted = await fetch(`${server.url}/sdapi/v1/interrupt`, { method: "POST" });
    expect(interrupted.status).toBe(200);
    expect(await interrupted.json()).toEqual({});
    const { res, info } = await running;
    expect(res.images).toEqual([]);
    expect(info.all_seeds).toEqual([5, 6, 7]);
    expect(info.infotexts).toEqual([]);
    expect(info.sdx_warnings.join("\n")).toContain("interrupted: iteration 1 of 3 was stopped");
    // The engine stopped: far fewer than the 120 steps asked for.
    expect((await metric("sdx_steps_total")) - stepsBefore).toBeLessThan(40);
    const after = await ok<Progress>("GET", "/sdapi/v1/progress");
    expect(after.state.job_count).toBe(0);
    expect(after.progress).toBe(0);
  }, 120_000);

  test("skip drops the running iteration and goes on with the next", async () => {
    const running = txt2img({ prompt: "a castle", seed: 50, steps: 60, n_iter: 2, width: 128, height: 128 });
    await waitFor((p) => p.state.job_no === 0 && p.state.sampling_step >= 1);
    expect(await ok("POST", "/sdapi/v1/skip")).toEqual({});
    const { res, info } = await running;
    expect(res.images).toHaveLength(1);
    expect(info.all_seeds).toEqual([50, 51]);
    expect(pngText(res.images[0] as string).parameters).toContain("Seed: 51,");
    expect(info.sdx_warnings.join("\n")).toContain("skipped: iteration 1 of 2");
  }, 120_000);

  test("progress reports a running /v1 generation too", async () => {
    const running = ok("POST", "/v1/generate", {
      prompt: "x",
      seed: 1,
      num_steps: 60,
      width: 128,
      height: 128,
    });
    const p = await waitFor((q) => q.state.sampling_step >= 1);
    expect(p.state).toMatchObject({ job: "sdx generate", job_count: 1, sampling_steps: 60 });
    await running;
  }, 120_000);
});

describe("live previews", () => {
  const DEFAULTS = {
    live_previews_enable: true,
    show_progress_every_n_steps: 10,
    show_progress_type: "Approx NN",
  };
  afterAll(async () => {
    await call("POST", "/sdapi/v1/options", DEFAULTS);
  });

  test("the settings are A1111's, with its defaults, and map onto sdx's preview", async () => {
    expect(await ok("GET", "/sdapi/v1/options")).toMatchObject(DEFAULTS);
    const settings = (n: number, type = "Approx cheap", on = true) =>
      previewRequest({
        live_previews_enable: on,
        show_progress_every_n_steps: n,
        show_progress_type: type as "Approx cheap",
      });
    expect(settings(10, "Approx NN")).toEqual({ every: 10, method: "approx" });
    // A1111's State.set_current_image: 0 previews every step; -1 only once sampling is done (State.nextjob).
    expect(settings(0)).toEqual({ every: 1, method: "approx" });
    expect(settings(-1)).toEqual({ every: 1000, method: "approx" });
    expect(settings(3, "TAESD")).toEqual({ every: 3, method: "taesd" });
    expect(settings(3, "Full", false)).toBeUndefined();
  });

  test("a running sdwebuiapi txt2img shows its latest preview as current_image (none with skip_current_image), and its images are those made without previews", async () => {
    const body = sdwebuiapiPayload({
      prompt: "a castle",
      seed: 21,
      steps: 30,
      ...SMALL,
      override_settings: { show_progress_every_n_steps: 1, show_progress_type: "Approx cheap" },
    });
    const running = txt2img(body);
    const skipped = await waitFor((p) => p.state.sampling_step >= 1, "?skip_current_image=true");
    expect(skipped.current_image).toBeNull();
    const p = await waitFor((q) => q.current_image !== null);
    const preview = await pixels(Buffer.from(p.current_image as string, "base64"));
    expect([preview.width, preview.height]).toEqual([8, 8]);
    const { res, info } = await running;
    expect(info.sdx_warnings).toEqual([]);
    const { res: plain } = await txt2img({
      ...body,
      override_settings: { live_previews_enable: false },
    });
    expect(res.images).toEqual(plain.images);
    expect((await ok<Progress>("GET", "/sdapi/v1/progress")).current_image).toBeNull();
  }, 120_000);

  test("previews made as Approx cheap for Full and Approx NN say so; TAESD is a 422 until sdx runs it", async () => {
    const { info } = await txt2img({
      prompt: "x",
      seed: 1,
      steps: 2,
      ...SMALL,
      override_settings: { show_progress_type: "Full" },
    });
    expect(info.sdx_warnings.join("\n")).toContain(
      'show_progress_type "Full": sdx makes these previews as "Approx cheap"',
    );
    const options = await rejected({ show_progress_type: "TAESD" }, "/sdapi/v1/options");
    expect(options.fields?.[0]).toMatchObject({
      field: "show_progress_type",
      allowed: ["Full", "Approx NN", "Approx cheap"],
    });
    expect(options.fields?.[0]?.message).toStartWith("taesd previews need");
    const request = await rejected({
      prompt: "x",
      steps: 2,
      ...SMALL,
      override_settings: { show_progress_type: "TAESD" },
    });
    expect(request.fields?.[0]?.field).toBe("override_settings.show_progress_type");
    expect((await rejected({ show_progress_type: "Fast" }, "/sdapi/v1/options")).fields?.[0]?.field).toBe(
      "show_progress_type",
    );
  });

  test("POST options sets them for later requests; override_settings_restore_afterwards false keeps an override", async () => {
    expect(
      (
        await call("POST", "/sdapi/v1/options", {
          show_progress_every_n_steps: 0,
          show_progress_type: "Full",
        })
      ).status,
    ).toBe(200);
    expect(await ok("GET", "/sdapi/v1/options")).toMatchObject({
      show_progress_every_n_steps: 0,
      show_progress_type: "Full",
    });
    await txt2img({
      prompt: "x",
      steps: 2,
      ...SMALL,
      override_settings: { live_previews_enable: false },
      override_settings_restore_afterwards: false,
    });
    expect(await ok("GET", "/sdapi/v1/options")).toMatchObject({
      live_previews_enable: false,
      show_progress_every_n_steps: 0,
    });
  });

  test("a running /v1 generation that streams previews shows them too", async () => {
    const res = await fetch(`${server.url}/v1/generate`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({
        prompt: "x",
        seed: 2,
        num_steps: 30,
        ...SMALL,
        preview: { every: 1 },
      }),
    });
    const p = await waitFor((q) => q.current_image !== null);
    expect(p.state.job).toBe("sdx generate");
    expect((await pixels(Buffer.from(p.current_image as string, "base64"))).width).toBe(8);
    await res.text();
  }, 120_000);
});

describe("options", () => {
  afterAll(async () => {
    await call("POST", "/sdapi/v1/options", { sd_model_checkpoint: "alpha", CLIP_stop_at_last_layers: 1 });
  });

  test("the wiki's options POST switches the server's default model (GET /v1/models) and A1111's clip skip", async () => {
    // The wiki's example, with this folder's checkpoint: {"sd_model_checkpoint": "<file> [hash]", "CLIP_stop_at_last_layers": 2}
    const res = await call("POST", "/sdapi/v1/options", {
      sd_model_checkpoint: `gamma.safetensors [${gammaSha256.slice(0, 10)}]`,
      CLIP_stop_at_last_layers: 2,
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("null");
    const list = await ok<{
      default_model: string;
      models: { name: string; default: boolean; loaded: boolean }[];
    }>("GET", "/v1/models");
    expect(list.default_model).toBe("gamma");
    expect(list.models.find((m) => m.name === "gamma")).toMatchObject({ default: true, loaded: true });
    expect(await ok("GET", "/sdapi/v1/options")).toMatchObject({
      sd_model_checkpoint: `gamma.safetensors [${gammaSha256.slice(0, 10)}]`,
      sd_checkpoint_hash: gammaSha256,
      CLIP_stop_at_last_layers: 2,
    });
    const { info } = await txt2img({ prompt: "x", seed: 1, steps: 2, ...SMALL });
    expect(info).toMatchObject({ sd_model_name: "gamma", clip_skip: 2 });
    // /v1 requests without a model get the new default too.
    const v1 = await ok<{ metadata: { model: { name: string } } }>("POST", "/v1/generate", {
      prompt: "x",
      num_steps: 2,
      ...SMALL,
    });
    expect(v1.metadata.model.name).toBe("gamma");
  });

  test("sdwebuiapi's util_set_model: the closest title from sd-models", async () => {
    const models = await ok<{ title: string }[]>("GET", "/sdapi/v1/sd-models");
    const title = models.map((m) => m.title).find((t) => t.startsWith("alpha")) as string;
    expect((await call("POST", "/sdapi/v1/options", { sd_model_checkpoint: title })).status).toBe(200);
    expect((await ok<{ default_model: string }>("GET", "/v1/models")).default_model).toBe("alpha");
  });

  test("override_settings_restore_afterwards false keeps the override, as A1111 does", async () => {
    expect((await call("POST", "/sdapi/v1/options", { CLIP_stop_at_last_layers: 1 })).status).toBe(200);
    await txt2img({
      prompt: "x",
      steps: 2,
      ...SMALL,
      override_settings: { sd_model_checkpoint: "gamma", CLIP_stop_at_last_layers: 2 },
      override_settings_restore_afterwards: false,
    });
    expect((await ok<{ default_model: string }>("GET", "/v1/models")).default_model).toBe("gamma");
    expect(await ok("GET", "/sdapi/v1/options")).toMatchObject({ CLIP_stop_at_last_layers: 2 });
  });

  test("fixed settings must keep their value; unknown ones are accepted and named in a header", async () => {
    const error = await rejected({ samples_format: "jpg" }, "/sdapi/v1/options");
    expect(error.fields?.[0]).toMatchObject({ field: "samples_format", allowed: ["png"] });
    const unknown = await rejected({ sd_model_checkpoint: "nope" }, "/sdapi/v1/options");
    expect(unknown.fields?.[0]?.field).toBe("sd_model_checkpoint");
    const ignored = await call("POST", "/sdapi/v1/options", {
      show_progress_grid: false,
      samples_format: "png",
    });
    expect(ignored.status).toBe(200);
    expect(ignored.headers.get("x-sdx-ignored-options")).toBe("show_progress_grid");
    // A client that posts back what it read changes nothing.
    const options = await ok<Record<string, unknown>>("GET", "/sdapi/v1/options");
    expect((await call("POST", "/sdapi/v1/options", options)).status).toBe(200);
    expect(await ok("GET", "/sdapi/v1/options")).toEqual(options);
  });
});

describe("in-process", () => {
  test("the routes sit behind the API key like /v1", async () => {
    const host = new ModelHost({ modelsDir: join(dir, "none"), provider: "cpu" });
    const app = createApp(host, { security: { apiKey: "k" } });
    for (const path of ["/sdapi/v1/sd-models", "/sdapi/v1/options", "/sdapi/v1/progress"]) {
      expect((await app.handle(new Request(`http://localhost${path}`))).status).toBe(401);
      const authed = new Request(`http://localhost${path}`, { headers: { authorization: "Bearer k" } });
      expect((await app.handle(authed)).status).toBe(200);
    }
    const post = new Request("http://localhost/sdapi/v1/txt2img", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(WIKI_PAYLOAD),
    });
    expect((await app.handle(post)).status).toBe(401);
  });

  test("with no model to serve, txt2img says how to choose one the A1111 way", async () => {
    const host = new ModelHost({ modelsDir: join(dir, "none"), provider: "cpu" });
    await host.start();
    const app = createApp(host);
    const res = await app.handle(
      new Request("http://localhost/sdapi/v1/txt2img", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(WIKI_PAYLOAD),
      }),
    );
    expect(res.status).toBe(503);
    const body = (await res.json()) as ErrorBody;
    expect(body.code).toBe("no_model");
    expect(body.message).toContain("override_settings.sd_model_checkpoint");
  });

  test("the spec: every /sdapi route tagged automatic1111, request and answers with examples", async () => {
    const app = createApp(new ModelHost({ modelsDir: join(dir, "none"), provider: "cpu" }));
    const spec = (await (await app.handle(new Request("http://localhost/swagger/json"))).json()) as {
      paths: Record<string, Record<string, { tags?: string[]; operationId?: string }>>;
      components: { schemas: Record<string, { examples?: unknown[] }> };
    };
    const ops = Object.entries(spec.paths)
      .filter(([path]) => path.startsWith("/sdapi/v1/"))
      .flatMap(([path, item]) => Object.entries(item).map(([method, op]) => ({ path, method, op })));
    expect(ops.map((o) => `${o.method.toUpperCase()} ${o.path}`).sort()).toEqual([
      "GET /sdapi/v1/embeddings",
      "GET /sdapi/v1/latent-upscale-modes",
      "GET /sdapi/v1/loras",
      "GET /sdapi/v1/options",
      "GET /sdapi/v1/progress",
      "GET /sdapi/v1/samplers",
      "GET /sdapi/v1/schedulers",
      "GET /sdapi/v1/sd-models",
      "GET /sdapi/v1/sd-vae",
      "GET /sdapi/v1/upscalers",
      "POST /sdapi/v1/img2img",
      "POST /sdapi/v1/interrupt",
      "POST /sdapi/v1/options",
      "POST /sdapi/v1/refresh-loras",
      "POST /sdapi/v1/skip",
      "POST /sdapi/v1/txt2img",
    ]);
    for (const { op } of ops) expect(op.tags).toEqual(["automatic1111"]);
    for (const name of [
      "A1111Txt2ImgRequest",
      "A1111Txt2ImgResponse",
      "A1111Img2ImgRequest",
      "A1111Img2ImgResponse",
      "A1111Upscalers",
      "A1111LatentUpscaleModes",
      "A1111SdModels",
      "A1111Progress",
      "A1111Loras",
      "A1111Embeddings",
      "A1111SdVaes",
    ]) {
      expect(spec.components.schemas[name]?.examples?.length).toBeGreaterThan(0);
    }
    expect(spec.components.schemas.A1111Txt2ImgRequest?.examples).toContainEqual(WIKI_PAYLOAD);
  });
});
