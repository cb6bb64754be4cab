/**
 * Pulls an ONNX Stable Diffusion export from the Hugging Face hub into the models directory, the way
 * huggingface_hub reads the hub: the file list, sizes and hashes from `GET /api/models/{repo}/revision/{rev}?blobs=true`,
 * each file from `{endpoint}/{repo}/resolve/{commit}/{path}` (a redirect to the CDN for LFS files).
 *
 * Files land in a hidden staging folder, `<models>/.sdx-downloads/<name>/` (the model scan skips dot-folders),
 * each streamed to `<file>.part` and resumed with `Range` after a cut connection or a restart. Every file's size
 * is checked, and its hash: the SHA-256 the hub lists for LFS files, the git blob SHA-1 for the others. Only when
 * every file is verified does the staging folder become `<models>/<name>/`, in one rename; an existing folder is
 * never replaced. HF_TOKEN goes to the hub's own origin only, never to the CDN it redirects to.
 */
import { createHash } from "node:crypto";
import {
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  rmdir,
  stat,
  statfs,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../../../lib/fs/atomic.ts";
import { pathExists } from "../../../lib/fs/exists.ts";
import { VERSION } from "../../../lib/version.ts";
import { inspectModelFolder, type ModelEntry } from "../model_folder.ts";
import { fileSha256, rememberFileHashes } from "../model_hash.ts";
import type { PullTarget } from "./catalog.ts";

export const DEFAULT_HUB_ENDPOINT = "https://huggingface.co";

/** Where pulls are staged, inside the models directory. */
export const STAGING_DIR = ".sdx-downloads";
/** Provenance of a pulled folder: repository, revision, commit and files. */
export const SOURCE_FILE = ".sdx-source.json";

export interface HubOptions {
  /** The hub (HF_ENDPOINT); default https://huggingface.co. */
  endpoint?: string | undefined;
  /** HF_TOKEN: sent as a bearer token to the hub's origin only. */
  token?: string | undefined;
  /** A fetch implementation (default: the global one). */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
}

export type HubErrorKind =
  | "exists"
  | "busy"
  | "not_found"
  | "forbidden"
  | "unreachable"
  | "not_onnx"
  | "corrupt"
  | "failed"
  | "no_space";

export class HubError extends Error {
  override name = "HubError";
  constructor(
    readonly kind: HubErrorKind,
    message: string,
  ) {
    super(message);
  }
}

/** One file of a pull, as the hub lists it. */
export interface RemoteFile {
  path: string;
  size: number;
  /** The LFS object's SHA-256 (hex), for LFS files. */
  sha256: string | null;
  /** The git blob SHA-1 (hex), for files kept in git itself. */
  blobId: string | null;
}

export interface RepoSnapshot {
  repo: string;
  revision: string;
  /** The commit the revision pointed at; every file is fetched from it. */
  commit: string;
  /** The files sdx needs, sorted by path. */
  files: RemoteFile[];
}

export interface PullProgress {
  /** The file being downloaded (path inside the model folder). */
  file: string;
  fileBytes: number;
  fileTotal: number;
  /** Bytes of every file, done so far (resumed bytes included). */
  bytes: number;
  total: number;
  filesDone: number;
  filesTotal: number;
}

export interface PullOptions extends HubOptions {
  modelsDir: string;
  /** Called at most every `progressIntervalMs`, and when each file finishes. */
  onProgress?: (progress: PullProgress) => void;
  /** Called once the file list is known. */
  onSnapshot?: (snapshot: RepoSnapshot) => void;
  signal?: AbortSignal;
  /** Attempts per file after the first, resuming each time (default 5). */
  retries?: number;
  /** First wait before a retry, doubled each time (default 1000 ms). */
  retryDelayMs?: number;
  /** A connection that sends nothing for this long is cut and resumed (default 60 000 ms). */
  stallTimeoutMs?: number;
  /** Least time between progress calls (default 100 ms). */
  progressIntervalMs?: number;
}

export interface PullResult {
  name: string;
  repo: string;
  revision: string;
  commit: string;
  files: number;
  bytes: number;
  /** Bytes that were already on disk from an earlier, interrupted pull. */
  resumedBytes: number;
  /** The model folder as the server sees it (kind, and why it cannot be loaded, if it cannot). */
  entry: ModelEntry;
}

/** Component folders of an optimum ONNX export; files directly inside them are kept. */
const COMPONENT_DIRS = new Set([
  "scheduler",
  "tokenizer",
  "tokenizer_2",
  "text_encoder",
  "text_encoder_2",
  "unet",
  "vae_decoder",
  "vae_encoder",
]);
/** Weights in other formats, docs and pictures: never needed by sdx. */
const SKIPPED_FILES = /\.(safetensors|bin|msgpack|ckpt|pt|pth|h5|ot|md|png|jpe?g|gif|webp)$/i;

/** Whether sdx needs `path` of a hub repository: model_index.json and the component folders' files. */
export function isSdxFile(path: string): boolean {
  if (path === "model_index.json") return true;
  const parts = path.split("/");
  const [dir, file] = parts;
  if (parts.length !== 2 || dir === undefined || file === undefined) return false;
  if (!COMPONENT_DIRS.has(dir) || file === "" || file.startsWith(".")) return false;
  if (/[\\\0]/.test(file) || file.endsWith(".part")) return false;
  return !SKIPPED_FILES.test(file);
}

function endpointOf(hub: HubOptions): string {
  return (hub.endpoint || DEFAULT_HUB_ENDPOINT).replace(/\/+$/, "");
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The pull was cancelled.", "AbortError");
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(signal as AbortSignal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * GET with redirects followed by hand, so that the token goes only to the hub's origin (the CDN a resolve
 * URL redirects to gets no Authorization header, whatever fetch would do).
 */
async function hubGet(
  url: string,
  hub: HubOptions,
  headers: Record<string, string>,
  signal?: AbortSignal,
): Promise<Response> {
  const hubOrigin = new URL(endpointOf(hub)).origin;
  const doFetch = hub.fetch ?? ((input: string, init: RequestInit) => fetch(input, init));
  let current = url;
  for (let hop = 0; hop < 10; hop++) {
    const sent: Record<string, string> = { "user-agent": `sdx/${VERSION}`, ...headers };
    if (hub.token && new URL(current).origin === hubOrigin) sent.authorization = `Bearer ${hub.token}`;
    const response = await doFetch(current, {
      method: "GET",
      headers: sent,
      redirect: "manual",
      ...(signal ? { signal } : {}),
    });
    const location = response.headers.get("location");
    if (response.status >= 300 && response.status < 400 && location) {
      await response.body?.cancel().catch(() => undefined);
      current = new URL(location, current).href;
      continue;
    }
    return response;
  }
  throw new HubError("unreachable", `too many redirects from ${url}`);
}

function describeRef(repo: string, revision: string): string {
  return revision === "main" ? repo : `${repo}@${revision}`;
}

/** The hub's answer to a refused request, as a HubError saying what to do. */
function refusal(
  response: Response,
  repo: string,
  revision: string,
  hub: HubOptions,
  what: string,
): HubError {
  const code = response.headers.get("x-error-code");
  const ref = describeRef(repo, revision);
  const page = `${endpointOf(hub)}/${repo}`;
  if (code === "GatedRepo")
    return new HubError(
      "forbidden",
      `${repo} is gated: accept its conditions at ${page} and set HF_TOKEN to a token of that account`,
    );
  if (code === "RevisionNotFound") return new HubError("not_found", `${repo} has no revision "${revision}"`);
  if (code === "EntryNotFound") return new HubError("not_found", `${ref} has no file ${what}`);
  if (code === "RepoNotFound" || response.status === 404 || (response.status === 401 && !hub.token))
    return new HubError(
      "not_found",
      `no repository ${repo} on ${endpointOf(hub)}${hub.token ? "" : " (a private or gated one needs HF_TOKEN)"}`,
    );
  if (response.status === 401) return new HubError("forbidden", `the hub refused HF_TOKEN for ${repo}`);
  if (response.status === 403)
    return new HubError("forbidden", `the hub refused access to ${repo} (HTTP 403): check HF_TOKEN's rights`);
  if (response.status === 429 || response.status >= 500)
    return new HubError("unreachable", `the hub answered HTTP ${response.status} for ${ref}`);
  return new HubError("failed", `the hub answered HTTP ${response.status} for ${what} of ${ref}`);
}

interface HubSibling {
  rfilename?: unknown;
  size?: unknown;
  blobId?: unknown;
  lfs?: { sha256?: unknown; oid?: unknown; size?: unknown } | null;
}

/**
 * The commit `target.revision` points at and the files sdx needs from it, with sizes and hashes. HubError
 * `not_onnx` when the repository holds no ONNX export in the layout sdx loads.
 */
export async function fetchSnapshot(
  target: Pick<PullTarget, "repo" | "revision">,
  hub: HubOptions,
  signal?: AbortSignal,
): Promise<RepoSnapshot> {
  const { repo, revision } = target;
  const url = `${endpointOf(hub)}/api/models/${repo}/revision/${encodeURIComponent(revision)}?blobs=true`;
  let response: Response | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      response = await hubGet(url, hub, { accept: "application/json" }, signal);
      if (response.status < 500 || attempt >= 2) break;
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      if (e instanceof HubError) throw e;
      if (attempt >= 2)
        throw new HubError(
          "unreachable",
          `cannot reach the hub at ${endpointOf(hub)}: ${(e as Error).message}`,
        );
    }
    await sleep(500 * 2 ** attempt, signal);
  }
  if (!response.ok) throw refusal(response, repo, revision, hub, "information");
  let info: { sha?: unknown; siblings?: unknown };
  try {
    info = (await response.json()) as typeof info;
  } catch {
    throw new HubError("unreachable", `the hub's answer for ${describeRef(repo, revision)} is not JSON`);
  }
  if (typeof info.sha !== "string" || !/^[0-9a-f]{40}$/.test(info.sha) || !Array.isArray(info.siblings)) {
    throw new HubError(
      "unreachable",
      `the hub's answer for ${describeRef(repo, revision)} lacks its commit or files`,
    );
  }
  const files: RemoteFile[] = [];
  for (const s of info.siblings as HubSibling[]) {
    if (typeof s.rfilename !== "string" || !isSdxFile(s.rfilename)) continue;
    const lfsSha = s.lfs?.sha256 ?? s.lfs?.oid;
    const size = typeof s.lfs?.size === "number" ? s.lfs.size : s.size;
    if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) {
      throw new HubError(
        "unreachable",
        `the hub gave no size for ${s.rfilename} of ${describeRef(repo, revision)}`,
      );
    }
    const sha256 = typeof lfsSha === "string" && /^[0-9a-f]{64}$/.test(lfsSha) ? lfsSha : null;
    const blobId = typeof s.blobId === "string" && /^[0-9a-f]{40}$/.test(s.blobId) ? s.blobId : null;
    files.push({ path: s.rfilename, size, sha256, blobId: sha256 ? null : blobId });
  }
  files.sort((a, b) => a.path.localeCompare(b.path));
  const paths = new Set(files.map((f) => f.path));
  const missing = ["model_index.json", "unet/model.onnx"].filter((p) => !paths.has(p));
  if (missing.length > 0) {
    throw new HubError(
      "not_onnx",
      `${describeRef(repo, revision)} is not an ONNX Stable Diffusion export in the layout sdx loads (no ${missing.join(", ")}); pull an optimum ONNX export such as the catalog's`,
    );
  }
  return { repo, revision, commit: info.sha, files };
}

/** The hash the hub lists for `file`, and a hasher fed the way that hash was made. */
function newHasher(file: RemoteFile) {
  if (file.sha256) return { expected: file.sha256, hash: createHash("sha256") };
  if (file.blobId) {
    const hash = createHash("sha1");
    hash.update(`blob ${file.size}\0`);
    return { expected: file.blobId, hash };
  }
  return null;
}

async function sizeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).size;
  } catch {
    return null;
  }
}

class RetryableError extends Error {
  override name = "RetryableError";
}

interface FileState {
  hasher: ReturnType<typeof newHasher>;
  /** Bytes of the .part file the hasher has seen. */
  hashed: number;
}

/** Feeds the first `length` bytes of `path` to a fresh hasher. */
async function hashPrefix(file: RemoteFile, path: string, length: number): Promise<FileState> {
  const hasher = newHasher(file);
  if (hasher && length > 0) {
    const stream = Bun.file(path).slice(0, length).stream();
    for await (const chunk of stream) hasher.hash.update(chunk);
  }
  return { hasher, hashed: length };
}

interface Transfer {
  url: string;
  file: RemoteFile;
  part: string;
  hub: HubOptions;
  signal: AbortSignal | undefined;
  stallTimeoutMs: number;
  /** Called with the file's bytes on disk after each chunk. */
  onBytes: (fileBytes: number) => void;
}

/**
 * One attempt at the rest of a file: appends to `.part` from where it stops. A cut or stalled connection is a
 * RetryableError; the bytes written so far stay, hashed.
 */
async function fetchRest(t: Transfer, state: FileState): Promise<FileState> {
  let have = (await sizeOf(t.part)) ?? 0;
  if (have > t.file.size) {
    await truncate(t.part, 0);
    have = 0;
  }
  if (state.hashed !== have) state = await hashPrefix(t.file, t.part, have);
  if (have === t.file.size) return state;

  const stall = new AbortController();
  const signal = t.signal ? AbortSignal.any([t.signal, stall.signal]) : stall.signal;
  let timer = setTimeout(() => stall.abort(), t.stallTimeoutMs);
  const keepAlive = () => {
    clearTimeout(timer);
    timer = setTimeout(() => stall.abort(), t.stallTimeoutMs);
  };
  try {
    let response: Response;
    try {
      response = await hubGet(
        t.url,
        t.hub,
        { "accept-encoding": "identity", ...(have > 0 ? { range: `bytes=${have}-` } : {}) },
        signal,
      );
    } catch (e) {
      if (t.signal?.aborted) throw abortError(t.signal);
      if (e instanceof HubError) throw e;
      throw new RetryableError(`cannot reach ${new URL(t.url).host}: ${(e as Error).message}`);
    }
    keepAlive();
    if (response.status === 416) {
      await response.body?.cancel().catch(() => undefined);
      // The server has nothing past what we hold: either the file is whole, or the .part is wrong.
      if (have !== t.file.size) await truncate(t.part, 0);
      return { hasher: null, hashed: -1 };
    }
    if (response.status === 429 || response.status >= 500) {
      await response.body?.cancel().catch(() => undefined);
      throw new RetryableError(`HTTP ${response.status} for ${t.file.path}`);
    }
    if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel().catch(() => undefined);
      throw new HubError(
        response.status === 401 || response.status === 403
          ? "forbidden"
          : response.status === 404
            ? "not_found"
            : "failed",
        `HTTP ${response.status} for ${t.file.path} (${response.url || t.url})`,
      );
    }
    if (response.status === 206) {
      const range = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(response.headers.get("content-range") ?? "");
      if (!range || Number(range[1]) !== have) {
        await response.body?.cancel().catch(() => undefined);
        await truncate(t.part, 0);
        throw new RetryableError(`the server resumed ${t.file.path} at the wrong offset`);
      }
    } else if (have > 0) {
      // 200: the server ignored the range and sends the whole file.
      await truncate(t.part, 0);
      have = 0;
      state = await hashPrefix(t.file, t.part, 0);
    }
    const body = response.body;
    if (!body) throw new RetryableError(`empty answer for ${t.file.path}`);
    const handle = await open(t.part, "a");
    try {
      for await (const chunk of body) {
        keepAlive();
        if (have + chunk.byteLength > t.file.size) {
          throw new HubError(
            "corrupt",
            `${t.file.path} is larger than the ${t.file.size} bytes the hub lists`,
          );
        }
        await handle.write(chunk);
        state.hasher?.hash.update(chunk);
        have += chunk.byteLength;
        state.hashed = have;
        t.onBytes(have);
      }
      await handle.sync();
    } catch (e) {
      if (t.signal?.aborted) throw abortError(t.signal);
      if (e instanceof HubError) throw e;
      throw new RetryableError(
        stall.signal.aborted
          ? `no data for ${t.stallTimeoutMs / 1000} s while downloading ${t.file.path}`
          : `connection lost after ${have} of ${t.file.size} bytes of ${t.file.path}: ${(e as Error).message}`,
      );
    } finally {
      await handle.close();
    }
    if (have < t.file.size) {
      throw new RetryableError(`connection closed after ${have} of ${t.file.size} bytes of ${t.file.path}`);
    }
    return state;
  } finally {
    clearTimeout(timer);
  }
}

async function downloadFile(t: Transfer, dest: string, retries: number, retryDelayMs: number): Promise<void> {
  let state: FileState = { hasher: null, hashed: -1 };
  // An empty file has nothing to fetch.
  if (t.file.size === 0) await writeFile(t.part, "");
  for (let attempt = 0; ; attempt++) {
    try {
      state = await fetchRest(t, state);
      if ((await sizeOf(t.part)) === t.file.size) break;
      // A 416 left nothing usable: start the file again at once.
      if (attempt >= retries) throw new HubError("failed", `could not download ${t.file.path}`);
    } catch (e) {
      if (e instanceof HubError && e.kind === "corrupt") await unlink(t.part).catch(() => undefined);
      if (!(e instanceof RetryableError)) throw e;
      if (attempt >= retries) {
        throw new HubError(
          "failed",
          `${e.message} (gave up after ${retries + 1} attempts; pull again to resume)`,
        );
      }
      await sleep(Math.min(retryDelayMs * 2 ** attempt, 30_000), t.signal);
    }
  }
  if (state.hashed !== t.file.size) state = await hashPrefix(t.file, t.part, t.file.size);
  if (state.hasher) {
    const actual = state.hasher.hash.digest("hex");
    if (actual !== state.hasher.expected) {
      await unlink(t.part).catch(() => undefined);
      throw new HubError(
        "corrupt",
        `${t.file.path} does not match the hub's ${t.file.sha256 ? "SHA-256" : "git SHA-1"} (${state.hasher.expected}, got ${actual}); it was deleted`,
      );
    }
  }
  await rename(t.part, dest);
}

/** Holds `<staging>.lock` while a pull runs; a lock whose process is gone is taken over. */
async function acquireLock(path: string, name: string): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const handle = await open(path, "wx");
      await handle.writeFile(String(process.pid));
      await handle.close();
      return () => unlink(path).catch(() => undefined);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number((await readFile(path, "utf8").catch(() => "")).trim());
      let alive = false;
      if (Number.isInteger(pid) && pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (err) {
          alive = (err as NodeJS.ErrnoException).code === "EPERM";
        }
      }
      if (alive)
        throw new HubError("busy", `${name} is being downloaded by another sdx process (pid ${pid})`);
      await unlink(path).catch(() => undefined);
    }
  }
  throw new HubError("busy", `${name} is being downloaded by another sdx process`);
}

interface SourceRecord {
  repo: string;
  revision: string;
  commit: string;
  files: { path: string; size: number; sha256?: string; git_sha1?: string }[];
  completed_at?: string;
}

function sourceRecord(snapshot: RepoSnapshot): SourceRecord {
  return {
    repo: snapshot.repo,
    revision: snapshot.revision,
    commit: snapshot.commit,
    files: snapshot.files.map((f) => ({
      path: f.path,
      size: f.size,
      ...(f.sha256 ? { sha256: f.sha256 } : f.blobId ? { git_sha1: f.blobId } : {}),
    })),
  };
}

/** Free bytes on the models directory's file system, or null where that cannot be read. */
async function freeBytes(dir: string): Promise<number | null> {
  try {
    const s = await statfs(dir);
    return Number(s.bavail) * Number(s.bsize);
  } catch {
    return null;
  }
}

const GiB = 2 ** 30;

/**
 * Downloads `target` into `<modelsDir>/<target.folder>/`: HubError `exists` when that folder is there already
 * (nothing is touched), `busy` while another process pulls it, the hub's refusals as `not_found`/`forbidden`,
 * `unreachable`, `corrupt` when a file's hash differs (that file is deleted; the rest stays staged for the next
 * pull), `failed` after the retries. Aborting `signal` stops it; what was downloaded stays staged and resumes.
 */
export async function pullModel(target: PullTarget, options: PullOptions): Promise<PullResult> {
  const { modelsDir, signal } = options;
  const dest = join(modelsDir, target.folder);
  if (await pathExists(dest)) {
    throw new HubError(
      "exists",
      `${target.folder} is already in ${modelsDir}; remove it first to pull it again`,
    );
  }
  if (await pathExists(join(modelsDir, "model_index.json"))) {
    throw new HubError(
      "failed",
      `${modelsDir} is itself a model folder; start the server with a models directory to pull into`,
    );
  }
  const snapshot = await fetchSnapshot(target, options, signal);
  options.onSnapshot?.(snapshot);

  const stagingRoot = join(modelsDir, STAGING_DIR);
  await mkdir(stagingRoot, { recursive: true });
  const release = await acquireLock(join(stagingRoot, `${target.folder}.lock`), target.folder);
  try {
    const staging = join(stagingRoot, target.folder);
    const sourcePath = join(staging, SOURCE_FILE);
    let previous: SourceRecord | null = null;
    try {
      previous = JSON.parse(await readFile(sourcePath, "utf8")) as SourceRecord;
    } catch {}
    if (!previous || previous.repo !== snapshot.repo || previous.commit !== snapshot.commit) {
      // Files staged from another commit (or another repository) cannot be resumed.
      await rm(staging, { recursive: true, force: true });
    }
    const record = sourceRecord(snapshot);
    await mkdir(staging, { recursive: true });
    await writeFileAtomic(sourcePath, `${JSON.stringify(record, null, 2)}\n`);

    const total = snapshot.files.reduce((sum, f) => sum + f.size, 0);
    const onDisk = new Map<string, number>();
    for (const f of snapshot.files) {
      const done = await sizeOf(join(staging, f.path));
      onDisk.set(
        f.path,
        done === f.size ? f.size : Math.min((await sizeOf(join(staging, `${f.path}.part`))) ?? 0, f.size),
      );
    }
    const resumedBytes = [...onDisk.values()].reduce((a, b) => a + b, 0);
    const free = await freeBytes(modelsDir);
    if (free !== null && free < total - resumedBytes) {
      throw new HubError(
        "no_space",
        `${target.folder} needs ${((total - resumedBytes) / GiB).toFixed(2)} GiB more; ${(free / GiB).toFixed(2)} GiB free in ${modelsDir}`,
      );
    }

    let bytes = resumedBytes;
    let filesDone = 0;
    let lastReport = 0;
    const interval = options.progressIntervalMs ?? 100;
    const report = (file: RemoteFile, fileBytes: number, force: boolean) => {
      const now = performance.now();
      if (!force && now - lastReport < interval) return;
      lastReport = now;
      options.onProgress?.({
        file: file.path,
        fileBytes,
        fileTotal: file.size,
        bytes,
        total,
        filesDone,
        filesTotal: snapshot.files.length,
      });
    };
    const endpoint = endpointOf(options);
    const encodedPath = (p: string) => p.split("/").map(encodeURIComponent).join("/");
    for (const file of snapshot.files) {
      if (signal?.aborted) throw abortError(signal);
      const path = join(staging, file.path);
      if ((await sizeOf(path)) !== file.size) {
        await mkdir(join(path, ".."), { recursive: true });
        await rm(path, { force: true });
        let counted = onDisk.get(file.path) ?? 0;
        await downloadFile(
          {
            url: `${endpoint}/${snapshot.repo}/resolve/${snapshot.commit}/${encodedPath(file.path)}`,
            file,
            part: `${path}.part`,
            hub: options,
            signal,
            stallTimeoutMs: options.stallTimeoutMs ?? 60_000,
            onBytes: (fileBytes) => {
              bytes += fileBytes - counted;
              counted = fileBytes;
              report(file, fileBytes, false);
            },
          },
          path,
          options.retries ?? 5,
          options.retryDelayMs ?? 1000,
        );
        // A restarted file may have counted bytes twice: settle on what is on disk.
        bytes += file.size - counted;
      }
      filesDone++;
      report(file, file.size, true);
    }

    await writeFileAtomic(
      sourcePath,
      `${JSON.stringify({ ...record, completed_at: new Date().toISOString() }, null, 2)}\n`,
    );
    if (await pathExists(dest)) {
      throw new HubError(
        "exists",
        `${target.folder} appeared in ${modelsDir} during the download; it was left untouched`,
      );
    }
    await rename(staging, dest);
    // The model's hash needs every file's SHA-256: the LFS files' were verified, the few small others are read.
    await rememberFileHashes(
      join(modelsDir, ".sdx-cache"),
      await Promise.all(
        snapshot.files.map(async (f) => {
          const path = join(dest, f.path);
          return { path, sha256: f.sha256 ?? (await fileSha256(path)) };
        }),
      ),
    );
    return {
      name: target.folder,
      repo: snapshot.repo,
      revision: snapshot.revision,
      commit: snapshot.commit,
      files: snapshot.files.length,
      bytes: total,
      resumedBytes,
      entry: await inspectModelFolder(target.folder, dest),
    };
  } finally {
    await release();
    // Leave no empty staging folder behind.
    if ((await readdir(stagingRoot).catch(() => ["?"])).length === 0)
      await rmdir(stagingRoot).catch(() => undefined);
  }
}
