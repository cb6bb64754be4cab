/**
 * The adapter folders in A1111's shapes: its Lora extension's /sdapi/v1/loras, its embeddings and VAE lists, and
 * its `sd_vae` setting mapped onto sdx's `vae` field. Only usable files are listed, and never a server path.
 */
import {
  A1111_SD_VAE_AUTOMATIC,
  A1111_SD_VAE_NONE,
  type A1111EmbeddingItem,
  type A1111Embeddings,
  type A1111Loras,
  type A1111SdVaes,
  type GenerateResponse,
  type VaeKeyword,
  validationFailed,
} from "../../contract/index.ts";
import type { AdapterEntry } from "../engine/adapters/catalog.ts";
import type { ModelHost } from "../engine/model_host.ts";

/** Metadata values that are JSON objects parsed, as A1111's read_metadata_from_safetensors does. */
function parsedMetadata(metadata: Record<string, string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(metadata)) {
    out[key] = value;
    if (typeof value === "string" && value.startsWith("{")) {
      try {
        out[key] = JSON.parse(value);
      } catch {
        // kept as text, as A1111 keeps it
      }
    }
  }
  return out;
}

/** GET /sdapi/v1/loras: A1111's `{name, alias, path, metadata}` of each usable LoRA. */
export async function listLoras(host: ModelHost): Promise<A1111Loras> {
  const { lora } = await host.adapters.list();
  return lora
    .filter((e) => e.usable)
    .map((e) => ({
      name: e.name,
      alias: e.metadata.ss_output_name || e.name,
      path: e.file,
      metadata: parsedMetadata(e.metadata),
    }));
}

/** POST /sdapi/v1/refresh-loras: reads the folders again (A1111 answers null). */
export async function refreshLoras(host: ModelHost): Promise<void> {
  await host.adapters.refresh();
}

function embeddingItem(e: AdapterEntry): A1111EmbeddingItem {
  return {
    step: e.embedding?.step ?? null,
    sd_checkpoint: e.embedding?.sdCheckpoint ?? null,
    sd_checkpoint_name: e.embedding?.sdCheckpointName ?? null,
    shape: e.embedding?.width ?? 0,
    vectors: e.details.vectors ?? 0,
  };
}

/**
 * GET /sdapi/v1/embeddings: A1111's loaded/skipped split against the default model's family (an embedding of
 * unknown family counts as loaded; with no default model, all do).
 */
export async function listEmbeddings(host: ModelHost): Promise<A1111Embeddings> {
  const { embedding } = await host.adapters.list();
  const state = host.state;
  const kind = "entry" in state ? state.entry.kind : null;
  const loaded: A1111Embeddings["loaded"] = {};
  const skipped: A1111Embeddings["skipped"] = {};
  for (const e of embedding) {
    if (!e.usable) continue;
    const fits = kind === null || e.family === null || e.family === kind;
    (fits ? loaded : skipped)[e.name] = embeddingItem(e);
  }
  return { loaded, skipped };
}

/** GET /sdapi/v1/sd-vae: A1111's SDVaeItem of each usable VAE file, keyed by its file name as A1111 keys it. */
export async function listSdVaes(host: ModelHost): Promise<A1111SdVaes> {
  const { vae } = await host.adapters.list();
  return vae.filter((e) => e.usable).map((e) => ({ model_name: e.file, filename: e.file }));
}

/**
 * A1111's `sd_vae` as sdx's `vae`: "Automatic" → undefined (the field omitted), "None" → "none" (the model's
 * own VAE), a VAE file name (or its stem) → that file's name. A 422 naming `field` for anything else.
 */
export async function resolveSdVae(
  host: ModelHost,
  value: string,
  field: string,
): Promise<string | VaeKeyword | undefined> {
  if (value.toLowerCase() === A1111_SD_VAE_AUTOMATIC.toLowerCase()) return undefined;
  if (value.toLowerCase() === A1111_SD_VAE_NONE.toLowerCase()) return "none";
  const find = (entries: AdapterEntry[]) =>
    entries.find((e) => e.usable && (e.file === value || e.name === value));
  const found = find((await host.adapters.list()).vae) ?? find((await host.adapters.refresh()).vae);
  if (found) return found.name;
  const allowed = [
    A1111_SD_VAE_AUTOMATIC,
    A1111_SD_VAE_NONE,
    ...(await listSdVaes(host)).map((v) => v.model_name),
  ];
  throw validationFailed([
    {
      field,
      message: `no VAE "${value}" in the vae folder; choices: ${allowed.join(", ")} (GET /sdapi/v1/sd-vae lists the files)`,
      allowed,
    },
  ]);
}

/** A1111's sd_vae_name and sd_vae_hash of a generation: the VAE file used instead of the model's own. */
export async function vaeInfo(
  host: ModelHost,
  response: GenerateResponse | null,
): Promise<{ name: string | null; hash: string | null }> {
  const used = response?.metadata.adapters.vae;
  if (!used) return { name: null, hash: null };
  const entry = (await host.adapters.list()).vae.find((e) => e.name === used.name);
  return { name: entry?.file ?? `${used.name}.safetensors`, hash: used.sha256.slice(0, 10) };
}
