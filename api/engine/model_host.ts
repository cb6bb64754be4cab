/**
 * Holds the model the server serves: which one was chosen, its loading state, and the engine worker that
 * owns its onnxruntime sessions. Generations run one at a time, on the worker's thread, never on the HTTP one.
 */
import { ServerMetrics } from "../metrics/service.ts";
import { Admission, type Ticket } from "./admission.ts";
import { type ModelEntry, scanModelsDir } from "./model_folder.ts";
import type { ExecutionProvider } from "./onnx/runtime.ts";
import {
  type GenerateHooks,
  type GenerateInput,
  type GenerateOutput,
  GenerationAborted,
  GenerationFailed,
  type ModelCapabilities,
} from "./pipeline/stable_diffusion.ts";
import { ClipTokenizer } from "./tokenizer/clip.ts";
import { EngineWorker } from "./worker/engine_client.ts";
import type { Offload } from "./worker/protocol.ts";

export type HostState =
  | { status: "no_model"; message: string }
  | { status: "loading"; entry: ModelEntry; message: string }
  | {
      status: "ready";
      entry: ModelEntry;
      capabilities: ModelCapabilities;
      tokenizer: ClipTokenizer;
      loadMs: number;
    }
  | { status: "error"; entry: ModelEntry; message: string };

export class ModelNotFoundError extends Error {
  override name = "ModelNotFoundError";
}

export interface ModelHostOptions {
  modelsDir: string;
  provider: ExecutionProvider;
  /** The model to serve; when absent the only loadable model is chosen. */
  model?: string;
  /** Generations that run at once (default 1). */
  concurrency?: number;
  /** Generations that may wait for a slot (default 16); more are refused at once. */
  maxQueue?: number;
  /** A running generation with no step for this long is reported stuck by /health (default 120 000 ms). */
  stepTimeoutMs?: number;
}

/** A generation holding a slot, as /health sees it. */
interface RunningJob {
  lastProgress: number;
}

export class ModelHost {
  private current: HostState = { status: "no_model", message: "sdx is starting." };
  private worker: EngineWorker | null = null;
  private activeProvider: ExecutionProvider;
  /** Why the host runs on a different provider than it was given, when it does. */
  providerNote: string | null = null;

  readonly admission: Admission;
  readonly metrics: ServerMetrics;
  private readonly jobs = new Set<RunningJob>();
  /** Moving average of recent step times, ms; null before the first step. */
  private stepMsAverage: number | null = null;

  constructor(readonly options: ModelHostOptions) {
    this.activeProvider = options.provider;
    this.metrics = new ServerMetrics(() => this.admission);
    this.admission = new Admission({
      concurrency: options.concurrency ?? 1,
      maxQueue: options.maxQueue ?? 16,
      stepMs: () => this.stepMsAverage,
      onQueuedCancel: () => this.metrics.cancellations.inc({ where: "queued" }),
    });
  }

  /** Recent time of one denoising step, ms (null before any). */
  get stepMs(): number | null {
    return this.stepMsAverage;
  }

  /** The longest time a running generation has gone without a step, ms (0 when none runs). */
  longestStall(now = performance.now()): number {
    let worst = 0;
    for (const job of this.jobs) worst = Math.max(worst, now - job.lastProgress);
    return worst;
  }

  get stepTimeoutMs(): number {
    return this.options.stepTimeoutMs ?? 120_000;
  }

  /** The execution provider the sessions run on. */
  get provider(): ExecutionProvider {
    return this.activeProvider;
  }

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
          ? `No loadable model in ${dir}. Put a Stable Diffusion model there (a single-file .safetensors checkpoint, or an ONNX folder in the layout \`optimum-cli export onnx\` writes), or start the server with --models-dir DIR.`
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
    try {
      this.worker ??= new EngineWorker();
      const { capabilities, tokenizerDir, loadMs, checkpointGraphs } = await this.loadOnWorker(
        this.worker,
        entry,
      );
      if (checkpointGraphs) {
        console.log(
          checkpointGraphs.reused
            ? `sdx: ${entry.name}: reused cached graphs`
            : `sdx: ${entry.name}: built ONNX graphs from the checkpoint in ${Math.round(checkpointGraphs.buildMs)} ms`,
        );
      }
      // The server thread keeps its own tokenizer to check and count prompts without asking the worker.
      const tokenizer = await ClipTokenizer.fromDir(tokenizerDir);
      this.current = { status: "ready", entry, capabilities, tokenizer, loadMs };
      this.metrics.modelLoadSeconds = loadMs / 1000;
    } catch (e) {
      this.current = {
        status: "error",
        entry,
        message: `Model ${entry.name} failed to load: ${(e as Error).message}`,
      };
    }
  }

  /** Loads on the active provider; a CUDA provider that cannot start falls back to the CPU, once, saying why. */
  private async loadOnWorker(worker: EngineWorker, entry: ModelEntry) {
    try {
      return await worker.load(entry, this.activeProvider);
    } catch (e) {
      if (
        this.activeProvider !== "cuda" ||
        !/CUDA execution provider is not available/.test((e as Error).message)
      )
        throw e;
      this.activeProvider = "cpu";
      this.providerNote = `fell back to the CPU: ${(e as Error).message}`;
      console.warn(`sdx: execution provider cpu (${this.providerNote})`);
      return worker.load(entry, this.activeProvider);
    }
  }

  /**
   * Admits a generation of `work` denoising steps: throws AdmissionRefused at once when the queue is full or
   * the server drains. The caller awaits `ticket.started`, runs `execute`, and releases the ticket whatever happens.
   */
  admit(work: number, signal?: AbortSignal): Ticket {
    try {
      return this.admission.enter(work, signal);
    } catch (e) {
      if (e instanceof Error && "reason" in e) this.metrics.rejections.inc({ reason: String(e.reason) });
      throw e;
    }
  }

  /** Runs one generation on the worker; the caller holds a slot (see `admit`). */
  async execute(
    input: GenerateInput,
    hooks: GenerateHooks & { offload?: Offload } = {},
  ): Promise<{ output: GenerateOutput; entry: ModelEntry }> {
    const state = this.current;
    if (state.status !== "ready" || !this.worker) throw new Error(`model is not ready (${state.status})`);
    const job: RunningJob = { lastProgress: performance.now() };
    this.jobs.add(job);
    let last = job.lastProgress;
    try {
      const output = await this.worker.generate(state.entry, input, hooks.offload ?? "none", {
        ...hooks,
        onStep: (event) => {
          const now = performance.now();
          const ms = now - last;
          last = now;
          job.lastProgress = now;
          this.metrics.steps.inc();
          this.metrics.stepSeconds.observe(ms / 1000);
          this.stepMsAverage = this.stepMsAverage === null ? ms : 0.8 * this.stepMsAverage + 0.2 * ms;
          hooks.onStep?.(event);
        },
      });
      this.metrics.images.inc({}, output.images.length);
      return { output, entry: state.entry };
    } catch (e) {
      if (e instanceof GenerationAborted) this.metrics.cancellations.inc({ where: "running" });
      else if (e instanceof GenerationFailed) this.metrics.failures.inc({ stage: e.stage ?? "unknown" });
      throw e;
    } finally {
      this.jobs.delete(job);
    }
  }

  /** Admits, waits for a slot, runs and releases: one generation; `onStart` reports how long it waited. */
  async run(
    input: GenerateInput,
    hooks: GenerateHooks & { onStart?(queueMs: number): void; offload?: Offload } = {},
  ): Promise<{ output: GenerateOutput; entry: ModelEntry }> {
    const enqueued = performance.now();
    const ticket = this.admit(input.numSteps, hooks.signal);
    try {
      await ticket.started;
      hooks.onStart?.(performance.now() - enqueued);
      return await this.execute(input, hooks);
    } finally {
      ticket.release();
    }
  }

  /** Stops the engine worker and with it every onnxruntime session. */
  close(): void {
    this.worker?.terminate();
    this.worker = null;
  }
}
