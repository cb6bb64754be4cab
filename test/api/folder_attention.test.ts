/**
 * `--attention fused` on an ONNX folder through the server: the folder's UNet is rewritten into MultiHeadAttention
 * at load (the log says how many attentions were fused), cached beside the folder, and the image equals the one
 * the plain export gives within ±2.
 */
import { afterAll, expect, test } from "bun:test";
import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSdxClient } from "../../sdk/index.ts";
import { imageDiff, TINY_SD15 } from "../helpers/fixtures.ts";
import { startServer } from "../helpers/server.ts";

const dirs: string[] = [];
afterAll(() => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

async function generateWith(attention: "plain" | "fused") {
  const models = await mkdtemp(join(tmpdir(), `sdx-folder-${attention}-`));
  dirs.push(models);
  await cp(TINY_SD15, join(models, "tiny_sd15"), { recursive: true });
  const server = await startServer([
    "--models-dir",
    models,
    "--model",
    "tiny_sd15",
    "--attention",
    attention,
  ]);
  try {
    const client = createSdxClient({ baseUrl: server.url });
    const res = await client.generate({
      prompt: "a lighthouse on a cliff",
      seed: 7,
      width: 128,
      height: 128,
      num_steps: 8,
      scheduler_type: "euler",
    });
    const png = Buffer.from(res.images[0]?.png ?? "", "base64");
    const cache = (await readdir(join(models, ".sdx-cache")).catch(() => [] as string[])).filter((f) =>
      f.startsWith("tiny_sd15-unet-mha-"),
    );
    return { png, log: server.output(), cache };
  } finally {
    await server.stop();
  }
}

test("an ONNX folder served with --attention fused gives the plain export's image", async () => {
  const plain = await generateWith("plain");
  const fused = await generateWith("fused");
  expect(plain.cache).toEqual([]);
  expect(fused.cache).toHaveLength(1);
  expect(fused.log).toContain("tiny_sd15: 32 of 32 UNet attentions fused into MultiHeadAttention");
  expect(plain.log).not.toContain("MultiHeadAttention");
  const diff = await imageDiff(fused.png, plain.png);
  expect(diff.max).toBeLessThanOrEqual(2);
}, 120_000);
