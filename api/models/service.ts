import type { ModelHost } from "../engine/model_host.ts";
import { ApiError } from "../errors.ts";
import type { ModelList } from "./model.ts";

export async function listModels(host: ModelHost): Promise<ModelList> {
  const state = host.state;
  const served = state.status === "ready" ? state.entry.name : null;
  const entries = await host.list();
  return {
    models_dir: host.options.modelsDir,
    models: entries.map((e) => ({
      name: e.name,
      format: e.format,
      kind: e.kind,
      pipeline_class: e.pipelineClass,
      size_bytes: e.sizeBytes,
      native_size: e.nativeSize,
      size_multiple: e.sizeMultiple,
      loadable: e.problem === null,
      problem: e.problem,
      loaded: e.name === served,
      sidecar: e.sidecar,
    })),
  };
}

/** The 503 a request for the model gets while none is ready, with the sentence /health shows. */
export function requireReady(host: ModelHost) {
  const state = host.state;
  if (state.status === "ready") return state;
  if (state.status === "loading") throw new ApiError(503, "model_loading", state.message);
  if (state.status === "error") throw new ApiError(503, "model_unavailable", state.message);
  throw new ApiError(503, "no_model", state.message);
}
