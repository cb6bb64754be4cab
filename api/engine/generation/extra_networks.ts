/**
 * AUTOMATIC1111's extra-network tags in prompts (`<lora:name:0.8>`): found and removed from the text the
 * encoder reads exactly as its modules/extra_networks.py `parse_prompt` does (`re.sub(r"<(\w+):([^>]+)>", "")`,
 * surrounding whitespace kept), and the LoRA ones turned into LoRA requests.
 */
import { type FieldError, LORA_LIMITS } from "../../../contract/index.ts";

/** One tag: its network type (`lora`, `lyco`, `hypernet`, …) and its `:`-separated arguments. */
export interface ExtraNetworkTag {
  type: string;
  args: string[];
  /** The tag as written. */
  text: string;
}

const TAG = /<(\w+):([^>]+)>/g;

/** The prompt without its tags, and the tags in order. */
export function parseExtraNetworks(prompt: string): { text: string; tags: ExtraNetworkTag[] } {
  const tags: ExtraNetworkTag[] = [];
  const text = prompt.replace(TAG, (whole, type: string, args: string) => {
    tags.push({ type, args: args.split(":"), text: whole });
    return "";
  });
  return { text, tags };
}

/** The network types sdx applies as LoRAs (A1111 treats `lyco` as `lora` since 1.5). */
const LORA_TYPES = new Set(["lora", "lyco"]);

/**
 * `<lora:name>`, `<lora:name:w>` or `<lora:name:w:w>` as LoRA requests (A1111's text-encoder and UNet
 * multipliers; sdx applies one weight to both, so they must be equal). Tags of other types are returned apart.
 */
export function loraTags(
  tags: readonly ExtraNetworkTag[],
  field: string,
): { loras: { name: string; weight: number }[]; others: ExtraNetworkTag[]; errors: FieldError[] } {
  const loras: { name: string; weight: number }[] = [];
  const others: ExtraNetworkTag[] = [];
  const errors: FieldError[] = [];
  for (const tag of tags) {
    if (!LORA_TYPES.has(tag.type.toLowerCase())) {
      others.push(tag);
      continue;
    }
    const [name = "", ...rest] = tag.args;
    const weights = rest.map(Number);
    const bad = weights.findIndex((w) => !Number.isFinite(w));
    if (name.trim() === "" || bad >= 0) {
      errors.push({
        field,
        message: `${tag.text}: write <lora:name> or <lora:name:weight> with a number for the weight`,
      });
      continue;
    }
    if (weights.length > 2 || (weights.length === 2 && weights[0] !== weights[1])) {
      errors.push({
        field,
        message: `${tag.text}: sdx applies one weight to the text encoder and the UNet alike; write <lora:${name}:weight>`,
      });
      continue;
    }
    const weight = weights[0] ?? 1;
    if (weight < LORA_LIMITS.weightMin || weight > LORA_LIMITS.weightMax) {
      errors.push({
        field,
        message: `${tag.text}: the weight must be from ${LORA_LIMITS.weightMin} to ${LORA_LIMITS.weightMax}`,
      });
      continue;
    }
    loras.push({ name: name.trim(), weight });
  }
  return { loras, others, errors };
}
