/**
 * The TAESD decoders sdx previews with (madebyollin/taesd): which one serves which model family, where the hub
 * pull gets it, and how a file in the vae_approx folder says which it is. taesd (SD 1.x/2.x) and taesdxl (SDXL)
 * have the same architecture and both take 4-channel latents, so nothing in the weights tells them apart: the
 * file name does, as in ComfyUI (`taesd_decoder.*`, `taesdxl_decoder.*` in models/vae_approx/).
 */
import type { ModelKind } from "../../../contract/index.ts";

export const TAESD_VARIANTS = {
  taesd: {
    families: ["sd1", "sd2"],
    /** The Hugging Face repository holding the decoder as `file` (and diffusers' AutoencoderTiny beside it). */
    repo: "madebyollin/taesd",
    file: "taesd_decoder.safetensors",
    /** 1,222,531 float32 parameters (madebyollin/taesd's README) plus the header. */
    approxBytes: 4_900_000,
  },
  taesdxl: {
    families: ["sdxl"],
    repo: "madebyollin/taesdxl",
    file: "taesdxl_decoder.safetensors",
    approxBytes: 4_900_000,
  },
} as const satisfies Record<
  string,
  { families: readonly ModelKind[]; repo: string; file: string; approxBytes: number }
>;
export type TaesdVariant = keyof typeof TAESD_VARIANTS;

/** The variant a file's stem names (`taesdxl…` before `taesd…`; `taesd3`, SD3's, is neither), or null. */
export function taesdVariantOf(stem: string): TaesdVariant | null {
  const name = stem.toLowerCase();
  if (name.includes("taesdxl")) return "taesdxl";
  if (/taesd(?![0-9])/.test(name)) return "taesd";
  return null;
}

/** The variant that decodes a model family's latents. */
export function taesdVariantFor(family: ModelKind): TaesdVariant {
  return family === "sdxl" ? "taesdxl" : "taesd";
}

/** The stem ComfyUI and the hub pull give a variant's decoder (`taesd_decoder`), which the resolver prefers. */
export function taesdDecoderStem(variant: TaesdVariant): string {
  return TAESD_VARIANTS[variant].file.replace(/\.safetensors$/, "");
}
