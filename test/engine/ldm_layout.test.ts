/**
 * api/engine/checkpoint/ldm_layout.ts: the generated key sets against the tiny fixture checkpoints (tiny_sd15 exactly but for the
 * keys the fixture provably lacks; tiny_sdxl exactly), against the component lists of the released SD 1.5 /
 * SD 2.1 / SDXL base checkpoints (pinned digests, counts, parameter counts), and the streaming writer's files
 * against sdx's own reader, detection and graph builder.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { prepareCheckpoint } from "../../api/engine/checkpoint/build.ts";
import { detectKind, detectPredictionType, V_PREDICTION_PROBE } from "../../api/engine/checkpoint/detect.ts";
import {
  COND_STAGE_PREFIX,
  HF_CLIP_PREFIX,
  OPENCLIP_PREFIX,
  SDXL_BIGG_PREFIX,
  SDXL_CLIP_L_PREFIX,
  SDXL_EMBEDDERS_PREFIX,
  UNET_PREFIX,
  VAE_PREFIX,
} from "../../api/engine/checkpoint/keys.ts";
import {
  type CheckpointArch,
  checkpointBytes,
  elementCount,
  hfClipTensors,
  ldmTensors,
  openClipTensors,
  PRESETS,
  SCHEDULE_BUFFERS,
  type TensorSpec,
  textTensors,
  unetTensors,
  vaeTensors,
  writeRandomCheckpoint,
} from "../../api/engine/checkpoint/ldm_layout.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { readSafetensorsHeader, readTensorAsFloat32 } from "../../api/engine/safetensors.ts";
import { FIXTURES } from "../helpers/fixtures.ts";

const FIXTURE = join(FIXTURES, "checkpoints", "tiny_sd15.safetensors");
const SDXL_FIXTURE = join(FIXTURES, "checkpoints", "tiny_sdxl.safetensors");
const dir = mkdtempSync(join(tmpdir(), "sdx-ldm-keys-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const line = (t: TensorSpec, prefix = "") => `${t.key.slice(prefix.length)} ${JSON.stringify(t.shape)}`;
const floats = (specs: readonly TensorSpec[]) =>
  specs.filter((t) => t.dtype === "float").reduce((n, t) => n + elementCount(t.shape), 0);

/**
 * Keys a released SD 1.x file has and the fixture lacks. The fixture was converted from a diffusers folder
 * (tiny_sd15_ldm_to_diffusers_keys.json beside it maps every one of its keys to a diffusers key; the reference
 * set used transformers 4.44):
 * - `embeddings.position_ids`: transformers ≥ 4.31 registers it with persistent=False, so the text encoder's
 *   state_dict — and a checkpoint written from it — has no such key;
 * - the DDPM schedule buffers: they belong to LDM's LatentDiffusion module, and a diffusers folder has no
 *   counterpart to convert from (the tinygrad and toolkit discussions note most community files lack them too).
 */
const NOT_IN_FIXTURE = [`${HF_CLIP_PREFIX}embeddings.position_ids`, ...SCHEDULE_BUFFERS];

describe("tiny_sd15 preset", () => {
  test("gives exactly the fixture's keys and shapes, but for position_ids and the schedule buffers", async () => {
    const header = await readSafetensorsHeader(FIXTURE);
    const fixture = new Map([...header.tensors.values()].map((t) => [t.name, t.shape]));
    const generated = ldmTensors(PRESETS.tiny_sd15);
    const missing = generated.filter((t) => !fixture.has(t.key)).map((t) => t.key);
    expect(missing.sort()).toEqual([...NOT_IN_FIXTURE].sort());
    const common = generated.filter((t) => fixture.has(t.key));
    expect(common.length).toBe(fixture.size);
    for (const t of common) expect([t.key, fixture.get(t.key)]).toEqual([t.key, t.shape]);
    expect([...header.tensors.values()].every((t) => t.dtype === "F16")).toBe(true);
    // The UNet has 684 keys, not SD 1.5's 686: with block widths 32, 32, 64, 64 input_blocks.4's ResBlock keeps
    // its width and so has no skip_connection.
    expect(generated.filter((t) => t.key.startsWith(UNET_PREFIX)).length).toBe(684);
  });
});

describe("tiny_sdxl preset", () => {
  test("gives exactly the fixture's keys, shapes and count, with no exception", async () => {
    const header = await readSafetensorsHeader(SDXL_FIXTURE);
    const fixture = [...header.tensors.values()].map((t) => `${t.name} ${JSON.stringify(t.shape)}`).sort();
    const generated = ldmTensors(PRESETS.tiny_sdxl);
    expect(generated.map((t) => line(t)).sort()).toEqual(fixture);
    expect(generated.every((t) => t.dtype === "float")).toBe(true);
    expect([...header.tensors.values()].every((t) => t.dtype === "F16")).toBe(true);
    // 718 UNet + 244 VAE (tiny_sd15's) + 52 CLIP (3 layers × 16 + 4, no position_ids) + 41 OpenCLIP (3 × 12 + 5, no
    // logit_scale): 1055.
    const count = (prefix: string) => generated.filter((t) => t.key.startsWith(prefix)).length;
    expect([
      count(UNET_PREFIX),
      count(VAE_PREFIX),
      count(SDXL_CLIP_L_PREFIX),
      count(SDXL_BIGG_PREFIX),
    ]).toEqual([718, 244, 52, 41]);
    expect(detectKind(header)).toBe("sdxl");
  });
});

/**
 * Digests (sha256 of the sorted `key [shape]` lines, prefix stripped, joined by "\n") of the component lists in
 * arenasys/stable-diffusion-webui-model-toolkit at e19dd46e (components/*.txt), the key sets by which that tool
 * recognises the released checkpoints' parts. The generator reproduced each list exactly when these were taken.
 */
const TOOLKIT_DIGESTS = {
  "UNET-v1-SD": "0a32647aed4bb212446e9e375fac2dd5772d5be1c772a0b06f58610a786aea6c",
  "UNET-v2-SD": "ddc5d94a25ab77b273c0f210b0417838ffbc0c7ab648e9dfce75cd056d7839ba",
  "VAE-v1-SD": "240432d78215782456548801f5ad9d65371e87418c0228981c16434327af7890",
  "CLIP-v1-SD": "9108aaedac707a081ee413323093355cb8dfac175a6057ecb4adcd570711ddac",
  "CLIP-v2-SD": "905cc8eaf7c1815eacd452cfdda8d8520727ca85b039723da7b19ff8614e5662",
  "UNET-XL-SD": "8d7b1da7059706a0781c9b3d6cfce4da6e64ef9e735e053604b9c7a6f600eabe",
  "CLIP-XL-SD": "f7bfae12682190284b53fe5cd5f4ae5cc0f202c3b9c683798e09214627c55d44",
};

function digest(specs: readonly TensorSpec[], prefix: string): string {
  const lines = specs.map((t) => line(t, prefix)).sort();
  return createHash("sha256").update(lines.join("\n")).digest("hex");
}

describe("full-size presets", () => {
  test("SD 1.5 (v1-5-pruned-emaonly): 686 UNet, 248 VAE, 197 CLIP-L keys, as the released file's parts", () => {
    const { unet, vae, text } = PRESETS.sd15;
    expect(unetTensors(unet).length).toBe(686);
    expect(vaeTensors(vae).length).toBe(248);
    expect(hfClipTensors(text).length).toBe(197);
    expect(ldmTensors(PRESETS.sd15).length).toBe(686 + 248 + 197 + 12);
    expect(digest(unetTensors(unet), UNET_PREFIX)).toBe(TOOLKIT_DIGESTS["UNET-v1-SD"]);
    expect(digest(vaeTensors(vae), VAE_PREFIX)).toBe(TOOLKIT_DIGESTS["VAE-v1-SD"]);
    expect(digest(hfClipTensors(text), HF_CLIP_PREFIX)).toBe(TOOLKIT_DIGESTS["CLIP-v1-SD"]);
    // Parameter counts as diffusers/transformers report them for runwayml/stable-diffusion-v1-5's
    // unet (859.52 M), vae (83.65 M) and text_encoder (123.06 M).
    expect(floats(unetTensors(unet))).toBe(859_520_964);
    expect(floats(vaeTensors(vae))).toBe(83_653_863);
    expect(floats(hfClipTensors(text))).toBe(123_060_480);
    // Stored as F32, as released: 4.26 GB of data (the released file is 4.27 GB with its header).
    expect(checkpointBytes(ldmTensors(PRESETS.sd15), "F32")).toBe(4_264_989_844);
  });

  test("SD 2.1 (v2-1_768-ema-pruned): 686 UNet, 248 VAE, 294 OpenCLIP ViT-H keys", () => {
    const { unet, vae, text } = PRESETS.sd21;
    expect(unetTensors(unet).length).toBe(686);
    expect(openClipTensors(text).length).toBe(24 * 12 + 6);
    expect(ldmTensors(PRESETS.sd21).length).toBe(686 + 248 + 294 + 12);
    expect(digest(unetTensors(unet), UNET_PREFIX)).toBe(TOOLKIT_DIGESTS["UNET-v2-SD"]);
    expect(digest(vaeTensors(vae), VAE_PREFIX)).toBe(TOOLKIT_DIGESTS["VAE-v1-SD"]);
    expect(digest(openClipTensors(text), OPENCLIP_PREFIX)).toBe(TOOLKIT_DIGESTS["CLIP-v2-SD"]);
    expect(floats(unetTensors(unet))).toBe(865_910_724);
    const logit = openClipTensors(text).find((t) => t.key.endsWith("logit_scale"));
    expect(logit?.shape).toEqual([]);
  });

  test("SDXL base (sd_xl_base_1.0): 1680 UNet, 248 VAE, 197 CLIP-L, 390 OpenCLIP bigG keys, 2515 in all", () => {
    const { unet, vae, text } = PRESETS.sdxl;
    const clipL = hfClipTensors(text.clipL, SDXL_CLIP_L_PREFIX);
    const bigG = openClipTensors(text.bigG, SDXL_BIGG_PREFIX);
    expect(unetTensors(unet).length).toBe(1680);
    expect(vaeTensors(vae).length).toBe(248);
    expect(clipL.length).toBe(197);
    expect(bigG.length).toBe(32 * 12 + 6);
    expect(textTensors(text)).toEqual([...clipL, ...bigG]);
    // The toolkit's "SD-XL" architecture: UNET-XL-SD, VAE-v1-SD, CLIP-XL-SD (embedders.1) and CLIP-XL-AUX-SD (the
    // CLIP-v1-SD list under embedders.0); no schedule buffers.
    expect(ldmTensors(PRESETS.sdxl).length).toBe(1680 + 248 + 197 + 390);
    expect(digest(unetTensors(unet), UNET_PREFIX)).toBe(TOOLKIT_DIGESTS["UNET-XL-SD"]);
    expect(digest(vaeTensors(vae), VAE_PREFIX)).toBe(TOOLKIT_DIGESTS["VAE-v1-SD"]);
    expect(digest(clipL, SDXL_CLIP_L_PREFIX)).toBe(TOOLKIT_DIGESTS["CLIP-v1-SD"]);
    expect(digest(bigG, SDXL_BIGG_PREFIX)).toBe(TOOLKIT_DIGESTS["CLIP-XL-SD"]);
    // Parameter counts as diffusers/transformers report them for stabilityai/stable-diffusion-xl-base-1.0's unet
    // (2567.46 M), text_encoder (123.06 M) and text_encoder_2 (CLIPTextModelWithProjection, 694.66 M; the
    // OpenCLIP layout adds logit_scale).
    expect(floats(unetTensors(unet))).toBe(2_567_463_684);
    expect(floats(clipL)).toBe(123_060_480);
    expect(floats(bigG)).toBe(694_659_840 + 1);
    // Stored as F16, as released (6.94 GB with its header); position_ids stays I64.
    expect(checkpointBytes(ldmTensors(PRESETS.sdxl), "F16")).toBe(6_937_676_352);
    const label = unetTensors(unet).find((t) => t.key === `${UNET_PREFIX}label_emb.0.0.weight`);
    expect(label?.shape).toEqual([1280, 2816]);
  });

  test("SD 1.5 and SD 2.1 UNets differ only where context width and linear projections say", () => {
    const a = new Map(unetTensors(PRESETS.sd15.unet).map((t) => [t.key, t.shape]));
    const b = unetTensors(PRESETS.sd21.unet);
    expect(b.every((t) => a.has(t.key))).toBe(true);
    const differing = b.filter((t) => JSON.stringify(a.get(t.key)) !== JSON.stringify(t.shape));
    expect(differing.length).toBe(16 * 4); // 16 SpatialTransformers × (proj_in, proj_out, attn2.to_k, attn2.to_v)
    for (const t of differing) expect(t.key).toMatch(/(proj_in|proj_out)\.weight$|attn2\.to_[kv]\.weight$/);
  });

  test("every preset's keys are unique and the component prefixes plus the buffers cover them", () => {
    for (const arch of Object.values(PRESETS) as CheckpointArch[]) {
      const keys = ldmTensors(arch).map((t) => t.key);
      expect(new Set(keys).size).toBe(keys.length);
      const known = (k: string) =>
        [UNET_PREFIX, VAE_PREFIX, COND_STAGE_PREFIX, SDXL_EMBEDDERS_PREFIX].some((p) => k.startsWith(p)) ||
        (SCHEDULE_BUFFERS as readonly string[]).includes(k);
      expect(keys.filter((k) => !known(k))).toEqual([]);
    }
  });
});

describe("writeRandomCheckpoint", () => {
  test("streams a file sdx reads back: keys, shapes, dtypes, aligned data, position_ids 0…76", async () => {
    const path = join(dir, "tiny_sd15.safetensors");
    const tensors = ldmTensors(PRESETS.tiny_sd15);
    // A small chunk so tensors straddle many chunk boundaries.
    const written = await writeRandomCheckpoint(path, tensors, { arch: PRESETS.tiny_sd15, chunkBytes: 4096 });
    expect(Bun.file(path).size).toBe(written.bytes);
    expect(written.bytes - written.dataOffset).toBe(checkpointBytes(tensors, "F16"));
    const header = await readSafetensorsHeader(path);
    expect(header.dataOffset % 8).toBe(0);
    expect(header.tensors.size).toBe(tensors.length);
    for (const t of tensors) {
      const info = header.tensors.get(t.key);
      expect(info?.shape).toEqual(t.shape);
      expect(info?.dtype).toBe(t.dtype === "I64" ? "I64" : "F16");
      expect(((info?.begin ?? 1) - header.dataOffset) % (t.dtype === "I64" ? 8 : 2)).toBe(0);
    }
    const ids = await readTensorAsFloat32(header, `${HF_CLIP_PREFIX}embeddings.position_ids`);
    expect([...ids]).toEqual(Array.from({ length: 77 }, (_, i) => i));
    const conv = await readTensorAsFloat32(header, `${UNET_PREFIX}input_blocks.0.0.weight`);
    const bound = Math.sqrt(3 / (4 * 3 * 3)) * 1.001;
    expect(conv.every((v) => Number.isFinite(v) && Math.abs(v) <= bound)).toBe(true);
    expect(new Set(conv).size).toBeGreaterThan(conv.length / 2);
    expect(detectKind(header)).toBe("sd1");
  });

  test("F32 output and the v-prediction probe: a tiny SD 2.x-layout file is detected as 768-v", async () => {
    const arch: CheckpointArch = {
      ...PRESETS.tiny_sd15,
      name: "tiny_sd21",
      mirrors: "test only",
      unet: { ...PRESETS.tiny_sd15.unet, useLinearInTransformer: true, heads: { numHeadChannels: 8 } },
      text: {
        layout: "openclip",
        width: 32,
        layers: 2,
        heads: 4,
        mlp: 37,
        vocab: 49408,
        positions: 77,
        embedDim: 32,
        logitScale: true,
      },
      predictionType: "v_prediction",
    };
    const path = join(dir, "tiny_sd21.safetensors");
    await writeRandomCheckpoint(path, ldmTensors(arch), { arch, dtype: "F32" });
    const header = await readSafetensorsHeader(path);
    expect(header.tensors.get(V_PREDICTION_PROBE)?.dtype).toBe("F32");
    expect(detectKind(header)).toBe("sd2");
    expect((await detectPredictionType(header, "sd2", null)).predictionType).toBe("v_prediction");
  });

  test("the tiny random file builds and its UNet runs to a finite output (position_ids and buffers ignored)", async () => {
    const path = join(dir, "tiny_sd15.safetensors");
    if (!(await Bun.file(path).exists())) await writeRandomCheckpoint(path, ldmTensors(PRESETS.tiny_sd15));
    const { files, kind } = await prepareCheckpoint(path);
    expect(kind).toBe("sd1");
    const unet = await OnnxModel.load(files.unet, { provider: "cpu" });
    try {
      const out = await unet.run({
        sample: { data: new Float32Array(2 * 4 * 8 * 8).fill(0.5), dims: [2, 4, 8, 8] },
        timestep: { data: [999], dims: [] },
        encoder_hidden_states: { data: new Float32Array(2 * 77 * 32).fill(0.1), dims: [2, 77, 32] },
      });
      const sample = out.out_sample?.data ?? new Float32Array();
      expect(sample.length).toBe(2 * 4 * 8 * 8);
      expect(sample.every(Number.isFinite)).toBe(true);
    } finally {
      await unet.release();
    }
  }, 60_000);

  test("a random tiny_sdxl file builds as SDXL and its UNet runs with text_embeds and time_ids", async () => {
    const path = join(dir, "tiny_sdxl.safetensors");
    await writeRandomCheckpoint(path, ldmTensors(PRESETS.tiny_sdxl), { arch: PRESETS.tiny_sdxl });
    // Heads leave no trace in the keys: the sidecar gives the fixture model's (2, 4, 8), as the SDXL tests do.
    await Bun.write(join(dir, "tiny_sdxl.json"), JSON.stringify({ unet_attention_heads: [2, 4, 8] }));
    const { files, kind } = await prepareCheckpoint(path);
    expect(kind).toBe("sdxl");
    expect(files.xl).not.toBeNull();
    const unet = await OnnxModel.load(files.unet, { provider: "cpu" });
    try {
      expect(unet.hasInput("text_embeds") && unet.hasInput("time_ids")).toBe(true);
      const out = await unet.run({
        sample: { data: new Float32Array(2 * 4 * 8 * 8).fill(0.5), dims: [2, 4, 8, 8] },
        timestep: { data: [999], dims: [] },
        encoder_hidden_states: { data: new Float32Array(2 * 77 * 56).fill(0.1), dims: [2, 77, 56] },
        text_embeds: { data: new Float32Array(2 * 32).fill(0.2), dims: [2, 32] },
        time_ids: { data: [64, 64, 0, 0, 64, 64, 64, 64, 0, 0, 64, 64], dims: [2, 6] },
      });
      const sample = out.out_sample?.data ?? new Float32Array();
      expect(sample.length).toBe(2 * 4 * 8 * 8);
      expect(sample.every(Number.isFinite)).toBe(true);
    } finally {
      await unet.release();
    }
  }, 60_000);
});
