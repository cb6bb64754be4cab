/**
 * The engine worker: a long-lived thread that owns the onnxruntime sessions of the loaded model, so the
 * server thread never runs tensor math and stays responsive while a generation runs.
 */
import {
  GenerationAborted,
  GenerationFailed,
  GenerationInvalid,
  generate,
  loadOnnxPipeline,
  type PipelineComponents,
  releasePipeline,
} from "../pipeline/stable_diffusion.ts";
import { PromptSyntaxError } from "../prompt/attention.ts";
import type { WorkerErrorKind, WorkerReply, WorkerRequest } from "./protocol.ts";

declare const self: Worker;

let pipeline: PipelineComponents | null = null;
const running = new Map<number, AbortController>();

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
      if (pipeline) await releasePipeline(pipeline);
      pipeline = null;
      pipeline = await loadOnnxPipeline(request.entry, request.provider);
      reply({
        type: "loaded",
        id: request.id,
        capabilities: pipeline.capabilities,
        loadMs: performance.now() - t0,
      });
      return;
    }
    case "generate": {
      if (!pipeline) throw new GenerationFailed("no model is loaded");
      const controller = new AbortController();
      running.set(request.id, controller);
      try {
        const output = await generate(pipeline, request.input, {
          signal: controller.signal,
          onStep: (event) => reply({ type: "step", id: request.id, event }),
        });
        reply(
          { type: "generated", id: request.id, output },
          output.images.map((image) => image.png.buffer as ArrayBuffer),
        );
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
    });
  });
};
