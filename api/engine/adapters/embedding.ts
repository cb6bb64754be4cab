/**
 * Textual-inversion embeddings: reading the files and extending the text encoders' token-embedding tables.
 *
 * File formats, as AUTOMATIC1111 (`modules/textual_inversion/textual_inversion.py`, `load_from_file`) reads them
 * after `safetensors.torch.load_file` / `torch.load`:
 * - `string_to_param` in the dict (A1111's own `.pt`, written by `Embedding.save()`): its only value, [n, width].
 * - `clip_l` + `clip_g` (SDXL): [n, 768] for the CLIP-L encoder and [n, 1280] for OpenCLIP bigG, same n.
 * - any other dict with a single tensor (`emb_params` in A1111 `.safetensors`, diffusers' `learned_embeds.bin`
 *   `{"<token>": tensor}`): that tensor; a 1-D tensor is one vector (A1111 `unsqueeze(0)`).
 * All dtypes are upcast to float32. The embedding's name is the file's stem, the word a prompt uses.
 *
 * Model side (diffusers `load_textual_inversion`): an n-vector embedding becomes the added tokens
 * `name, name_1, …, name_{n-1}`, with ids from the vocabulary size on (49408 for every SD family) in load order,
 * and the token-embedding matrix of each text encoder grows by those rows, row id = vector i.
 */
import { basename, extname } from "node:path";
import type { ModelKind } from "../../../contract/index.ts";
import { TEXT_ENCODER_PREFIXES } from "../checkpoint/detect.ts";
import {
  readSafetensorsHeader,
  readTensorAsFloat32,
  type SafetensorsHeader,
  type TensorInfo,
} from "../safetensors.ts";
import { PickleDict, PickleError, type PickleValue, readTorchFile, TorchTensor } from "./pickle.ts";
import { AdapterError, type WeightOverrides } from "./types.ts";

export type EmbeddingFormat = "embedding_safetensors" | "embedding_pt";

export interface EmbeddingInfo {
  format: EmbeddingFormat;
  /** sd1 (width 768), sd2 (1024), sdxl (clip_l + clip_g); null when the width names no family (e.g. tiny models). */
  family: ModelKind | null;
  vectors: number;
  /** Width of the first encoder's table (clip_l for SDXL). */
  width: number;
}

export interface EmbeddingTable {
  /** 1: the first text encoder (CLIP-L / OpenCLIP-H); 2: SDXL's OpenCLIP bigG. */
  encoder: 1 | 2;
  width: number;
  /** [vectors, width] row-major float32. */
  data: Float32Array;
}

export interface Embedding {
  name: string;
  vectors: number;
  tables: EmbeddingTable[];
}

/**
 * Most vectors an embedding may have: one A1111 chunk holds 75 tokens and an embedding never spans two
 * (real embeddings have 1–75).
 */
export const MAX_EMBEDDING_VECTORS = 75;

const SAFETENSORS_EXTENSIONS = new Set([".safetensors"]);
const TORCH_EXTENSIONS = new Set([".pt", ".bin"]);

/** A tensor as read from either format, before it is checked. */
interface RawTensor {
  shape: number[];
  read: () => Promise<Float32Array>;
}

/** The file's stem: the name a prompt writes to use it. */
export function embeddingName(path: string): string {
  const base = basename(path);
  return base.slice(0, base.length - extname(base).length);
}

function formatOf(path: string): EmbeddingFormat {
  const ext = extname(path).toLowerCase();
  if (SAFETENSORS_EXTENSIONS.has(ext)) return "embedding_safetensors";
  if (TORCH_EXTENSIONS.has(ext)) return "embedding_pt";
  throw new AdapterError(
    embeddingName(path),
    `${basename(path)}: embeddings are .safetensors, .pt or .bin files`,
  );
}

/** The dict's tensors by key, read lazily (safetensors) or already in memory (.pt). */
async function openTensors(path: string, name: string): Promise<Map<string, RawTensor | PickleValue>> {
  const out = new Map<string, RawTensor | PickleValue>();
  if (formatOf(path) === "embedding_safetensors") {
    let header: SafetensorsHeader;
    try {
      header = await readSafetensorsHeader(path);
    } catch (e) {
      throw new AdapterError(name, `embedding ${name}: ${(e as Error).message}`);
    }
    for (const [key, info] of header.tensors)
      out.set(key, { shape: info.shape, read: () => readTensorAsFloat32(header, key) });
    return out;
  }
  let root: PickleValue;
  try {
    root = await readTorchFile(path);
  } catch (e) {
    if (e instanceof PickleError) throw new AdapterError(name, `embedding ${name}: ${e.message}`);
    throw e;
  }
  if (!(root instanceof PickleDict))
    throw new AdapterError(name, `embedding ${name}: the .pt file does not hold a dict`);
  for (const [key, value] of root.entries) out.set(String(key), value);
  return out;
}

function isRaw(v: RawTensor | PickleValue | undefined): v is RawTensor {
  return typeof v === "object" && v !== null && "read" in v && "shape" in v;
}

/** A tensor-valued entry as a RawTensor, or undefined. */
function asTensor(v: RawTensor | PickleValue | undefined): RawTensor | undefined {
  if (isRaw(v)) return v;
  if (v instanceof TorchTensor) return { shape: v.shape, read: async () => v.data };
  return undefined;
}

/** A1111's branches, in its order: string_to_param, clip_g + clip_l, a single tensor. */
function pickTensors(
  entries: Map<string, RawTensor | PickleValue>,
  name: string,
): { encoder: 1 | 2; tensor: RawTensor; key: string }[] {
  const stringToParam = entries.get("string_to_param");
  if (stringToParam instanceof PickleDict) {
    const values = [...stringToParam.entries.values()];
    const tensor = asTensor(values[0]);
    if (values.length !== 1 || !tensor)
      throw new AdapterError(name, `embedding ${name}: string_to_param must hold exactly one tensor`);
    return [{ encoder: 1, tensor, key: "string_to_param" }];
  }
  const clipL = asTensor(entries.get("clip_l"));
  const clipG = asTensor(entries.get("clip_g"));
  if (clipL && clipG) {
    return [
      { encoder: 1, tensor: clipL, key: "clip_l" },
      { encoder: 2, tensor: clipG, key: "clip_g" },
    ];
  }
  const tensors = [...entries].filter(([, v]) => asTensor(v) !== undefined);
  if (entries.size === 1 && tensors.length === 1) {
    const [key, value] = tensors[0] as [string, RawTensor | PickleValue];
    return [{ encoder: 1, tensor: asTensor(value) as RawTensor, key }];
  }
  throw new AdapterError(
    name,
    `embedding ${name}: not a textual-inversion embedding (expected string_to_param, clip_l + clip_g, or a single tensor; found ${[...entries.keys()].join(", ") || "nothing"})`,
  );
}

/** [n, width] (or [width] = one vector) with 1 ≤ n ≤ 75. */
function vectorsAndWidth(shape: readonly number[], name: string, key: string): [number, number] {
  const dims = shape.length === 1 ? [1, shape[0] as number] : shape;
  const [n, width] = dims as [number, number];
  if (dims.length !== 2 || n < 1 || width < 1)
    throw new AdapterError(
      name,
      `embedding ${name}: ${key} has shape [${shape.join(", ")}], expected [vectors, width]`,
    );
  if (n > MAX_EMBEDDING_VECTORS)
    throw new AdapterError(name, `embedding ${name}: ${n} vectors (at most ${MAX_EMBEDDING_VECTORS})`);
  return [n, width];
}

/** Width 768 = CLIP-L (SD 1.x), 1024 = OpenCLIP-H (SD 2.x); clip_l + clip_g = SDXL. */
function familyOf(widths: readonly number[]): ModelKind | null {
  if (widths.length === 2) return "sdxl";
  if (widths[0] === 768) return "sd1";
  if (widths[0] === 1024) return "sd2";
  return null;
}

async function parse(path: string): Promise<{
  format: EmbeddingFormat;
  name: string;
  parts: ReturnType<typeof pickTensors>;
  shapes: [number, number][];
}> {
  const name = embeddingName(path);
  const format = formatOf(path);
  const parts = pickTensors(await openTensors(path, name), name);
  const shapes = parts.map((p) => vectorsAndWidth(p.tensor.shape, name, p.key));
  if (shapes.some(([n]) => n !== shapes[0]?.[0]))
    throw new AdapterError(name, `embedding ${name}: clip_l and clip_g have different numbers of vectors`);
  return { format, name, parts, shapes };
}

/** Format, family and size of an embedding file, without reading more than needed. */
export async function inspectEmbedding(path: string): Promise<EmbeddingInfo> {
  const { format, shapes } = await parse(path);
  const [vectors, width] = shapes[0] as [number, number];
  return { format, family: familyOf(shapes.map(([, w]) => w)), vectors, width };
}

/** An embedding's vectors as float32 tables, one per text encoder it targets. */
export async function readEmbedding(path: string): Promise<Embedding> {
  const { name, parts, shapes } = await parse(path);
  const tables: EmbeddingTable[] = [];
  for (const [i, part] of parts.entries()) {
    const width = (shapes[i] as [number, number])[1];
    tables.push({ encoder: part.encoder, width, data: Float32Array.from(await part.tensor.read()) });
  }
  return { name, vectors: (shapes[0] as [number, number])[0], tables };
}

/** The LDM key of each text encoder's token-embedding weight [vocab, width], in encoder order. */
function tokenEmbeddingKeys(checkpoint: SafetensorsHeader, kind: ModelKind): string[] {
  return TEXT_ENCODER_PREFIXES[kind].map(({ prefix, layout }) => {
    // hf: `<prefix>embeddings.token_embedding.weight` (also without the `text_model.` level); openclip: `<prefix>token_embedding.weight`.
    const candidates =
      layout === "hf"
        ? [
            `${prefix}embeddings.token_embedding.weight`,
            `${prefix.replace(/text_model\.$/, "")}embeddings.token_embedding.weight`,
          ]
        : [`${prefix}token_embedding.weight`];
    const key = candidates.find((k) => checkpoint.tensors.has(k));
    if (!key)
      throw new AdapterError(
        "embeddings",
        `the checkpoint has no token embedding (${candidates.join(" or ")})`,
      );
    return key;
  });
}

export interface AddedTokens {
  encoder: 1 | 2;
  tokens: { text: string; id: number }[];
}

export interface EmbeddingReport {
  name: string;
  vectors: number;
  sha256?: string;
}

/**
 * The token-embedding tables of `checkpoint`'s text encoders with every embedding's rows appended, in the order
 * given: embedding k's vector i lands at row `vocab + (vectors of embeddings before k) + i`, the id of added token
 * `name` (i = 0) or `name_i` — the ids a tokenizer given the same embeddings in the same order produces
 * (`ClipTokenizer.withEmbeddings`; both start at 49408 for the SD families, whose tokenizer size is the vocab).
 * A single-table embedding fits SD 1.x / 2.x; an SDXL model needs clip_l + clip_g. Each table's width must
 * equal its encoder's; anything else is an AdapterError naming the embedding.
 */
export async function embeddingOverrides(
  checkpoint: SafetensorsHeader,
  kind: ModelKind,
  embeddings: readonly { name: string; path: string }[],
): Promise<{ overrides: WeightOverrides; added: AddedTokens[]; reports: EmbeddingReport[] }> {
  if (embeddings.length === 0) return { overrides: new Map(), added: [], reports: [] };
  const keys = tokenEmbeddingKeys(checkpoint, kind);
  const names = new Set<string>();
  const loaded: { name: string; embedding: Embedding }[] = [];
  const reports: EmbeddingReport[] = [];
  for (const { name, path } of embeddings) {
    if (names.has(name)) throw new AdapterError(name, `embedding ${name} is listed twice`);
    names.add(name);
    const embedding = await readEmbedding(path);
    if (embedding.tables.length !== keys.length) {
      const what =
        embedding.tables.length === 2 ? "an SDXL embedding (clip_l + clip_g)" : "a one-encoder embedding";
      throw new AdapterError(
        name,
        `embedding ${name} is ${what}; this ${kind} model has ${keys.length} text encoder(s)`,
      );
    }
    loaded.push({ name, embedding });
    const hasher = new Bun.CryptoHasher("sha256");
    hasher.update(await Bun.file(path).arrayBuffer());
    reports.push({ name, vectors: embedding.vectors, sha256: hasher.digest("hex") });
  }

  const total = loaded.reduce((n, l) => n + l.embedding.vectors, 0);
  const overrides: WeightOverrides = new Map();
  const added: AddedTokens[] = [];
  for (const [i, key] of keys.entries()) {
    const encoder = (i + 1) as 1 | 2;
    const [vocab, width] = (checkpoint.tensors.get(key) as TensorInfo).shape as [number, number];
    for (const { name, embedding } of loaded) {
      const table = embedding.tables.find((t) => t.encoder === encoder) as EmbeddingTable;
      if (table.width !== width) {
        throw new AdapterError(
          name,
          `embedding ${name} has width ${table.width} but text encoder ${encoder} of this model has width ${width}; it was made for another model family`,
        );
      }
    }
    const data = new Float32Array((vocab + total) * width);
    data.set(await readTensorAsFloat32(checkpoint, key));
    const tokens: { text: string; id: number }[] = [];
    let row = vocab;
    for (const { name, embedding } of loaded) {
      const table = embedding.tables.find((t) => t.encoder === encoder) as EmbeddingTable;
      data.set(table.data, row * width);
      for (let v = 0; v < embedding.vectors; v++)
        tokens.push({ text: v === 0 ? name : `${name}_${v}`, id: row + v });
      row += embedding.vectors;
    }
    overrides.set(key, { shape: [vocab + total, width], data });
    added.push({ encoder, tokens });
  }
  return { overrides, added, reports };
}
