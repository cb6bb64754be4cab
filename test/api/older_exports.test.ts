/**
 * Models as they come: the UNet of an optimum 1.22 export (the interface of most SD ONNX models made before
 * 2025) takes `timestep` as int64 [1] instead of float32 []. The engine reads that from the session and feeds
 * truncated integer timesteps, which is what running diffusers against such a UNet implies: the fixtures'
 * int64_timestep_variant images.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { cp, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { createSdxClient } from "../../sdk/index.ts";
import { FIXTURES, imageDiff, referenceCase, TINY_SD15 } from "../helpers/fixtures.ts";

let host: ModelHost;
let client: ReturnType<typeof createSdxClient>;

beforeAll(async () => {
  const models = await mkdtemp(join(tmpdir(), "sdx-optimum122-"));
  const dir = join(models, "tiny_sd15_optimum122");
  await cp(TINY_SD15, dir, { recursive: true });
  await cp(join(FIXTURES, "optimum_1.22_unet"), join(dir, "unet"), { recursive: true, force: true });
  host = new ModelHost({ modelsDir: models, provider: "cpu" });
  await host.start();
  const app = createApp(host);
  client = createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) });
});
afterAll(() => host.close());

for (const name of ["p05_euler20_clipskip1", "p09_heun8"]) {
  test(`${name} with an int64-timestep UNet equals diffusers fed int64 timesteps`, async () => {
    const ref = await referenceCase(name);
    const res = await client.generate({
      prompt: ref.prompt as string,
      ...(ref.negative_prompt ? { negative_prompt: ref.negative_prompt as string } : {}),
      prompt_syntax: "diffusers",
      seed: ref.seed,
      width: ref.width,
      height: ref.height,
      num_steps: ref.num_inference_steps,
      guidance_scale: ref.guidance_scale,
      scheduler_type: name.includes("heun") ? "heun" : "euler",
      clip_skip: (ref.clip_skip ?? 0) + 1,
    });
    const png = Buffer.from(res.images[0]?.png ?? "", "base64");
    const diff = await imageDiff(png, join(ref.dir, "int64_timestep_image_0.png"));
    expect(diff.mean).toBeLessThanOrEqual(0.5);
    expect(diff.max).toBeLessThanOrEqual(4);
    // Closer to the int64 reference than to the float one: the int64 interface really was used.
    expect(diff.mean).toBeLessThan((await imageDiff(png, join(ref.dir, "image_0.png"))).mean);
  });
}
