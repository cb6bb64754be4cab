/**
 * LoRA (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models") merged into a single-file
 * checkpoint's weights, as kohya-ss/sd-scripts `LoRAInfModule.merge_to` and AUTOMATIC1111's Lora extension
 * do. Reads kohya/A1111 files (`lora_unet_…`, `lora_te_…`, SDXL `lora_te1_`/`lora_te2_`, diffusers or SGM UNet
 * names; LoCon's 3×3 convolutions) and diffusers/PEFT files (`unet.<path>.lora_A.weight` / `lora_B.weight`).
 * Other adapter kinds (LoHa, LoKr, DoRA, LoCon's Tucker `lora_mid`) are reported as unused keys.
 */
import { basename, extname } from "node:path";
import type { ModelKind } from "../../../contract/index.ts";
import { GraphBuilder } from "../onnx/graph_builder.ts";
import { OnnxModel } from "../onnx/runtime.ts";
import {
  readSafetensorsHeader,
  readTensorAsFloat32,
  SafetensorsError,
  type SafetensorsHeader,
} from "../safetensors.ts";
import { type LayerTarget, layerNames } from "./layers.ts";
import { AdapterError, type WeightOverrides } from "./types.ts";

export interface LoraInput {
  name: string;
  path: string;
  weight: number;
}

export interface LoraReport {
  name: string;
  modules: number;
  textEncoder: boolean;
  unusedKeys: string[];
}

export type LoraFormat = "kohya" | "peft";

const DOWN_SUFFIXES = ["lora_down.weight", "lora_A.weight"] as const;
const UP_SUFFIXES = ["lora_up.weight", "lora_B.weight"] as const;
const ALPHA_SUFFIX = "alpha";
/** Keys that make a module something other than W + s·up·down (Tucker mid factor, DoRA magnitude). */
const ALTERING_SUFFIXES = [
  "lora_mid.weight",
  "dora_scale",
  "lora_magnitude_vector",
  "lora_magnitude_vector.weight",
];

interface LoraModule {
  /** The module name as the file writes it (kohya `lora_unet_…`, PEFT `unet.…`). */
  name: string;
  down?: string;
  up?: string;
  alpha?: string;
  keys: string[];
  altered: boolean;
}

interface ParsedLora {
  format: LoraFormat;
  /** Plain LoRA modules (down and up present, nothing altering them), by name. */
  modules: LoraModule[];
  /** Keys of everything else. */
  unusable: string[];
}

const KOHYA_KEY = /^lora_(unet|te\d?)_/;
const PEFT_KEY = /^(unet|text_encoder(_2)?)\./;

function parseLora(header: SafetensorsHeader, adapter: string): ParsedLora {
  const keys = [...header.tensors.keys()].sort();
  const format: LoraFormat | null = keys.some((k) => KOHYA_KEY.test(k))
    ? "kohya"
    : keys.some((k) => PEFT_KEY.test(k))
      ? "peft"
      : null;
  if (!format) {
    throw new AdapterError(
      adapter,
      `${adapter} is not a Stable Diffusion LoRA sdx reads: no kohya (lora_unet_…, lora_te_…) or diffusers/PEFT (unet.…, text_encoder.…) keys among its ${keys.length} (e.g. ${keys.slice(0, 3).join(", ")})`,
    );
  }
  const byName = new Map<string, LoraModule>();
  const module = (name: string) => {
    const m = byName.get(name) ?? { name, keys: [], altered: false };
    byName.set(name, m);
    return m;
  };
  const rest: string[] = [];
  for (const key of keys) {
    const role = (suffixes: readonly string[]) => suffixes.find((s) => key.endsWith(`.${s}`));
    const down = role(DOWN_SUFFIXES);
    const up = role(UP_SUFFIXES);
    const alpha = key.endsWith(`.${ALPHA_SUFFIX}`) ? ALPHA_SUFFIX : undefined;
    const suffix = down ?? up ?? alpha;
    if (!suffix) {
      rest.push(key);
      continue;
    }
    const m = module(key.slice(0, -suffix.length - 1));
    m.keys.push(key);
    if (down) m.down = key;
    else if (up) m.up = key;
    else m.alpha = key;
  }
  const unusable: string[] = [];
  for (const key of rest) {
    const owner = [...byName.keys()].find((name) => key.startsWith(`${name}.`));
    if (owner && ALTERING_SUFFIXES.includes(key.slice(owner.length + 1)))
      (byName.get(owner) as LoraModule).altered = true;
    unusable.push(key);
  }
  const modules: LoraModule[] = [];
  for (const m of byName.values()) {
    if (m.down && m.up && !m.altered) modules.push(m);
    else unusable.push(...m.keys);
  }
  return { format, modules, unusable: unusable.sort() };
}

/** What a key or shape says about the model a LoRA was trained on: the families it allows, and which key said so. */
interface FamilyEvidence {
  families: readonly ModelKind[];
  key: string;
}

const ALL_FAMILIES: readonly ModelKind[] = ["sd1", "sd2", "sdxl"];

/**
 * The families a LoRA can belong to, from its names and shapes: SDXL's two text encoders (`lora_te1_`/`lora_te2_`,
 * `text_encoder_2.`), transformer depth > 1 and the ADM embedding exist only in SDXL; a fourth UNet level and a
 * single `lora_te_` only in SD 1.x/2.x; 1×1-conv `proj_in`/`proj_out` only in SD 1.x; the cross-attention
 * context width (attn2 to_k/to_v input) is 768 (SD 1.x), 1024 (SD 2.x) or 2048 (SDXL); the first text encoder's
 * width 768 (CLIP-L: SD 1.x, SDXL) or 1024 (OpenCLIP-H: SD 2.x).
 */
function familyEvidence(header: SafetensorsHeader): FamilyEvidence[] {
  const evidence: FamilyEvidence[] = [];
  const say = (key: string, ...families: ModelKind[]) => evidence.push({ families, key });
  for (const [key, info] of header.tensors) {
    const name = key.replaceAll(".", "_");
    if (/^lora_te[12]_/.test(key) || key.startsWith("text_encoder_2.")) say(key, "sdxl");
    else if (key.startsWith("lora_te_")) say(key, "sd1", "sd2");
    if (/transformer_blocks_[1-9]\d*_/.test(name) || /(add_embedding|label_emb)_/.test(name))
      say(key, "sdxl");
    if (/(down|up)_blocks_3_|(input|output)_blocks_(9|1[01])_/.test(name)) say(key, "sd1", "sd2");
    if (!DOWN_SUFFIXES.some((s) => key.endsWith(`.${s}`))) continue;
    const width = info.shape[1];
    if (/_attn2_to_[kv]_/.test(name)) {
      if (width === 768) say(key, "sd1");
      else if (width === 1024) say(key, "sd2");
      else if (width === 2048) say(key, "sdxl");
    }
    if (/_proj_(in|out)_/.test(name) && !/^(lora_te|text_encoder)/.test(key))
      say(key, ...(info.shape.length === 4 ? (["sd1"] as const) : (["sd2", "sdxl"] as const)));
    if (
      /^(lora_te_|text_encoder_)/.test(name) &&
      !/^(lora_te2_|text_encoder_2_)/.test(name) &&
      /_q_proj_/.test(name)
    ) {
      if (width === 768) say(key, "sd1", "sdxl");
      else if (width === 1024) say(key, "sd2");
    }
  }
  return evidence;
}

/** The families every piece of evidence allows (empty when they contradict each other). */
function familiesAllowed(evidence: readonly FamilyEvidence[]): Set<ModelKind> {
  const allowed = new Set(ALL_FAMILIES);
  for (const e of evidence) for (const f of ALL_FAMILIES) if (!e.families.includes(f)) allowed.delete(f);
  return allowed;
}

/** One family for display: the only one allowed, else the likeliest (SGM UNet names come from SDXL trainers). */
function familyOf(header: SafetensorsHeader, evidence: readonly FamilyEvidence[]): ModelKind | null {
  const allowed = familiesAllowed(evidence);
  if (allowed.size === 1) return [...allowed][0] as ModelKind;
  const sgm = [...header.tensors.keys()].some((k) =>
    /^lora_unet_(input_blocks|middle_block|output_blocks)_/.test(k),
  );
  if (allowed.size === 0 || (allowed.size === ALL_FAMILIES.length && !sgm)) return null;
  const preference: ModelKind[] = sgm ? ["sdxl", "sd1", "sd2"] : ["sd1", "sdxl", "sd2"];
  return preference.find((f) => allowed.has(f)) ?? null;
}

async function readLoraHeader(path: string, adapter: string): Promise<SafetensorsHeader> {
  try {
    return await readSafetensorsHeader(path);
  } catch (e) {
    if (e instanceof SafetensorsError) throw new AdapterError(adapter, `${adapter}: ${e.message}`);
    throw e;
  }
}

/** The rank most of a file's modules have (the larger on a tie). */
function commonRank(header: SafetensorsHeader, modules: readonly LoraModule[]): number {
  const counts = new Map<number, number>();
  for (const m of modules) {
    const r = header.tensors.get(m.down as string)?.shape[0] ?? 0;
    counts.set(r, (counts.get(r) ?? 0) + 1);
  }
  let best = 0;
  let bestCount = 0;
  for (const [r, n] of counts) if (n > bestCount || (n === bestCount && r > best)) [best, bestCount] = [r, n];
  return best;
}

const isTextEncoderModule = (name: string) => /^(lora_te\d?_|text_encoder(_2)?\.)/.test(name);

/** Reads a LoRA file's header (no tensors): format, family ("sd1"|"sd2"|"sdxl" from its shapes/prefixes), rank, modules, whether it touches a text encoder. */
export async function inspectLora(path: string): Promise<{
  format: LoraFormat;
  family: ModelKind | null;
  rank: number;
  modules: number;
  textEncoder: boolean;
}> {
  const adapter = basename(path, extname(path));
  const header = await readLoraHeader(path, adapter);
  const parsed = parseLora(header, adapter);
  return {
    format: parsed.format,
    family: familyOf(header, familyEvidence(header)),
    rank: commonRank(header, parsed.modules),
    modules: parsed.modules.length,
    textEncoder: parsed.modules.some((m) => isTextEncoderModule(m.name)),
  };
}

/**
 * delta = up @ down as a one-node onnxruntime graph: MLAS's float32 GEMM on every core. A rank-32 LoRA on a
 * full-size SD 1.5 is ~10¹⁰ multiply-adds, several times what plain JavaScript loops do per second (measured
 * 0.5–1.2 GMAC/s on one core). Graph optimizations are off: nothing may fuse the product with anything else.
 */
function deltaGraph(): Uint8Array {
  const g = new GraphBuilder("lora_delta");
  const up = g.input("up", "float32", ["out", "rank"]);
  const down = g.input("down", "float32", ["rank", "cols"]);
  g.output(g.node("MatMul", [up, down]), "delta", "float32", ["out", "cols"]);
  return g.toBytes();
}

let deltaSession: Promise<OnnxModel> | null = null;
const deltaModel = () =>
  (deltaSession ??= OnnxModel.fromBytes("lora_delta", deltaGraph(), {
    provider: "cpu",
    optimizationLevel: "disabled",
  }));

const product = (dims: readonly number[]) => dims.reduce((n, d) => n * d, 1);

/** A LoRA module and the checkpoint layer it updates, as `visitLoras` hands them on. */
interface ModuleMatch {
  lora: LoraInput;
  header: SafetensorsHeader;
  module: LoraModule;
  target: LayerTarget;
}

/**
 * Every module of `loras` (in request order) that names a layer of the checkpoint, after the family check: each
 * goes to `visit`. Throws AdapterError naming the LoRA when its family does not match `kind`, or none of its keys
 * matches a layer; keys it cannot use go to its report's unusedKeys.
 */
async function visitLoras(
  checkpoint: SafetensorsHeader,
  kind: ModelKind,
  loras: LoraInput[],
  visit: (match: ModuleMatch) => Promise<void>,
): Promise<LoraReport[]> {
  const layers = layerNames(checkpoint, kind);
  const reports: LoraReport[] = [];
  for (const lora of loras) {
    const header = await readLoraHeader(lora.path, lora.name);
    const parsed = parseLora(header, lora.name);
    const evidence = familyEvidence(header);
    const allowed = familiesAllowed(evidence);
    if (allowed.size > 0 && !allowed.has(kind)) {
      const why = evidence.find((e) => !e.families.includes(kind)) as FamilyEvidence;
      throw new AdapterError(
        lora.name,
        `LoRA ${lora.name} is for ${[...allowed].join("/")} models (its ${why.key} says so), not for this ${kind} model`,
      );
    }
    const unusedKeys = [...parsed.unusable];
    let modules = 0;
    let textEncoder = false;
    for (const m of parsed.modules) {
      const target = layers.get(m.name);
      if (!target) {
        unusedKeys.push(...m.keys);
        continue;
      }
      await visit({ lora, header, module: m, target });
      modules++;
      if (target.component !== "unet") textEncoder = true;
    }
    if (modules === 0) {
      throw new AdapterError(
        lora.name,
        `none of the ${header.tensors.size} keys of LoRA ${lora.name} names a layer of this ${kind} model sdx can apply (e.g. ${unusedKeys.slice(0, 3).join(", ")})`,
      );
    }
    reports.push({ name: lora.name, modules, textEncoder, unusedKeys: unusedKeys.sort() });
  }
  return reports;
}

/**
 * The merged weights W + Σ weight·(alpha/rank)·(up @ down) for every layer the LoRAs name, in request order, as
 * overrides of the checkpoint's LDM keys; with `unet` false the UNet's layers are left out (they run as
 * `loraFactors` branches), though the reports count them. Throws AdapterError naming the LoRA when its family
 * does not match `kind`, or none of its keys matches a layer; keys it cannot use go to unusedKeys.
 */
export async function loraOverrides(
  checkpoint: SafetensorsHeader,
  kind: ModelKind,
  loras: LoraInput[],
  options: { unet?: boolean } = {},
): Promise<{ overrides: WeightOverrides; reports: LoraReport[] }> {
  const overrides: WeightOverrides = new Map();
  const reports = await visitLoras(checkpoint, kind, loras, async (match) => {
    if (match.target.component === "unet" && options.unet === false) {
      moduleFit(match);
      return;
    }
    await mergeModule(match, checkpoint, overrides);
  });
  return { overrides, reports };
}

/** One UNet layer's LoRA factors, ready to feed its branch (unet_graph.ts loraInputNames). */
export interface LoraFactor {
  /** [r, in] (Conv: [r, in, kh, kw]): the LoRAs' down matrices stacked along the rank. */
  down: Float32Array;
  downShape: number[];
  /** [out, r] (Conv: [out, r, 1, 1]): their up matrices side by side, each times float32(weight·alpha/rank). */
  up: Float32Array;
  upShape: number[];
}

/**
 * The UNet layers' LoRA factors by checkpoint key: Σ_i s_i·up_i·down_i = [s_1·up_1 ‖ s_2·up_2 ‖ …]·[down_1; down_2;
 * …], so several LoRAs on one layer are one branch of their summed rank. Same checks and errors as loraOverrides.
 */
export async function loraFactors(
  checkpoint: SafetensorsHeader,
  kind: ModelKind,
  loras: LoraInput[],
): Promise<Map<string, LoraFactor>> {
  const parts = new Map<string, { down: Float32Array; up: Float32Array; rank: number }[]>();
  await visitLoras(checkpoint, kind, loras, async (match) => {
    if (match.target.component !== "unet") return;
    const { rank, scale } = await moduleScale(match, moduleFit(match));
    const up = await readTensorAsFloat32(match.header, match.module.up as string);
    for (let i = 0; i < up.length; i++) up[i] = Math.fround((up[i] as number) * scale);
    const down = await readTensorAsFloat32(match.header, match.module.down as string);
    const list = parts.get(match.target.key) ?? [];
    list.push({ down, up, rank });
    parts.set(match.target.key, list);
  });
  const factors = new Map<string, LoraFactor>();
  for (const [key, list] of parts) {
    const shape = checkpoint.tensors.get(key)?.shape ?? [];
    const out = shape[0] as number;
    const kernel = shape.slice(2);
    const cols = product(shape.slice(1));
    const rank = list.reduce((n, p) => n + p.rank, 0);
    const down = new Float32Array(rank * cols);
    const up = new Float32Array(out * rank);
    let first = 0;
    for (const p of list) {
      down.set(p.down, first * cols);
      for (let o = 0; o < out; o++) up.set(p.up.subarray(o * p.rank, (o + 1) * p.rank), o * rank + first);
      first += p.rank;
    }
    factors.set(key, {
      down,
      downShape: [rank, ...shape.slice(1)],
      up,
      upShape: [out, rank, ...kernel.map(() => 1)],
    });
  }
  return factors;
}

/** A module's rank, and the rows (out) and columns (in·kh·kw) of its layer, once its shapes fit the layer. */
function moduleFit({ lora, header, module: m, target }: ModuleMatch): {
  rank: number;
  out: number;
  cols: number;
} {
  const downShape = header.tensors.get(m.down as string)?.shape ?? [];
  const upShape = header.tensors.get(m.up as string)?.shape ?? [];
  // Linear: down [r, in], up [out, r]. Conv: down [r, in, kh, kw] (the layer's kernel), up [out, r, 1, 1].
  const rank = downShape[0] ?? 0;
  const out = target.rows ? target.rows[1] - target.rows[0] : (target.shape[0] as number);
  const cols = product(target.shape.slice(1));
  if (
    downShape.length < 2 ||
    upShape.length < 2 ||
    upShape[0] !== out ||
    upShape[1] !== rank ||
    product(upShape) !== out * rank ||
    product(downShape) !== rank * cols
  ) {
    const rows = target.rows ? ` rows ${target.rows[0]}–${target.rows[1]}` : "";
    throw new AdapterError(
      lora.name,
      `LoRA ${lora.name}: ${m.name} (up [${upShape.join(", ")}] · down [${downShape.join(", ")}]) does not fit ${target.key}${rows} [${target.shape.join(", ")}]; it was made for another model`,
    );
  }
  return { rank, out, cols };
}

/** s = multiplier · (alpha / r), in float64 as the reference's Python float, applied as float32. */
async function moduleScale(
  { lora, header, module: m }: ModuleMatch,
  fit: { rank: number },
): Promise<{ rank: number; scale: number }> {
  // alpha: a 0-d tensor; absent (PEFT, some kohya files) means alpha = r, i.e. scale 1.
  const alpha = m.alpha ? ((await readTensorAsFloat32(header, m.alpha))[0] as number) : fit.rank;
  return { rank: fit.rank, scale: Math.fround(lora.weight * (alpha / fit.rank)) };
}

async function mergeModule(
  match: ModuleMatch,
  checkpoint: SafetensorsHeader,
  overrides: WeightOverrides,
): Promise<void> {
  const { header, module: m, target } = match;
  const fit = moduleFit(match);
  const { rank, out, cols } = fit;
  const { scale } = await moduleScale(match, fit);
  const up = await readTensorAsFloat32(header, m.up as string);
  const down = await readTensorAsFloat32(header, m.down as string);
  const current = overrides.get(target.key);
  const weight = current?.data ?? (await readTensorAsFloat32(checkpoint, target.key));
  // The layer's rows of W as [out, cols]. delta = up.reshape(out, r) @ down.reshape(r, cols) (float32 sums) is
  // the Linear update and, for a conv, the composed kernel delta[o, i, y, x] = Σ_k up[o, k, 0, 0]·down[k, i, y, x].
  const first = (target.rows?.[0] ?? 0) * cols;
  const rows = weight.subarray(first, first + out * cols);
  const model = await deltaModel();
  const result = await model.run(
    { up: { data: up, dims: [out, rank] }, down: { data: down, dims: [rank, cols] } },
    ["delta"],
  );
  const delta = (result.delta as { data: Float32Array }).data;
  // W ← W + delta·s in the reference's float32 rounding order: delta·s rounded, then the sum (stored) rounded.
  for (let i = 0; i < delta.length; i++)
    rows[i] = (rows[i] as number) + Math.fround((delta[i] as number) * scale);
  if (!current) overrides.set(target.key, { shape: [...target.shape], data: weight });
}
