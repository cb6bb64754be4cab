/**
 * The staging folder of a pull, `<parent>/.sdx-downloads/<name>/` (the model and adapter scans skip dot-folders)
 * in the folder the pull lands in: what an interrupted pull of the same commit left there is resumed, and only
 * when every file is verified does the folder become `<models>/<name>/`, in one rename, or do its files move
 * into their adapter folder; an existing folder or file is never replaced.
 */
import { mkdir, readdir, readFile, rename, rm, rmdir, statfs } from "node:fs/promises";
import { join } from "node:path";
import { FileExistsError, moveCreateOnly, writeFileAtomic } from "../../../lib/fs/atomic.ts";
import { pathExists } from "../../../lib/fs/exists.ts";
import { sizeOf } from "../../../lib/fs/size.ts";
import { HubError } from "./errors.ts";
import type { RemoteFile, RepoSnapshot } from "./hub_api.ts";

/** Where pulls are staged, inside the models directory. */
export const STAGING_DIR = ".sdx-downloads";
/** Provenance of a pulled folder: repository, revision, commit and files. */
export const SOURCE_FILE = ".sdx-source.json";

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

/** A pull's staging folder, and the provenance written in it. */
export interface Staging {
  /** `<models>/.sdx-downloads/<name>/`. */
  dir: string;
  record: SourceRecord;
}

/**
 * Opens the staging folder of `name` for `snapshot` and writes its provenance: what an earlier pull of the same
 * commit staged is kept, to resume.
 */
export async function openStaging(
  stagingRoot: string,
  name: string,
  snapshot: RepoSnapshot,
): Promise<Staging> {
  const dir = join(stagingRoot, name);
  const sourcePath = join(dir, SOURCE_FILE);
  let previous: SourceRecord | null = null;
  try {
    previous = JSON.parse(await readFile(sourcePath, "utf8")) as SourceRecord;
  } catch {}
  if (!previous || previous.repo !== snapshot.repo || previous.commit !== snapshot.commit) {
    // Files staged from another commit (or another repository) cannot be resumed.
    await rm(dir, { recursive: true, force: true });
  }
  const record = sourceRecord(snapshot);
  await mkdir(dir, { recursive: true });
  await writeFileAtomic(sourcePath, `${JSON.stringify(record, null, 2)}\n`);
  return { dir, record };
}

/** The bytes of each of `files` already staged: all of a whole file, what the `.part` holds of the others. */
export async function stagedBytes(
  staging: Staging,
  files: readonly RemoteFile[],
): Promise<Map<string, number>> {
  const onDisk = new Map<string, number>();
  for (const f of files) {
    const done = await sizeOf(join(staging.dir, f.path));
    onDisk.set(
      f.path,
      done === f.size ? f.size : Math.min((await sizeOf(join(staging.dir, `${f.path}.part`))) ?? 0, f.size),
    );
  }
  return onDisk;
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

/** HubError `no_space` when the models directory's file system has less than `needed` bytes free for `name`. */
export async function ensureFreeSpace(modelsDir: string, name: string, needed: number): Promise<void> {
  const free = await freeBytes(modelsDir);
  if (free !== null && free < needed) {
    throw new HubError(
      "no_space",
      `${name} needs ${(needed / GiB).toFixed(2)} GiB more; ${(free / GiB).toFixed(2)} GiB free in ${modelsDir}`,
    );
  }
}

/**
 * Marks the staging folder complete and renames it to `<modelsDir>/<name>/`: HubError `exists` when a folder
 * appeared there meanwhile (it is left untouched).
 */
export async function promoteStaging(staging: Staging, modelsDir: string, name: string): Promise<void> {
  const dest = join(modelsDir, name);
  await writeFileAtomic(
    join(staging.dir, SOURCE_FILE),
    `${JSON.stringify({ ...staging.record, completed_at: new Date().toISOString() }, null, 2)}\n`,
  );
  if (await pathExists(dest)) {
    throw new HubError(
      "exists",
      `${name} appeared in ${modelsDir} during the download; it was left untouched`,
    );
  }
  await rename(staging.dir, dest);
}

/**
 * Moves each staged file into `parent` under its own name, then removes the staging folder: HubError `exists`
 * when a file of that name appeared there meanwhile (it is left untouched, the download stays staged).
 */
export async function promoteFiles(
  staging: Staging,
  parent: string,
  files: readonly RemoteFile[],
): Promise<void> {
  for (const f of files) {
    try {
      await moveCreateOnly(join(staging.dir, f.path), join(parent, f.path));
    } catch (e) {
      if (!(e instanceof FileExistsError)) throw e;
      throw new HubError(
        "exists",
        `${f.path} appeared in ${parent} during the download; it was left untouched`,
      );
    }
  }
  await rm(staging.dir, { recursive: true, force: true });
}

/** Leaves no empty staging folder behind. */
export async function removeEmptyStagingRoot(stagingRoot: string): Promise<void> {
  if ((await readdir(stagingRoot).catch(() => ["?"])).length === 0)
    await rmdir(stagingRoot).catch(() => undefined);
}
