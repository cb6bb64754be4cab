/**
 * The TAESD decoder's weights from the files it is published as, checked against its architecture and named
 * by taesd.py's layer indices whatever the file's layout.
 *
 * The architecture is madebyollin/taesd's taesd.py `Decoder(latent_channels=4)`, an nn.Sequential whose indices
 * name the tensors (`1.weight`, `3.conv.0.bias`, …):
 *   0 Clamp (tanh(x/3)·3) · 1 conv C→64 · 2 ReLU · 3–5 Block · 6 Upsample ×2 · 7 conv (no bias) · 8–10 Block ·
 *   11 Upsample · 12 conv (no bias) · 13–15 Block · 16 Upsample · 17 conv (no bias) · 18 Block · 19 conv 64→3
 * with every conv 3×3 (padding 1) and Block(64, 64) = conv.0 · ReLU · conv.2 · ReLU · conv.4, plus the input
 * (its 1×1 `skip` is an Identity when the channels match, as they always do here), then ReLU (`fuse`): 1,222,531
 * parameters. taesd and taesdxl have kept this architecture through every release (1.0 to 1.3); taesd.py's
 * later `use_midblock_gn` option (`N.pool.*` tensors) is FLUX.2's taef2 only, and other families' decoders take
 * 16 (taesd3, taef1) or 32 (taef2, taesana) latent channels: all refused, with why.
 *
 * Layouts read:
 * - taesd.py's own keys (`1.weight` …): `taesd_decoder.pth` on GitHub (a torch.save zip of the state dict, read by
 *   the data-only pickle reader) and `taesd_decoder.safetensors` on the hub, also with the `decoder.` prefix of
 *   a whole `TAESD` module's state dict or the `taesd_decoder.` prefix of ComfyUI's combined files;
 * - diffusers' AutoencoderTiny (`decoder.layers.N…`, `diffusion_pytorch_model.safetensors`): DecoderTiny's
 *   `layers` is the same Sequential without the Clamp (applied in its forward), so N is taesd.py's index − 1
 *   (diffusers' scripts/convert_tiny_autoencoder_to_diffusers.py).
 */
import { basename, extname } from "node:path";
import { PickleDict, readTorchFile, TorchTensor } from "../adapters/pickle.ts";
import { AdapterError } from "../adapters/types.ts";
import { readSafetensorsHeader, readTensorAsFloat32 } from "../safetensors.ts";

/** One layer of taesd.py's Decoder. */
export type TaesdLayer =
  | { op: "clamp" }
  | { op: "conv"; out: number; bias: boolean }
  | { op: "relu" }
  | { op: "block" }
  | { op: "upsample" };

/** Channels of every hidden layer. */
export const TAESD_WIDTH = 64;
/** Latent channels of SD 1.x, 2.x and SDXL: the only ones sdx previews. */
export const TAESD_LATENT_CHANNELS = 4;

const clamp = { op: "clamp" } as const;
const relu = { op: "relu" } as const;
const block = { op: "block" } as const;
const upsample = { op: "upsample" } as const;
const hidden = { op: "conv", out: TAESD_WIDTH, bias: false } as const;

/** Three Blocks, then ×2 nearest and a conv without bias: one of the decoder's three upscaling stages. */
const stage = [block, block, block, upsample, hidden] as const;

/** taesd.py's Decoder, index by index. */
export const TAESD_DECODER: readonly TaesdLayer[] = [
  clamp,
  { op: "conv", out: TAESD_WIDTH, bias: true },
  relu,
  ...stage,
  ...stage,
  ...stage,
  block,
  { op: "conv", out: 3, bias: true },
];

/** The three 3×3 convs inside a Block (nn.Sequential indices 0, 2, 4; ReLUs between). */
export const BLOCK_CONVS = [0, 2, 4] as const;

/** What a TAESD file is, in the adapter catalog's terms. */
export type TaesdFormat = "taesd_safetensors" | "taesd_pth" | "taesd_diffusers";

export interface TaesdTensor {
  shape: number[];
  data: Float32Array;
}

export interface TaesdFileInfo {
  format: TaesdFormat;
  latentChannels: number;
}

/** A decoder's weights by taesd.py key, float32. */
export interface TaesdWeights extends TaesdFileInfo {
  tensors: ReadonlyMap<string, TaesdTensor>;
}

/** A TAESD file is a few megabytes (4.9 MB in float32; diffusers' file with its encoder, 9.8 MB). */
const MAX_FILE_BYTES = 64 * 1024 * 1024;
const FLOAT_DTYPES = new Set(["F32", "F16", "BF16"]);

/** The tensors of `Decoder(latentChannels)`: taesd.py key → shape. */
export function taesdDecoderShapes(latentChannels: number): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  let channels = latentChannels;
  TAESD_DECODER.forEach((layer, i) => {
    if (layer.op === "conv") {
      shapes.set(`${i}.weight`, [layer.out, channels, 3, 3]);
      if (layer.bias) shapes.set(`${i}.bias`, [layer.out]);
      channels = layer.out;
    } else if (layer.op === "block") {
      for (const j of BLOCK_CONVS) {
        shapes.set(`${i}.conv.${j}.weight`, [channels, channels, 3, 3]);
        shapes.set(`${i}.conv.${j}.bias`, [channels]);
      }
    }
  });
  return shapes;
}

interface Layout {
  diffusers: boolean;
  /** What the file puts before the layer index. */
  prefix: string;
  /** The file's layer index minus taesd.py's. */
  shift: number;
}

const LAYOUTS: readonly Layout[] = [
  { diffusers: true, prefix: "decoder.layers.", shift: -1 },
  { diffusers: false, prefix: "", shift: 0 },
  { diffusers: false, prefix: "decoder.", shift: 0 },
  { diffusers: false, prefix: "taesd_decoder.", shift: 0 },
];

/** The file's key of a taesd.py key under `layout`. */
function fileKey(layout: Layout, key: string): string {
  const dot = key.indexOf(".");
  return `${layout.prefix}${Number(key.slice(0, dot)) + layout.shift}${key.slice(dot)}`;
}

const shapeText = (shape: readonly number[]) => `[${shape.join(", ")}]`;

/** What a file holds instead of a decoder, for the refusal. */
function notADecoder(keys: ReadonlyMap<string, { shape: number[] }>): string {
  const encoderIn = keys.get("0.weight") ?? keys.get("encoder.layers.0.weight");
  if (encoderIn?.shape.length === 4 && encoderIn.shape[1] === 3 && keys.has("1.conv.0.weight"))
    return "a TAESD encoder (taesd_encoder…): previews need the decoder (taesd_decoder.safetensors or .pth)";
  return (
    "not a TAESD decoder: none of taesd.py's Decoder tensors (1.weight, 3.conv.0.weight, …; madebyollin/taesd) " +
    "or diffusers' AutoencoderTiny's (decoder.layers.0.weight, …)"
  );
}

/**
 * Checks a file's tensors (key → shape and dtype) against the Decoder: its layout and latent channels, or an
 * AdapterError naming the first thing that differs.
 */
function checkDecoder(
  name: string,
  keys: ReadonlyMap<string, { shape: number[]; dtype: string }>,
): { layout: Layout; latentChannels: number } {
  const layout = LAYOUTS.find(
    (l) => keys.has(fileKey(l, "1.weight")) && keys.has(fileKey(l, "3.conv.0.weight")),
  );
  if (!layout) throw new AdapterError(name, notADecoder(keys));
  const first = keys.get(fileKey(layout, "1.weight"))?.shape ?? [];
  const latentChannels = first.length === 4 ? (first[1] as number) : 0;
  if (latentChannels !== TAESD_LATENT_CHANNELS) {
    const other =
      latentChannels === 16
        ? " (taesd3 or taef1: SD3's or FLUX.1's)"
        : latentChannels === 32
          ? " (taef2 or taesana: FLUX.2's or Sana's)"
          : "";
    throw new AdapterError(
      name,
      `a decoder of ${latentChannels}-channel latents${other}: SD 1.x, 2.x and SDXL make ${TAESD_LATENT_CHANNELS}-channel latents (taesd, taesdxl)`,
    );
  }
  const expected = taesdDecoderShapes(latentChannels);
  for (const [key, shape] of expected) {
    const found = keys.get(fileKey(layout, key));
    if (!found) throw new AdapterError(name, `the decoder has no tensor ${fileKey(layout, key)}`);
    if (shapeText(found.shape) !== shapeText(shape))
      throw new AdapterError(
        name,
        `tensor ${fileKey(layout, key)} is ${shapeText(found.shape)}; taesd.py's Decoder has ${shapeText(shape)}`,
      );
    if (!FLOAT_DTYPES.has(found.dtype))
      throw new AdapterError(
        name,
        `tensor ${fileKey(layout, key)} is ${found.dtype}; sdx reads F32, F16, BF16`,
      );
  }
  // Any other tensor of the decoder's layers is an architecture sdx does not build (taef2's mid-block pools).
  const wanted = new Set([...expected.keys()].map((k) => fileKey(layout, k)));
  const layerKey = new RegExp(`^${layout.prefix.replace(/\./g, "\\.")}\\d+\\.`);
  const extra = [...keys.keys()].find((k) => layerKey.test(k) && !wanted.has(k));
  if (extra !== undefined)
    throw new AdapterError(
      name,
      `tensor ${extra} is not in taesd.py's Decoder (taesd/taesdxl); ${/\.pool\./.test(extra) ? "mid-block pools are FLUX.2's taef2, which sdx does not preview" : "another architecture"}`,
    );
  return { layout, latentChannels };
}

function formatOf(path: string, layout: Layout): TaesdFormat {
  if (extname(path).toLowerCase() === ".pth") return "taesd_pth";
  return layout.diffusers ? "taesd_diffusers" : "taesd_safetensors";
}

const stemOf = (path: string) => basename(path, extname(path));

async function checkSize(path: string, name: string): Promise<void> {
  const size = Bun.file(path).size;
  if (size > MAX_FILE_BYTES)
    throw new AdapterError(
      name,
      `${size} bytes: a TAESD decoder is a few megabytes (at most ${MAX_FILE_BYTES} read)`,
    );
}

/** A .pth file's state dict: its tensors by key (a file that is no dict of tensors is refused). */
async function readPth(path: string, name: string): Promise<Map<string, TorchTensor>> {
  let root: Awaited<ReturnType<typeof readTorchFile>>;
  try {
    root = await readTorchFile(path, MAX_FILE_BYTES);
  } catch (e) {
    throw new AdapterError(name, (e as Error).message.split(`${path}: `).join(""));
  }
  if (!(root instanceof PickleDict))
    throw new AdapterError(name, "the .pth file holds no state dict (a dict of tensors)");
  const tensors = new Map<string, TorchTensor>();
  for (const [key, value] of root.entries)
    if (typeof key === "string" && value instanceof TorchTensor) tensors.set(key, value);
  return tensors;
}

/**
 * What a decoder file is (format, latent channels), reading a .safetensors file's header only; a .pth file is
 * read whole (a few megabytes). AdapterError says why a file is not a decoder sdx uses.
 */
export async function inspectTaesdDecoder(path: string): Promise<TaesdFileInfo> {
  return (await readDecoder(path, false)).info;
}

/** The decoder's weights, float32, by taesd.py key. AdapterError says why a file is not one sdx uses. */
export async function readTaesdDecoder(path: string): Promise<TaesdWeights> {
  const { info, tensors } = await readDecoder(path, true);
  return { ...info, tensors };
}

async function readDecoder(
  path: string,
  withData: boolean,
): Promise<{ info: TaesdFileInfo; tensors: Map<string, TaesdTensor> }> {
  const name = stemOf(path);
  await checkSize(path, name);
  const tensors = new Map<string, TaesdTensor>();
  if (extname(path).toLowerCase() === ".pth") {
    const dict = await readPth(path, name);
    const { layout, latentChannels } = checkDecoder(name, dict);
    for (const key of taesdDecoderShapes(latentChannels).keys()) {
      const t = dict.get(fileKey(layout, key)) as TorchTensor;
      tensors.set(key, { shape: t.shape, data: t.data });
    }
    return { info: { format: formatOf(path, layout), latentChannels }, tensors };
  }
  let header: Awaited<ReturnType<typeof readSafetensorsHeader>>;
  try {
    header = await readSafetensorsHeader(path);
  } catch (e) {
    throw new AdapterError(name, (e as Error).message.split(`${path}: `).join(""));
  }
  const { layout, latentChannels } = checkDecoder(name, header.tensors);
  if (withData) {
    for (const [key, shape] of taesdDecoderShapes(latentChannels))
      tensors.set(key, { shape, data: await readTensorAsFloat32(header, fileKey(layout, key)) });
  }
  return { info: { format: formatOf(path, layout), latentChannels }, tensors };
}
