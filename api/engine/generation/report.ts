/**
 * What a generation says about itself besides its images: diffusers' memory switches as they applied, one
 * warning per parameter that did not change the result, and AUTOMATIC1111's infotext for each PNG.
 */
import {
  type AppliedParams,
  type GenerateRequest,
  type GenerateResponse,
  HIRES_UPSCALER_A1111_NAMES,
  type ModelKind,
} from "../../../contract/index.ts";
import { VERSION } from "../../../lib/version.ts";
import type { GenerateOutput } from "../pipeline/types.ts";
import { SCHEDULERS } from "../schedulers/index.ts";

type MemoryReport = GenerateResponse["metadata"]["memory"];

/** diffusers' memory switches as they apply to onnxruntime on this execution provider. */
export function memoryReport(
  p: AppliedParams,
  provider: string,
  tiled: boolean,
  retried: boolean,
): MemoryReport {
  const cpu = provider === "cpu";
  return {
    attention_slicing: {
      requested: p.enable_attention_slicing,
      applied: false,
      note: "not applicable: attention runs inside the ONNX UNet graph as onnxruntime's own kernels and cannot be sliced from outside",
    },
    vae_slicing: {
      requested: p.enable_vae_slicing,
      applied: p.enable_vae_slicing && p.batch_size > 1,
      note:
        p.batch_size > 1
          ? "the batch is decoded one image at a time when requested"
          : "a batch of one image is decoded alone either way",
    },
    vae_tiling: {
      requested: p.enable_vae_tiling,
      applied: p.enable_vae_tiling && tiled,
      note: tiled
        ? "decoded in overlapping tiles blended as diffusers' tiled_decode does"
        : "the latents fit in one VAE tile, so nothing is tiled",
    },
    model_cpu_offload: {
      requested: p.enable_model_cpu_offload,
      applied: p.enable_model_cpu_offload && (cpu || !p.enable_sequential_cpu_offload),
      note: cpu
        ? "only the running stage's sessions were kept: the others were released, their memory returned to the " +
          "system, and are created again from the cached graphs when next needed (lower peak memory for about one " +
          "session load per stage)"
        : p.enable_sequential_cpu_offload
          ? "superseded by sequential CPU offload: the whole generation ran on the CPU provider"
          : "only the running stage's session stayed on the GPU; the others were released and are recreated when needed",
    },
    sequential_cpu_offload: {
      requested: p.enable_sequential_cpu_offload,
      applied: p.enable_sequential_cpu_offload && !cpu,
      note: cpu
        ? "not applicable: the server runs on the CPU provider already"
        : "the generation ran on CPU sessions of the model, leaving GPU memory alone",
    },
    retried_after_out_of_memory: retried,
  };
}

/** AUTOMATIC1111's extra-network tags (`<lora:name:0.8>`): applied with prompt_syntax "a1111", text otherwise. */
const EXTRA_NETWORK = /<\w+:[^>]+>/g;

/** The SDXL-only request fields, for warnings when the model is not SDXL. */
const SDXL_FIELDS = [
  "prompt_2",
  "negative_prompt_2",
  "original_size",
  "crops_coords_top_left",
  "target_size",
] as const;

/**
 * One sentence for each accepted parameter that leaves the answer as it would be without it (`previewsSent`: the
 * caller listened for the previews a request's `preview` asks for).
 */
export function warningsFor(
  p: AppliedParams,
  output: GenerateOutput,
  memory: MemoryReport,
  req: Partial<GenerateRequest> = {},
  previewsSent = false,
): string[] {
  const warnings: string[] = [];
  const guided = p.guidance_scale > 1;
  const entry = SCHEDULERS[p.scheduler_type];
  if (p.negative_prompt !== null && !guided) {
    warnings.push(
      `negative_prompt was ignored: guidance_scale ${p.guidance_scale} ≤ 1 turns classifier-free guidance off, so there is no unconditional pass to steer.`,
    );
  }
  if (output.xl) {
    if (req.negative_prompt_2 && !guided) {
      warnings.push(
        `negative_prompt_2 was ignored: guidance_scale ${p.guidance_scale} ≤ 1 turns classifier-free guidance off.`,
      );
    } else if (req.negative_prompt_2 && output.xl.zeroUncond) {
      warnings.push(
        'negative_prompt_2 was ignored: without negative_prompt, SDXL\'s unconditional embeddings are zeros (force_zeros_for_empty_prompt), as in diffusers; send negative_prompt too, or prompt_syntax "a1111".',
      );
    }
    if (output.xl.prompt2.truncatedTokens > 0) {
      warnings.push(
        `prompt_2 is ${output.xl.prompt2.tokens} CLIP tokens; with prompt_syntax "diffusers" the second text encoder reads 75, so ${output.xl.prompt2.truncatedTokens} were cut.`,
      );
    }
    if (guided && output.xl.negativePrompt2.truncatedTokens > 0) {
      warnings.push(
        `negative_prompt_2 is ${output.xl.negativePrompt2.tokens} CLIP tokens; ${output.xl.negativePrompt2.truncatedTokens} were cut.`,
      );
    }
  } else {
    for (const field of SDXL_FIELDS) {
      if (req[field] !== undefined) {
        warnings.push(
          `${field} has no effect: it is SDXL's (second text encoder / micro-conditioning), and this is an SD 1.x/2.x model.`,
        );
      }
    }
  }
  if (output.prompt.truncatedTokens > 0) {
    warnings.push(
      `prompt is ${output.prompt.tokens} CLIP tokens; with prompt_syntax "diffusers" the text encoder reads 75, so ${output.prompt.truncatedTokens} were cut (use prompt_syntax "a1111" to encode them in chunks).`,
    );
  }
  if (guided && output.negativePrompt.truncatedTokens > 0) {
    warnings.push(
      `negative_prompt is ${output.negativePrompt.tokens} CLIP tokens; ${output.negativePrompt.truncatedTokens} were cut.`,
    );
  }
  if (p.eta !== null && !entry.eta)
    warnings.push(`eta has no effect: only ddim reads it, not ${p.scheduler_type}.`);
  if (p.timestep_spacing !== null && !entry.timestepSpacing) {
    warnings.push(
      `timestep_spacing has no effect: ${p.scheduler_type} has no timestep spacing option in diffusers.`,
    );
  }
  if (p.scheduler_scale !== null) {
    warnings.push("scheduler_scale has no effect: Stable Diffusion's samplers take no such scale.");
  }
  if (p.prompt_syntax === "diffusers") {
    for (const field of ["prompt", "negative_prompt", "prompt_2", "negative_prompt_2"] as const) {
      const tags = p[field]?.match(EXTRA_NETWORK) ?? [];
      if (tags.length > 0) {
        warnings.push(
          `${field}: ${tags.join(" ")} ${tags.length === 1 ? "was" : "were"} read as text: with prompt_syntax "diffusers" prompts are literal; name LoRAs in \`loras\`, or use prompt_syntax "a1111".`,
        );
      }
    }
  }
  warnings.push(...imageWarnings(p, req));
  if (req.preview && !previewsSent) {
    warnings.push(
      "preview was not applied: previews travel only on the event stream (send Accept: text/event-stream for `preview` events); this JSON answer has none.",
    );
  }
  for (const [key, report] of Object.entries(memory)) {
    if (typeof report === "object" && report.requested && !report.applied) {
      warnings.push(`enable_${key} did not change anything: ${report.note}.`);
    }
  }
  return warnings;
}

/** Image-input fields that had nothing to act on. */
function imageWarnings(p: AppliedParams, req: Partial<GenerateRequest>): string[] {
  const warnings: string[] = [];
  if (req.strength !== undefined && p.strength === null) {
    warnings.push(
      "strength has no effect without init_image (the hires fix's second pass takes hires.strength).",
    );
  }
  if (p.mask_blur === null) {
    for (const field of [
      "mask_blur",
      "masked_content",
      "inpaint_full_res",
      "inpaint_full_res_padding",
    ] as const) {
      if (req[field] !== undefined) warnings.push(`${field} has no effect without mask_image.`);
    }
  } else if (req.inpaint_full_res_padding !== undefined && !p.inpaint_full_res) {
    warnings.push("inpaint_full_res_padding has no effect without inpaint_full_res.");
  }
  if (p.hires && p.hires.scale === null && req.hires?.scale !== undefined) {
    warnings.push("hires.scale has no effect: hires.width and hires.height give the final size.");
  }
  return warnings;
}

/** AUTOMATIC1111's infotext, the `parameters` text of its PNGs, for one image. */
const KIND_LABELS = { sd1: "SD1", sd2: "SD2", sdxl: "SDXL" } as const;

/** What the infotext says of the adapters, in A1111's wording (short hashes). */
export interface AdapterInfotext {
  loraHashes: string | null;
  tiHashes: string | null;
  vae: { name: string; hash: string } | null;
}

export function infotext(
  p: AppliedParams,
  seed: number,
  modelName: string,
  kind: ModelKind | null,
  modelHash: string | null = null,
  adapters: AdapterInfotext | null = null,
): string {
  const quote = (v: string) => (/[,:"\n]/.test(v) ? JSON.stringify(v) : v);
  const entry = SCHEDULERS[p.scheduler_type];
  const fields: [string, string | number][] = [
    ["Steps", p.num_steps],
    ["Sampler", entry.displayName],
    ["Schedule type", p.karras_sigmas ? "Karras" : "Automatic"],
    ["CFG scale", p.guidance_scale],
    ["Seed", seed],
    ["Size", `${p.width}x${p.height}`],
    ...(modelHash ? ([["Model hash", modelHash.slice(0, 10)]] as [string, string][]) : []),
    ["Model", modelName],
    ...(kind ? ([["Model type", KIND_LABELS[kind]]] as [string, string][]) : []),
    ...(adapters?.vae
      ? ([
          ["VAE hash", adapters.vae.hash],
          ["VAE", adapters.vae.name],
        ] as [string, string][])
      : []),
    ["Clip skip", p.clip_skip],
  ];
  if (p.eta !== null && entry.eta) fields.push(["Eta", p.eta]);
  if (p.strength !== null) fields.push(["Denoising strength", p.strength]);
  if (p.mask_blur !== null) fields.push(["Mask blur", p.mask_blur]);
  if (p.inpaint_full_res) {
    fields.push(["Inpaint area", "Only masked"], ["Masked area padding", p.inpaint_full_res_padding ?? 0]);
  }
  if (p.hires) {
    const h = p.hires;
    fields.push(["Denoising strength", h.strength]);
    fields.push(h.scale !== null ? ["Hires upscale", h.scale] : ["Hires resize", `${h.width}x${h.height}`]);
    fields.push(["Hires steps", h.steps], ["Hires upscaler", HIRES_UPSCALER_A1111_NAMES[h.upscaler]]);
  }
  if (adapters?.loraHashes) fields.push(["Lora hashes", adapters.loraHashes]);
  if (adapters?.tiHashes) fields.push(["TI hashes", adapters.tiHashes]);
  fields.push(["Version", `sdx ${VERSION}`]);
  const lines = [p.prompt];
  if (p.negative_prompt) lines.push(`Negative prompt: ${p.negative_prompt}`);
  lines.push(fields.map(([k, v]) => `${k}: ${quote(String(v))}`).join(", "));
  return lines.join("\n");
}
