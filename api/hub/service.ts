/**
 * The online catalog and pulls from the Hugging Face hub, for the API: what is installed, one download per
 * model (or preview decoder) however many requests ask for it, and the engine's hub errors as API errors.
 */
import { basename, extname } from "node:path";
import {
  ApiError,
  type ModelCatalog,
  PullNameError,
  type PullRequest,
  type PullResult as PullResultBody,
} from "../../contract/index.ts";
import { pathExists } from "../../lib/fs/exists.ts";
import { CATALOG, type PullTarget, resolvePullName } from "../engine/hub/catalog.ts";
import { HubError } from "../engine/hub/errors.ts";
import { DEFAULT_HUB_ENDPOINT, type HubOptions } from "../engine/hub/hub_api.ts";
import { type PullProgress, type PullResult, pullModel, pullPlacement } from "../engine/hub/pull.ts";
import type { ModelHost } from "../engine/model_host.ts";

/** Where pulls come from; createApp passes what api/config.ts read from HF_ENDPOINT and HF_TOKEN. */
export interface HubSettings {
  endpoint?: string | undefined;
  token?: string | undefined;
  /** Download tuning (tests make retries quick). */
  retryDelayMs?: number;
  stallTimeoutMs?: number;
}

export type ProgressListener = (progress: PullProgress) => void;

interface RunningPull {
  target: PullTarget;
  result: Promise<PullResult>;
  controller: AbortController;
  listeners: Set<ProgressListener>;
  waiters: number;
  last: PullProgress | null;
}

/** An engine HubError as the API's error. */
export function hubApiError(e: unknown): unknown {
  if (!(e instanceof HubError)) return e;
  switch (e.kind) {
    case "exists":
      return new ApiError(409, "model_exists", e.message);
    case "busy":
      return new ApiError(409, "download_busy", e.message);
    case "not_found":
      return new ApiError(404, "hub_not_found", e.message);
    case "forbidden":
      return new ApiError(403, "hub_forbidden", e.message);
    case "unreachable":
      return new ApiError(502, "hub_unreachable", e.message);
    case "not_onnx":
      return new ApiError(422, "hub_not_onnx", e.message);
    case "no_space":
      return new ApiError(507, "insufficient_storage", e.message);
    default:
      return new ApiError(502, "download_failed", e.message);
  }
}

function cancelled(): ApiError {
  return new ApiError(499, "cancelled", "the pull was cancelled; pull again to resume it");
}

/** Pulls of one name into one kind of place share a download. */
const runKey = (target: Pick<PullTarget, "folder" | "destination">) =>
  `${target.destination.type}:${target.folder}`;

export class HubService {
  private readonly running = new Map<string, RunningPull>();

  constructor(
    private readonly host: ModelHost,
    private readonly settings: HubSettings = {},
  ) {}

  get endpoint(): string {
    return (this.settings.endpoint || DEFAULT_HUB_ENDPOINT).replace(/\/+$/, "");
  }

  private get modelsDir(): string {
    return this.host.options.modelsDir;
  }

  /** Where `target` lands, and what it creates there. */
  private placement(target: Pick<PullTarget, "folder" | "destination">) {
    return pullPlacement(target, { modelsDir: this.modelsDir, adapterFolders: this.host.adapters.folders });
  }

  /** Whether everything `target` creates is there already. */
  private async installed(target: Pick<PullTarget, "folder" | "destination">): Promise<boolean> {
    const found = await Promise.all(this.placement(target).paths.map(pathExists));
    return found.every(Boolean);
  }

  async catalog(): Promise<ModelCatalog> {
    const models = await Promise.all(
      CATALOG.map(async (e) => ({
        name: e.name,
        type: e.destination.type,
        repo: e.repo,
        revision: e.revision,
        kind: e.kind,
        families: [...e.families],
        description: e.description,
        approx_size_bytes: e.approxBytes,
        installed: await this.installed({ folder: e.name, destination: e.destination }),
      })),
    );
    return { hub: this.endpoint, models };
  }

  /**
   * Checks the request and what is on disk now, so that a bad name or an existing folder is a plain error
   * before any download (and before an event stream starts).
   */
  async check(body: PullRequest): Promise<PullTarget> {
    let target: PullTarget;
    try {
      target = resolvePullName(body.name, body.folder);
    } catch (e) {
      if (!(e instanceof PullNameError)) throw e;
      if (e.notInCatalog) throw new ApiError(404, "not_in_catalog", e.message);
      const field = e.message.startsWith("folder") ? "folder" : "name";
      throw new ApiError(422, "validation_failed", `invalid body: ${field} ${e.message}`, [
        { field, message: e.message },
      ]);
    }
    const running = this.running.get(runKey(target));
    if (running && (running.target.repo !== target.repo || running.target.revision !== target.revision)) {
      throw new ApiError(
        409,
        "download_busy",
        `${target.folder} is being pulled from ${running.target.repo}@${running.target.revision}; wait for it, or pull into another folder`,
      );
    }
    if (running) return target;
    const { parent, paths } = this.placement(target);
    for (const path of paths) {
      if (!(await pathExists(path))) continue;
      throw new ApiError(
        409,
        "model_exists",
        target.destination.type === "model"
          ? `${target.folder} is already in the models directory; remove that folder to pull it again, or pull into another folder`
          : `${basename(path)} is already in the ${target.destination.type} folder (${parent}); remove it to pull it again`,
      );
    }
    return target;
  }

  /** POST /v1/models/pull's JSON answer: `check`, then `pull`. */
  async pullRequest(body: PullRequest, signal?: AbortSignal): Promise<PullResultBody> {
    return this.pull(await this.check(body), signal);
  }

  /**
   * Pulls `target` (from `check`), or joins the pull of it already running. `onProgress` gets this request's
   * progress; aborting `signal` leaves the pull, which stops (staged files kept for a resume) once no request
   * waits for it.
   */
  async pull(
    target: PullTarget,
    signal?: AbortSignal,
    onProgress?: ProgressListener,
  ): Promise<PullResultBody> {
    let run = this.running.get(runKey(target));
    // A pull every request left is stopping: let it release the folder, then start afresh (resuming its files).
    while (run?.controller.signal.aborted) {
      await run.result.catch(() => undefined);
      run = this.running.get(runKey(target));
    }
    const joined = run !== undefined;
    if (!run) run = this.start(target);
    const current = run;
    current.waiters++;
    if (onProgress) {
      current.listeners.add(onProgress);
      if (current.last) onProgress(current.last);
    }
    let onAbort = () => {};
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(cancelled());
      if (signal?.aborted) onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const result = await Promise.race([current.result, aborted]);
      return {
        ...(await this.verdict(target, result)),
        type: target.destination.type,
        repo: result.repo,
        revision: result.revision,
        commit: result.commit,
        files: result.files,
        size_bytes: result.bytes,
        resumed_bytes: result.resumedBytes,
        joined,
      };
    } catch (e) {
      if (e instanceof DOMException && e.name === "AbortError") throw cancelled();
      throw hubApiError(e);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (onProgress) current.listeners.delete(onProgress);
      current.waiters--;
      if (current.waiters === 0) current.controller.abort();
    }
  }

  /**
   * What was pulled, as the server sees it: a model folder's entry, or the adapter catalog's verdict on the
   * pulled file (named by its stem, as GET /v1/adapters lists it).
   */
  private async verdict(
    target: PullTarget,
    result: PullResult,
  ): Promise<Pick<PullResultBody, "name" | "kind" | "loadable" | "problem">> {
    const { destination } = target;
    if (destination.type === "model") {
      const problem = result.entry?.problem ?? null;
      return { name: result.name, kind: result.entry?.kind ?? null, loadable: problem === null, problem };
    }
    const file = result.paths[0] as string;
    const name = basename(file, extname(file));
    const entry = (await this.host.adapters.refresh())[destination.type].find((e) => e.name === name);
    if (!entry) return { name, kind: null, loadable: false, problem: "the pulled file is not listed" };
    return { name, kind: entry.family, loadable: entry.usable, problem: entry.reason };
  }

  private start(target: PullTarget): RunningPull {
    const controller = new AbortController();
    const run: RunningPull = {
      target,
      controller,
      listeners: new Set(),
      waiters: 0,
      last: null,
      result: Promise.resolve() as unknown as Promise<PullResult>,
    };
    const hub: HubOptions = { endpoint: this.settings.endpoint, token: this.settings.token };
    run.result = pullModel(target, {
      ...hub,
      modelsDir: this.modelsDir,
      adapterFolders: this.host.adapters.folders,
      signal: controller.signal,
      ...(this.settings.retryDelayMs !== undefined ? { retryDelayMs: this.settings.retryDelayMs } : {}),
      ...(this.settings.stallTimeoutMs !== undefined ? { stallTimeoutMs: this.settings.stallTimeoutMs } : {}),
      onProgress: (p) => {
        run.last = p;
        for (const listener of run.listeners) listener(p);
      },
    }).finally(() => {
      this.running.delete(runKey(target));
    });
    // The pull is awaited by its requests; a rejection nobody waits for any more must not go unhandled.
    run.result.catch(() => undefined);
    run.result
      .then(() => (target.destination.type === "model" ? this.host.list({ fresh: true }) : undefined))
      .catch(() => undefined);
    this.running.set(runKey(target), run);
    return run;
  }
}
