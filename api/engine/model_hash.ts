/**
 * A model's SHA-256, the identity AUTOMATIC1111 and Civitai use for checkpoints ("Model hash" in infotext is its
 * first 10 hex digits). A single-file checkpoint's hash is the file's; an ONNX folder's is the hash of its
 * `sha256sum`-style manifest (one "<sha256>  <relative path>" line per file, sorted by path). File hashes are
 * cached in `<cacheDir>/hashes.json`, keyed by path and checked against size and modification time, so a
 * multi-gigabyte file is read once.
 */
import { readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";
import { writeFileAtomic } from "../../lib/fs/atomic.ts";
import type { ModelEntry } from "./model_folder.ts";

interface CachedHash {
  size: number;
  mtimeMs: number;
  sha256: string;
}

type HashCache = Record<string, CachedHash>;

/** What hashing needs of a model: its path, and whether it is a folder of files or one file. */
type HashedModel = Pick<ModelEntry, "format" | "path">;

/** Serialises cache writes per cache file, so concurrent hashes never lose each other's entries. */
const writeChains = new Map<string, Promise<unknown>>();

async function readCache(cacheFile: string): Promise<HashCache> {
  try {
    const data = (await Bun.file(cacheFile).json()) as unknown;
    return data && typeof data === "object" && !Array.isArray(data) ? (data as HashCache) : {};
  } catch {
    return {};
  }
}

/** A file's SHA-256, read in a stream. */
export async function fileSha256(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream()) hasher.update(chunk);
  return hasher.digest("hex");
}

async function modelFiles(entry: HashedModel): Promise<string[]> {
  if (entry.format !== "onnx") return [entry.path];
  const files: string[] = [];
  for (const e of await readdir(entry.path, { withFileTypes: true, recursive: true })) {
    const path = join(e.parentPath, e.name);
    if (
      e.isFile() &&
      !relative(entry.path, path)
        .split("/")
        .some((part) => part.startsWith("."))
    )
      files.push(path);
  }
  return files.sort();
}

/** The cached hash of each file whose size and modification time still match, or null for each that does not. */
async function cachedHashes(files: string[], cache: HashCache): Promise<(string | null)[]> {
  return Promise.all(
    files.map(async (path) => {
      const hit = cache[path];
      if (!hit) return null;
      const s = await stat(path).catch(() => null);
      return s && s.size === hit.size && s.mtimeMs === hit.mtimeMs ? hit.sha256 : null;
    }),
  );
}

function combine(entry: HashedModel, files: string[], hashes: string[]): string {
  if (entry.format !== "onnx") return hashes[0] as string;
  const manifest = files.map((f, i) => `${hashes[i]}  ${relative(entry.path, f)}\n`).join("");
  return new Bun.CryptoHasher("sha256").update(manifest).digest("hex");
}

/** A single file's hash (an adapter's) when cached and current, else null; reads nothing else. */
export function cachedFileHash(path: string, cacheDir: string): Promise<string | null> {
  return cachedModelHash({ format: "safetensors", path }, cacheDir);
}

/** A single file's hash (an adapter's), reading and caching it when it is not cached yet. */
export function fileHash(path: string, cacheDir: string): Promise<string> {
  return modelHash({ format: "safetensors", path }, cacheDir);
}

/** The model's hash when every file's is cached and current, else null; reads no weights. */
export async function cachedModelHash(entry: HashedModel, cacheDir: string): Promise<string | null> {
  try {
    const files = await modelFiles(entry);
    const hashes = await cachedHashes(files, await readCache(join(cacheDir, "hashes.json")));
    return hashes.every((h) => h !== null) ? combine(entry, files, hashes as string[]) : null;
  } catch {
    return null;
  }
}

/** The model's hash, reading (and caching) whatever is not cached yet. */
export async function modelHash(entry: HashedModel, cacheDir: string): Promise<string> {
  const cacheFile = join(cacheDir, "hashes.json");
  const files = await modelFiles(entry);
  const known = await cachedHashes(files, await readCache(cacheFile));
  const fresh: HashCache = {};
  const hashes: string[] = [];
  for (const [i, path] of files.entries()) {
    const hit = known[i];
    if (hit) {
      hashes.push(hit);
      continue;
    }
    const before = await stat(path);
    const sha256 = await fileSha256(path);
    hashes.push(sha256);
    fresh[path] = { size: before.size, mtimeMs: before.mtimeMs, sha256 };
  }
  await remember(cacheFile, fresh);
  return combine(entry, files, hashes);
}

/** Adds entries to the cache file, one writer at a time; a cache that cannot be written only costs a re-read. */
async function remember(cacheFile: string, fresh: HashCache): Promise<void> {
  if (Object.keys(fresh).length === 0) return;
  const previous = writeChains.get(cacheFile) ?? Promise.resolve();
  const next = previous.then(async () => {
    const cache = { ...(await readCache(cacheFile)), ...fresh };
    await writeFileAtomic(cacheFile, `${JSON.stringify(cache, null, 1)}\n`);
  });
  writeChains.set(
    cacheFile,
    next.catch(() => {}),
  );
  await next.catch(() => {});
}

/**
 * Records hashes known from elsewhere (a download verified against the hub's SHA-256), so the first load of a
 * pulled model reads no file twice. Each file is stat'ed now; one changed later is simply hashed again.
 */
export async function rememberFileHashes(
  cacheDir: string,
  files: { path: string; sha256: string }[],
): Promise<void> {
  const fresh: HashCache = {};
  for (const { path, sha256 } of files) {
    const s = await stat(path).catch(() => null);
    if (s?.isFile()) fresh[path] = { size: s.size, mtimeMs: s.mtimeMs, sha256 };
  }
  await remember(join(cacheDir, "hashes.json"), fresh);
}
