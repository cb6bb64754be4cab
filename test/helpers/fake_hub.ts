/**
 * A fake Hugging Face hub on loopback that serves model folders the way huggingface.co does:
 *   - `GET /api/models/{org}/{name}/revision/{rev}?blobs=true`: `{ id, sha, siblings: [{ rfilename, size, blobId,
 *     lfs?: { sha256, size, pointerSize } }] }` (huggingface_hub's `model_info(files_metadata=True)`);
 *   - `GET /api/models/{org}/{name}/tree/{rev}?recursive=true`: `[{ type, path, size, oid, lfs?: { oid, size } }]`;
 *   - `GET /{org}/{name}/resolve/{rev}/{path}`: git files answered directly (ETag = blob SHA-1), LFS files (`.onnx`)
 *     a 302 to a second server, the "CDN", on another port (another origin), with X-Repo-Commit, X-Linked-Etag and
 *     X-Linked-Size; both honour `Range` (206 + Content-Range, 416 past the end);
 *   - the hub's refusals: 401 `X-Error-Code: RepoNotFound` for an unknown repository (404 with a token), 404
 *     `RevisionNotFound`, 401 `GatedRepo` for a gated repository asked without its token.
 * Modes per repository: `gated` (needs `Authorization: Bearer <token>`), `cutOnce` (the first transfer of those
 * files stops half-way and the connection is dropped), `corrupt` (those files are served with a byte flipped),
 * `chunkDelayMs` (slow transfers), `noRange` (Range ignored: always 200 with the whole file). Every request is recorded with the Authorization and Range it carried.
 */
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join, relative } from "node:path";
import type { Server } from "bun";

export interface FakeRepoOptions {
  /** Folder whose files the repository holds. */
  dir: string;
  /** Branch names (besides main); each gets its own commit. */
  revisions?: string[];
  gated?: boolean;
  /** Paths whose first transfer is cut half-way. */
  cutOnce?: string[];
  /** Paths served with one byte changed. */
  corrupt?: string[];
  /** Wait this long between 256 KiB chunks. */
  chunkDelayMs?: number;
  /** Ignore Range headers and always send the whole file with 200, as some servers do. */
  noRange?: boolean;
  /** Extra files the repository holds that sdx must skip (README, PyTorch weights...). */
  extraFiles?: Record<string, string>;
}

export interface FakeHubRequest {
  server: "hub" | "cdn";
  method: string;
  path: string;
  authorization: string | null;
  range: string | null;
}

export interface FakeHub {
  url: string;
  cdnUrl: string;
  token: string;
  requests: FakeHubRequest[];
  /** Transfers (200 or 206 answers carrying file bytes) per file path. */
  transfers: (path: string) => number;
  stop: () => Promise<void>;
}

interface RepoFile {
  path: string;
  data: Uint8Array;
  lfs: boolean;
  sha256: string;
  blobId: string;
}

interface FakeRepo extends FakeRepoOptions {
  id: string;
  files: RepoFile[];
  commits: Map<string, string>;
  cutDone: Set<string>;
}

const CHUNK = 256 * 1024;

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(relative(dir, join(e.parentPath, e.name)));
  }
  return out.sort();
}

function gitBlobSha1(data: Uint8Array): string {
  return createHash("sha1").update(`blob ${data.byteLength}\0`).update(data).digest("hex");
}

async function loadRepo(id: string, options: FakeRepoOptions): Promise<FakeRepo> {
  const files: RepoFile[] = [];
  const add = (path: string, data: Uint8Array) => {
    const lfs = /\.(onnx|safetensors|pb)$/.test(path);
    files.push({
      path,
      data,
      lfs,
      sha256: createHash("sha256").update(data).digest("hex"),
      blobId: gitBlobSha1(data),
    });
  };
  for (const path of await listFiles(options.dir))
    add(path, new Uint8Array(await readFile(join(options.dir, path))));
  for (const [path, text] of Object.entries(options.extraFiles ?? {}))
    add(path, new TextEncoder().encode(text));
  const commits = new Map<string, string>();
  for (const rev of ["main", ...(options.revisions ?? [])]) {
    const sha = createHash("sha1").update(`${id}@${rev}`).digest("hex");
    commits.set(rev, sha);
    commits.set(sha, sha);
  }
  return { ...options, id, files, commits, cutDone: new Set() };
}

const json = (value: unknown, status = 200, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", ...headers },
  });

/** A file's bytes, whole or from a Range, as the hub and its CDN answer them. */
function serveBytes(
  repo: FakeRepo,
  file: RepoFile,
  request: Request,
  headers: Record<string, string>,
  onTransfer: () => void,
): Response {
  let data = file.data;
  if (repo.corrupt?.includes(file.path)) {
    data = new Uint8Array(data);
    data[data.length >> 1] = ((data[data.length >> 1] ?? 0) + 1) & 255;
  }
  const size = data.byteLength;
  const base = { "accept-ranges": "bytes", etag: `"${file.lfs ? file.sha256 : file.blobId}"`, ...headers };
  let start = 0;
  const range = repo.noRange ? null : request.headers.get("range");
  if (range) {
    const m = /^bytes=(\d+)-$/.exec(range);
    if (!m) return new Response("bad range", { status: 400 });
    start = Number(m[1]);
    if (start >= size) {
      return new Response(null, { status: 416, headers: { ...base, "content-range": `bytes */${size}` } });
    }
  }
  onTransfer();
  const cut = repo.cutOnce?.includes(file.path) && !repo.cutDone.has(file.path);
  if (cut) repo.cutDone.add(file.path);
  const end = cut ? start + Math.max(1, (size - start) >> 1) : size;
  const delay = repo.chunkDelayMs ?? 0;
  let offset = start;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      if (offset >= end) {
        // A cut transfer ends before its Content-Length: the connection drops with the body short.
        controller.close();
        return;
      }
      if (delay > 0) await Bun.sleep(delay);
      const next = Math.min(offset + CHUNK, end);
      controller.enqueue(data.slice(offset, next));
      offset = next;
    },
  });
  return new Response(body, {
    status: range ? 206 : 200,
    headers: {
      ...base,
      "content-length": String(size - start),
      "content-type": "application/octet-stream",
      ...(range ? { "content-range": `bytes ${start}-${size - 1}/${size}` } : {}),
    },
  });
}

/** Starts the hub and its CDN; `repos` maps `org/name` to what it serves. */
export async function startFakeHub(repos: Record<string, FakeRepoOptions>): Promise<FakeHub> {
  const token = "hf_fake_token_0123456789";
  const loaded = new Map<string, FakeRepo>();
  for (const [id, options] of Object.entries(repos)) loaded.set(id, await loadRepo(id, options));
  const requests: FakeHubRequest[] = [];
  const transfers = new Map<string, number>();
  const countTransfer = (path: string) => () => transfers.set(path, (transfers.get(path) ?? 0) + 1);
  const record = (server: "hub" | "cdn", req: Request) => {
    requests.push({
      server,
      method: req.method,
      path: new URL(req.url).pathname,
      authorization: req.headers.get("authorization"),
      range: req.headers.get("range"),
    });
  };

  const cdn: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch(req) {
      record("cdn", req);
      const m = /^\/repos\/([^/]+)\/([0-9a-f]{64})$/.exec(new URL(req.url).pathname);
      const repo = m ? loaded.get(decodeURIComponent(m[1] as string)) : undefined;
      const file = repo?.files.find((f) => f.sha256 === m?.[2]);
      if (!repo || !file) return new Response("NoSuchKey", { status: 404 });
      return serveBytes(repo, file, req, {}, countTransfer(file.path));
    },
  });

  const cdnUrl = `http://127.0.0.1:${cdn.port}`;

  const refuse = (req: Request, repo: FakeRepo | undefined): Response | null => {
    const auth = req.headers.get("authorization");
    if (!repo) {
      return json({ error: "Repository Not Found" }, auth ? 404 : 401, { "x-error-code": "RepoNotFound" });
    }
    if (repo.gated && auth !== `Bearer ${token}`) {
      return json({ error: `Access to model ${repo.id} is restricted.` }, 401, {
        "x-error-code": "GatedRepo",
      });
    }
    return null;
  };

  const hub: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch(req) {
      record("hub", req);
      const url = new URL(req.url);
      const api = /^\/api\/models\/([^/]+\/[^/]+)\/(revision|tree)\/([^/]+)$/.exec(url.pathname);
      if (api) {
        const repo = loaded.get(api[1] as string);
        const refused = refuse(req, repo);
        if (refused || !repo) return refused as Response;
        const sha = repo.commits.get(decodeURIComponent(api[3] as string));
        if (!sha) return json({ error: "Invalid rev id" }, 404, { "x-error-code": "RevisionNotFound" });
        if (api[2] === "tree") {
          return json(
            repo.files.map((f) => ({
              type: "file",
              oid: f.blobId,
              size: f.data.byteLength,
              path: f.path,
              ...(f.lfs ? { lfs: { oid: f.sha256, size: f.data.byteLength, pointerSize: 134 } } : {}),
            })),
          );
        }
        return json({
          _id: "fake",
          id: repo.id,
          sha,
          private: false,
          gated: repo.gated ? "auto" : false,
          siblings: repo.files.map((f) => ({
            rfilename: f.path,
            size: f.data.byteLength,
            blobId: f.blobId,
            ...(f.lfs ? { lfs: { sha256: f.sha256, size: f.data.byteLength, pointerSize: 134 } } : {}),
          })),
        });
      }
      const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
      if (resolve) {
        const repo = loaded.get(resolve[1] as string);
        const refused = refuse(req, repo);
        if (refused || !repo) return refused as Response;
        const sha = repo.commits.get(decodeURIComponent(resolve[2] as string));
        if (!sha) return json({ error: "Invalid rev id" }, 404, { "x-error-code": "RevisionNotFound" });
        const path = (resolve[3] as string).split("/").map(decodeURIComponent).join("/");
        const file = repo.files.find((f) => f.path === path);
        if (!file) return json({ error: "Entry not found" }, 404, { "x-error-code": "EntryNotFound" });
        const common = { "x-repo-commit": sha };
        if (file.lfs) {
          return new Response(null, {
            status: 302,
            headers: {
              ...common,
              location: `${cdnUrl}/repos/${encodeURIComponent(repo.id)}/${file.sha256}?X-Amz-Signature=fake`,
              "x-linked-etag": `"${file.sha256}"`,
              "x-linked-size": String(file.data.byteLength),
              etag: `"${file.blobId}"`,
            },
          });
        }
        return serveBytes(repo, file, req, common, countTransfer(file.path));
      }
      return json({ error: "Not Found" }, 404);
    },
  });
  return {
    url: `http://127.0.0.1:${hub.port}`,
    cdnUrl,
    token,
    requests,
    transfers: (path) => transfers.get(path) ?? 0,
    stop: async () => {
      await hub.stop(true);
      await cdn.stop(true);
    },
  };
}
