import type { ModelHost } from "../engine/model_host.ts";
import { onnxruntimeVersion } from "../engine/onnx/runtime.ts";
import { VERSION } from "../version.ts";
import type { Health } from "./model.ts";

export function health(host: ModelHost): Health {
  const state = host.state;
  const common = {
    execution_provider: host.provider,
    version: VERSION,
    onnxruntime_version: onnxruntimeVersion,
  };
  if (state.status === "no_model")
    return { status: "no_model", message: state.message, model: null, ...common };
  const model = { name: state.entry.name, kind: state.entry.kind };
  if (state.status === "ready") {
    return {
      status: "ok",
      message: `Serving ${state.entry.name} on ${host.provider} (loaded in ${Math.round(state.loadMs)} ms).${host.providerNote ? ` The CUDA provider ${host.providerNote}.` : ""}`,
      model,
      ...common,
    };
  }
  return { status: state.status, message: state.message, model, ...common };
}
