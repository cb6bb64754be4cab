/**
 * Loading a model: its files (an optimum ONNX folder as it is, or the graphs sdx builds from a single-file
 * checkpoint), its onnxruntime sessions and tokenizers, and what it can do (its capabilities).
 */

import { join } from "node:path";
import type { ExecutionProvider } from "../../../contract/index.ts";
import { DEFAULT_ATTENTION } from "../checkpoint/attention_variant.ts";
import { type PipelineFiles, prepareCheckpoint } from "../checkpoint/build.ts";
import { residencyForProvider } from "../checkpoint/weight_residency.ts";
import type { ModelEntry } from "../model_folder.ts";
import { findFinalLayerNorm } from "../onnx/final_layer_norm.ts";
import { OnnxModel } from "../onnx/runtime.ts";
import type { SchedulerConfig } from "../schedulers/scheduler.ts";
import { ClipTokenizer } from "../tokenizer/clip.ts";
import { fusedFolderUNet, loadFolderUNet } from "./folder_attention.ts";
import { exposedLayers, loadXlComponents, xlClipSkipMax } from "./stable_diffusion_xl.ts";
import type { LoadOptions, PipelineComponents, XlComponents } from "./types.ts";

async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  const file = Bun.file(path);
  return (await file.exists()) ? ((await file.json()) as Record<string, unknown>) : {};
}

/** The files of an optimum ONNX folder (model_index.json, text_encoder/, unet/, vae_decoder/, …). */
export async function onnxFolderFiles(dir: string): Promise<PipelineFiles> {
  const vaeConfig = await readJsonObject(join(dir, "vae_decoder/config.json"));
  const vaeEncoder = join(dir, "vae_encoder/model.onnx");
  const index = await readJsonObject(join(dir, "model_index.json"));
  return {
    textEncoder: join(dir, "text_encoder/model.onnx"),
    unet: join(dir, "unet/model.onnx"),
    vaeDecoder: join(dir, "vae_decoder/model.onnx"),
    vaeEncoder: (await Bun.file(vaeEncoder).exists()) ? vaeEncoder : null,
    tokenizerDir: join(dir, "tokenizer"),
    xl: /XL/.test(String(index._class_name))
      ? {
          textEncoder2: join(dir, "text_encoder_2/model.onnx"),
          tokenizer2Dir: join(dir, "tokenizer_2"),
          forceZerosForEmptyPrompt: index.force_zeros_for_empty_prompt !== false,
        }
      : null,
    schedulerConfig: (await readJsonObject(join(dir, "scheduler/scheduler_config.json"))) as SchedulerConfig,
    vae: {
      scalingFactor: typeof vaeConfig.scaling_factor === "number" ? vaeConfig.scaling_factor : 0.18215,
      blocks: Array.isArray(vaeConfig.block_out_channels) ? vaeConfig.block_out_channels.length : 4,
      sampleSize: typeof vaeConfig.sample_size === "number" ? vaeConfig.sample_size : 512,
    },
  };
}

/**
 * Opens the ONNX sessions of a model: an optimum ONNX folder as it is (with text_encoder_2 and tokenizer_2
 * for SDXL), a single-file checkpoint through the graphs sdx builds for it (cached beside it).
 */
export async function loadOnnxPipeline(
  entry: ModelEntry,
  provider: ExecutionProvider,
  options: LoadOptions = {},
): Promise<PipelineComponents> {
  // On CUDA the checkpoint's text encoder and UNet compute in float16, as diffusers runs SD on GPUs (on WebGPU
  // when the host found shader-f16).
  const precision = options.precision ?? (provider === "cuda" ? "float16" : "float32");
  const attention = options.attention ?? DEFAULT_ATTENTION;
  const residency = options.residency ?? residencyForProvider(provider);
  const built =
    entry.format === "safetensors"
      ? await prepareCheckpoint(entry.path, { precision, attention, residency })
      : null;
  const files = built ? built.files : await onnxFolderFiles(entry.path);
  // An ONNX folder's own UNet, rewritten into MultiHeadAttention when the fused form is asked for.
  const folderFused =
    !built && attention === "fused" ? await fusedFolderUNet(entry.path, files.unet, provider) : null;
  const paths: PipelineComponents["paths"] = {
    text_encoder: files.textEncoder,
    unet: files.unet,
    vae_decoder: files.vaeDecoder,
    vae_encoder: files.vaeEncoder,
  };
  const textEncoderPath = paths.text_encoder;
  const [tokenizer, textEncoder, unetLoad, vaeDecoder] = await Promise.all([
    ClipTokenizer.fromDir(files.tokenizerDir),
    OnnxModel.load(paths.text_encoder, { provider }),
    folderFused
      ? loadFolderUNet(folderFused, files.unet, provider)
      : OnnxModel.load(paths.unet, { provider }).then((model) => ({ model, fused: null })),
    OnnxModel.load(paths.vae_decoder, { provider }),
  ]);
  const { model: unet, fused: folderAttention } = unetLoad;
  paths.unet = unet.path;
  const schedulerConfig = files.schedulerConfig;
  const vaeScaleFactor = 2 ** (files.vae.blocks - 1);
  const sampleTile = files.vae.sampleSize;
  let xl: XlComponents | null = null;
  if (files.xl) {
    try {
      xl = await loadXlComponents(files.xl, provider, textEncoder, unet);
    } catch (e) {
      await Promise.all([textEncoder.release(), unet.release(), vaeDecoder.release()]);
      throw e;
    }
  }

  const textEncoderLayers = exposedLayers(textEncoder);
  // SDXL reads hidden states without the final layer norm, so only SD 1.x/2.x needs it.
  const finalLayerNorm =
    xl === null && textEncoderLayers > 0 ? await findFinalLayerNorm(textEncoderPath) : null;
  const clipSkipUnavailable =
    xl !== null
      ? null
      : textEncoderLayers === 0
        ? "its ONNX text encoder exports no hidden_states.* outputs (re-export with output_hidden_states)"
        : finalLayerNorm === null
          ? "the final layer norm of its text encoder could not be found in the graph"
          : null;
  const sequence = unet.fixedDim("encoder_hidden_states", 1);
  return {
    files,
    checkpointGraphs: built ? { reused: built.reused, buildMs: built.buildMs } : null,
    folderAttention,
    checkpoint: built ? built.build : null,
    adapterKey: "",
    unetLora: null,
    paths,
    provider,
    tokenizer,
    textEncoder,
    unet,
    vaeDecoder,
    vaeEncoder: null,
    schedulerConfig,
    vaeScalingFactor: files.vae.scalingFactor,
    vaeScaleFactor,
    tileGeometry: { sampleTile, latentTile: Math.floor(sampleTile / vaeScaleFactor), overlap: 0.25 },
    finalLayerNorm,
    textEncoderLayers,
    xl,
    capabilities: {
      clipSkipMax: xl !== null ? xlClipSkipMax(xl) : clipSkipUnavailable === null ? textEncoderLayers : 1,
      clipSkipUnavailable,
      longPrompts: sequence === null,
      unetBatch: unet.fixedDim("sample", 0),
      xl: xl ? { forceZerosForEmptyPrompt: xl.forceZerosForEmptyPrompt } : null,
      unetInChannels: unet.fixedDim("sample", 1) ?? 4,
      vaeEncoder: files.vaeEncoder !== null,
    },
  };
}

export async function releasePipeline(components: PipelineComponents): Promise<void> {
  await Promise.all([
    components.textEncoder.release(),
    components.xl?.textEncoder2.release(),
    components.unet.release(),
    components.vaeDecoder.release(),
    components.vaeEncoder?.release(),
  ]);
}
