/**
 * An ONNX folder in the layout `optimum-cli export onnx` writes, made from sdx's own plain float32 graphs of a
 * single-file checkpoint: for benchmarks and tests of what sdx does with ONNX folders (fused attention among them)
 * on a model whose every weight is known. Each component folder holds its graph as `model.onnx` and a hard link
 * (a copy where none is possible) of the checkpoint under the name the graphs' external data reads.
 */
import { cp, mkdir, readdir } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { linkWeights, prepareCheckpoint, WEIGHTS_FILE } from "../api/engine/checkpoint/build.ts";
import { detectClip } from "../api/engine/checkpoint/clip_graph.ts";
import { readSidecar, TEXT_ENCODER_PREFIXES } from "../api/engine/checkpoint/detect.ts";
import { UNET_PREFIX } from "../api/engine/checkpoint/keys.ts";
import { detectUNet } from "../api/engine/checkpoint/unet_graph.ts";
import { detectVae } from "../api/engine/checkpoint/vae_graph.ts";
import { CheckpointWeights } from "../api/engine/checkpoint/weights.ts";
import { readSafetensorsHeader } from "../api/engine/safetensors.ts";
import { writeFileAtomic } from "../lib/fs/atomic.ts";

const json = (value: unknown) => `${JSON.stringify(value, null, 2)}\n`;

/**
 * Writes the folder `dir` (which must not exist yet) from the checkpoint at `checkpointPath` (and its sidecar
 * `<name>.json`, as the server reads it); returns `dir`. The checkpoint's graphs are built (or reused) in its own
 * cache first.
 */
export async function writeExportShapedFolder(checkpointPath: string, dir: string): Promise<string> {
  const { files, build } = await prepareCheckpoint(checkpointPath, {
    precision: "float32",
    attention: "plain",
  });
  await mkdir(dirname(dir), { recursive: true });
  await mkdir(dir);
  const weightsPath = join(build.dir, WEIGHTS_FILE);
  const component = async (name: string, graph: string, config?: Record<string, unknown>) => {
    await mkdir(join(dir, name));
    await writeFileAtomic(join(dir, name, "model.onnx"), await Bun.file(graph).bytes());
    await linkWeights(weightsPath, join(dir, name, WEIGHTS_FILE));
    if (config) await writeFileAtomic(join(dir, name, "config.json"), json(config));
  };
  const tokenizer = async (name: string, from: string) => {
    await mkdir(join(dir, name));
    for (const f of await readdir(from)) await cp(join(from, f), join(dir, name, f));
  };

  // What model_folder.ts and load.ts read from the configs: the UNet's levels, sample size and context width
  // (family and size multiple), the VAE's levels, scaling factor and tile size.
  const weights = new CheckpointWeights(await readSafetensorsHeader(weightsPath), WEIGHTS_FILE);
  const heads = (await readSidecar(checkpointPath.replace(/\.safetensors$/, ".json")))?.unet_attention_heads;
  // SDXL's label_emb width depends on text encoder 2's projection (as build.ts's writeModelGraphs reads it).
  const encoder2 = TEXT_ENCODER_PREFIXES[build.kind][1];
  const pooledDim = encoder2 ? detectClip(weights, encoder2.prefix).projectionDim : null;
  const unet = detectUNet(weights, UNET_PREFIX, {
    ...(heads ? { headsPerLevel: heads } : {}),
    ...(pooledDim !== null ? { admPooledDim: pooledDim } : {}),
  });
  const vae = detectVae(weights);
  const vaeScale = 2 ** (files.vae.blocks - 1);
  const vaeConfig = {
    block_out_channels: vae.chMult.map((m) => m * vae.ch),
    latent_channels: vae.zChannels,
    sample_size: files.vae.sampleSize,
    scaling_factor: files.vae.scalingFactor,
  };
  await component("unet", files.unet, {
    block_out_channels: unet.channelMult.map((m) => m * unet.modelChannels),
    cross_attention_dim: unet.contextDim,
    in_channels: unet.inChannels,
    out_channels: unet.outChannels,
    sample_size: files.vae.sampleSize / vaeScale,
  });
  await component("text_encoder", files.textEncoder);
  await component("vae_decoder", files.vaeDecoder, vaeConfig);
  if (files.vaeEncoder) await component("vae_encoder", files.vaeEncoder, vaeConfig);
  await tokenizer("tokenizer", files.tokenizerDir);
  if (files.xl) {
    await component("text_encoder_2", files.xl.textEncoder2);
    await tokenizer("tokenizer_2", files.xl.tokenizer2Dir);
  }
  await mkdir(join(dir, "scheduler"));
  await writeFileAtomic(join(dir, "scheduler", "scheduler_config.json"), json(files.schedulerConfig));
  const xl = files.xl !== null;
  await writeFileAtomic(
    join(dir, "model_index.json"),
    json({
      _class_name: xl ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline",
      _name_or_path: basename(checkpointPath),
      scheduler: ["diffusers", String(files.schedulerConfig._class_name)],
      text_encoder: ["transformers", "CLIPTextModel"],
      tokenizer: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "UNet2DConditionModel"],
      vae: ["diffusers", "AutoencoderKL"],
      ...(xl
        ? {
            text_encoder_2: ["transformers", "CLIPTextModelWithProjection"],
            tokenizer_2: ["transformers", "CLIPTokenizer"],
            force_zeros_for_empty_prompt: files.xl?.forceZerosForEmptyPrompt,
          }
        : {}),
    }),
  );
  return dir;
}
