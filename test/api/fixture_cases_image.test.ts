/**
 * Every diffusers reference case of the image-input suites — img2img (SD 1.x, SDXL), inpainting (4- and
 * 9-channel UNets) and the hires fix — through POST /v1/generate, driven by the SDK and served by the real app
 * with the engine worker and real onnxruntime sessions: once from the optimum ONNX folder and once from the
 * single-file checkpoint, where the case runs in that layout (a traced ONNX UNet needs latent sides divisible
 * by 8). Each case's `sdx_request` is sent as it is, its `@file` values replaced by the files' base64. Each
 * image must be within mean 0.5 and max 4 (0–255) of the PNG diffusers made.
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { copyFile, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { createSdxClient, type GenerateRequest } from "../../sdk/index.ts";
import {
  FIXTURES,
  imageDiff,
  MODELS_DIR,
  MODELS_SDXL_DIR,
  pixels,
  readCaseJson,
} from "../helpers/fixtures.ts";

const SUITES = ["img2img_sd15", "inpaint_sd15", "hires_sd15", "img2img_sdxl"] as const;
type Layout = "onnx_folder" | "single_file";

/** The models each suite names, as a models directory per layout. */
const ONNX_DIRS: Record<string, string> = {
  tiny_sd15: MODELS_DIR,
  tiny_sd15_inpaint: join(FIXTURES, "models_inpaint"),
  tiny_sdxl: MODELS_SDXL_DIR,
};

interface ImageCase {
  suite: string;
  name: string;
  dir: string;
  model: string;
  layouts: Layout[];
  request: Record<string, unknown>;
}

function loadCases(): ImageCase[] {
  const cases: ImageCase[] = [];
  for (const suite of SUITES) {
    const root = join(FIXTURES, "cases", suite);
    for (const d of readdirSync(root, { withFileTypes: true })) {
      if (!d.isDirectory()) continue;
      const dir = join(root, d.name);
      const c = readCaseJson(dir) as Record<string, unknown>;
      const request = { ...(c.sdx_request as Record<string, unknown>) };
      const model =
        typeof c.model === "object" && c.model !== null
          ? ((c.model as { name: string }).name as string)
          : ((request.model as string | undefined) ?? "tiny_sdxl");
      delete request.model;
      const layouts = (c.runnable_layouts as Layout[] | undefined) ?? ["single_file", "onnx_folder"];
      cases.push({ suite, name: d.name, dir, model, layouts, request });
    }
  }
  return cases.sort((a, b) => `${a.suite}/${a.name}`.localeCompare(`${b.suite}/${b.name}`));
}

/** The case's request with each `@file` value replaced by that file's base64. */
async function bodyOf(c: ImageCase): Promise<GenerateRequest> {
  const body: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(c.request)) {
    body[key] =
      typeof value === "string" && value.startsWith("@")
        ? Buffer.from(await Bun.file(join(c.dir, value.slice(1))).arrayBuffer()).toString("base64")
        : value;
  }
  return body as unknown as GenerateRequest;
}

const cases = loadCases();
const groups = new Map<string, ImageCase[]>();
for (const c of cases) {
  for (const layout of c.layouts) {
    const key = `${c.model}|${layout}`;
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
}

for (const [key, group] of groups) {
  const [model, layout] = key.split("|") as [string, Layout];
  describe(`${model} (${layout}): image-input reference cases through POST /v1/generate`, () => {
    let host: ModelHost;
    let client: ReturnType<typeof createSdxClient>;
    let app: ReturnType<typeof createApp>;
    beforeAll(async () => {
      let modelsDir = ONNX_DIRS[model] as string;
      if (layout === "single_file") {
        modelsDir = await mkdtemp(join(tmpdir(), `sdx-${model}-`));
        await copyFile(
          join(FIXTURES, "checkpoints", `${model}.safetensors`),
          join(modelsDir, `${model}.safetensors`),
        );
        // The tiny SDXL's per-level attention heads (2, 4, 8), which no weight shape records.
        if (model === "tiny_sdxl") {
          await writeFile(
            join(modelsDir, "tiny_sdxl.json"),
            JSON.stringify({ model_type: "SDXL", unet_attention_heads: [2, 4, 8] }),
          );
        }
      }
      host = new ModelHost({ modelsDir, provider: "cpu" });
      await host.start();
      if (host.state.status !== "ready") throw new Error(`model did not load: ${host.state.message}`);
      app = createApp(host);
      client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
    });
    afterAll(() => host.close());
    if (model === "tiny_sd15_inpaint") {
      test("an inpainting model runs text-to-image and unmasked image-to-image (A1111's blank conditioning)", async () => {
        const base = { prompt: "a wooden door", seed: 3, width: 64, height: 128, num_steps: 4 };
        const text = await client.generate(base);
        const init = Buffer.from(await Bun.file(join(group[0]?.dir ?? "", "init.png")).arrayBuffer());
        const meta = await sharp(init).metadata();
        const image = await client.generate({
          ...base,
          width: meta.width as number,
          height: meta.height as number,
          init_image: init.toString("base64"),
          strength: 0.5,
        });
        expect(image.metadata.timesteps).toHaveLength(2);
        for (const res of [text, image]) {
          const { data } = await pixels(Buffer.from(res.images[0]?.png ?? "", "base64"));
          expect(new Set(data).size).toBeGreaterThan(16);
        }
        const a1111 = (await (
          await app.handle(
            new Request("http://localhost/sdapi/v1/txt2img", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ prompt: "a door", seed: 3, width: 64, height: 64, steps: 2 }),
            }),
          )
        ).json()) as { info: string };
        expect(JSON.parse(a1111.info).is_using_inpainting_conditioning).toBe(true);
      });
    }
    for (const c of group) {
      test(`${c.suite}/${c.name}`, async () => {
        const res = await client.generate(await bodyOf(c));
        expect(res.images).toHaveLength(1);
        const diff = await imageDiff(
          Buffer.from(res.images[0]?.png ?? "", "base64"),
          join(c.dir, "image_0.png"),
        );
        expect(diff.mean).toBeLessThanOrEqual(0.5);
        expect(diff.max).toBeLessThanOrEqual(4);
        if (c.request.init_image !== undefined) {
          const init = new Uint8Array(await Bun.file(join(c.dir, "init.png")).arrayBuffer());
          const sha = new Bun.CryptoHasher("sha256").update(init).digest("hex");
          expect(res.metadata.inputs.init_image?.sha256).toBe(sha);
        }
      });
    }
  });
}
