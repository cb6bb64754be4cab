/**
 * Pulls from the Hugging Face hub: an ONNX Stable Diffusion export into the models directory, or a catalog
 * entry's files (the TAESD decoders) into their adapter folder. The revision's files from the hub, then, under
 * the pull's lock, each file transferred and verified into the staging folder inside the destination folder,
 * which becomes the model folder in one rename, or whose files each move into the adapter folder (never over an
 * existing one).
 */
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { ADAPTER_FOLDERS, type AdapterKind } from "../../../contract/index.ts";
import { pathExists } from "../../../lib/fs/exists.ts";
import { sizeOf } from "../../../lib/fs/size.ts";
import { cacheDirOf, inspectModelFolder, type ModelEntry } from "../model_folder.ts";
import { fileSha256, rememberFileHashes } from "../model_hash.ts";
import { abortError } from "./abort.ts";
import type { PullDestination, PullTarget } from "./catalog.ts";
import { HubError } from "./errors.ts";
import { fetchSnapshot, type HubOptions, type RemoteFile, type RepoSnapshot, resolveUrl } from "./hub_api.ts";
import { acquireLock } from "./lock.ts";
import {
  ensureFreeSpace,
  openStaging,
  promoteFiles,
  promoteStaging,
  removeEmptyStagingRoot,
  STAGING_DIR,
  stagedBytes,
} from "./staging.ts";
import { downloadFile } from "./transfer.ts";

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
  /** Adapter folders set elsewhere than `<modelsDir>/<ADAPTER_FOLDERS[kind]>` (--vae-approx-dir …): file pulls land there. */
  adapterFolders?: Partial<Record<AdapterKind, string>>;
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
  /** What the pull created: the model folder, or each file in its adapter folder. */
  paths: string[];
  /** The model folder as the server sees it (kind, and why it cannot be loaded, if it cannot); null for a file pull. */
  entry: ModelEntry | null;
}

/** The folder a pull lands in, and what it creates there. */
export function pullPlacement(
  target: { folder: string; destination: PullDestination },
  options: Pick<PullOptions, "modelsDir" | "adapterFolders">,
): { parent: string; paths: string[] } {
  const { destination } = target;
  if (destination.type === "model")
    return { parent: options.modelsDir, paths: [join(options.modelsDir, target.folder)] };
  const parent =
    options.adapterFolders?.[destination.type] ?? join(options.modelsDir, ADAPTER_FOLDERS[destination.type]);
  return { parent, paths: destination.files.map((f) => join(parent, f)) };
}

/**
 * Downloads `target` into `<modelsDir>/<target.folder>/` (a model) or its files into their adapter folder:
 * HubError `exists` when that folder or a file is there already (nothing is touched), `busy` while another
 * process pulls it, the hub's refusals as `not_found`/`forbidden`, `unreachable`, `corrupt` when a file's hash
 * differs (that file is deleted; the rest stays staged for the next pull), `failed` after the retries. Aborting
 * `signal` stops it; what was downloaded stays staged and resumes.
 */
export async function pullModel(target: PullTarget, options: PullOptions): Promise<PullResult> {
  const { modelsDir, signal } = options;
  const { parent, paths } = pullPlacement(target, options);
  for (const path of paths) {
    if (await pathExists(path)) {
      throw new HubError(
        "exists",
        `${path.slice(parent.length + 1)} is already in ${parent}; remove it first to pull it again`,
      );
    }
  }
  if (target.destination.type === "model" && (await pathExists(join(modelsDir, "model_index.json")))) {
    throw new HubError(
      "failed",
      `${modelsDir} is itself a model folder; start the server with a models directory to pull into`,
    );
  }
  const snapshot = await fetchSnapshot(target, options, signal);
  options.onSnapshot?.(snapshot);

  // Staged inside the destination folder, so that the final renames never cross file systems.
  const stagingRoot = join(parent, STAGING_DIR);
  await mkdir(stagingRoot, { recursive: true });
  const release = await acquireLock(join(stagingRoot, `${target.folder}.lock`), target.folder);
  try {
    const staging = await openStaging(stagingRoot, target.folder, snapshot);

    const total = snapshot.files.reduce((sum, f) => sum + f.size, 0);
    const onDisk = await stagedBytes(staging, snapshot.files);
    const resumedBytes = [...onDisk.values()].reduce((a, b) => a + b, 0);
    await ensureFreeSpace(parent, target.folder, total - resumedBytes);

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
    for (const file of snapshot.files) {
      if (signal?.aborted) throw abortError(signal);
      const path = join(staging.dir, file.path);
      if ((await sizeOf(path)) !== file.size) {
        await mkdir(join(path, ".."), { recursive: true });
        await rm(path, { force: true });
        let counted = onDisk.get(file.path) ?? 0;
        await downloadFile(
          {
            url: resolveUrl(snapshot, file.path, options),
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

    const model = target.destination.type === "model";
    const dest = model ? (paths[0] as string) : parent;
    if (model) await promoteStaging(staging, modelsDir, target.folder);
    else await promoteFiles(staging, parent, snapshot.files);
    // The hashes of models and adapters need every file's SHA-256: the LFS files' were verified, the few small
    // others are read.
    await rememberFileHashes(
      cacheDirOf(modelsDir),
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
      paths,
      entry: model ? await inspectModelFolder(target.folder, dest) : null,
    };
  } finally {
    await release();
    await removeEmptyStagingRoot(stagingRoot);
  }
}
