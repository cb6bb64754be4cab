import type { Health } from "../../contract/index.ts";
import { VERSION } from "../../lib/version.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { gpuInfo, vulkanDevice } from "../engine/onnx/gpu_info.ts";
import { onnxruntimeVersion } from "../engine/onnx/runtime.ts";

/** The health body; `unhealthy` (answered 503) while draining or while a generation is stuck. */
export async function health(host: ModelHost): Promise<{ body: Health; unhealthy: boolean }> {
  const state = host.state;
  const { admission } = host;
  const gpu = host.provider === "cuda" ? await gpuInfo() : null;
  const vulkan = host.provider === "webgpu" ? await vulkanDevice() : null;
  const common = {
    gpu: gpu && {
      index: gpu.index,
      name: gpu.name,
      memory_total_mib: gpu.memoryTotalMiB,
      memory_used_mib: gpu.memoryUsedMiB,
      driver_version: gpu.driverVersion,
    },
    provider_fallbacks: host.providerFallbacks,
    webgpu:
      host.provider === "webgpu"
        ? {
            adapter: vulkan && {
              name: vulkan.name,
              type: vulkan.type,
              driver: vulkan.driver,
              vulkan_version: vulkan.apiVersion,
            },
            float16: host.options.float16 === true,
            note: host.options.float16Note ?? null,
          }
        : null,
    execution_provider: host.provider,
    version: VERSION,
    onnxruntime_version: onnxruntimeVersion,
    loaded_models: host.loadedModels,
    queue: {
      running: admission.running,
      queued: admission.queued,
      concurrency: admission.options.concurrency,
      max_queue: admission.options.maxQueue,
    },
  };
  const model = state.status === "no_model" ? null : { name: state.entry.name, kind: state.entry.kind };
  if (admission.draining) {
    const message = `Draining for shutdown: ${admission.running} running and ${admission.queued} queued generations finish; new ones are refused.`;
    return { body: { status: "draining", message, model, ...common }, unhealthy: true };
  }
  const stall = host.longestStall();
  if (stall > host.stepTimeoutMs) {
    const message = `A generation has made no progress for ${Math.round(stall / 1000)} s (step timeout ${Math.round(host.stepTimeoutMs / 1000)} s); the engine looks stuck.`;
    return { body: { status: "stuck", message, model, ...common }, unhealthy: true };
  }
  if (state.status === "no_model")
    return { body: { status: "no_model", message: state.message, model: null, ...common }, unhealthy: false };
  const failed = host.providerFallbacks.at(-1);
  const note = host.providerNote && failed ? ` The ${failed.provider} provider ${host.providerNote}.` : "";
  if (state.status === "ready") {
    return {
      body: {
        status: "ok",
        message: `Serving ${state.entry.name} on ${host.provider} (loaded in ${Math.round(state.loadMs)} ms).${note}`,
        model,
        ...common,
      },
      unhealthy: false,
    };
  }
  if (state.status === "idle")
    return { body: { status: "ok", message: `${state.message}${note}`, model, ...common }, unhealthy: false };
  return { body: { status: state.status, message: state.message, model, ...common }, unhealthy: false };
}
