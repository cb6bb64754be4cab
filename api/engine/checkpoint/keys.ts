/**
 * Key prefixes of the components of an original-layout single-file checkpoint: LDM's LatentDiffusion (SD 1.x,
 * 2.x: `model`, `first_stage_model`, `cond_stage_model`) and SGM's DiffusionEngine (SDXL: `conditioner`).
 */

/** The UNet: DiffusionWrapper's `diffusion_model`. */
export const UNET_PREFIX = "model.diffusion_model.";
/** The autoencoder (AutoencoderKL). */
export const VAE_PREFIX = "first_stage_model.";
/** SD 1.x and 2.x: the text encoder, whichever it is. */
export const COND_STAGE_PREFIX = "cond_stage_model.";
/** SD 1.x: FrozenCLIPEmbedder's transformers CLIPTextModel (CLIP ViT-L/14). */
export const HF_CLIP_PREFIX = `${COND_STAGE_PREFIX}transformer.text_model.`;
/** SD 2.x: FrozenOpenCLIPEmbedder's open_clip text tower (OpenCLIP ViT-H/14). */
export const OPENCLIP_PREFIX = `${COND_STAGE_PREFIX}model.`;
/** SDXL: SGM GeneralConditioner's embedders, numbered from 0. */
export const SDXL_EMBEDDERS_PREFIX = "conditioner.embedders.";
/** SDXL embedder 0: FrozenCLIPEmbedder's transformers CLIPTextModel (CLIP ViT-L/14). */
export const SDXL_CLIP_L_PREFIX = `${SDXL_EMBEDDERS_PREFIX}0.transformer.text_model.`;
/** SDXL embedder 1: FrozenOpenCLIPEmbedder2's open_clip text tower (OpenCLIP ViT-bigG/14). */
export const SDXL_BIGG_PREFIX = `${SDXL_EMBEDDERS_PREFIX}1.model.`;
