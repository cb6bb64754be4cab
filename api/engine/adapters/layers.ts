/**
 * The weight layers of a single-file checkpoint under every name a LoRA file may give them. LoRA trainers name
 * a layer by its module path in the model they trained on: diffusers' UNet2DConditionModel (kohya SD 1.x/2.x,
 * PEFT), SGM's UNetModel (kohya SDXL, whose sdxl_original_unet.py keeps the LDM names) and transformers'
 * CLIPTextModel for the text encoders. The checkpoint stores LDM/SGM keys, and OpenCLIP text towers (SD 2.x,
 * SDXL's second encoder) in OpenCLIP's own layout with q/k/v fused into one in_proj_weight.
 *
 * The UNet's block numbering is read from the checkpoint's own keys (layers per block, where the down- and
 * upsamplers are), as diffusers' convert_ldm_unet_checkpoint does, so the map holds for any LDM/SGM UNet.
 */
import type { ModelKind } from "../../../contract/index.ts";
import { TEXT_ENCODER_PREFIXES } from "../checkpoint/detect.ts";
import { UNET_PREFIX } from "../checkpoint/keys.ts";
import type { SafetensorsHeader } from "../safetensors.ts";

export type LayerComponent = "unet" | "text_encoder" | "text_encoder_2";

/** One weight a LoRA module can update: a whole checkpoint tensor, or a row range of a fused one. */
export interface LayerTarget {
  /** The checkpoint (LDM) key of the weight tensor. */
  key: string;
  /** That tensor's shape. */
  shape: number[];
  /** [first, end) rows of `key` the layer owns (OpenCLIP's fused q/k/v), or null for the whole tensor. */
  rows: [number, number] | null;
  component: LayerComponent;
}

/** LDM ResBlock sub-modules → diffusers ResnetBlock2D names. */
const RESNET_NAMES: Record<string, string> = {
  "in_layers.0": "norm1",
  "in_layers.2": "conv1",
  "emb_layers.1": "time_emb_proj",
  "out_layers.0": "norm2",
  "out_layers.3": "conv2",
  skip_connection: "conv_shortcut",
};

/** UNet modules outside the blocks. */
const UNET_TOP_LEVEL: Record<string, string> = {
  "time_embed.0": "time_embedding.linear_1",
  "time_embed.2": "time_embedding.linear_2",
  "label_emb.0.0": "add_embedding.linear_1",
  "label_emb.0.2": "add_embedding.linear_2",
  "input_blocks.0.0": "conv_in",
  "out.0": "conv_norm_out",
  "out.2": "conv_out",
};

type BlockKind = "resnet" | "attention" | "downsampler" | "upsampler";

/** `input_blocks.N.M` / `middle_block.M` / `output_blocks.N.M` → its diffusers block and what it is. */
function unetBlocks(has: (key: string) => boolean): Map<string, { path: string; kind: BlockKind }> {
  const blocks = new Map<string, { path: string; kind: BlockKind }>();
  let level = 0;
  let index = 0;
  let perLevel = 0;
  for (let i = 1; has(`input_blocks.${i}.0`); i++) {
    if (has(`input_blocks.${i}.0.op`)) {
      blocks.set(`input_blocks.${i}.0`, { path: `down_blocks.${level}.downsamplers.0`, kind: "downsampler" });
      if (level === 0) perLevel = index;
      level++;
      index = 0;
      continue;
    }
    blocks.set(`input_blocks.${i}.0`, { path: `down_blocks.${level}.resnets.${index}`, kind: "resnet" });
    blocks.set(`input_blocks.${i}.1`, {
      path: `down_blocks.${level}.attentions.${index}`,
      kind: "attention",
    });
    index++;
  }
  if (perLevel === 0) perLevel = index;
  blocks.set("middle_block.0", { path: "mid_block.resnets.0", kind: "resnet" });
  blocks.set("middle_block.1", { path: "mid_block.attentions.0", kind: "attention" });
  blocks.set("middle_block.2", { path: "mid_block.resnets.1", kind: "resnet" });
  for (let i = 0; has(`output_blocks.${i}.0`); i++) {
    const up = Math.floor(i / (perLevel + 1));
    const index = i % (perLevel + 1);
    blocks.set(`output_blocks.${i}.0`, { path: `up_blocks.${up}.resnets.${index}`, kind: "resnet" });
    for (const sub of [1, 2]) {
      const upsampler = has(`output_blocks.${i}.${sub}.conv`);
      blocks.set(
        `output_blocks.${i}.${sub}`,
        upsampler
          ? { path: `up_blocks.${up}.upsamplers.0`, kind: "upsampler" }
          : { path: `up_blocks.${up}.attentions.${index}`, kind: "attention" },
      );
    }
  }
  return blocks;
}

/** The diffusers path of an LDM UNet module, or null for one diffusers has no name for. */
function diffusersUnetPath(
  module: string,
  blocks: Map<string, { path: string; kind: BlockKind }>,
): string | null {
  const top = UNET_TOP_LEVEL[module];
  if (top) return top;
  const parts = module.split(".");
  const depth = parts[0] === "middle_block" ? 2 : 3;
  const block = blocks.get(parts.slice(0, depth).join("."));
  if (!block) return null;
  const inner = parts.slice(depth).join(".");
  switch (block.kind) {
    case "attention":
      return `${block.path}.${inner}`;
    case "resnet": {
      const name = RESNET_NAMES[inner];
      return name ? `${block.path}.${name}` : null;
    }
    case "downsampler":
      return inner === "op" ? `${block.path}.conv` : null;
    case "upsampler":
      return inner === "conv" ? `${block.path}.conv` : null;
  }
}

/** OpenCLIP resblock sub-modules → transformers' CLIPEncoderLayer names (q/k/v come from in_proj_weight). */
const OPENCLIP_NAMES: Record<string, string> = {
  "attn.out_proj": "self_attn.out_proj",
  "mlp.c_fc": "mlp.fc1",
  "mlp.c_proj": "mlp.fc2",
};

/**
 * Every weight layer (rank ≥ 2 `.weight`, plus OpenCLIP's fused q/k/v rows) of the checkpoint under the
 * module names LoRA files use: kohya `lora_unet_<path with _>` (diffusers and LDM/SGM paths alike),
 * `lora_te_` (SD 1.x/2.x) or `lora_te1_`/`lora_te2_` (SDXL) + the CLIPTextModel path, and PEFT
 * `unet.<diffusers path>`, `text_encoder.<path>`, `text_encoder_2.<path>`.
 */
export function layerNames(checkpoint: SafetensorsHeader, kind: ModelKind): Map<string, LayerTarget> {
  const names = new Map<string, LayerTarget>();
  const underscored = (path: string) => path.replaceAll(".", "_");

  const unetModules = new Set<string>();
  for (const [key, info] of checkpoint.tensors) {
    if (key.startsWith(UNET_PREFIX) && key.endsWith(".weight") && info.shape.length >= 2)
      unetModules.add(key.slice(UNET_PREFIX.length, -".weight".length));
  }
  const has = (module: string) => {
    for (const m of unetModules) if (m === module || m.startsWith(`${module}.`)) return true;
    return false;
  };
  const blocks = unetBlocks(has);
  for (const module of unetModules) {
    const key = `${UNET_PREFIX}${module}.weight`;
    const target: LayerTarget = {
      key,
      shape: checkpoint.tensors.get(key)?.shape ?? [],
      rows: null,
      component: "unet",
    };
    names.set(`lora_unet_${underscored(module)}`, target);
    const diffusers = diffusersUnetPath(module, blocks);
    if (diffusers) {
      names.set(`lora_unet_${underscored(diffusers)}`, target);
      names.set(`unet.${diffusers}`, target);
    }
  }

  TEXT_ENCODER_PREFIXES[kind].forEach(({ prefix, layout }, index) => {
    const component: LayerComponent = index === 0 ? "text_encoder" : "text_encoder_2";
    const kohya = kind === "sdxl" ? `lora_te${index + 1}_` : "lora_te_";
    const add = (path: string, target: LayerTarget) => {
      names.set(`${kohya}${underscored(path)}`, target);
      names.set(`${component}.${path}`, target);
    };
    for (const [key, info] of checkpoint.tensors) {
      if (!key.startsWith(prefix) || info.shape.length < 2) continue;
      const rest = key.slice(prefix.length);
      if (layout === "hf") {
        if (rest.endsWith(".weight"))
          add(`text_model.${rest.slice(0, -".weight".length)}`, {
            key,
            shape: info.shape,
            rows: null,
            component,
          });
        continue;
      }
      const match = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(rest);
      if (!match) continue;
      const layer = `text_model.encoder.layers.${match[1]}`;
      const sub = match[2] as string;
      if (sub === "attn.in_proj_weight") {
        const width = (info.shape[0] as number) / 3;
        ["q_proj", "k_proj", "v_proj"].forEach((name, i) => {
          add(`${layer}.self_attn.${name}`, {
            key,
            shape: info.shape,
            rows: [i * width, (i + 1) * width],
            component,
          });
        });
        continue;
      }
      const name = sub.endsWith(".weight") ? OPENCLIP_NAMES[sub.slice(0, -".weight".length)] : undefined;
      if (name) add(`${layer}.${name}`, { key, shape: info.shape, rows: null, component });
    }
  });
  return names;
}
