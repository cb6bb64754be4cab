/**
 * One file of a pull, streamed to `<file>.part` and resumed with `Range` after a cut or stalled connection or a
 * restart. Its size is checked, and its hash: the SHA-256 the hub lists for LFS files, the git blob SHA-1 for
 * the others.
 */
import { createHash } from "node:crypto";
import { open, rename, truncate, unlink, writeFile } from "node:fs/promises";
import { sizeOf } from "../../../lib/fs/size.ts";
import { abortError, sleep } from "./abort.ts";
import { HubError } from "./errors.ts";
import { type HubOptions, hubGet, type RemoteFile } from "./hub_api.ts";

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

export interface Transfer {
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

/**
 * Downloads `t.file` through `t.part` into `dest`, resuming up to `retries` times after waits doubling from
 * `retryDelayMs` (30 s at most): HubError `corrupt` when its hash differs (the .part is deleted), `failed` after
 * the retries.
 */
export async function downloadFile(
  t: Transfer,
  dest: string,
  retries: number,
  retryDelayMs: number,
): Promise<void> {
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
