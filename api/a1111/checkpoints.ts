/**
 * The models as A1111's checkpoints: its SDModelItem list, its lenient way of naming a checkpoint, and a
 * checkpoint made the server's default.
 */
import { type A1111SdModel, ApiError, type ModelInfo, validationFailed } from "../../contract/index.ts";
import { type ModelHost, ModelLoadFailed } from "../engine/model_host.ts";
import { listModels } from "../engine/models.ts";

function filenameOf(m: ModelInfo): string {
  return m.format === "safetensors" ? `${m.name}.safetensors` : m.name;
}

/** A1111's SDModelItem of a model: title "<file> [<hash10>]" once the hash is known, as A1111 titles it. */
export function sdModelItem(m: ModelInfo): A1111SdModel {
  const filename = filenameOf(m);
  const short = m.hash?.slice(0, 10) ?? null;
  return {
    title: short ? `${filename} [${short}]` : filename,
    model_name: m.name,
    hash: short,
    sha256: m.hash,
    filename,
    config: null,
  };
}

async function loadableModels(host: ModelHost): Promise<ModelInfo[]> {
  return (await listModels(host)).models.filter((m) => m.loadable);
}

export async function listSdModels(host: ModelHost): Promise<A1111SdModel[]> {
  return (await loadableModels(host)).map(sdModelItem);
}

/** The names a model answers to, as A1111's CheckpointInfo.ids. */
function checkpointIds(m: ModelInfo): string[] {
  const item = sdModelItem(m);
  const ids = [m.name, item.filename, item.title];
  if (item.hash && m.hash)
    ids.push(item.hash, m.hash, `${item.filename} [${item.hash}]`, `${m.name} [${item.hash}]`);
  return ids;
}

/**
 * A checkpoint by A1111's lenient rules (sd_models.get_closet_checkpoint_match): any of its ids exactly, else the
 * shortest title containing the text, else the same without a trailing "[hash]". Only the models of GET /v1/models
 * are candidates, so a path never names anything. A 422 naming `field` when nothing matches.
 */
export async function resolveCheckpoint(host: ModelHost, search: string, field: string): Promise<ModelInfo> {
  const models = await loadableModels(host);
  const exact = models.find((m) => checkpointIds(m).includes(search));
  if (exact) return exact;
  const byTitle = (text: string) =>
    models
      .filter((m) => text.length > 0 && sdModelItem(m).title.includes(text))
      .sort((a, b) => sdModelItem(a).title.length - sdModelItem(b).title.length)[0];
  const found = byTitle(search) ?? byTitle(search.replace(/\s*\[[^\]]+\]\s*$/, ""));
  if (found) return found;
  const titles = models.map((m) => sdModelItem(m).title);
  throw validationFailed([
    {
      field,
      message: `no checkpoint matches "${search}"; ${titles.length ? `checkpoints: ${titles.join(", ")}` : "the models folder has none"}`,
      allowed: titles,
    },
  ]);
}

/** The default model as GET /v1/models lists it (with its hash), or undefined when there is none. */
export async function defaultModelInfo(host: ModelHost): Promise<ModelInfo | undefined> {
  const name = host.defaultModel;
  return name === null ? undefined : (await listModels(host)).models.find((m) => m.name === name);
}

/** Makes the model the server's default, loading it; 503 when it cannot load. */
export async function makeDefault(host: ModelHost, name: string): Promise<void> {
  try {
    await host.setDefault(await host.find(name));
  } catch (e) {
    if (e instanceof ModelLoadFailed) throw new ApiError(503, "model_unavailable", e.message);
    throw e;
  }
}
