/**
 * The engine worker: a long-lived thread that owns the onnxruntime sessions of the loaded models (the server
 * thread decides which stay loaded), so the server thread never runs tensor math and stays responsive while a
 * generation runs.
 */
import type { ExecutionProvider } from "../../../contract/index.ts";
import { acquireAdapters } from "../adapters/apply.ts";
import { GenerationAborted, GenerationFailed, GenerationInvalid } from "../pipeline/errors.ts";
import { loadOnnxPipeline } from "../pipeline/load.ts";
import { Residency } from "../pipeline/residency.ts";
import { runPipeline } from "../pipeline/run.ts";
import type { LoadOptions, PipelineComponents } from "../pipeline/types.ts";
import { warmUp } from "../pipeline/warmup.ts";
import { PromptSyntaxError } from "../prompt/emphasis.ts";
import type { WorkerErrorKind, WorkerReply, WorkerRequest } from "./protocol.ts";

declare const self: Worker;

interface Loaded {
  components: PipelineComponents;
  residency: Residency;
}

/** The loaded models by name. */
const loaded = new Map<string, Loaded>();
/** CPU sessions of a model, created for its first sequential-CPU-offload request on a GPU server. */
const cpuCopies = new Map<string, Loaded>();
const running = new Map<number, AbortController>();

/** How models load, as the server was told (the same for every model of this worker). */
let loadOptions: LoadOptions = {};

async function load(
  entry: Parameters<typeof loadOnnxPipeline>[0],
  provider: ExecutionProvider,
): Promise<Loaded> {
  const components = await loadOnnxPipeline(entry, provider, loadOptions);
  return { components, residency: new Residency(components) };
}

/** Releases a model's sessions (and its CPU copy's), if it is loaded. */
async function unload(name: string): Promise<void> {
  for (const models of [loaded, cpuCopies]) {
    await models.get(name)?.residency.releaseAll();
    models.delete(name);
  }
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
      loadOptions = request.options;
      await unload(request.entry.name);
      const model = await load(request.entry, request.provider);
      const loadMs = performance.now() - t0;
      loaded.set(request.entry.name, model);
      const warm = request.warmUp ? await warmUp(model.components, { size: request.entry.nativeSize }) : null;
      reply({
        type: "loaded",
        id: request.id,
        capabilities: model.components.capabilities,
        tokenizerDir: model.components.files.tokenizerDir,
        checkpointGraphs: model.components.checkpointGraphs,
        folderAttention: model.components.folderAttention,
        loadMs,
        warmUp: warm ? { ms: warm.ms, size: warm.width } : null,
      });
      return;
    }
    case "unload":
      await unload(request.name);
      reply({ type: "unloaded", id: request.id });
      return;
    case "generate": {
      const model = loaded.get(request.entry.name);
      if (!model) throw new GenerationFailed(`model ${request.entry.name} is not loaded`);
      const controller = new AbortController();
      running.set(request.id, controller);
      // The stage that runs now, so an onnxruntime failure can say where it happened.
      let stage = "prepare";
      try {
        let target = model;
        if (request.offload === "sequential" && model.components.provider !== "cpu") {
          target = cpuCopies.get(request.entry.name) ?? (await load(request.entry, "cpu"));
          cpuCopies.set(request.entry.name, target);
        }
        const enter = target.residency.enterStage(request.offload === "model");
        stage = "adapters";
        const adapters = await acquireAdapters(target.components, target.residency, request.input.adapters);
        let generated: Awaited<ReturnType<typeof runPipeline>>;
        try {
          generated = await runPipeline(target.components, request.input, {
            signal: controller.signal,
            onStep: (event) =>
              reply(
                { type: "step", id: request.id, event },
                (event.previews ?? []).map((p) => p.png.buffer as ArrayBuffer),
              ),
            enterStage: (next) => {
              stage = next;
              return enter(next);
            },
          });
        } finally {
          adapters.release();
        }
        const output = {
          ...generated,
          ...(adapters.cost ? { adapterCost: adapters.cost } : {}),
          ...(adapters.warnings.length ? { adapterWarnings: adapters.warnings } : {}),
        };
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
