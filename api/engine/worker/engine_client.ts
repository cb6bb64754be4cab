/** The server thread's handle on the engine worker: promise-returning calls, step events and cancellation. */
import type { ExecutionProvider } from "../../../contract/index.ts";
import type { ModelEntry } from "../model_folder.ts";
import { GenerationAborted, GenerationFailed, GenerationInvalid } from "../pipeline/errors.ts";
import type { GenerateHooks, GenerateInput, GenerateOutput, LoadOptions } from "../pipeline/types.ts";
import type { Offload, WorkerReply, WorkerRequest } from "./protocol.ts";

interface Pending {
  resolve(reply: WorkerReply): void;
  reject(error: Error): void;
  onStep?: GenerateHooks["onStep"];
}

export class EngineWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private crashed: Error | null = null;

  constructor() {
    this.worker = new Worker(new URL("./engine_worker.ts", import.meta.url).href);
    this.worker.onmessage = (event: MessageEvent<WorkerReply>) => this.receive(event.data);
    this.worker.onerror = (event) => {
      this.crashed = new GenerationFailed(`the engine worker crashed: ${event.message}`);
      for (const p of this.pending.values()) p.reject(this.crashed);
      this.pending.clear();
    };
  }

  private receive(message: WorkerReply): void {
    const pending = this.pending.get(message.id);
    if (!pending) return;
    if (message.type === "step") {
      pending.onStep?.(message.event);
      return;
    }
    this.pending.delete(message.id);
    if (message.type !== "error") {
      pending.resolve(message);
      return;
    }
    pending.reject(
      message.kind === "aborted"
        ? new GenerationAborted(message.message)
        : message.kind === "invalid"
          ? new GenerationInvalid(message.message)
          : new GenerationFailed(message.message, message.stage),
    );
  }

  private call(request: WorkerRequest, onStep?: GenerateHooks["onStep"]): Promise<WorkerReply> {
    if (this.crashed) return Promise.reject(this.crashed);
    return new Promise((resolve, reject) => {
      this.pending.set(request.id, { resolve, reject, ...(onStep ? { onStep } : {}) });
      this.worker.postMessage(request);
    });
  }

  /** Loads a model's sessions; `warmUp` runs one short generation at its native size right after. */
  async load(
    entry: ModelEntry,
    provider: ExecutionProvider,
    warmUp = false,
    options: LoadOptions = {},
  ): Promise<Omit<Extract<WorkerReply, { type: "loaded" }>, "type" | "id">> {
    const reply = await this.call({ type: "load", id: this.nextId++, entry, provider, warmUp, options });
    if (reply.type !== "loaded") throw new GenerationFailed(`unexpected reply ${reply.type} to load`);
    const { type: _type, id: _id, ...loaded } = reply;
    return loaded;
  }

  /** Releases a model's sessions in the worker. */
  async unload(name: string): Promise<void> {
    const reply = await this.call({ type: "unload", id: this.nextId++, name });
    if (reply.type !== "unloaded") throw new GenerationFailed(`unexpected reply ${reply.type} to unload`);
  }

  async generate(
    entry: ModelEntry,
    input: GenerateInput,
    offload: Offload,
    hooks: GenerateHooks = {},
  ): Promise<GenerateOutput> {
    const id = this.nextId++;
    const { signal } = hooks;
    if (signal?.aborted) throw new GenerationAborted("generation cancelled");
    const onAbort = () => this.worker.postMessage({ type: "cancel", id } satisfies WorkerRequest);
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const reply = await this.call({ type: "generate", id, input, entry, offload }, hooks.onStep);
      if (reply.type !== "generated")
        throw new GenerationFailed(`unexpected reply ${reply.type} to generate`);
      return reply.output;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  terminate(): void {
    this.worker.terminate();
  }
}
