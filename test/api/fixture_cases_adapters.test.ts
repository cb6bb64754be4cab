/**
 * Every diffusers reference case of the adapter suites — LoRA (SD 1.x: kohya, LoCon, text-encoder only, PEFT,
 * two at once, an A1111 `<lora:…>` tag; SDXL: kohya and LoCon), textual-inversion embeddings (.safetensors and
 * .pt) and a replacement VAE — through POST /v1/generate on the single-file checkpoints, served by the real app
 * with the engine worker. The models folder holds the checkpoint and `loras/`, `embeddings/`, `vae/` as a user
 * would drop them in. Each image must be within mean 0.5 and max 4 (0–255) of the PNG diffusers made.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { copyFile, cp, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { readPngText } from "../../api/engine/pipeline/image.ts";
import { createSdxClient, type GenerateRequest, type SdxError } from "../../sdk/index.ts";
import { FIXTURES, imageDiff, MODELS_DIR, readCaseJson } from "../helpers/fixtures.ts";

const SUITES = ["lora_sd15", "lora_sdxl", "embeddings_sd15", "vae_sd15"] as const;

interface AdapterCase {
  suite: string;
  name: string;
  dir: string;
  model: string;
  request: GenerateRequest;
}

function loadCases(): AdapterCase[] {
  const cases: AdapterCase[] = [];
  for (const suite of SUITES) {
    const root = join(FIXTURES, "cases", suite);
    for (const d of readdirSync(root, { withFileTypes: true })) {
      if (!d.isDirectory()) continue;
      const dir = join(root, d.name);
      const c = readCaseJson(dir) as {
        sdx_request: GenerateRequest & { model: string };
      };
      const { model, ...request } = c.sdx_request;
      cases.push({ suite, name: d.name, dir, model, request });
    }
  }
  return cases.sort((a, b) => `${a.suite}/${a.name}`.localeCompare(`${b.suite}/${b.name}`));
}

/** A models folder with the checkpoint and the adapter folders, as a user sets it up. */
async function modelsDirFor(model: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `sdx-adapters-${model}-`));
  await copyFile(join(FIXTURES, "checkpoints", `${model}.safetensors`), join(dir, `${model}.safetensors`));
  if (model === "tiny_sdxl") {
    // The tiny SDXL's per-level attention heads (2, 4, 8), which no weight shape records.
    await writeFile(
      join(dir, "tiny_sdxl.json"),
      JSON.stringify({ model_type: "SDXL", unet_attention_heads: [2, 4, 8] }),
    );
  }
  for (const folder of ["loras", "embeddings", "vae"]) {
    await cp(join(FIXTURES, "adapters", folder), join(dir, folder), { recursive: true });
  }
  return dir;
}

const cases = loadCases();
for (const model of [...new Set(cases.map((c) => c.model))]) {
  describe(`${model}: adapter reference cases through POST /v1/generate (single-file checkpoint)`, () => {
    let host: ModelHost;
    let client: ReturnType<typeof createSdxClient>;
    beforeAll(async () => {
      host = new ModelHost({ modelsDir: await modelsDirFor(model), provider: "cpu" });
      await host.start();
      if (host.state.status !== "ready") throw new Error(`model did not load: ${host.state.message}`);
      const app = createApp(host);
      client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
    });
    afterAll(() => host.close());
    for (const c of cases.filter((x) => x.model === model)) {
      test(`${c.suite}/${c.name}`, async () => {
        const res = await client.generate(c.request);
        const diff = await imageDiff(
          Buffer.from(res.images[0]?.png ?? "", "base64"),
          join(c.dir, "image_0.png"),
        );
        expect(diff.mean).toBeLessThanOrEqual(0.5);
        expect(diff.max).toBeLessThanOrEqual(4);
        const used = res.metadata.adapters;
        if (c.request.loras)
          expect(used.loras.map((l) => l.name)).toEqual(c.request.loras.map((l) => l.name));
        if (c.request.vae) expect(used.vae?.name).toBe(c.request.vae);
      });
    }
  });
}

describe("adapters through the API", () => {
  let host: ModelHost;
  let client: ReturnType<typeof createSdxClient>;
  let app: ReturnType<typeof createApp>;
  beforeAll(async () => {
    host = new ModelHost({ modelsDir: await modelsDirFor("tiny_sd15"), provider: "cpu" });
    await host.start();
    app = createApp(host);
    client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
  });
  afterAll(() => host.close());

  const base = {
    prompt: "a cat on a sofa",
    seed: 5,
    width: 64,
    height: 64,
    num_steps: 3,
    prompt_syntax: "diffusers",
  } as const;

  test("the same LoRA set again creates no session; the first LoRA set puts the LoRA-ready UNet in place, later sets only re-create text encoders they change", async () => {
    const lora = { ...base, loras: [{ name: "tiny_sd15_lora_attn", weight: 0.7 }] };
    const first = await client.generate(lora);
    // The merged text encoder and the LoRA-ready UNet.
    expect(first.metadata.adapters.cost.sessions_created).toBe(2);
    const again = await client.generate({ ...lora, seed: 6 });
    expect(again.metadata.adapters.cost).toEqual({ sessions_created: 0, ms: 0 });
    // A plain request after it puts the checkpoint's own text encoder back; the UNet's branches are fed zeros.
    const plain = await client.generate(base);
    expect(plain.metadata.adapters.cost.sessions_created).toBe(1);
    expect((await client.generate(base)).metadata.adapters.cost.sessions_created).toBe(0);
    // UNet-only sets: only what the branches are fed changes.
    const locon = await client.generate({ ...base, loras: [{ name: "tiny_sd15_locon", weight: 0.5 }] });
    expect(locon.metadata.adapters.cost.sessions_created).toBe(0);
    const locon2 = await client.generate({ ...base, loras: [{ name: "tiny_sd15_locon", weight: -1 }] });
    expect(locon2.metadata.adapters.cost.sessions_created).toBe(0);
    expect(locon2.images[0]?.png).not.toEqual(locon.images[0]?.png);
    // The text-encoder-only LoRA: one session, the text encoder.
    const te = await client.generate({ ...base, loras: [{ name: "tiny_sd15_te_only" }] });
    expect(te.metadata.adapters.cost.sessions_created).toBe(1);
  });

  test("metadata and infotext name each adapter with its hash, as A1111 writes them", async () => {
    const res = await client.generate({
      ...base,
      prompt: "tinyobject on a table <lora:tiny_sd15_locon:0.5>",
      prompt_syntax: "a1111",
      loras: [{ name: "tiny_sd15_lora_attn", weight: 0.8 }],
      vae: "tiny_sd15_vae_alt",
    });
    const used = res.metadata.adapters;
    expect(used.loras.map((l) => [l.name, l.weight, l.source])).toEqual([
      ["tiny_sd15_lora_attn", 0.8, "request"],
      ["tiny_sd15_locon", 0.5, "prompt"],
    ]);
    expect(used.embeddings.map((e) => [e.name, e.vectors, e.uses])).toEqual([["tinyobject", 3, 1]]);
    expect(used.vae).toMatchObject({ name: "tiny_sd15_vae_alt", default: false });
    const text = readPngText(Buffer.from(res.images[0]?.png ?? "", "base64")).parameters ?? "";
    expect(text).toContain(
      `Lora hashes: "tiny_sd15_lora_attn: ${used.loras[0]?.sha256.slice(0, 12)}, tiny_sd15_locon: `,
    );
    expect(text).toContain(`TI hashes: "tinyobject: ${used.embeddings[0]?.sha256.slice(0, 12)}"`);
    expect(text).toContain(`VAE hash: ${used.vae?.sha256.slice(0, 10)}, VAE: tiny_sd15_vae_alt.safetensors`);
    // The tag was removed from the text the encoder read; the infotext keeps the prompt as written.
    expect(text.split("\n")[0]).toBe("tinyobject on a table <lora:tiny_sd15_locon:0.5>");
  });

  test("A1111's txt2img with a <lora:…> tag gives the PNG /v1/generate gives", async () => {
    const prompt = "a watercolor fox <lora:tiny_sd15_lora_attn:0.8>";
    const a1111 = (await (
      await app.handle(
        new Request("http://localhost/sdapi/v1/txt2img", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({
            prompt,
            seed: 9,
            width: 64,
            height: 64,
            steps: 3,
            sampler_name: "Euler",
            cfg_scale: 7,
          }),
        }),
      )
    ).json()) as { images: string[] };
    const ours = await client.generate({
      prompt,
      seed: 9,
      width: 64,
      height: 64,
      num_steps: 3,
      scheduler_type: "euler",
      guidance_scale: 7,
      prompt_syntax: "a1111",
    });
    expect(ours.metadata.adapters.loras[0]?.source).toBe("prompt");
    const diff = await imageDiff(
      Buffer.from(a1111.images[0] ?? "", "base64"),
      Buffer.from(ours.images[0]?.png ?? "", "base64"),
    );
    expect(diff.max).toBe(0);
  });

  test("a LoRA for another family, an unknown one and a bad tag are 422s naming them", async () => {
    const wrong = (await client
      .generate({ ...base, loras: [{ name: "tiny_sdxl_lora" }] })
      .catch((e: unknown) => e)) as SdxError;
    expect(wrong.status).toBe(422);
    expect(wrong.fields[0]?.field).toBe("loras.0.name");
    expect(wrong.message).toContain("tiny_sdxl_lora");
    const unknown = (await client
      .generate({ ...base, loras: [{ name: "nope" }] })
      .catch((e: unknown) => e)) as SdxError;
    expect(unknown.fields[0]?.field).toBe("loras.0.name");
    expect(unknown.fields[0]?.allowed).toContain("tiny_sd15_lora_attn");
    const tag = (await client
      .generate({ ...base, prompt: "x <lora:tiny_sd15_locon:0.5:0.2>", prompt_syntax: "a1111" })
      .catch((e: unknown) => e)) as SdxError;
    expect(tag.fields[0]?.field).toBe("prompt");
    const vae = (await client.generate({ ...base, vae: "missing" }).catch((e: unknown) => e)) as SdxError;
    expect(vae.fields[0]?.field).toBe("vae");
  });

  test("with prompt_syntax diffusers a tag is text, and the warning says so", async () => {
    const res = await client.generate({ ...base, prompt: "a fox <lora:tiny_sd15_locon:0.5>" });
    expect(res.metadata.adapters.loras).toEqual([]);
    expect(res.warnings.join(" ")).toContain("read as text");
  });
});

describe("adapters on an ONNX folder", () => {
  let host: ModelHost;
  let client: ReturnType<typeof createSdxClient>;
  beforeAll(async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdx-adapters-onnx-"));
    await cp(join(MODELS_DIR, "tiny_sd15"), join(dir, "tiny_sd15"), { recursive: true });
    for (const folder of ["loras", "embeddings", "vae"]) {
      await cp(join(FIXTURES, "adapters", folder), join(dir, folder), { recursive: true });
    }
    host = new ModelHost({ modelsDir: dir, provider: "cpu" });
    await host.start();
    const app = createApp(host);
    client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
  });
  afterAll(() => host.close());

  test("a LoRA is a 422 saying it needs a single-file checkpoint; an embedding name is text, with a warning", async () => {
    const base = { prompt: "a tinystyle house", seed: 1, width: 64, height: 64, num_steps: 2 } as const;
    const error = (await client
      .generate({ ...base, loras: [{ name: "tiny_sd15_lora_attn" }] })
      .catch((e: unknown) => e)) as SdxError;
    expect(error.status).toBe(422);
    expect(error.message).toContain("single-file checkpoint");
    const res = await client.generate(base);
    expect(res.warnings.join(" ")).toContain('"tinystyle" in the prompt was read as text');
  });

  test("a VAE file works on an ONNX folder too", async () => {
    const c = cases.find((x) => x.suite === "vae_sd15") as AdapterCase;
    const res = await client.generate(c.request);
    const diff = await imageDiff(Buffer.from(res.images[0]?.png ?? "", "base64"), join(c.dir, "image_0.png"));
    expect(diff.mean).toBeLessThanOrEqual(0.5);
    expect(diff.max).toBeLessThanOrEqual(4);
  });
});

describe("adapters with generations running side by side (--concurrency 2)", () => {
  test("two requests with different LoRA sets at once each get their own set's image", async () => {
    const host = new ModelHost({
      modelsDir: await modelsDirFor("tiny_sd15"),
      provider: "cpu",
      concurrency: 2,
    });
    await host.start();
    try {
      const app = createApp(host);
      const client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
      const base = {
        prompt: "a red barn",
        seed: 3,
        width: 64,
        height: 64,
        num_steps: 4,
        prompt_syntax: "diffusers",
      } as const;
      const a = { ...base, loras: [{ name: "tiny_sd15_lora_attn", weight: 1 }] };
      const b = { ...base, loras: [{ name: "tiny_sd15_locon", weight: 1 }] };
      const [together1, together2] = await Promise.all([client.generate(a), client.generate(b)]);
      const alone1 = await client.generate(a);
      const alone2 = await client.generate(b);
      const png = (r: Awaited<ReturnType<typeof client.generate>>) =>
        Buffer.from(r.images[0]?.png ?? "", "base64");
      expect((await imageDiff(png(together1), png(alone1))).max).toBe(0);
      expect((await imageDiff(png(together2), png(alone2))).max).toBe(0);
      expect((await imageDiff(png(alone1), png(alone2))).max).toBeGreaterThan(0);
    } finally {
      await host.close();
    }
  });
});
