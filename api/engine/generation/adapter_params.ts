/**
 * The adapters a request uses, resolved against the adapter folders and its model before admission: the
 * `loras` field plus, with prompt_syntax "a1111", the `<lora:…>` tags of the prompt (removed from the text, as
 * AUTOMATIC1111 does); the embeddings whose names the prompts use (A1111's rule); the VAE (`vae`, else the
 * model's sidecar default). Every unknown or unfitting adapter is a 422 naming its field.
 */
import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import {
  type AdaptersReport,
  type FieldError,
  type GenerateRequest,
  type ModelKind,
  type PromptSyntax,
  validationFailed,
} from "../../../contract/index.ts";
import type { AdapterCatalog, AdapterEntry } from "../adapters/catalog.ts";
import type { ModelEntry } from "../model_folder.ts";
import type { AdapterInput } from "../pipeline/types.ts";
import { loraTags, parseExtraNetworks } from "./extra_networks.ts";

/** What a request's adapters resolved to: the engine's input, the response's report and the prompts' text. */
export interface ResolvedAdapters {
  input: AdapterInput;
  report: Omit<AdaptersReport, "cost">;
  /** The prompts as the text encoders read them (extra-network tags removed with prompt_syntax "a1111"). */
  prompts: { prompt: string; negativePrompt: string | null };
  /** A1111's short hashes for the infotext. */
  infotext: {
    loraHashes: string | null;
    tiHashes: string | null;
    vae: { name: string; hash: string } | null;
  };
  warnings: string[];
}

/** A1111's "addnet" hash of a safetensors file: SHA-256 of the bytes after its header (cached by size and time). */
const addnetHashes = new Map<string, { size: number; mtimeMs: number; hash: string }>();
async function addnetHash(path: string): Promise<string> {
  const info = await stat(path);
  const known = addnetHashes.get(path);
  if (known && known.size === info.size && known.mtimeMs === info.mtimeMs) return known.hash;
  const file = Bun.file(path);
  const headerLength = Number(new DataView(await file.slice(0, 8).arrayBuffer()).getBigUint64(0, true));
  const hasher = new Bun.CryptoHasher("sha256");
  const stream = file.slice(8 + headerLength).stream();
  for await (const chunk of stream) hasher.update(chunk);
  const hash = hasher.digest("hex");
  addnetHashes.set(path, { size: info.size, mtimeMs: info.mtimeMs, hash });
  return hash;
}

const wordPattern = (name: string) =>
  new RegExp(`(?<![A-Za-z0-9_])${name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?![A-Za-z0-9_])`, "g");

function fitsFamily(entry: AdapterEntry, kind: ModelKind | null): boolean {
  return entry.family === null || kind === null || entry.family === kind;
}

export async function resolveAdapters(
  req: GenerateRequest,
  syntax: PromptSyntax,
  model: Pick<ModelEntry, "name" | "kind" | "format" | "sidecar">,
  catalog: AdapterCatalog,
): Promise<ResolvedAdapters> {
  const errors: FieldError[] = [];
  const warnings: string[] = [];

  // Prompts: with A1111 syntax, extra-network tags are removed and the LoRA ones applied.
  let prompt = req.prompt;
  let negativePrompt = req.negative_prompt ?? null;
  const requested: { name: string; weight: number; field: string; source: "request" | "prompt" }[] = (
    req.loras ?? []
  ).map((l, i) => ({ name: l.name, weight: l.weight ?? 1, field: `loras.${i}.name`, source: "request" }));
  if (syntax === "a1111") {
    const positive = parseExtraNetworks(prompt);
    prompt = positive.text;
    const tagged = loraTags(positive.tags, "prompt");
    errors.push(...tagged.errors);
    for (const l of tagged.loras) requested.push({ ...l, field: "prompt", source: "prompt" });
    for (const t of tagged.others)
      warnings.push(`prompt: ${t.text} was removed and not applied: sdx has no ${t.type} networks.`);
    if (negativePrompt !== null) {
      const negative = parseExtraNetworks(negativePrompt);
      negativePrompt = negative.text;
      for (const t of negative.tags) {
        warnings.push(
          `negative_prompt: ${t.text} was removed and not applied: extra networks act from the prompt only.`,
        );
      }
    }
  }

  // LoRAs: each a usable file of the model's family, merged into a single-file checkpoint.
  const loras: AdapterInput["loras"] = [];
  const loraReports: AdaptersReport["loras"] = [];
  for (const l of requested) {
    if (model.format !== "safetensors") {
      errors.push({
        field: l.field,
        message: `LoRA "${l.name}" needs a single-file checkpoint (.safetensors); ${model.name} is an ONNX folder, whose graphs sdx cannot merge LoRA weights into`,
      });
      continue;
    }
    let entry: AdapterEntry;
    try {
      entry = (await catalog.resolveAdapter("lora", l.name, l.field)).info;
    } catch (e) {
      const fields = (e as { fields?: FieldError[] }).fields;
      if (!fields) throw e;
      errors.push(...fields);
      continue;
    }
    if (!fitsFamily(entry, model.kind)) {
      errors.push({
        field: l.field,
        message: `LoRA "${l.name}" is for ${entry.family} models; ${model.name} is ${model.kind}`,
      });
      continue;
    }
    loras.push({ name: entry.name, path: entry.path, weight: l.weight });
    loraReports.push({
      name: entry.name,
      sha256: await addnetHash(entry.path),
      weight: l.weight,
      source: l.source,
      modules: entry.details.modules ?? 0,
    });
  }

  // Embeddings: every usable one whose name the prompts use as a word.
  const texts = [prompt, negativePrompt ?? "", req.prompt_2 ?? "", req.negative_prompt_2 ?? ""];
  const embeddings: AdapterInput["embeddings"] = [];
  const embeddingReports: AdaptersReport["embeddings"] = [];
  for (const entry of (await catalog.list()).embedding) {
    const uses = texts.reduce((n, t) => n + (t.match(wordPattern(entry.name))?.length ?? 0), 0);
    if (uses === 0) continue;
    const why = !entry.usable
      ? `it cannot be used: ${entry.reason}`
      : !fitsFamily(entry, model.kind)
        ? `it is for ${entry.family} models and ${model.name} is ${model.kind}`
        : model.format !== "safetensors"
          ? `embeddings need a single-file checkpoint and ${model.name} is an ONNX folder`
          : null;
    if (why) {
      warnings.push(
        `"${entry.name}" in the prompt was read as text, not as the embedding ${entry.file}: ${why}.`,
      );
      continue;
    }
    embeddings.push({ name: entry.name, path: entry.path });
    embeddingReports.push({
      name: entry.name,
      sha256: await catalog.hash(entry),
      vectors: entry.details.vectors ?? 1,
      uses,
    });
  }

  // VAE: the request's, else the sidecar's default; "automatic" means the latter, "none" the model's own VAE
  // whatever the sidecar says (A1111's "None"). See VAE_KEYWORDS.
  const word = req.vae?.toLowerCase();
  const asked = req.vae !== undefined && word !== "automatic" && word !== "none" ? req.vae : null;
  const vaeName = asked ?? (word === "none" ? null : (model.sidecar?.vae ?? null));
  let vae: AdapterInput["vae"] = null;
  let vaeReport: AdaptersReport["vae"] = null;
  if (vaeName !== null) {
    try {
      const resolved = await catalog.resolveAdapter("vae", vaeName.replace(/\.safetensors$/, ""), "vae");
      vae = { name: resolved.name, path: resolved.path };
      vaeReport = { name: resolved.name, sha256: await catalog.hash(resolved.info), default: asked === null };
    } catch (e) {
      const fields = (e as { fields?: FieldError[] }).fields;
      if (!fields) throw e;
      errors.push(
        ...(asked === null
          ? fields.map((f) => ({ ...f, message: `${model.name}'s sidecar names a VAE: ${f.message}` }))
          : fields),
      );
    }
  }
  if (errors.length > 0) throw validationFailed(errors);

  // The weight-override set: the LoRAs in order with their weights, and the embeddings by name.
  const key =
    loras.length + embeddings.length === 0
      ? ""
      : createHash("sha256")
          .update(
            JSON.stringify({
              loras: loraReports.map((l) => [l.sha256, l.weight]),
              embeddings: embeddingReports.map((e) => [e.name, e.sha256]).sort(),
            }),
          )
          .digest("hex")
          .slice(0, 16);
  const short = (hash: string, n: number) => hash.slice(0, n);
  return {
    input: { key, loras, embeddings, vae },
    report: { loras: loraReports, embeddings: embeddingReports, vae: vaeReport },
    prompts: { prompt, negativePrompt },
    infotext: {
      loraHashes: loraReports.length
        ? loraReports.map((l) => `${l.name}: ${short(l.sha256, 12)}`).join(", ")
        : null,
      tiHashes: embeddingReports.length
        ? embeddingReports.map((e) => `${e.name}: ${short(e.sha256, 12)}`).join(", ")
        : null,
      vae: vaeReport ? { name: `${vaeReport.name}.safetensors`, hash: short(vaeReport.sha256, 10) } : null,
    },
    warnings,
  };
}
