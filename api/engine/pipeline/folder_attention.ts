/**
 * Fused attention for ONNX folders: the folder's UNet rewritten once into MultiHeadAttention
 * (onnx/fuse_attention.ts) and cached like checkpoint graphs, in `.sdx-cache/<folder>-unet-mha-<key>/` beside the
 * folder: the rewritten `unet.onnx`, a hard link of the original model file its inline weights point into, hard
 * links of its external data files, and a manifest. The key hashes the graph and matcher versions and the names,
 * sizes and mtimes of the files in the UNet's folder, so a changed export or matcher gets a new rewrite. The
 * original files are untouched.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { ExecutionProvider } from "../../../contract/index.ts";
import { writeFileAtomic } from "../../../lib/fs/atomic.ts";
import { buildCacheFolder, GRAPH_VERSION, linkWeights } from "../checkpoint/build.ts";
import { cacheDirOf } from "../model_folder.ts";
import { findAttentions, rewriteModel, unfusable } from "../onnx/fuse_attention.ts";
import { readOnnxGraph, resolveExternalPath } from "../onnx/proto.ts";
import { OnnxModel } from "../onnx/runtime.ts";

const MANIFEST_FILE = "sdx_fused_unet.json";
/** Bump when fuse_attention.ts matches or writes differently, so earlier rewrites (and refusals) are redone. */
const MATCHER_VERSION = 2;
const GRAPH_FILE = "unet.onnx";
/** The hard link of the original model file, which the rewritten graph's inline initializers point into. */
const SOURCE_LINK = "unet.source.onnx";

export interface FusedFolderUNet {
  /** The UNet to load: the rewritten one, or the original when nothing could be fused. */
  path: string;
  /** Attentions replaced by MultiHeadAttention, of `attentions` in the graph. */
  fused: number;
  attentions: number;
  /** Why nothing was fused, when nothing was. */
  skipped: string | null;
  reused: boolean;
}

interface Manifest {
  graphVersion: number;
  fused: number;
  attentions: number;
  skipped: string | null;
  /** The UNet's sample type ("float32", "float16"). */
  sampleType: string;
}

async function folderKey(unetDir: string): Promise<string> {
  const hash = createHash("sha256").update(`${GRAPH_VERSION}:mha:${MATCHER_VERSION}:`);
  for (const name of (await readdir(unetDir)).sort()) {
    const info = await stat(join(unetDir, name));
    if (info.isFile()) hash.update(`${name}:${info.size}:${info.mtimeMs};`);
  }
  return hash.digest("hex").slice(0, 16);
}

/** The fused UNet of the ONNX folder `folder` (whose UNet is `unetPath`), built on first use. */
export async function fusedFolderUNet(
  folder: string,
  unetPath: string,
  provider: ExecutionProvider,
  log: (line: string) => void = () => undefined,
): Promise<FusedFolderUNet> {
  const cacheRoot = cacheDirOf(dirname(folder));
  const stem = `${basename(folder)}-unet-mha`;
  const dir = join(cacheRoot, `${stem}-${await folderKey(dirname(unetPath))}`);
  const result = (m: Manifest, reused: boolean): FusedFolderUNet => {
    // onnxruntime's CPU MultiHeadAttention kernel is float32 only.
    if (provider === "cpu" && m.sampleType !== "float32" && m.fused > 0) {
      const skipped = `onnxruntime's CPU MultiHeadAttention takes float32, and this UNet computes in ${m.sampleType}`;
      return { path: unetPath, fused: 0, attentions: m.attentions, skipped, reused };
    }
    const path = m.fused > 0 ? join(dir, GRAPH_FILE) : unetPath;
    return { path, fused: m.fused, attentions: m.attentions, skipped: m.skipped, reused };
  };
  const readManifest = async (at: string): Promise<Manifest | null> => {
    const file = Bun.file(join(at, MANIFEST_FILE));
    if (!(await file.exists())) return null;
    const m = (await file.json()) as Manifest;
    return m.graphVersion === GRAPH_VERSION ? m : null;
  };
  const cached = await readManifest(dir);
  if (cached) return result(cached, true);

  const graph = await readOnnxGraph(unetPath);
  const scan = await findAttentions(graph);
  let skipped =
    unfusable(graph) ??
    (scan.matches.length === 0 ? "no attention in the graph matched a provable pattern" : null);
  const model = skipped ? null : await rewriteModel(graph, scan.matches, SOURCE_LINK);
  const ours = [GRAPH_FILE, SOURCE_LINK, MANIFEST_FILE];
  if (model && [...model.externalFiles].some((f) => ours.includes(f)))
    skipped = `its external data is named like a file of the cache (${ours.join(", ")})`;
  const manifest: Manifest = {
    graphVersion: GRAPH_VERSION,
    fused: skipped ? 0 : scan.matches.length,
    attentions: scan.attentions,
    skipped,
    sampleType: graph.inputs.find((i) => i.name === "sample")?.type ?? "float32",
  };
  await buildCacheFolder(
    cacheRoot,
    stem,
    dir,
    async (tmp) => {
      if (model && manifest.fused > 0) {
        const copied: string[] = [];
        if (model.readsWeights && (await linkWeights(unetPath, join(tmp, SOURCE_LINK))) === "copied")
          copied.push(unetPath);
        for (const location of model.externalFiles) {
          const source = resolveExternalPath(graph.dir, location);
          const target = resolveExternalPath(tmp, location);
          await mkdir(dirname(target), { recursive: true });
          if ((await linkWeights(source, target)) === "copied") copied.push(source);
        }
        if (copied.length > 0)
          log(
            `sdx: ${folder}: no hard link possible here, so ${copied.join(", ")} were copied into the cache`,
          );
        await writeFileAtomic(join(tmp, GRAPH_FILE), model.bytes);
      }
      await writeFileAtomic(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2));
    },
    async (at) => (await readManifest(at)) !== null,
  );
  return result(manifest, false);
}

/**
 * Opens the folder's UNet session: the fused graph, or, where onnxruntime refuses it (a provider whose
 * MultiHeadAttention kernel does not take it), the export as it is, with the reason in `skipped`.
 */
export async function loadFolderUNet(
  fused: FusedFolderUNet,
  original: string,
  provider: ExecutionProvider,
): Promise<{ model: OnnxModel; fused: FusedFolderUNet }> {
  if (fused.path !== original) {
    try {
      return { model: await OnnxModel.load(fused.path, { provider }), fused };
    } catch (e) {
      const reason = (e instanceof Error ? e.message : String(e)).split("\n")[0];
      const skipped = `onnxruntime refused the rewritten UNet: ${reason}`;
      fused = { ...fused, path: original, fused: 0, skipped };
    }
  }
  return { model: await OnnxModel.load(original, { provider }), fused };
}

/** The load log line for a folder's fused UNet. */
export function describeFolderAttention(name: string, f: FusedFolderUNet): string {
  const what = `${f.fused} of ${f.attentions} UNet attentions fused into MultiHeadAttention`;
  if (f.skipped) return `sdx: ${name}: ${what} (${f.skipped}); the UNet runs as exported`;
  return `sdx: ${name}: ${what}${f.reused ? " (cached graph)" : ""}`;
}
