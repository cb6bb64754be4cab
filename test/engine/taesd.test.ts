/**
 * The TAESD decoder sdx builds from a weights file, against a plain-loops TypeScript decoder written from
 * madebyollin/taesd's taesd.py (not from sdx's layer table), on random weights of the released shapes; every
 * layout of the file gives the same graph; malformed files are refused with the reason.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, readdir, rm, utimes } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdapterError } from "../../api/engine/adapters/types.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { loadTaesdDecoder } from "../../api/engine/previews/taesd.ts";
import { prepareTaesd } from "../../api/engine/previews/taesd_graph.ts";
import {
  inspectTaesdDecoder,
  readTaesdDecoder,
  taesdDecoderShapes,
} from "../../api/engine/previews/taesd_weights.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { writeSafetensors } from "../helpers/safetensors.ts";
import { layoutKey, safetensorsToPth, writeRandomTaesd } from "../helpers/taesd.ts";
import { zip } from "../helpers/torch_file.ts";

type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

const tmp = await mkdtemp(join(tmpdir(), "sdx-taesd-"));
afterAll(() => rm(tmp, { recursive: true, force: true }));

// ---- the reference: taesd.py's Decoder, written out with plain loops ----

/** nn.Conv2d(cin, cout, 3, padding=1) on [cin, h, w] (zero padding), float64 sums. */
function conv3x3(x: Float64Array, h: number, w: number, weight: Float32Array, bias: Float32Array | null) {
  const cout = bias ? bias.length : weight.length / (9 * (x.length / (h * w)));
  const cin = x.length / (h * w);
  const out = new Float64Array(cout * h * w);
  for (let co = 0; co < cout; co++) {
    const o = out.subarray(co * h * w, (co + 1) * h * w);
    if (bias) o.fill(bias[co] as number);
    for (let ci = 0; ci < cin; ci++) {
      const plane = x.subarray(ci * h * w, (ci + 1) * h * w);
      for (let ky = 0; ky < 3; ky++) {
        for (let kx = 0; kx < 3; kx++) {
          const k = weight[((co * cin + ci) * 3 + ky) * 3 + kx] as number;
          for (let y = 0; y < h; y++) {
            const sy = y + ky - 1;
            if (sy < 0 || sy >= h) continue;
            for (let xx = 0; xx < w; xx++) {
              const sx = xx + kx - 1;
              if (sx < 0 || sx >= w) continue;
              o[y * w + xx] = (o[y * w + xx] as number) + k * (plane[sy * w + sx] as number);
            }
          }
        }
      }
    }
  }
  return out;
}

const relu = (x: Float64Array) => x.map((v) => Math.max(0, v));

/** nn.Upsample(scale_factor=2), nearest: out[y][x] = in[⌊y/2⌋][⌊x/2⌋]. */
function upsample(x: Float64Array, h: number, w: number): Float64Array {
  const c = x.length / (h * w);
  const out = new Float64Array(c * 4 * h * w);
  for (let ch = 0; ch < c; ch++)
    for (let y = 0; y < 2 * h; y++)
      for (let xx = 0; xx < 2 * w; xx++)
        out[(ch * 2 * h + y) * 2 * w + xx] = x[(ch * h + (y >> 1)) * w + (xx >> 1)] as number;
  return out;
}

/** taesd.py's Decoder(4) on [4, h, w] latents: the image in [0, 1] (before any clamp), [3, 8h, 8w]. */
function referenceDecode(t: Tensors, latents: Float32Array, h0: number, w0: number): Float64Array {
  const p = (k: string) => (t.get(k) as { data: Float32Array }).data;
  let h = h0;
  let w = w0;
  const conv = (x: Float64Array, i: number, bias = true) =>
    conv3x3(x, h, w, p(`${i}.weight`), bias ? p(`${i}.bias`) : null);
  // Block(64, 64): fuse(conv(x) + skip(x)), conv = conv-ReLU-conv-ReLU-conv, skip = Identity, fuse = ReLU.
  const block = (x: Float64Array, i: number) => {
    const a = relu(conv3x3(x, h, w, p(`${i}.conv.0.weight`), p(`${i}.conv.0.bias`)));
    const b = relu(conv3x3(a, h, w, p(`${i}.conv.2.weight`), p(`${i}.conv.2.bias`)));
    const c = conv3x3(b, h, w, p(`${i}.conv.4.weight`), p(`${i}.conv.4.bias`));
    return relu(c.map((v, n) => v + (x[n] as number)));
  };
  const up = (x: Float64Array) => {
    const out = upsample(x, h, w);
    h *= 2;
    w *= 2;
    return out;
  };
  // Clamp(), conv(4, 64), ReLU
  let x = relu(
    conv(
      Float64Array.from(latents, (v) => Math.tanh(v / 3) * 3),
      1,
    ),
  );
  for (const i of [3, 4, 5]) x = block(x, i);
  x = conv(up(x), 7, false);
  for (const i of [8, 9, 10]) x = block(x, i);
  x = conv(up(x), 12, false);
  for (const i of [13, 14, 15]) x = block(x, i);
  x = conv(up(x), 17, false);
  x = block(x, 18);
  return conv(x, 19);
}

// ---- the files ----

const H = 6;
const W = 8;
/** Latents beyond ±3 too, so the tanh clamp matters. */
const latents = Float32Array.from({ length: 4 * H * W }, (_, i) => 5 * Math.sin(i * 12.9898 + 1.7));

const base = join(tmp, "taesd_decoder.safetensors");
await writeRandomTaesd(base, { dtype: "F16" });
const tensors = (await loadSafetensors(base)) as Tensors;

async function runGraph(path: string): Promise<Float32Array> {
  const { graph } = await prepareTaesd(path);
  const model = await OnnxModel.load(graph, { provider: "cpu" });
  try {
    const out = await model.run({ latent_sample: { data: latents, dims: [1, 4, H, W] } }, ["sample"]);
    expect(out.sample?.dims).toEqual([1, 3, 8 * H, 8 * W]);
    return out.sample?.data as Float32Array;
  } finally {
    await model.release();
  }
}

const reference = referenceDecode(tensors, latents, H, W);
const baseSample = await runGraph(base);

describe("the decoder graph", () => {
  test("the released architecture: 1,222,531 parameters (madebyollin/taesd's README)", () => {
    const shapes = taesdDecoderShapes(4);
    expect([...shapes.values()].reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0)).toBe(1_222_531);
    expect(shapes.size).toBe(tensors.size);
  });

  test("equals taesd.py's Decoder in plain loops, mapped to [-1, 1] (6×8 latents → 48×64)", () => {
    let worst = 0;
    for (let i = 0; i < reference.length; i++)
      worst = Math.max(worst, Math.abs((baseSample[i] as number) - (2 * (reference[i] as number) - 1)));
    expect(worst).toBeLessThan(1e-4);
    // Random weights still give an image, not a constant.
    const spread = Math.max(...reference) - Math.min(...reference);
    expect(spread).toBeGreaterThan(0.1);
  });

  test("decode(): one image's RGB, as the reference's clamp(0, 1) · 255", async () => {
    const decoder = await loadTaesdDecoder(base, { provider: "cpu" });
    try {
      const rgb = await decoder.decode(latents, H, W);
      expect([rgb.width, rgb.height, rgb.data.length]).toEqual([64, 48, 64 * 48 * 3]);
      const plane = 64 * 48;
      let worst = 0;
      for (let p = 0; p < plane; p++)
        for (let c = 0; c < 3; c++) {
          const want = Math.round(Math.min(1, Math.max(0, reference[c * plane + p] as number)) * 255);
          worst = Math.max(worst, Math.abs((rgb.data[p * 3 + c] as number) - want));
        }
      expect(worst).toBeLessThanOrEqual(1);
      expect(() => decoder.decode(latents.subarray(1), H, W)).toThrow(RangeError);
      expect(() => decoder.decode(latents, H, 0)).toThrow(RangeError);
    } finally {
      await decoder.release();
    }
  });
});

describe("the layouts users have", () => {
  test("madebyollin/taesd's .pth (torch.save of the state dict, half storages) gives the same graph", async () => {
    const pth = join(tmp, "taesd_decoder.pth");
    await safetensorsToPth(base, pth, "F16");
    expect(await inspectTaesdDecoder(pth)).toEqual({ format: "taesd_pth", latentChannels: 4 });
    expect(Array.from(await runGraph(pth))).toEqual(Array.from(baseSample));
  });

  test("diffusers' AutoencoderTiny (decoder.layers.N = taesd.py's N+1, with its encoder) gives the same graph", async () => {
    const diffusers: Tensors = new Map([...tensors].map(([k, t]) => [layoutKey(k, "diffusers"), t]));
    diffusers.set("encoder.layers.0.weight", { shape: [64, 3, 3, 3], data: new Float32Array(64 * 27) });
    const path = join(tmp, "diffusers_taesd.safetensors");
    await writeSafetensors(path, diffusers);
    expect(await inspectTaesdDecoder(path)).toEqual({ format: "taesd_diffusers", latentChannels: 4 });
    expect(Array.from(await runGraph(path))).toEqual(Array.from(baseSample));
  });

  test("a whole TAESD module's state dict (decoder. prefix) and ComfyUI's (taesd_decoder.) too", async () => {
    for (const prefix of ["decoder.", "taesd_decoder."]) {
      const path = join(tmp, `${prefix}safetensors`);
      await writeSafetensors(path, new Map([...tensors].map(([k, t]) => [`${prefix}${k}`, t])));
      expect((await inspectTaesdDecoder(path)).format).toBe("taesd_safetensors");
      expect(Array.from(await runGraph(path))).toEqual(Array.from(baseSample));
    }
  });
});

describe("the graph cache", () => {
  test("built once beside the file, rebuilt when the file changes, the old graph removed", async () => {
    const dir = await mkdtemp(join(tmp, "cache-"));
    const path = join(dir, "taesd_decoder.safetensors");
    await writeRandomTaesd(path, { seed: 7 });
    const first = await prepareTaesd(path);
    expect(first.reused).toBe(false);
    expect(first.graph.startsWith(join(dir, ".sdx-cache", "taesd_decoder.safetensors-taesd-"))).toBe(true);
    expect(await prepareTaesd(path)).toEqual({ graph: first.graph, reused: true });
    const later = new Date(Date.now() + 5000);
    await utimes(path, later, later);
    const second = await prepareTaesd(path);
    expect(second.reused).toBe(false);
    expect(second.graph).not.toBe(first.graph);
    const cached = (await readdir(join(dir, ".sdx-cache"))).filter((n) => !n.startsWith("."));
    expect(cached).toEqual([second.graph.split("/").at(-2) as string]);
  });

  test("concurrent first uses build it once", async () => {
    const dir = await mkdtemp(join(tmp, "race-"));
    const path = join(dir, "taesd_decoder.safetensors");
    await writeRandomTaesd(path, { seed: 8 });
    const [a, b] = await Promise.all([prepareTaesd(path), prepareTaesd(path)]);
    expect(a.graph).toBe(b.graph);
    expect(await readdir(join(dir, ".sdx-cache"))).toHaveLength(1);
  });
});

describe("malformed files are refused with the reason", () => {
  const refusal = async (path: string): Promise<AdapterError> => {
    const e = await readTaesdDecoder(path).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AdapterError);
    // The graph builder and the decoder loader refuse it the same way, never with another error.
    expect(await prepareTaesd(path).catch((x: unknown) => x)).toBeInstanceOf(AdapterError);
    expect(await loadTaesdDecoder(path, { provider: "cpu" }).catch((x: unknown) => x)).toBeInstanceOf(
      AdapterError,
    );
    return e as AdapterError;
  };
  const variant = async (name: string, change: (t: Tensors) => void) => {
    const copy: Tensors = new Map(tensors);
    change(copy);
    const path = join(tmp, `${name}.safetensors`);
    await writeSafetensors(path, copy);
    return path;
  };

  test("a missing tensor, a wrong shape, an unknown layer", async () => {
    expect((await refusal(await variant("missing", (t) => t.delete("9.conv.2.bias")))).message).toBe(
      "the decoder has no tensor 9.conv.2.bias",
    );
    const wide = { shape: [64, 32, 3, 3], data: new Float32Array(64 * 32 * 9) };
    expect((await refusal(await variant("shape", (t) => t.set("7.weight", wide)))).message).toBe(
      "tensor 7.weight is [64, 32, 3, 3]; taesd.py's Decoder has [64, 64, 3, 3]",
    );
    const pool = { shape: [256, 64, 1, 1], data: new Float32Array(256 * 64) };
    expect((await refusal(await variant("pool", (t) => t.set("3.pool.0.weight", pool)))).message).toMatch(
      /3\.pool\.0\.weight is not in taesd\.py's Decoder.*taef2/,
    );
  });

  test("another family's decoder (16 latent channels), an encoder, something else entirely", async () => {
    const sd3 = join(tmp, "taesd3_decoder.safetensors");
    await writeRandomTaesd(sd3, { latentChannels: 16 });
    expect((await refusal(sd3)).message).toMatch(/16-channel latents \(taesd3 or taef1.*4-channel/);
    const encoder = join(tmp, "taesd_encoder.safetensors");
    await writeSafetensors(encoder, {
      "0.weight": { shape: [64, 3, 3, 3], data: new Float32Array(64 * 27) },
      "1.conv.0.weight": { shape: [64, 64, 3, 3], data: new Float32Array(64 * 64 * 9) },
    });
    expect((await refusal(encoder)).message).toMatch(/a TAESD encoder.*need the decoder/);
    const other = join(tmp, "other.safetensors");
    await writeSafetensors(other, { "decoder.conv_in.weight": { shape: [1], data: new Float32Array(1) } });
    expect((await refusal(other)).message).toMatch(/^not a TAESD decoder/);
  });

  test("truncated files, a .pth that is no state dict, a .pth that would run code", async () => {
    const bytes = new Uint8Array(await Bun.file(base).arrayBuffer());
    const cut = join(tmp, "cut.safetensors");
    await Bun.write(cut, bytes.subarray(0, bytes.length - 1000));
    expect((await refusal(cut)).message).toMatch(/truncated or corrupt/);
    expect((await refusal(cut)).message).not.toContain(tmp);
    const pth = join(tmp, "taesd_decoder.pth");
    const pthBytes = new Uint8Array(await Bun.file(pth).arrayBuffer());
    const cutPth = join(tmp, "cut.pth");
    await Bun.write(cutPth, pthBytes.subarray(0, pthBytes.length - 100));
    await refusal(cutPth);
    const list = join(tmp, "list.pth");
    const zipOf = (pkl: number[]) => zip({ "x/data.pkl": Uint8Array.from(pkl) });
    await Bun.write(list, zipOf([0x80, 2, 0x5d, 0x2e])); // PROTO 2, EMPTY_LIST, STOP
    expect((await refusal(list)).message).toBe("the .pth file holds no state dict (a dict of tensors)");
    const evil = join(tmp, "evil.pth");
    await Bun.write(evil, zipOf([0x80, 2, ...new TextEncoder().encode("cposix\nsystem\n"), 0x2e]));
    const e = await refusal(evil);
    expect(e.message).toMatch(/refusing global posix\.system/);
    const text = join(tmp, "text.pth");
    await Bun.write(text, "not a zip\n");
    await refusal(text);
  });
});
