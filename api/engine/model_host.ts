/**
 * Holds the model the server serves: which one was chosen, its loading state, and the loaded pipeline.
 * Generations run one at a time on it; onnxruntime runs them on its own threads, off the HTTP thread.
 */
import { type ModelEntry, scanModelsDir } from "./model_folder.ts";
import type { ExecutionProvider } from "./onnx/runtime.ts";
import {
  type GenerateHooks,
  type GenerateInput,
  type GenerateOutput,
  generate,
  loadOnnxPipeline,
  type PipelineComponents,
} from "./pipeline/stable_diffusion.ts";

export type HostState =
  | { status: "no_model"; message: string }
  | { status: "loading"; entry: ModelEntry; message: string }
  | { status: "ready"; entry: ModelEntry; pipeline: PipelineComponents; loadMs: number }
  | { status: "error"; entry: ModelEntry; message: string };

export class ModelNotFoundError extends Error {
  override name = "ModelNotFoundError";
}

export interface ModelHostOptions {
  modelsDir: string;
  provider: ExecutionProvider;
  /** The model to serve; when absent the only loadable model is chosen. */
  model?: string;
}

export class ModelHost {
  private current: HostState = { status: "no_model", message: "sdx is starting." };
  private queue: Promise<unknown> = Promise.resolve();

  constructor(readonly options: ModelHostOptions) {}

  get state(): HostState {
    return this.current;
  }

  list(): Promise<ModelEntry[]> {
    return scanModelsDir(this.options.modelsDir);
  }

  /** Chooses the model and loads it; resolves once loading has finished, successfully or not. */
  async start(): Promise<void> {
    const entry = await this.choose();
    if (entry) await this.load(entry);
  }

  /**
   * The model to serve: the one named by `model` (ModelNotFoundError, naming what exists, when there is
   * none such), else the only loadable one. With none, the state becomes no_model with what to do.
   */
  async choose(): Promise<ModelEntry | null> {
    const entries = await this.list();
    const loadable = entries.filter((e) => e.problem === null);
    const dir = this.options.modelsDir;
    if (this.options.model !== undefined) {
      const entry = entries.find((e) => e.name === this.options.model);
      if (!entry) {
        const names = entries.map((e) => e.name);
        throw new ModelNotFoundError(
          `no model named "${this.options.model}" in ${dir}; ${names.length ? `models there: ${names.join(", ")}` : "that folder holds no models"}`,
        );
      }
      if (entry.problem !== null)
        throw new ModelNotFoundError(`model "${entry.name}" cannot be loaded: ${entry.problem}`);
      return entry;
    }
    const only = loadable[0];
    if (loadable.length === 1 && only) return only;
    this.current = {
      status: "no_model",
      message:
        loadable.length === 0
          ? `No loadable model in ${dir}. Put a Stable Diffusion ONNX folder (the layout \`optimum-cli export onnx\` writes) there, or start the server with --models-dir DIR.`
          : `${loadable.length} models in ${dir} (${loadable.map((e) => e.name).join(", ")}): start the server with --model NAME or SDX_MODEL=NAME to choose one.`,
    };
    return null;
  }

  async load(entry: ModelEntry): Promise<void> {
    this.current = {
      status: "loading",
      entry,
      message: `Model ${entry.name} is loading; try again in a moment.`,
    };
    const t0 = performance.now();
    try {
      const pipeline = await loadOnnxPipeline(entry, this.options.provider);
      this.current = { status: "ready", entry, pipeline, loadMs: performance.now() - t0 };
    } catch (e) {
      this.current = {
        status: "error",
        entry,
        message: `Model ${entry.name} failed to load: ${(e as Error).message}`,
      };
    }
  }

  /** Runs one generation after those already waiting; `onStart` reports how long it waited. */
  run(
    input: GenerateInput,
    hooks: GenerateHooks & { onStart?(queueMs: number): void } = {},
  ): Promise<{ output: GenerateOutput; entry: ModelEntry }> {
    const enqueued = performance.now();
    const job = this.queue.then(async () => {
      const state = this.current;
      if (state.status !== "ready") throw new Error(`model is not ready (${state.status})`);
      hooks.onStart?.(performance.now() - enqueued);
      return { output: await generate(state.pipeline, input, hooks), entry: state.entry };
    });
    this.queue = job.catch(() => undefined);
    return job;
  }
}
