/**
 * Models as requests see them: the list GET /v1/models answers (A1111's checkpoint list is built from it), the
 * model a request names (or the default one), and a model pinned for one use. Every feature that takes a
 * `model` resolves it here, so all of them answer the same 422s and 503s.
 */
import { ApiError, type ModelList, validationFailed } from "../../contract/index.ts";
import type { ModelEntry } from "./model_folder.ts";
import { cachedModelHash } from "./model_hash.ts";
import { type LoadedModel, type ModelHost, ModelLoadFailed, ModelNotFoundError } from "./model_host.ts";

export async function listModels(host: ModelHost): Promise<ModelList> {
  const loaded = new Set(host.loadedModels);
  const entries = await host.list({ fresh: true });
  const hashes = await Promise.all(
    entries.map((e) => host.loadedModel(e.name)?.hash ?? cachedModelHash(e, host.cacheDir)),
  );
  return {
    models_dir: host.options.modelsDir,
    default_model: host.defaultModel,
    max_loaded_models: host.maxLoadedModels,
    models: entries.map((e, i) => ({
      name: e.name,
      format: e.format,
      kind: e.kind,
      pipeline_class: e.pipelineClass,
      size_bytes: e.sizeBytes,
      native_size: e.nativeSize,
      size_multiple: e.sizeMultiple,
      loadable: e.problem === null,
      problem: e.problem,
      loaded: loaded.has(e.name),
      default: e.name === host.defaultModel,
      hash: hashes[i] ?? null,
      sidecar: e.sidecar,
    })),
  };
}

/**
 * The model a request asks for: the named one (a 422 naming `field` and the loadable names when there is no
 * such model), else the default one (503 with the sentence /health shows when there is none, or it failed).
 */
export async function requestedModel(
  host: ModelHost,
  name: string | undefined,
  field = "model",
): Promise<ModelEntry> {
  if (name === undefined) {
    const state = host.state;
    if (state.status === "no_model") throw new ApiError(503, "no_model", state.message);
    if (state.status === "error") throw new ApiError(503, "model_unavailable", state.message);
    return state.entry;
  }
  try {
    return await host.find(name);
  } catch (e) {
    if (!(e instanceof ModelNotFoundError)) throw e;
    const allowed = (await host.list()).filter((m) => m.problem === null).map((m) => m.name);
    throw validationFailed([{ field, message: e.message, allowed }]);
  }
}

/**
 * Runs `use` with the model loaded and pinned (loading it first when needed); a model that fails to load is
 * a 503 `model_unavailable` saying why.
 */
export async function withModel<T>(
  host: ModelHost,
  entry: ModelEntry,
  use: (model: LoadedModel) => T | Promise<T>,
): Promise<T> {
  let model: LoadedModel;
  try {
    model = await host.acquire(entry);
  } catch (e) {
    if (e instanceof ModelLoadFailed) throw new ApiError(503, "model_unavailable", e.message);
    throw e;
  }
  try {
    return await use(model);
  } finally {
    host.release(model);
  }
}
