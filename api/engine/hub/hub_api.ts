/**
 * The Hugging Face hub's API, read the way huggingface_hub reads it: a revision's commit, and the file list,
 * sizes and hashes from `GET /api/models/{repo}/revision/{rev}?blobs=true`; each file from
 * `{endpoint}/{repo}/resolve/{commit}/{path}` (a redirect to the CDN for LFS files). HF_TOKEN goes to the hub's
 * own origin only, never to the CDN it redirects to. The hub's refusals become HubErrors saying what to do.
 */
import { SERVER_DEFAULTS } from "../../../contract/index.ts";
import { VERSION } from "../../../lib/version.ts";
import { abortError, sleep } from "./abort.ts";
import type { PullDestination, PullTarget } from "./catalog.ts";
import { HubError } from "./errors.ts";

/** The hub pulls use when HF_ENDPOINT names none. */
export const DEFAULT_HUB_ENDPOINT = SERVER_DEFAULTS.hubEndpoint;

export interface HubOptions {
  /** The hub (HF_ENDPOINT); default https://huggingface.co. */
  endpoint?: string | undefined;
  /** HF_TOKEN: sent as a bearer token to the hub's origin only. */
  token?: string | undefined;
  /** A fetch implementation (default: the global one). */
  fetch?: (input: string, init: RequestInit) => Promise<Response>;
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

/** Which of a repository's files a pull keeps, the ones it cannot do without, and the error when one is missing. */
function selectionFor(destination: PullDestination) {
  if (destination.type === "model") {
    return {
      keep: isSdxFile,
      required: ["model_index.json", "unet/model.onnx"],
      missing: (ref: string, paths: string[]) =>
        new HubError(
          "not_onnx",
          `${ref} is not an ONNX Stable Diffusion export in the layout sdx loads (no ${paths.join(", ")}); pull an optimum ONNX export such as the catalog's`,
        ),
    };
  }
  const files = new Set(destination.files);
  return {
    keep: (path: string) => files.has(path),
    required: destination.files,
    missing: (ref: string, paths: string[]) => new HubError("not_found", `${ref} has no ${paths.join(", ")}`),
  };
}

function endpointOf(hub: HubOptions): string {
  return (hub.endpoint || DEFAULT_HUB_ENDPOINT).replace(/\/+$/, "");
}

/**
 * GET with redirects followed by hand, so that the token goes only to the hub's origin (the CDN a resolve
 * URL redirects to gets no Authorization header, whatever fetch would do).
 */
export async function hubGet(
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
 * The commit `target.revision` points at and the files the pull takes from it (by default a model's ONNX
 * export), with sizes and hashes. HubError `not_onnx` when the repository holds no ONNX export in the layout sdx
 * loads, `not_found` when it lacks a file a file pull names.
 */
export async function fetchSnapshot(
  target: Pick<PullTarget, "repo" | "revision"> & { destination?: PullDestination },
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
  const selection = selectionFor(target.destination ?? { type: "model" });
  const files: RemoteFile[] = [];
  for (const s of info.siblings as HubSibling[]) {
    if (typeof s.rfilename !== "string" || !selection.keep(s.rfilename)) continue;
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
  const missing = selection.required.filter((p) => !paths.has(p));
  if (missing.length > 0) throw selection.missing(describeRef(repo, revision), missing);
  return { repo, revision, commit: info.sha, files };
}

/** Where the file `path` of `snapshot` is downloaded from: its commit's resolve URL. */
export function resolveUrl(snapshot: RepoSnapshot, path: string, hub: HubOptions): string {
  const encodedPath = path.split("/").map(encodeURIComponent).join("/");
  return `${endpointOf(hub)}/${snapshot.repo}/resolve/${snapshot.commit}/${encodedPath}`;
}
