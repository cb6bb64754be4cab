/**
 * Holds the model the server serves: which one was chosen, its loading state, and the engine worker that
 * owns its onnxruntime sessions. Generations run one at a time, on the worker's thread, never on the HTTP one.
 */

import { type AdapterKind, type ExecutionProvider, SERVER_DEFAULTS } from "../../contract/index.ts";
import { AdapterCatalog, adapterFolders } from "./adapters/catalog.ts";
import { Admission, AdmissionRefused, type RefusalReason, type Ticket } from "./admission.ts";
import type { AttentionVariant } from "./checkpoint/attention_variant.ts";
import type { WeightResidency } from "./checkpoint/weight_residency.ts";
import { cacheDirOf, type ModelEntry, scanModelsDir } from "./model_folder.ts";
import { modelHash } from "./model_hash.ts";
import type { ProviderFallback } from "./onnx/runtime.ts";
import { GenerationAborted, GenerationFailed } from "./pipeline/errors.ts";
import { describeFolderAttention } from "./pipeline/folder_attention.ts";
import type {
  GenerateHooks,
  GenerateInput,
  GenerateOutput,
  LoadOptions,
  ModelCapabilities,
  PreviewImage,
} from "./pipeline/types.ts";
import { ClipTokenizer } from "./tokenizer/clip.ts";
import { EngineWorker } from "./worker/engine_client.ts";
import type { Offload } from "./worker/protocol.ts";

export type HostState =
  | { status: "no_model"; message: string }
  | { status: "loading"; entry: ModelEntry; message: string }
  | ({ status: "ready"; entry: ModelEntry } & LoadedModel)
  /** Chosen but not loaded now (evicted for other models): it loads with the next request that needs it. */
  | { status: "idle"; entry: ModelEntry; message: string }
  | { status: "error"; entry: ModelEntry; message: string };

/** A model whose sessions live in the engine worker. */
export interface LoadedModel {
  entry: ModelEntry;
  capabilities: ModelCapabilities;
  /** The server thread's own tokenizer, to check and count prompts without asking the worker. */
  tokenizer: ClipTokenizer;
  loadMs: number;
  /** SHA-256 of the checkpoint file, or of an ONNX folder's file manifest (see model_hash.ts). */
  hash: string;
}

export const WARM_UP_MODES = ["auto", "on", "off"] as const;
export type WarmUpMode = (typeof WARM_UP_MODES)[number];

export class ModelNotFoundError extends Error {
  override name = "ModelNotFoundError";
}

/** A model that was found but could not be loaded. */
export class ModelLoadFailed extends Error {
  override name = "ModelLoadFailed";
  constructor(
    readonly entry: ModelEntry,
    message: string,
  ) {
    super(message);
  }
}

export interface ModelHostOptions {
  modelsDir: string;
  /** The adapter folders; each missing one is `<modelsDir>/<ADAPTER_FOLDERS[kind]>`. */
  adapterFolders?: Partial<Record<AdapterKind, string>>;
  provider: ExecutionProvider;
  /** The model to serve when a request names none; when absent the only loadable model is chosen. */
  model?: string;
  /** Models kept loaded at once, least recently used evicted first (default: SERVER_DEFAULTS, by provider). */
  maxLoadedModels?: number;
  /**
   * One short generation at the native size right after the startup load, so the first request is not slow
   * (onnxruntime's first-run allocations, cuDNN's algorithm search, WebGPU's shader compiles): "auto" (default)
   * on a GPU provider only.
   */
  warmUp?: WarmUpMode;
  /** How the UNet computes attention, for checkpoints and ONNX folders (default: by provider; see checkpoint/attention_variant.ts). */
  attention?: AttentionVariant;
  /** Which float16 weights float32 checkpoint graphs keep as float32 (default: by provider; see checkpoint/weight_residency.ts). */
  residency?: WeightResidency;
  /** Whether checkpoint graphs compute in float16 (default: on CUDA only; WebGPU where the adapter has shader-f16). */
  float16?: boolean;
  /** Why a GPU provider's graphs stay float32 (WebGPU without shader-f16), for /health. */
  float16Note?: string | null;
  /** The providers passed over at startup and why (chooseProvider's fallbacks), for /health. */
  providerFallbacks?: readonly ProviderFallback[];
  /** Generations that run at once (default: SERVER_DEFAULTS). */
  concurrency?: number;
  /** Generations that may wait for a slot (default: SERVER_DEFAULTS); more are refused at once. */
  maxQueue?: number;
  /** A running generation with no step for this long is reported stuck by /health (default: SERVER_DEFAULTS). */
  stepTimeoutMs?: number;
  /** Where the host says what it did (graphs built, warm-up, a provider fallback); default: nowhere. */
  log?: (line: string) => void;
}

/** What the host reports as it works (the server's metrics listen); every hook is optional. */
export interface HostObserver {
  /** A queued generation's client went away before it started. */
  queuedCancelled?(): void;
  /** A generation was refused at admission. */
  refused?(reason: RefusalReason): void;
  /** A denoising step of a running generation finished, `seconds` after the previous one. */
  stepDone?(seconds: number): void;
  /** A generation finished with `count` images. */
  imagesMade?(count: number): void;
  /** A running generation was stopped (its client went away, or an interrupt). */
  runningCancelled?(): void;
  /** A generation failed in the engine, in this stage. */
  failed?(stage: string): void;
  /** A model loaded, in `seconds`. */
  modelLoaded?(model: string, seconds: number): void;
}

/** A generation running on the engine, as /health and progress reports see it. */
interface RunningJob {
  model: string;
  startedAt: number;
  lastProgress: number;
  step: number;
  total: number;
  /** The latest preview of the batch's first image, when the generation makes previews. */
  preview: PreviewImage | null;
  /** Stops it before its next step (see `interrupt`). */
  controller: AbortController;
}

/** What a running generation has done so far. */
export interface JobProgress {
  model: string;
  step: number;
  /** Steps of the whole run (0 until the first step is reported). */
  total: number;
  elapsedMs: number;
  /** The latest preview of the batch's first image (null until one is made, or when none are asked for). */
  preview: PreviewImage | null;
}

/** A loaded model's place in the cache: generations using it now, and when it was last used. */
interface CacheSlot {
  model: LoadedModel;
  users: number;
  lastUsed: number;
}

/** How long a scan of the models directory is reused before the folder is read again, ms. */
const SCAN_TTL_MS = 2000;

export class ModelHost {
  /** The model a request without `model` gets; null until one is chosen. */
  private defaultName: string | null = null;
  private noModelMessage = "sdx is starting.";
  private readonly cache = new Map<string, CacheSlot>();
  private readonly loading = new Map<string, Promise<LoadedModel>>();
  /** Why each model that failed to load did, until it loads. */
  private readonly failures = new Map<string, string>();
  /** Entries of models chosen or requested, so the state can name them without a scan. */
  private readonly known = new Map<string, ModelEntry>();
  private scanned: { at: number; entries: Promise<ModelEntry[]> } | null = null;
  private worker: EngineWorker | null = null;
  private activeProvider: ExecutionProvider;
  /** Why the host runs on a different provider than it was given, when it does. */
  providerNote: string | null = null;
  private fallback: ProviderFallback | null = null;

  readonly admission: Admission;
  /** The adapter folders' files (LoRAs, embeddings, VAEs). */
  readonly adapters: AdapterCatalog;
  readonly maxLoadedModels: number;
  private readonly observers = new Set<HostObserver>();
  private readonly jobs = new Set<RunningJob>();
  /** Moving average of recent step times, ms; null before the first step. */
  private stepMsAverage: number | null = null;

  constructor(readonly options: ModelHostOptions) {
    this.activeProvider = options.provider;
    this.adapters = new AdapterCatalog({
      folders: adapterFolders(options.modelsDir, options.adapterFolders),
      cacheDir: cacheDirOf(options.modelsDir),
    });
    const { maxLoadedModels } = SERVER_DEFAULTS;
    this.maxLoadedModels =
      options.maxLoadedModels ?? (options.provider === "cpu" ? maxLoadedModels.cpu : maxLoadedModels.gpu);
    this.admission = new Admission({
      concurrency: options.concurrency ?? SERVER_DEFAULTS.concurrency,
      maxQueue: options.maxQueue ?? SERVER_DEFAULTS.maxQueue,
      stepMs: () => this.stepMsAverage,
      onQueuedCancel: () => this.notify((o) => o.queuedCancelled?.()),
    });
  }

  /** Adds an observer of what the host does; returns the function that removes it. */
  observe(observer: HostObserver): () => void {
    this.observers.add(observer);
    return () => this.observers.delete(observer);
  }

  private notify(event: (observer: HostObserver) => void): void {
    for (const observer of this.observers) event(observer);
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
    return this.options.stepTimeoutMs ?? SERVER_DEFAULTS.stepTimeoutS * 1000;
  }

  private log(line: string): void {
    this.options.log?.(line);
  }

  /** The execution provider the sessions run on. */
  get provider(): ExecutionProvider {
    return this.activeProvider;
  }

  /** Where model hashes and built graphs are cached. */
  get cacheDir(): string {
    return cacheDirOf(this.options.modelsDir);
  }

  /** The default model's state: what a request without `model` meets, and what /health reports. */
  get state(): HostState {
    const name = this.defaultName;
    if (name === null) return { status: "no_model", message: this.noModelMessage };
    const slot = this.cache.get(name);
    if (slot) return { status: "ready", ...slot.model };
    const entry = this.known.get(name);
    if (!entry) return { status: "no_model", message: this.noModelMessage };
    const failure = this.failures.get(name);
    if (failure !== undefined) return { status: "error", entry, message: failure };
    if (this.loading.has(name))
      return { status: "loading", entry, message: `Model ${name} is loading; try again in a moment.` };
    return {
      status: "idle",
      entry,
      message: `Serving ${name} (not loaded now: the ${this.maxLoadedModels} most recently used models stay loaded; it loads with the next request that needs it).`,
    };
  }

  /** The name of the default model, or null. */
  get defaultModel(): string | null {
    return this.defaultName;
  }

  /** Names of the models loaded now, most recently used first. */
  get loadedModels(): string[] {
    return [...this.cache.entries()].sort((a, b) => b[1].lastUsed - a[1].lastUsed).map(([name]) => name);
  }

  /** The loaded model of that name, without loading anything. */
  loadedModel(name: string): LoadedModel | null {
    return this.cache.get(name)?.model ?? null;
  }

  /** The models in the models directory (a scan at most every couple of seconds). */
  list(options: { fresh?: boolean } = {}): Promise<ModelEntry[]> {
    const now = performance.now();
    if (options.fresh || !this.scanned || now - this.scanned.at > SCAN_TTL_MS) {
      this.scanned = { at: now, entries: scanModelsDir(this.options.modelsDir) };
    }
    return this.scanned.entries;
  }

  /**
   * The entry of a model to serve, by name: ModelNotFoundError naming what exists when there is none such, or
   * when it cannot be loaded. The folder is read again before a name is declared unknown.
   */
  async find(name: string): Promise<ModelEntry> {
    let entries = await this.list();
    let entry = entries.find((e) => e.name === name);
    if (!entry) {
      entries = await this.list({ fresh: true });
      entry = entries.find((e) => e.name === name);
    }
    if (!entry) {
      const names = entries.map((e) => e.name);
      throw new ModelNotFoundError(
        `no model named "${name}" in ${this.options.modelsDir}; ${names.length ? `models there: ${names.join(", ")}` : "that folder holds no models"}`,
      );
    }
    if (entry.problem !== null)
      throw new ModelNotFoundError(`model "${entry.name}" cannot be loaded: ${entry.problem}`);
    this.known.set(entry.name, entry);
    return entry;
  }

  /** Chooses the default model and loads it; resolves once loading has finished, successfully or not. */
  async start(): Promise<void> {
    const entry = await this.choose();
    if (entry) await this.load(entry);
  }

  /**
   * The default model: the one named by `model` (ModelNotFoundError, naming what exists, when there is none
   * such), else the only loadable one. With none, the state becomes no_model with what to do.
   */
  async choose(): Promise<ModelEntry | null> {
    if (this.options.model !== undefined) {
      const entry = await this.find(this.options.model);
      this.defaultName = entry.name;
      return entry;
    }
    const loadable = (await this.list({ fresh: true })).filter((e) => e.problem === null);
    const dir = this.options.modelsDir;
    const only = loadable[0];
    if (loadable.length === 1 && only) {
      this.known.set(only.name, only);
      this.defaultName = only.name;
      return only;
    }
    this.noModelMessage =
      loadable.length === 0
        ? `No loadable model in ${dir}. Put a Stable Diffusion model there (a single-file .safetensors checkpoint, or an ONNX folder in the layout \`optimum-cli export onnx\` writes), download one (\`sdx models pull NAME\` or POST /v1/models/pull; \`sdx models catalog\` lists ready ones), or start the server with --models-dir DIR.`
        : `${loadable.length} models in ${dir} (${loadable.map((e) => e.name).join(", ")}): send "model" with each request, or start the server with --model NAME or SDX_MODEL=NAME to choose a default.`;
    return null;
  }

  /** Makes `entry` the default model and loads it; failures are kept in the state, not thrown. */
  async load(entry: ModelEntry): Promise<void> {
    this.known.set(entry.name, entry);
    this.defaultName = entry.name;
    try {
      const model = await this.acquire(entry, { warmUp: this.warmsUp });
      this.release(model);
    } catch {
      // The state says why (status "error").
    }
  }

  /**
   * The model loaded and pinned for one generation: loaded on demand (one load shared by every request
   * that waits for it), least recently used idle models evicted to stay within `maxLoadedModels`. Every
   * acquire is paired with a `release`. A model that fails to load throws ModelLoadFailed.
   */
  async acquire(entry: ModelEntry, options: { warmUp?: boolean } = {}): Promise<LoadedModel> {
    this.known.set(entry.name, entry);
    const slot = this.cache.get(entry.name);
    if (slot) {
      slot.users++;
      slot.lastUsed = performance.now();
      return slot.model;
    }
    let pending = this.loading.get(entry.name);
    if (!pending) {
      pending = this.loadModel(entry, options.warmUp ?? false).finally(() => this.loading.delete(entry.name));
      this.loading.set(entry.name, pending);
    }
    const model = await pending;
    return this.acquire(model.entry);
  }

  /** Unpins a model acquired for a generation, evicting idle models beyond the cache's bound. */
  release(model: LoadedModel): void {
    const slot = this.cache.get(model.entry.name);
    if (slot && slot.model === model) slot.users = Math.max(0, slot.users - 1);
    void this.evict();
  }

  private async evict(keep: number = this.maxLoadedModels): Promise<void> {
    const idle = [...this.cache.entries()]
      .filter(([, slot]) => slot.users === 0)
      .sort((a, b) => a[1].lastUsed - b[1].lastUsed);
    let excess = this.cache.size - keep;
    for (const [name] of idle) {
      if (excess <= 0) break;
      this.cache.delete(name);
      excess--;
      await this.worker?.unload(name).catch(() => {});
    }
  }

  private get loadOptions(): LoadOptions {
    const precision =
      this.options.float16 === undefined || this.activeProvider === "cpu"
        ? {}
        : { precision: this.options.float16 ? ("float16" as const) : ("float32" as const) };
    return {
      ...(this.options.attention ? { attention: this.options.attention } : {}),
      ...(this.options.residency ? { residency: this.options.residency } : {}),
      ...precision,
    };
  }

  /** The providers passed over, at startup and by a load that fell back to the CPU. */
  get providerFallbacks(): ProviderFallback[] {
    const startup = [...(this.options.providerFallbacks ?? [])];
    return this.fallback ? [...startup, this.fallback] : startup;
  }

  /** Whether the startup load is followed by a warm-up generation. */
  private get warmsUp(): boolean {
    const mode = this.options.warmUp ?? "auto";
    return mode === "on" || (mode === "auto" && this.activeProvider !== "cpu");
  }

  private async loadModel(entry: ModelEntry, warmUp: boolean): Promise<LoadedModel> {
    this.failures.delete(entry.name);
    // Make room first, so a full cache never holds one model more than its bound while this one loads.
    await this.evict(this.maxLoadedModels - 1);
    try {
      this.worker ??= new EngineWorker();
      const hashing = modelHash(entry, this.cacheDir);
      const loaded = await this.loadOnWorker(this.worker, entry, warmUp);
      const { capabilities, tokenizerDir, loadMs, checkpointGraphs, folderAttention } = loaded;
      if (folderAttention) this.log(describeFolderAttention(entry.name, folderAttention));
      if (checkpointGraphs) {
        this.log(
          checkpointGraphs.reused
            ? `sdx: ${entry.name}: reused cached graphs`
            : `sdx: ${entry.name}: built ONNX graphs from the checkpoint in ${Math.round(checkpointGraphs.buildMs)} ms`,
        );
      }
      if (loaded.warmUp) {
        const { ms, size } = loaded.warmUp;
        this.log(`sdx: ${entry.name}: warmed up at ${size}×${size} in ${Math.round(ms)} ms`);
      }
      const tokenizer = await ClipTokenizer.fromDir(tokenizerDir);
      const model: LoadedModel = { entry, capabilities, tokenizer, loadMs, hash: await hashing };
      this.cache.set(entry.name, { model, users: 0, lastUsed: performance.now() });
      this.notify((o) => o.modelLoaded?.(entry.name, loadMs / 1000));
      return model;
    } catch (e) {
      const message = `Model ${entry.name} failed to load: ${(e as Error).message}`;
      this.failures.set(entry.name, message);
      throw new ModelLoadFailed(entry, message);
    }
  }

  /** Loads on the active provider; a GPU provider that cannot start falls back to the CPU, once, saying why. */
  private async loadOnWorker(worker: EngineWorker, entry: ModelEntry, warmUp: boolean) {
    try {
      return await worker.load(entry, this.activeProvider, warmUp, this.loadOptions);
    } catch (e) {
      const failed = this.activeProvider;
      if (failed === "cpu" || !/(CUDA|WebGPU) execution provider is not available/.test((e as Error).message))
        throw e;
      this.activeProvider = "cpu";
      this.fallback = { provider: failed, reason: (e as Error).message };
      this.providerNote = `fell back to the CPU: ${(e as Error).message}`;
      this.log(`sdx: execution provider cpu (${this.providerNote})`);
      // "auto" warms up on a GPU only.
      return worker.load(
        entry,
        this.activeProvider,
        warmUp && this.options.warmUp === "on",
        this.loadOptions,
      );
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
      if (e instanceof AdmissionRefused) this.notify((o) => o.refused?.(e.reason));
      throw e;
    }
  }

  /** Runs one generation on the worker; the caller holds a slot (see `admit`) and the model (see `acquire`). */
  async execute(
    model: LoadedModel,
    input: GenerateInput,
    hooks: GenerateHooks & { offload?: Offload } = {},
  ): Promise<{ output: GenerateOutput; entry: ModelEntry }> {
    if (!this.worker || this.cache.get(model.entry.name)?.model !== model)
      throw new Error(`model ${model.entry.name} is not loaded`);
    const now = performance.now();
    const job: RunningJob = {
      model: model.entry.name,
      startedAt: now,
      lastProgress: now,
      step: 0,
      total: 0,
      preview: null,
      controller: new AbortController(),
    };
    this.jobs.add(job);
    let last = job.lastProgress;
    const signal = hooks.signal
      ? AbortSignal.any([hooks.signal, job.controller.signal])
      : job.controller.signal;
    try {
      const output = await this.worker.generate(model.entry, input, hooks.offload ?? "none", {
        ...hooks,
        signal,
        onStep: (event) => {
          const now = performance.now();
          const ms = now - last;
          last = now;
          job.lastProgress = now;
          job.step = event.step;
          job.total = event.total;
          job.preview = event.previews?.find((p) => p.image === 0) ?? job.preview;
          this.notify((o) => o.stepDone?.(ms / 1000));
          this.stepMsAverage = this.stepMsAverage === null ? ms : 0.8 * this.stepMsAverage + 0.2 * ms;
          hooks.onStep?.(event);
        },
      });
      this.notify((o) => o.imagesMade?.(output.images.length));
      return { output, entry: model.entry };
    } catch (e) {
      if (e instanceof GenerationAborted) this.notify((o) => o.runningCancelled?.());
      else if (e instanceof GenerationFailed) this.notify((o) => o.failed?.(e.stage ?? "unknown"));
      throw e;
    } finally {
      this.jobs.delete(job);
    }
  }

  /** The generations running now, oldest first. */
  progress(now = performance.now()): JobProgress[] {
    return [...this.jobs].map((job) => ({
      model: job.model,
      step: job.step,
      total: job.total,
      elapsedMs: now - job.startedAt,
      preview: job.preview,
    }));
  }

  /** Stops every running generation before its next step (they fail as cancelled); returns how many. */
  interrupt(): number {
    for (const job of this.jobs) job.controller.abort();
    return this.jobs.size;
  }

  /** Makes the model the default for requests that name none, loading it; throws ModelLoadFailed. */
  async setDefault(entry: ModelEntry): Promise<void> {
    const model = await this.acquire(entry);
    this.defaultName = entry.name;
    this.release(model);
  }

  /** Stops the engine worker and with it every onnxruntime session. */
  close(): void {
    this.worker?.terminate();
    this.worker = null;
    this.cache.clear();
  }
}
