/**
 * The TAESD decoder as an ONNX graph, built by sdx from the weights file (taesd_weights.ts reads every layout),
 * and cached beside the file like a VAE file's graphs (adapters/vae.ts): `<folder>/.sdx-cache/<file>-taesd-<key>/`
 * holds `taesd_decoder.onnx` with the weights inside it (float32, 4.9 MB). The key hashes the graph version and
 * the file's size and modification time, so a changed file gets a new graph; the folder is built under a
 * temporary name and renamed into place, and the previous version's folder is then removed.
 *
 * Interface, as a VAE decoder graph's: `latent_sample` float32 [batch, 4, h, w] → `sample` float32
 * [batch, 3, 8h, 8w] in [-1, 1]. The latents are the denoiser's as they are — TAESD was distilled on the scaled
 * latent space the UNet works in, so its scale factor is 1 (not 1/0.18215 or 1/0.13025 as for the VAE); its
 * image comes out in [0, 1] and is mapped to [-1, 1] (2x − 1, as diffusers' AutoencoderTiny.decode and
 * AUTOMATIC1111's TAESD preview do) so decoded pixels take the VAE's path to 8-bit RGB. Always float32: tiny
 * enough that half precision would buy nothing, and no float16 overflow to fear.
 */
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { buildCacheFolder, writeGraph } from "../checkpoint/build.ts";
import { cacheDirOf } from "../model_folder.ts";
import { GraphBuilder } from "../onnx/graph_builder.ts";
import { BLOCK_CONVS, readTaesdDecoder, TAESD_DECODER, type TaesdWeights } from "./taesd_weights.ts";

/** Bump when the graph this module writes changes, so cached graphs are rebuilt. */
const TAESD_GRAPH_VERSION = 1;
const GRAPH_FILE = "taesd_decoder.onnx";

/** The decoder graph of `weights` (taesd.py's Decoder layer by layer, then 2x − 1). */
export function buildTaesdDecoderGraph(weights: TaesdWeights): GraphBuilder {
  const g = new GraphBuilder("taesd_decoder");
  const tensor = (key: string) => {
    const t = weights.tensors.get(key);
    if (!t) throw new Error(`taesd_graph: no tensor ${key}`);
    return g.constant(t.data, t.shape);
  };
  /** nn.Conv2d(…, 3, padding=1): the bias is an optional input. */
  const conv = (x: string, key: string, bias: boolean) =>
    g.node("Conv", [x, tensor(`${key}.weight`), ...(bias ? [tensor(`${key}.bias`)] : [])], {
      kernel_shape: [3, 3],
      pads: [1, 1, 1, 1],
      strides: [1, 1],
    });
  const scalar = (v: number) => g.constant([v], []);

  let h = g.input("latent_sample", "float32", [
    "batch_size",
    weights.latentChannels,
    "height_latent",
    "width_latent",
  ]);
  TAESD_DECODER.forEach((layer, i) => {
    switch (layer.op) {
      case "clamp":
        // Clamp: tanh(x / 3) · 3, a soft clamp of the latents to (−3, 3).
        h = g.node("Mul", [g.node("Tanh", [g.node("Div", [h, scalar(3)])]), scalar(3)]);
        break;
      case "conv":
        h = conv(h, String(i), layer.bias);
        break;
      case "relu":
        h = g.node("Relu", [h]);
        break;
      case "block": {
        // Block: fuse(conv(x) + skip(x)), skip the identity (64 → 64), fuse a ReLU.
        let c = h;
        BLOCK_CONVS.forEach((j, n) => {
          c = conv(c, `${i}.conv.${j}`, true);
          if (n < BLOCK_CONVS.length - 1) c = g.node("Relu", [c]);
        });
        h = g.node("Relu", [g.node("Add", [c, h])]);
        break;
      }
      case "upsample":
        // nn.Upsample(scale_factor=2), mode "nearest": source index floor(dst / 2).
        h = g.node("Resize", [h, "", g.constant([1, 1, 2, 2], [4])], {
          mode: "nearest",
          coordinate_transformation_mode: "asymmetric",
          nearest_mode: "floor",
        });
        break;
    }
  });
  const sample = g.node("Sub", [g.node("Mul", [h, scalar(2)]), scalar(1)]);
  g.output(sample, "sample", "float32", ["batch_size", 3, "height", "width"]);
  return g;
}

export interface PreparedTaesd {
  /** The decoder graph. */
  graph: string;
  /** Whether it was already in the cache. */
  reused: boolean;
}

/** Builds in flight, by cache folder, so concurrent calls for one file build it once. */
const building = new Map<string, Promise<PreparedTaesd>>();

async function cacheKey(path: string): Promise<string> {
  const info = await stat(path);
  return createHash("sha256")
    .update(`taesd:${TAESD_GRAPH_VERSION}:${info.size}:${info.mtimeMs}`)
    .digest("hex")
    .slice(0, 16);
}

/**
 * The decoder graph of the TAESD file at `path`, built on first use and cached (by default in the `.sdx-cache`
 * folder beside the file). AdapterError says why a file cannot be used.
 */
export async function prepareTaesd(
  path: string,
  cacheRoot = cacheDirOf(dirname(path)),
): Promise<PreparedTaesd> {
  const stem = `${basename(path)}-taesd`;
  const dir = join(cacheRoot, `${stem}-${await cacheKey(path)}`);
  const graph = join(dir, GRAPH_FILE);
  if (await Bun.file(graph).exists()) return { graph, reused: true };
  const pending = building.get(dir);
  if (pending) return pending;
  const build = buildTaesd(path, cacheRoot, stem, dir).finally(() => building.delete(dir));
  building.set(dir, build);
  return build;
}

async function buildTaesd(
  path: string,
  cacheRoot: string,
  stem: string,
  dir: string,
): Promise<PreparedTaesd> {
  const weights = await readTaesdDecoder(path);
  const built = await buildCacheFolder(
    cacheRoot,
    stem,
    dir,
    (tmp) => writeGraph(join(tmp, GRAPH_FILE), buildTaesdDecoderGraph(weights)),
    (d) => Bun.file(join(d, GRAPH_FILE)).exists(),
  );
  return { graph: join(dir, GRAPH_FILE), reused: !built };
}
