/**
 * The engine worker: a long-lived thread that owns the onnxruntime sessions of the loaded model, so the
 * server thread never runs tensor math and stays responsive while a generation runs.
 */
import type { ExecutionProvider } from "../onnx/runtime.ts";
import { Residency } from "../pipeline/residency.ts";
import {
  GenerationAborted,
  GenerationFailed,
  GenerationInvalid,
  generate,
  loadOnnxPipeline,
  type PipelineComponents,
} from "../pipeline/stable_diffusion.ts";
import { PromptSyntaxError } from "../prompt/attention.ts";
import type { WorkerErrorKind, WorkerReply, WorkerRequest } from "./protocol.ts";

declare const self: Worker;

interface Loaded {
  components: PipelineComponents;
  residency: Residency;
}

let loaded: Loaded | null = null;
/** CPU sessions of the same model, created for the first sequential-CPU-offload request on a GPU server. */
let cpuCopy: Loaded | null = null;
const running = new Map<number, AbortController>();

async function load(
  entry: Parameters<typeof loadOnnxPipeline>[0],
  provider: ExecutionProvider,
): Promise<Loaded> {
  const components = await loadOnnxPipeline(entry, provider);
  return { components, residency: new Residency(components) };
}

function reply(message: WorkerReply, transfer: ArrayBuffer[] = []): void {
  self.postMessage(message, transfer);
}

function errorKind(e: unknown): WorkerErrorKind {
  if (e instanceof GenerationAborted) return "aborted";
  if (e instanceof GenerationInvalid || e instanceof PromptSyntaxError) return "invalid";
  return "failed";
}

async function handle(request: WorkerRequest): Promise<void> {
  switch (request.type) {
    case "load": {
      const t0 = performance.now();
      for (const old of [loaded, cpuCopy]) await old?.residency.releaseAll();
      loaded = null;
      cpuCopy = null;
      loaded = await load(request.entry, request.provider);
      reply({
        type: "loaded",
        id: request.id,
        capabilities: loaded.components.capabilities,
        tokenizerDir: loaded.components.files.tokenizerDir,
        checkpointGraphs: loaded.components.checkpointGraphs,
        loadMs: performance.now() - t0,
      });
      return;
    }
    case "generate": {
      if (!loaded) throw new GenerationFailed("no model is loaded");
      const controller = new AbortController();
      running.set(request.id, controller);
      // The stage that runs now, so an onnxruntime failure can say where it happened.
      let stage = "prepare";
      try {
        let target = loaded;
        if (request.offload === "sequential" && loaded.components.provider !== "cpu") {
          cpuCopy ??= await load(request.entry, "cpu");
          target = cpuCopy;
        }
        const enter = target.residency.enterStage(request.offload === "model");
        const output = await generate(target.components, request.input, {
          signal: controller.signal,
          onStep: (event) => reply({ type: "step", id: request.id, event }),
          enterStage: (next) => {
            stage = next;
            return enter(next);
          },
        });
        reply(
          { type: "generated", id: request.id, output },
          output.images.map((image) => image.png.buffer as ArrayBuffer),
        );
      } catch (e) {
        if (errorKind(e) !== "failed" || (e instanceof GenerationFailed && e.stage !== null)) throw e;
        throw new GenerationFailed(e instanceof Error ? e.message : String(e), stage);
      } finally {
        running.delete(request.id);
      }
      return;
    }
    case "cancel":
      running.get(request.id)?.abort();
      return;
  }
}

self.onmessage = (event: MessageEvent<WorkerRequest>) => {
  const request = event.data;
  handle(request).catch((e: unknown) => {
    reply({
      type: "error",
      id: request.id,
      kind: errorKind(e),
      message: e instanceof Error ? e.message : String(e),
      stage: e instanceof GenerationFailed ? e.stage : null,
    });
  });
};
