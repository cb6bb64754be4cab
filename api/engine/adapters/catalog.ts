/**
 * The adapter folders beside the checkpoints (`models/loras/`, `models/embeddings/`, `models/vae/`,
 * `models/vae_approx/`, as ComfyUI names them; each configurable): which files they hold and what each is, read
 * from headers only — a safetensors JSON header, or a `.pt` embedding or `.pth` TAESD decoder through the
 * engine's safe torch reader — never applying anything. The verdict on each file is the engine's own inspection
 * (lora.ts, embedding.ts, vae.ts, previews/taesd_weights.ts), so what is listed usable is what a request can use;
 * this module adds the listing: names (file stems), a hint when a file is another kind of file, the largest LoRA
 * rank, A1111's embedding facts, the families a TAESD decoder serves (by its name), hashes (the model-hash cache,
 * computed on demand) and the name lookups requests use. A file that is not what its folder says is listed
 * unusable with the reason and never stops anything; a symbolic link is followed only to a file inside its
 * folder; dotfiles, sub-folders and other extensions are not listed.
 */
import type { Dirent } from "node:fs";
import { readdir, realpath, stat } from "node:fs/promises";
import { basename, extname, join, sep } from "node:path";
import {
  ADAPTER_EXTENSIONS,
  ADAPTER_FOLDERS,
  ADAPTER_KINDS,
  type AdapterFormat,
  type AdapterInfo,
  type AdapterKind,
  type AdapterList,
  type ModelKind,
  VAE_KEYWORDS,
  validationFailed,
} from "../../../contract/index.ts";
import { cachedFileHash, fileHash } from "../model_hash.ts";
import {
  TAESD_VARIANTS,
  type TaesdVariant,
  taesdDecoderStem,
  taesdVariantFor,
  taesdVariantOf,
} from "../previews/taesd_files.ts";
import { inspectTaesdDecoder } from "../previews/taesd_weights.ts";
import { readSafetensorsHeader, type SafetensorsHeader } from "../safetensors.ts";
import { inspectEmbedding } from "./embedding.ts";
import { inspectLora } from "./lora.ts";
import { PickleDict, readTorchFile } from "./pickle.ts";
import { inspectVae } from "./vae.ts";

/** The folder of each kind (absolute or relative to the working directory). */
export type AdapterFolders = Record<AdapterKind, string>;

/** The folders: each override, else `<modelsDir>/<ADAPTER_FOLDERS[kind]>`. */
export function adapterFolders(
  modelsDir: string,
  overrides: Partial<Record<AdapterKind, string>> = {},
): AdapterFolders {
  return {
    lora: overrides.lora ?? join(modelsDir, ADAPTER_FOLDERS.lora),
    embedding: overrides.embedding ?? join(modelsDir, ADAPTER_FOLDERS.embedding),
    vae: overrides.vae ?? join(modelsDir, ADAPTER_FOLDERS.vae),
    vae_approx: overrides.vae_approx ?? join(modelsDir, ADAPTER_FOLDERS.vae_approx),
  };
}

/** What an embedding file says beyond its vectors (A1111's EmbeddingItem), when it says it. */
export interface EmbeddingFacts {
  /** Width of each vector (768 SD 1.x, 1024 SD 2.x; SDXL files hold 768 + 1280); null when unread. */
  width: number | null;
  step: number | null;
  sdCheckpoint: string | null;
  sdCheckpointName: string | null;
}

/** One file of an adapter folder. */
export interface AdapterEntry {
  kind: AdapterKind;
  /** The file stem: what requests use. */
  name: string;
  /** The file name in its folder. */
  file: string;
  /** The file's real path; never sent to clients. */
  path: string;
  format: AdapterFormat | null;
  family: ModelKind | null;
  sizeBytes: number;
  usable: boolean;
  reason: string | null;
  details: AdapterInfo["details"];
  /** The safetensors `__metadata__` (kohya's ss_* training notes); {} for other files. */
  metadata: Record<string, string>;
  /** Embeddings only. */
  embedding: EmbeddingFacts | null;
}

/** An adapter a request named, found usable. */
export interface ResolvedAdapter {
  name: string;
  path: string;
  info: AdapterEntry;
}

/** The entries of each kind, each list sorted by name. */
export type AdapterEntries = Record<AdapterKind, AdapterEntry[]>;

/** How long a scan is reused before the folders are read again, ms (as the model scan). */
const SCAN_TTL_MS = 2000;

/** The request field each kind is named in, for 422s. */
const FIELD: Record<AdapterKind, string> = {
  lora: "loras",
  embedding: "prompt",
  vae: "vae",
  vae_approx: "preview.method",
};

/** What a header-level read found, before the file's place in the folder is added. */
type Classified = Pick<AdapterEntry, "format" | "family" | "details" | "metadata" | "embedding"> & {
  reason: string | null;
};

const unusable = (reason: string, metadata: Record<string, string> = {}): Classified => ({
  format: null,
  family: null,
  details: {},
  metadata,
  embedding: null,
  reason,
});

/** What else the file looks like, for the reason a file in the wrong folder gives. */
function lookalike(keys: string[], kind?: AdapterKind): string {
  const has = (re: RegExp) => keys.some((k) => re.test(k));
  if (has(/^model\.diffusion_model\./))
    return "; it looks like a checkpoint (it belongs in the models folder)";
  if (kind !== "vae" && has(/(^|\.)decoder\.conv_in\.weight$/))
    return "; it looks like a VAE (it belongs in the vae folder)";
  if (has(/lora_(down|up)\.weight$|lora_[AB]\.weight$/))
    return "; it looks like a LoRA (it belongs in the loras folder)";
  if (keys.includes("emb_params") || keys.includes("clip_l"))
    return "; it looks like an embedding (it belongs in the embeddings folder)";
  if (kind !== "vae_approx" && has(/^(decoder\.layers\.2|(decoder\.|taesd_decoder\.)?3)\.conv\.0\.weight$/))
    return "; it looks like a TAESD preview decoder (it belongs in the vae_approx folder)";
  return "";
}

/**
 * A LoRA's header checked: its format, complete modules (every down weight with its up) and largest rank, or
 * why it is no LoRA sdx applies (a LyCORIS network, an old diffusers file, another kind of file).
 */
export function classifyLora(header: SafetensorsHeader): Classified {
  const metadata = header.metadata;
  const names = [...header.tensors.keys()];
  const kohyaDown = /^(lora_(?:unet|te|te1|te2)_[A-Za-z0-9_]+)\.lora_down\.weight$/;
  const peftDown = /^(.+)\.lora_A(?:\.[^.]+)?\.weight$/;
  const downs = new Map<string, number[]>();
  let format: AdapterFormat | null = null;
  for (const name of names) {
    const k = kohyaDown.exec(name);
    const p = k ? null : peftDown.exec(name);
    const module = k?.[1] ?? p?.[1];
    if (module === undefined) continue;
    format ??= k ? "kohya" : "peft";
    downs.set(module, header.tensors.get(name)?.shape ?? []);
  }
  if (format === null || downs.size === 0) {
    if (names.some((n) => /\.(hada_w1_a|lokr_w1|oft_blocks|oft_diag)$/.test(n) || n.includes(".hada_")))
      return unusable("a LyCORIS LoHa/LoKr/OFT network: sdx reads LoRA and LoCon files only", metadata);
    if (names.some((n) => /\.lora\.(down|up)\.weight$/.test(n)))
      return unusable(
        "an old diffusers attention-processor LoRA (…_lora.down.weight): convert it to kohya or PEFT keys",
        metadata,
      );
    return unusable(
      `not a LoRA: no lora_down/lora_up (kohya) or lora_A/lora_B (PEFT) tensors${lookalike(names)}`,
      metadata,
    );
  }
  // Every down needs its up.
  const upOf = (module: string) =>
    format === "kohya" ? `${module}.lora_up.weight` : names.find((n) => n.startsWith(`${module}.lora_B`));
  const missing = [...downs.keys()].filter((m) => {
    const up = upOf(m);
    return up === undefined || !header.tensors.has(up);
  });
  if (missing.length > 0)
    return unusable(
      `a LoRA with ${missing.length} module${missing.length === 1 ? "" : "s"} missing the up weight (${missing[0]})`,
      metadata,
    );
  if ([...downs.values()].some((s) => s.length < 2 || (s[0] ?? 0) < 1))
    return unusable("a LoRA whose down weights are not [rank, in, …] matrices", metadata);
  const modules = [...downs.keys()];
  const isTe = (m: string) => /^lora_te[12]?_|^text_encoder(_2)?\.|^te[12]?\./.test(m);
  const rank = Math.max(...[...downs.values()].map((s) => s[0] as number));

  return {
    format,
    // The engine's inspectLora tells the family (classifyLoraFile).
    family: null,
    details: { rank, modules: modules.length, text_encoder: modules.some(isTe) },
    metadata,
    embedding: null,
    reason: null,
  };
}

/** A reader's message without the file's path (reasons never name server paths). */
function withoutPath(message: string, path: string): string {
  return message.split(`${path}: `).join("").split(path).join(basename(path));
}

/** A1111's facts of a `.pt` embedding (Embedding.save writes them), from the engine's safe torch reader. */
async function ptFacts(path: string): Promise<Omit<EmbeddingFacts, "width">> {
  const none = { step: null, sdCheckpoint: null, sdCheckpointName: null };
  const root = await readTorchFile(path).catch(() => null);
  if (!(root instanceof PickleDict)) return none;
  const text = (key: string) => {
    const v = root.entries.get(key);
    return typeof v === "string" ? v : null;
  };
  const step = root.entries.get("step");
  return {
    step: typeof step === "number" ? step : null,
    sdCheckpoint: text("sd_checkpoint"),
    sdCheckpointName: text("sd_checkpoint_name"),
  };
}

/** A LoRA: the engine's verdict (inspectLora), the largest rank and a hint when it is another kind of file. */
async function classifyLoraFile(path: string): Promise<Classified> {
  const header = await readSafetensorsHeader(path);
  // The header check first: it says what else a file is, and refuses a file with no complete module.
  const own = classifyLora(header);
  if (own.reason !== null) return own;
  let engine: Awaited<ReturnType<typeof inspectLora>>;
  try {
    engine = await inspectLora(path);
  } catch (e) {
    return unusable(withoutPath((e as Error).message, path), header.metadata);
  }
  return {
    format: engine.format,
    family: engine.family,
    details: {
      rank: own.details.rank ?? engine.rank,
      modules: engine.modules,
      text_encoder: engine.textEncoder,
    },
    metadata: header.metadata,
    embedding: null,
    reason: null,
  };
}

/** An embedding: the engine's verdict (inspectEmbedding); a `.pt` file's A1111 facts. */
async function classifyEmbeddingFile(path: string): Promise<Classified> {
  const isPt = extname(path).toLowerCase() === ".pt";
  const header = isPt ? null : await readSafetensorsHeader(path);
  let info: Awaited<ReturnType<typeof inspectEmbedding>>;
  try {
    info = await inspectEmbedding(path);
  } catch (e) {
    const hint = header ? lookalike([...header.tensors.keys()]) : "";
    return unusable(`${withoutPath((e as Error).message, path)}${hint}`, header?.metadata ?? {});
  }
  const facts = isPt ? await ptFacts(path) : { step: null, sdCheckpoint: null, sdCheckpointName: null };
  return {
    format: info.format,
    family: info.family,
    details: { vectors: info.vectors },
    metadata: header?.metadata ?? {},
    embedding: { width: info.width, ...facts },
    reason: null,
  };
}

/**
 * A TAESD decoder: the engine's verdict (inspectTaesdDecoder), and the families it serves from its name (taesd
 * and taesdxl take the same latents: only the name tells them apart).
 */
async function classifyVaeApproxFile(path: string): Promise<Classified> {
  const isPth = extname(path).toLowerCase() === ".pth";
  const header = isPth ? null : await readSafetensorsHeader(path);
  let info: Awaited<ReturnType<typeof inspectTaesdDecoder>>;
  try {
    info = await inspectTaesdDecoder(path);
  } catch (e) {
    const hint = header ? lookalike([...header.tensors.keys()], "vae_approx") : "";
    return unusable(`${withoutPath((e as Error).message, path)}${hint}`, header?.metadata ?? {});
  }
  const stem = basename(path, extname(path));
  const variant = taesdVariantOf(stem);
  if (variant === null) {
    return unusable(
      `a TAESD decoder, but its name does not say whose: taesd (SD 1.x/2.x) and taesdxl (SDXL) both take 4-channel latents, so sdx tells them apart by file name; rename it ${Object.keys(
        TAESD_VARIANTS,
      )
        .map((v) => `${taesdDecoderStem(v as TaesdVariant)}${extname(path)}`)
        .join(" or ")}`,
      header?.metadata ?? {},
    );
  }
  const families: ModelKind[] = [...TAESD_VARIANTS[variant].families];
  return {
    format: info.format,
    family: families.length === 1 ? (families[0] as ModelKind) : null,
    details: { families },
    metadata: header?.metadata ?? {},
    embedding: null,
    reason: null,
  };
}

/** A VAE: the engine's verdict (inspectVae), with a hint when it is another kind of file. */
async function classifyVaeFile(path: string): Promise<Classified> {
  const header = await readSafetensorsHeader(path);
  const info = await inspectVae(path);
  if (!info.usable) {
    const channels =
      info.latentChannels > 0 && info.latentChannels !== 4
        ? `; it has ${info.latentChannels} latent channels where SD 1.x, 2.x and SDXL have 4 (a VAE of another model family)`
        : "";
    const reason = withoutPath(info.reason ?? "not a VAE sdx reads", path);
    return unusable(`${reason}${channels}${lookalike([...header.tensors.keys()], "vae")}`, header.metadata);
  }
  if (info.latentChannels !== 4) {
    return unusable(
      `a VAE with ${info.latentChannels} latent channels: SD 1.x, 2.x and SDXL use 4 (this one is for another model family)`,
      header.metadata,
    );
  }
  return {
    format: info.format,
    family: null,
    details: {},
    metadata: header.metadata,
    embedding: null,
    reason: null,
  };
}

/**
 * Reads one file's header and says what it is; never throws. The verdict is the engine's own inspection
 * (lora.ts, embedding.ts, vae.ts read headers only), so what the listing calls usable is what a request can use.
 */
export async function classifyAdapterFile(kind: AdapterKind, path: string): Promise<Classified> {
  try {
    if (kind === "lora") return await classifyLoraFile(path);
    if (kind === "embedding") return await classifyEmbeddingFile(path);
    if (kind === "vae_approx") return await classifyVaeApproxFile(path);
    return await classifyVaeFile(path);
  } catch (e) {
    return unusable(`unreadable: ${withoutPath((e as Error).message, path)}`);
  }
}

/** Whether `inner` is `folder` or inside it (both real paths). */
function isInside(folder: string, inner: string): boolean {
  return inner.startsWith(folder.endsWith(sep) ? folder : folder + sep);
}

export interface AdapterCatalogOptions {
  folders: AdapterFolders;
  /** The model-hash cache folder (hashes.json). */
  cacheDir: string;
}

/**
 * The adapter folders' files: scanned at most every couple of seconds (or on `refresh`), each file's header read
 * again only when its size or modification time changed.
 */
export class AdapterCatalog {
  readonly folders: AdapterFolders;
  private readonly cacheDir: string;
  private scanned: { at: number; entries: Promise<AdapterEntries> } | null = null;
  /** Classifications by real path, with the size and modification time they were made for. */
  private readonly headers = new Map<string, { size: number; mtimeMs: number; classified: Classified }>();

  constructor(options: AdapterCatalogOptions) {
    this.folders = options.folders;
    this.cacheDir = options.cacheDir;
  }

  /** Every file of every folder (a scan at most every couple of seconds unless `fresh`). */
  list(options: { fresh?: boolean } = {}): Promise<AdapterEntries> {
    const now = performance.now();
    if (options.fresh || !this.scanned || now - this.scanned.at > SCAN_TTL_MS) {
      this.scanned = { at: now, entries: this.scan() };
    }
    return this.scanned.entries;
  }

  /** Reads the folders again now (A1111's refresh-loras). */
  refresh(): Promise<AdapterEntries> {
    return this.list({ fresh: true });
  }

  /** The listing GET /v1/adapters answers: every entry with its hash once known (cached hashes only). */
  async listing(options: { fresh?: boolean } = {}): Promise<AdapterList> {
    const entries = await this.list(options);
    const infos = async (kind: AdapterKind) =>
      Promise.all(entries[kind].map(async (e) => this.info(e, await this.cachedHash(e))));
    return {
      loras: await infos("lora"),
      embeddings: await infos("embedding"),
      vaes: await infos("vae"),
      vae_approx: await infos("vae_approx"),
      folders: {
        loras: this.folders.lora,
        embeddings: this.folders.embedding,
        vae: this.folders.vae,
        vae_approx: this.folders.vae_approx,
      },
    };
  }

  /** An entry as the contract lists it. */
  info(e: AdapterEntry, sha256: string | null): AdapterInfo {
    return {
      name: e.name,
      kind: e.kind,
      file: e.file,
      format: e.format,
      family: e.family,
      size_bytes: e.sizeBytes,
      sha256,
      usable: e.usable,
      reason: e.reason,
      details: e.details,
    };
  }

  /** The file's SHA-256 if cached and current; reads nothing. */
  cachedHash(e: AdapterEntry): Promise<string | null> {
    return cachedFileHash(e.path, this.cacheDir);
  }

  /** The file's SHA-256, read once and cached with the model hashes. */
  hash(e: AdapterEntry): Promise<string> {
    return fileHash(e.path, this.cacheDir);
  }

  /**
   * The usable adapter of that kind and name: a 422 naming `field` (by default the request field of the kind)
   * and the usable names when there is none such, or it cannot be used (with why). The folder is read again
   * before a name is declared unknown.
   */
  async resolveAdapter(kind: AdapterKind, name: string, field = FIELD[kind]): Promise<ResolvedAdapter> {
    let entry = (await this.list())[kind].find((e) => e.name === name);
    if (!entry) entry = (await this.list({ fresh: true }))[kind].find((e) => e.name === name);
    const allowed = (await this.list())[kind].filter((e) => e.usable).map((e) => e.name);
    const folder = ADAPTER_FOLDERS[kind];
    if (!entry) {
      throw validationFailed([
        {
          field,
          message: `no ${kind} named "${name}" in the ${folder} folder; ${allowed.length ? `${folder} there: ${allowed.join(", ")}` : `the ${folder} folder has none`} (GET /v1/adapters lists them)`,
          allowed,
        },
      ]);
    }
    if (!entry.usable) {
      throw validationFailed([
        { field, message: `${kind} "${name}" (${entry.file}) cannot be used: ${entry.reason}`, allowed },
      ]);
    }
    return { name: entry.name, path: entry.path, info: entry };
  }

  /**
   * The TAESD decoder that previews a model family's latents (`preview.method` "taesd"): taesdxl for SDXL, taesd
   * for SD 1.x/2.x — the usable vae_approx file of that variant, `taesd_decoder` / `taesdxl_decoder` (ComfyUI's
   * and the hub pull's names) before any other. A 422 on `preview.method` names the file to add and how to pull
   * it when there is none. The folder is read again before a decoder is declared missing.
   */
  async resolvePreviewDecoder(family: ModelKind): Promise<ResolvedAdapter> {
    const variant = taesdVariantFor(family);
    const preferred = taesdDecoderStem(variant);
    const pick = (entries: AdapterEntries) =>
      entries.vae_approx
        .filter((e) => e.usable && taesdVariantOf(e.name) === variant)
        .sort((a, b) => Number(b.name === preferred) - Number(a.name === preferred))[0];
    const entry = pick(await this.list()) ?? pick(await this.list({ fresh: true }));
    if (entry) return { name: entry.name, path: entry.path, info: entry };
    const { file } = TAESD_VARIANTS[variant];
    const unusableOnes = (await this.list()).vae_approx
      .filter((e) => !e.usable && taesdVariantOf(e.name) === variant)
      .map((e) => `; ${e.file} there cannot be used: ${e.reason}`)
      .join("");
    throw validationFailed([
      {
        field: FIELD.vae_approx,
        message: `taesd previews of ${family} models need the ${variant} decoder (${file}, or ${preferred}.pth from github.com/madebyollin/taesd) in the ${ADAPTER_FOLDERS.vae_approx} folder${unusableOnes}; pull it with \`sdx models pull ${variant}\` or POST /v1/models/pull {"name":"${variant}"}`,
        allowed: ["approx"],
      },
    ]);
  }

  private async scan(): Promise<AdapterEntries> {
    const out = {} as AdapterEntries;
    for (const kind of ADAPTER_KINDS) out[kind] = await this.scanFolder(kind);
    return out;
  }

  private async scanFolder(kind: AdapterKind): Promise<AdapterEntry[]> {
    let folder: string;
    let dirents: Dirent[];
    try {
      folder = await realpath(this.folders[kind]);
      dirents = await readdir(folder, { withFileTypes: true });
    } catch {
      return [];
    }
    const extensions: readonly string[] = ADAPTER_EXTENSIONS[kind];
    const files = dirents
      .filter((d) => !d.name.startsWith(".") && extensions.includes(extname(d.name).toLowerCase()))
      .map((d) => ({
        dirent: d,
        ext: extname(d.name).toLowerCase(),
        stem: d.name.slice(0, -extname(d.name).length),
      }))
      // By name, then the extension order of ADAPTER_EXTENSIONS: with x.safetensors and x.pt, x.safetensors wins.
      .sort((a, b) =>
        a.stem === b.stem ? extensions.indexOf(a.ext) - extensions.indexOf(b.ext) : a.stem < b.stem ? -1 : 1,
      );
    const entries: AdapterEntry[] = [];
    const taken = new Map<string, string>();
    for (const { dirent, stem } of files) {
      const entry = await this.inspect(kind, folder, dirent, stem);
      if (!entry) continue;
      const first = taken.get(stem);
      if (first !== undefined && entry.usable) {
        entry.usable = false;
        entry.reason = `${first} has the same name, and is the one used`;
      } else if (entry.usable) {
        taken.set(stem, entry.file);
      }
      entries.push(entry);
    }
    return entries;
  }

  /** One directory entry: null for what is not a file (a folder, a socket, a link to a folder). */
  private async inspect(
    kind: AdapterKind,
    folder: string,
    dirent: Dirent,
    stem: string,
  ): Promise<AdapterEntry | null> {
    const base: AdapterEntry = {
      kind,
      name: stem,
      file: dirent.name,
      path: join(folder, dirent.name),
      format: null,
      family: null,
      sizeBytes: 0,
      usable: false,
      reason: null,
      details: {},
      metadata: {},
      embedding: null,
    };
    if (dirent.isSymbolicLink()) {
      let target: string;
      try {
        target = await realpath(base.path);
      } catch {
        return { ...base, reason: "a symbolic link to nothing (its target is missing)" };
      }
      if (!isInside(folder, target)) {
        return { ...base, reason: "a symbolic link to a file outside its folder: sdx does not follow it" };
      }
      base.path = target;
    } else if (!dirent.isFile()) {
      return null;
    }
    const s = await stat(base.path).catch(() => null);
    if (!s?.isFile()) return null;
    base.sizeBytes = s.size;
    const badName = this.nameProblem(kind, stem);
    if (badName) return { ...base, reason: badName };
    let known = this.headers.get(base.path);
    if (!known || known.size !== s.size || known.mtimeMs !== s.mtimeMs) {
      known = { size: s.size, mtimeMs: s.mtimeMs, classified: await classifyAdapterFile(kind, base.path) };
      this.headers.set(base.path, known);
    }
    const c = known.classified;
    return {
      ...base,
      format: c.format,
      family: c.family,
      details: c.details,
      metadata: c.metadata,
      embedding: c.embedding,
      usable: c.reason === null,
      reason: c.reason,
    };
  }

  /** Why a file's stem cannot name it in a request, or null. */
  private nameProblem(kind: AdapterKind, stem: string): string | null {
    if (stem.length === 0) return "a file with no name before its extension";
    if (/[\\\0]/.test(stem)) return "its name holds a backslash, which request names cannot";
    if (kind === "vae" && (VAE_KEYWORDS as readonly string[]).includes(stem.toLowerCase()))
      return `"${stem}" is a reserved word of the vae field (${VAE_KEYWORDS.join(", ")}): rename the file`;
    return null;
  }
}
