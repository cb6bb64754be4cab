/**
 * What a single-file checkpoint is, told from its keys and shapes the way ComfyUI's model detection does —
 * never from the file name — plus the seed's optional sidecar `<name>.json`.
 */
import type { ModelKind, PredictionType } from "../../../contract/index.ts";
import { readTensorAsFloat32, type SafetensorsHeader } from "../safetensors.ts";
import {
  COND_STAGE_PREFIX,
  HF_CLIP_PREFIX,
  OPENCLIP_PREFIX,
  SDXL_BIGG_PREFIX,
  SDXL_CLIP_L_PREFIX,
  SDXL_EMBEDDERS_PREFIX,
  UNET_PREFIX,
  VAE_PREFIX,
} from "./keys.ts";

/** The text encoders of each family, by key prefix and layout. */
export const TEXT_ENCODER_PREFIXES = {
  sd1: [{ prefix: HF_CLIP_PREFIX, layout: "hf" }],
  sd2: [{ prefix: OPENCLIP_PREFIX, layout: "openclip" }],
  sdxl: [
    { prefix: SDXL_CLIP_L_PREFIX, layout: "hf" },
    { prefix: SDXL_BIGG_PREFIX, layout: "openclip" },
  ],
} as const satisfies Record<ModelKind, readonly { prefix: string; layout: "hf" | "openclip" }[]>;

/**
 * The prediction types a checkpoint's sidecar may declare: the schedulers' `PREDICTION_TYPES` without "sample"
 * (Stable Diffusion checkpoints predict ε or v).
 */
export const CHECKPOINT_PREDICTION_TYPES = [
  "epsilon",
  "v_prediction",
] as const satisfies readonly PredictionType[];
export type CheckpointPredictionType = (typeof CHECKPOINT_PREDICTION_TYPES)[number];

export interface CheckpointDetection {
  kind: ModelKind;
  /** How the prediction type was decided (sidecar, weights heuristic, or family default). */
  predictionType: CheckpointPredictionType;
  predictionTypeSource: "sidecar" | "weights" | "default";
}

export class NotACheckpointError extends Error {
  override name = "NotACheckpointError";
}

const hasPrefix = (header: SafetensorsHeader, prefix: string) => {
  for (const key of header.tensors.keys()) if (key.startsWith(prefix)) return true;
  return false;
};

/** The family from the keys: SDXL has two text encoders and label_emb, SD 2.x an OpenCLIP encoder, SD 1.x CLIP-L. */
export function detectKind(header: SafetensorsHeader): ModelKind {
  if (!header.tensors.has(`${UNET_PREFIX}input_blocks.0.0.weight`)) {
    throw new NotACheckpointError(
      `not a Stable Diffusion checkpoint: no ${UNET_PREFIX}input_blocks.0.0.weight (UNet) among its ${header.tensors.size} tensors`,
    );
  }
  if (!hasPrefix(header, `${VAE_PREFIX}decoder.`)) {
    throw new NotACheckpointError(
      `the checkpoint has a UNet but no VAE (${VAE_PREFIX}decoder.*): a UNet-only file cannot generate images alone`,
    );
  }
  if (
    header.tensors.has(`${UNET_PREFIX}label_emb.0.0.weight`) &&
    hasPrefix(header, `${SDXL_EMBEDDERS_PREFIX}1.`)
  ) {
    return "sdxl";
  }
  if (hasPrefix(header, TEXT_ENCODER_PREFIXES.sd2[0].prefix)) return "sd2";
  if (hasPrefix(header, TEXT_ENCODER_PREFIXES.sd1[0].prefix)) return "sd1";
  throw new NotACheckpointError(
    `the checkpoint has a UNet and a VAE but no text encoder sdx knows (CLIP-L ${COND_STAGE_PREFIX}transformer.*, OpenCLIP ${OPENCLIP_PREFIX}*, or SDXL's ${SDXL_EMBEDDERS_PREFIX}*)`,
  );
}

/** The seed's sidecar `<name>.json`: all keys optional; unknown keys are kept for display. */
export interface Sidecar {
  model_type?: string;
  base_model?: string;
  description?: string;
  merged_from?: string[] | string;
  prediction_type?: CheckpointPredictionType;
  /**
   * Attention heads per UNet level, for models whose heads do not follow the family's rule (8 for SD 1.x,
   * 64-wide heads for SD 2.x / SDXL); heads leave no trace in the weights' shapes.
   */
  unet_attention_heads?: number[];
  /** The VAE file (a name in the vae folder) the model uses by default instead of its own. */
  vae?: string;
  [key: string]: unknown;
}

export class SidecarError extends Error {
  override name = "SidecarError";
}

export async function readSidecar(path: string): Promise<Sidecar | null> {
  const file = Bun.file(path);
  if (!(await file.exists())) return null;
  let value: unknown;
  try {
    value = JSON.parse(await file.text());
  } catch (e) {
    throw new SidecarError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new SidecarError(`${path} must hold a JSON object`);
  }
  const sidecar = value as Sidecar;
  for (const key of ["model_type", "base_model", "description", "vae"] as const) {
    if (sidecar[key] !== undefined && typeof sidecar[key] !== "string")
      throw new SidecarError(`${path}: ${key} must be a string`);
  }
  const heads = sidecar.unet_attention_heads;
  if (heads !== undefined && !(Array.isArray(heads) && heads.every((h) => Number.isInteger(h) && h > 0))) {
    throw new SidecarError(
      `${path}: unet_attention_heads must be a list of positive integers, one per UNet level`,
    );
  }
  if (
    sidecar.prediction_type !== undefined &&
    !CHECKPOINT_PREDICTION_TYPES.includes(sidecar.prediction_type as CheckpointPredictionType)
  ) {
    throw new SidecarError(
      `${path}: prediction_type must be one of ${CHECKPOINT_PREDICTION_TYPES.join(", ")}`,
    );
  }
  return sidecar;
}

/** The key whose spread tells SD 2.x v-prediction from epsilon models (see detectPredictionType). */
export const V_PREDICTION_PROBE = `${UNET_PREFIX}output_blocks.11.1.transformer_blocks.0.norm1.bias`;

/**
 * The prediction type: the sidecar's word if it has one; for SD 2.x, ComfyUI's weight heuristic (768-v models
 * have a wider spread in the last transformer block's norm1 bias: std > 0.09); epsilon otherwise.
 */
export async function detectPredictionType(
  header: SafetensorsHeader,
  kind: ModelKind,
  sidecar: Sidecar | null,
): Promise<Pick<CheckpointDetection, "predictionType" | "predictionTypeSource">> {
  if (sidecar?.prediction_type)
    return { predictionType: sidecar.prediction_type, predictionTypeSource: "sidecar" };
  const inChannels = header.tensors.get(`${UNET_PREFIX}input_blocks.0.0.weight`)?.shape[1];
  if (kind === "sd2" && inChannels === 4 && header.tensors.has(V_PREDICTION_PROBE)) {
    const bias = await readTensorAsFloat32(header, V_PREDICTION_PROBE);
    let mean = 0;
    for (const v of bias) mean += v;
    mean /= bias.length;
    let variance = 0;
    for (const v of bias) variance += (v - mean) ** 2;
    const std = Math.sqrt(variance / bias.length);
    if (std > 0.09) return { predictionType: "v_prediction", predictionTypeSource: "weights" };
  }
  return { predictionType: "epsilon", predictionTypeSource: "default" };
}
