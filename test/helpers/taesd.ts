/** TAESD decoder files of random weights with the released shapes, in each layout sdx reads. */
import { type TensorSpec, writeRandomCheckpoint } from "../../api/engine/checkpoint/ldm_layout.ts";
import { taesdDecoderShapes } from "../../api/engine/previews/taesd_weights.ts";
import { loadSafetensors } from "../../api/engine/safetensors.ts";
import { torchSaveStateDict } from "./torch_file.ts";

/** taesd.py's keys (`1.weight`), or diffusers' AutoencoderTiny's (`decoder.layers.0.weight`: the index − 1). */
export type TaesdKeys = "taesd" | "diffusers";

export function layoutKey(key: string, keys: TaesdKeys): string {
  if (keys === "taesd") return key;
  const dot = key.indexOf(".");
  return `decoder.layers.${Number(key.slice(0, dot)) - 1}${key.slice(dot)}`;
}

/**
 * Writes a .safetensors decoder of random weights (seeded; a layer's spread 1/√fan-in) in `keys`' layout, plus
 * `extra` tensors (a diffusers file's encoder, an unknown layer).
 */
export async function writeRandomTaesd(
  path: string,
  options: {
    keys?: TaesdKeys;
    dtype?: "F32" | "F16";
    seed?: number;
    latentChannels?: number;
    extra?: TensorSpec[];
  } = {},
): Promise<void> {
  const specs: TensorSpec[] = [...taesdDecoderShapes(options.latentChannels ?? 4)].map(([key, shape]) => ({
    key: layoutKey(key, options.keys ?? "taesd"),
    shape,
    dtype: "float",
  }));
  await writeRandomCheckpoint(path, [...specs, ...(options.extra ?? [])], {
    dtype: options.dtype ?? "F32",
    seed: options.seed ?? 1234,
  });
}

/** The same tensors as a torch.save `.pth` state dict (what madebyollin/taesd's GitHub holds). */
export async function safetensorsToPth(
  from: string,
  to: string,
  dtype: "F32" | "F16" = "F32",
): Promise<void> {
  const archive =
    to
      .split("/")
      .pop()
      ?.replace(/\.pth$/, "") ?? "archive";
  await Bun.write(to, torchSaveStateDict(await loadSafetensors(from), archive, dtype));
}
