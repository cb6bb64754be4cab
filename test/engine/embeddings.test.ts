import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { embeddingOverrides, inspectEmbedding, readEmbedding } from "../../api/engine/adapters/embedding.ts";
import { PickleDict, PickleError, readTorchArchive, TorchTensor } from "../../api/engine/adapters/pickle.ts";
import { AdapterError } from "../../api/engine/adapters/types.ts";
import { tokenizeField } from "../../api/engine/generation/prompt_fields.ts";
import { tokenizePrompt } from "../../api/engine/prompt/chunks.ts";
import { loadSafetensors, readSafetensorsHeader, readTensorAsFloat32 } from "../../api/engine/safetensors.ts";
import { ClipTokenizer } from "../../api/engine/tokenizer/clip.ts";
import { referenceCase } from "../helpers/fixtures.ts";
import { cat as concat } from "../helpers/onnx_writer.ts";
import { writeSafetensors } from "../helpers/safetensors.ts";
import { zip } from "../helpers/torch_file.ts";

const FIXTURES = join(import.meta.dir, "../fixtures");
const EMB_DIR = join(FIXTURES, "adapters/embeddings");
const CASES = join(FIXTURES, "cases/embeddings_sd15");
const SD15 = join(FIXTURES, "checkpoints/tiny_sd15.safetensors");
const SDXL = join(FIXTURES, "checkpoints/tiny_sdxl.safetensors");
const SD1_TOKEN_KEY = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";
const XL_TOKEN_KEYS = [
  "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
  "conditioner.embedders.1.model.token_embedding.weight",
];

interface EmbeddingCase {
  prompt: string;
  negative_prompt: string | null;
  input_ids: number[];
  negative_input_ids: number[];
  embeddings: { name: string; file: string; n_vectors: number }[];
  added_tokens: Record<string, number>;
}

const CASE_NAMES = ["ep01_one_vector_dpmpp2m12", "ep02_three_vectors_and_pt_euler10"];
const cases = await Promise.all(
  CASE_NAMES.map(async (name) => ({
    name,
    json: (await referenceCase(name, "embeddings_sd15")) as unknown as EmbeddingCase,
    tensors: await loadSafetensors(join(CASES, name, "tensors.safetensors")),
  })),
);
/** The reference's token-embedding rows of every added token (`token_embedding_row.<token>`), float32. */
const referenceRows = new Map<string, Float32Array>();
for (const c of cases)
  for (const [key, t] of c.tensors)
    if (key.startsWith("token_embedding_row."))
      referenceRows.set(key.slice("token_embedding_row.".length), t.data);

const fileOf = (e: { file: string }) => join(EMB_DIR, e.file.split("/").pop() as string);
const tokenizer = await ClipTokenizer.fromDir(join(FIXTURES, "models/tiny_sd15/tokenizer"));
const tmp = await mkdtemp(join(tmpdir(), "sdx-emb-"));
afterAll(() => rm(tmp, { recursive: true, force: true }));

/** Row `i` of a [n, width] table. */
const row = (data: Float32Array, i: number, width: number) => data.subarray(i * width, (i + 1) * width);

/** Pickle bytes from a mix of opcode strings (latin1) and byte arrays. */
function pkl(...parts: (string | number[])[]): Uint8Array {
  const bytes: number[] = [];
  for (const part of parts) {
    if (typeof part === "string") for (const ch of part) bytes.push(ch.charCodeAt(0));
    else bytes.push(...part);
  }
  return new Uint8Array(bytes);
}

/** SHORT_BINUNICODE of an ASCII string. */
const sbu = (s: string) => pkl([0x8c, s.length], s);
const binunicode = (s: string) => pkl("X", [s.length & 0xff, (s.length >> 8) & 0xff, 0, 0], s);

describe("embedding files", () => {
  test("inspect: format, vectors, width; width 32 names no family", async () => {
    expect(await inspectEmbedding(join(EMB_DIR, "tinystyle.safetensors"))).toEqual({
      format: "embedding_safetensors",
      family: null,
      vectors: 1,
      width: 32,
    });
    expect(await inspectEmbedding(join(EMB_DIR, "tinyobject.safetensors"))).toEqual({
      format: "embedding_safetensors",
      family: null,
      vectors: 3,
      width: 32,
    });
    expect(await inspectEmbedding(join(EMB_DIR, "tinyglow.pt"))).toEqual({
      format: "embedding_pt",
      family: null,
      vectors: 2,
      width: 32,
    });
  });

  test("read: every vector equals the reference's token-embedding row (fp16 upcast, .pt tensor)", async () => {
    for (const [file, n] of [
      ["tinystyle.safetensors", 1],
      ["tinyobject.safetensors", 3],
      ["tinyglow.pt", 2],
    ] as const) {
      const e = await readEmbedding(join(EMB_DIR, file));
      const name = file.split(".")[0] as string;
      expect(e.name).toBe(name);
      expect(e.vectors).toBe(n);
      expect(e.tables.length).toBe(1);
      const table = e.tables[0];
      expect(table?.encoder).toBe(1);
      expect(table?.width).toBe(32);
      expect(table?.data.length).toBe(n * 32);
      for (let i = 0; i < n; i++) {
        const want = referenceRows.get(i === 0 ? name : `${name}_${i}`);
        expect(want).toBeDefined();
        expect(Array.from(row(table?.data as Float32Array, i, 32))).toEqual(Array.from(want as Float32Array));
      }
    }
  });

  test("family: 768 → sd1, 1024 → sd2, clip_l + clip_g → sdxl; 1-D tensor is one vector", async () => {
    const p768 = join(tmp, "w768.safetensors");
    await writeSafetensors(p768, { emb_params: { shape: [2, 768], data: new Float32Array(1536) } });
    expect((await inspectEmbedding(p768)).family).toBe("sd1");
    const p1024 = join(tmp, "w1024.safetensors");
    await writeSafetensors(p1024, { "<concept>": { shape: [1024], data: new Float32Array(1024) } });
    expect(await inspectEmbedding(p1024)).toEqual({
      format: "embedding_safetensors",
      family: "sd2",
      vectors: 1,
      width: 1024,
    });
    const pxl = join(tmp, "xl.safetensors");
    await writeSafetensors(pxl, {
      clip_g: { shape: [4, 1280], data: new Float32Array(4 * 1280) },
      clip_l: { shape: [4, 768], data: new Float32Array(4 * 768) },
    });
    expect(await inspectEmbedding(pxl)).toEqual({
      format: "embedding_safetensors",
      family: "sdxl",
      vectors: 4,
      width: 768,
    });
    const two = join(tmp, "two.safetensors");
    await writeSafetensors(two, {
      a: { shape: [1, 8], data: new Float32Array(8) },
      b: { shape: [1, 8], data: new Float32Array(8) },
    });
    expect(inspectEmbedding(two)).rejects.toThrow(AdapterError);
  });
});

describe("torch .pt reader", () => {
  test("tinyglow.pt: the A1111 dict with its tensor", async () => {
    const root = readTorchArchive(new Uint8Array(await Bun.file(join(EMB_DIR, "tinyglow.pt")).arrayBuffer()));
    expect(root).toBeInstanceOf(PickleDict);
    const dict = root as PickleDict;
    expect(dict.entries.get("name")).toBe("tinyglow");
    expect(dict.entries.get("sd_checkpoint_name")).toBe("tiny_sd15");
    const tensor = (dict.entries.get("string_to_param") as PickleDict).entries.get("*");
    expect(tensor).toBeInstanceOf(TorchTensor);
    expect((tensor as TorchTensor).shape).toEqual([2, 32]);
    expect((tensor as TorchTensor).dtype).toBe("F32");
  });

  test("diffusers' {token: Parameter} form, a half storage, a strided view, protocol-4 framing", async () => {
    // {"<cat>": _rebuild_parameter(_rebuild_tensor_v2(pid(("storage", HalfStorage, "0", "cpu", 6)), 0, (3, 2),
    // (1, 3), False, OrderedDict()), False, OrderedDict())}: a transposed [3, 2] view of a [2, 3] storage.
    const body = concat(
      pkl("}", [0x94]),
      sbu("<cat>"),
      sbu("torch._utils"),
      sbu("_rebuild_parameter"),
      pkl([0x93]),
      pkl("("),
      sbu("torch._utils"),
      sbu("_rebuild_tensor_v2"),
      pkl([0x93], "(("),
      sbu("storage"),
      sbu("torch"),
      sbu("HalfStorage"),
      pkl([0x93]),
      sbu("0"),
      sbu("cpu"),
      pkl("K", [6], "tQK", [0], "K", [3], "K", [2], [0x86], "K", [1], "K", [3], [0x86], [0x89]),
      pkl("ccollections\nOrderedDict\n)R", "tR", [0x89], "ccollections\nOrderedDict\n)R", [0x4e], "btRs."),
    );
    const proto = concat(pkl([0x80, 4, 0x95], [body.length, 0, 0, 0, 0, 0, 0, 0]), body);
    const halves = new Float16Array([1, 2, 3, 4, 5, 6]);
    const file = zip({
      "cat/data.pkl": proto,
      "cat/data/0": new Uint8Array(halves.buffer),
      "cat/version": new TextEncoder().encode("3\n"),
    });
    const path = join(tmp, "cat.bin");
    await Bun.write(path, file);
    const e = await readEmbedding(path);
    expect(e.name).toBe("cat");
    expect(e.vectors).toBe(3);
    expect(Array.from(e.tables[0]?.data as Float32Array)).toEqual([1, 4, 2, 5, 3, 6]);
  });

  const marker = join(tmp, "pwned");
  const cmd = `touch ${marker}`;
  const malicious: [string, Uint8Array][] = [
    ["posix.system", concat(pkl([0x80, 2], "cposix\nsystem\n"), binunicode(cmd), pkl([0x85], "R."))],
    ["os.system", concat(pkl([0x80, 2], "cos\nsystem\n"), binunicode(cmd), pkl([0x85], "R."))],
    [
      "builtins.eval",
      concat(
        pkl([0x80, 2], "cbuiltins\neval\n"),
        binunicode(`__import__('os').system('${cmd}')`),
        pkl([0x85], "R."),
      ),
    ],
    [
      "subprocess.Popen",
      concat(
        pkl([0x80, 4]),
        sbu("subprocess"),
        sbu("Popen"),
        pkl([0x93], "("),
        sbu("touch"),
        sbu(marker),
        pkl("l", [0x85], "R."),
      ),
    ],
    // The payload hidden inside an otherwise valid embedding dict.
    [
      "posix.system",
      concat(
        pkl([0x80, 2], "}(X", [15, 0, 0, 0], "string_to_param}X", [1, 0, 0, 0], "*cposix\nsystem\n"),
        binunicode(cmd),
        pkl([0x85], "Rsu."),
      ),
    ],
  ];
  for (const [global, bytes] of malicious) {
    test(`a pickle calling ${global} is refused, naming it, and nothing runs`, async () => {
      const path = join(tmp, `evil_${global}.pt`);
      await Bun.write(path, zip({ "evil/data.pkl": bytes, "evil/version": new TextEncoder().encode("3\n") }));
      expect(() => readTorchArchive(new Uint8Array(readFileSync(path)))).toThrow(
        new RegExp(`refusing global ${global.replace(".", "\\.")}`),
      );
      const err = await readEmbedding(path).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AdapterError);
      expect((err as Error).message).toContain(global);
      expect(existsSync(marker)).toBe(false);
    });
  }

  test("other refusals: unknown opcodes, NEWOBJ, compressed entries, legacy format, storage load-from-bytes", () => {
    const archive = (p: Uint8Array) => zip({ "x/data.pkl": p });
    expect(() =>
      readTorchArchive(archive(pkl([0x80, 2], "ccollections\nOrderedDict\n)", [0x81], "."))),
    ).toThrow(/NEWOBJ/);
    expect(() => readTorchArchive(archive(pkl([0x80, 2], "I1\n.")))).toThrow(/refusing opcode/);
    expect(() => readTorchArchive(archive(pkl([0x80, 2], "ctorch.storage\n_load_from_bytes\n.")))).toThrow(
      /refusing global torch\.storage\._load_from_bytes/,
    );
    expect(() => readTorchArchive(zip({ "x/data.pkl": pkl([0x80, 2], "N.") }, 8))).toThrow(/compressed/);
    expect(() =>
      readTorchArchive(pkl([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50])),
    ).toThrow(/legacy/);
    expect(() => readTorchArchive(archive(pkl([0x80, 2], "]", "cposix\nsystem\n", "a.")))).toThrow(
      PickleError,
    );
    // An OrderedDict's BUILD state may be a state dict's `_metadata`, and nothing else.
    const build = (key: string) =>
      archive(concat(pkl([0x80, 2], "ccollections\nOrderedDict\n)R}"), binunicode(key), pkl("}sb.")));
    expect(readTorchArchive(build("_metadata"))).toBeInstanceOf(PickleDict);
    expect(() => readTorchArchive(build("__class__"))).toThrow(/BUILD is only accepted/);
  });
});

describe("tokenizing prompts with embeddings", () => {
  for (const c of cases) {
    test(`${c.name}: prompt and negative ids equal the reference's (both syntaxes)`, () => {
      const embeddings = c.json.embeddings.map((e) => ({ name: e.name, vectors: e.n_vectors }));
      const withEmb = tokenizer.withEmbeddings(embeddings);
      // Each name expands to its n added tokens, ids from 49408 in load order.
      const names = c.json.embeddings.map((e) => e.name).join(" ");
      expect(withEmb.encode(names).slice(1, -1)).toEqual(Object.values(c.json.added_tokens));
      for (const syntax of ["diffusers", "a1111"] as const) {
        const cond = tokenizeField(tokenizer, "prompt", c.json.prompt, syntax, embeddings);
        expect(cond.chunks.map((ch) => ch.ids)).toEqual([c.json.input_ids]);
        const uncond = tokenizePrompt(tokenizer, c.json.negative_prompt ?? "", syntax, { embeddings });
        expect(uncond.chunks.map((ch) => ch.ids)).toEqual([c.json.negative_input_ids]);
      }
    });
  }

  test("the expansion is diffusers' plain replace: every occurrence, inside words too", () => {
    const tok = tokenizer.withEmbeddings([{ name: "tinyobject", vectors: 3 }]);
    expect(tok.expandEmbeddings("tinyobject and tinyobjects")).toBe(
      "tinyobject tinyobject_1 tinyobject_2 and tinyobject tinyobject_1 tinyobject_2s",
    );
    expect(tok.expandEmbeddings("nothing here")).toBe("nothing here");
    expect(() => tok.withEmbeddings([{ name: "tinyobject_1", vectors: 1 }])).toThrow(/already exists/);
  });

  test("a1111: an embedding takes the weight around it and never straddles a chunk boundary", () => {
    const embeddings = [{ name: "tinyobject", vectors: 3 }];
    const words = Array.from({ length: 73 }, () => "cat").join(" ");
    const t = tokenizePrompt(tokenizer, `${words} (tinyobject:1.3) dog`, "a1111", { embeddings });
    expect(t.chunks.length).toBe(2);
    const [first, second] = t.chunks as [(typeof t.chunks)[0], (typeof t.chunks)[0]];
    // 73 words + 3 vectors = 76 > 75: the embedding starts chunk 2; chunk 1 is 73 words then EOS padding.
    expect(first.ids.slice(74)).toEqual([49407, 49407, 49407]);
    expect(second.ids.slice(0, 5)).toEqual([49406, 49408, 49409, 49410, second.ids[4] as number]);
    expect(second.weights.slice(1, 4).map(Math.fround)).toEqual([1.3, 1.3, 1.3].map(Math.fround));
    expect(second.weights[4]).toBe(1);
    expect(t.tokenCount).toBe(73 + 3 + 1);
  });
});

describe("embeddingOverrides", () => {
  test("SD1: the token table grows by each embedding's rows, ids in load order", async () => {
    const c = cases[1]?.json as EmbeddingCase;
    const header = await readSafetensorsHeader(SD15);
    const { overrides, added, reports } = await embeddingOverrides(
      header,
      "sd1",
      c.embeddings.map((e) => ({ name: e.name, path: fileOf(e) })),
    );
    expect([...overrides.keys()]).toEqual([SD1_TOKEN_KEY]);
    const table = overrides.get(SD1_TOKEN_KEY);
    expect(table?.shape).toEqual([49408 + 5, 32]);
    const original = await readTensorAsFloat32(header, SD1_TOKEN_KEY);
    expect(table?.data.subarray(0, original.length)).toEqual(original);
    expect(added).toEqual([
      { encoder: 1, tokens: Object.entries(c.added_tokens).map(([text, id]) => ({ text, id })) },
    ]);
    for (const [text, id] of Object.entries(c.added_tokens))
      expect(Array.from(row(table?.data as Float32Array, id, 32))).toEqual(
        Array.from(referenceRows.get(text) as Float32Array),
      );
    expect(reports.map((r) => [r.name, r.vectors])).toEqual([
      ["tinyobject", 3],
      ["tinyglow", 2],
    ]);
    expect(reports[0]?.sha256).toMatch(/^[0-9a-f]{64}$/);
    // The tokenizer given the same embeddings in the same order agrees on the ids.
    const tok = tokenizer.withEmbeddings(c.embeddings.map((e) => ({ name: e.name, vectors: e.n_vectors })));
    for (const { text, id } of added[0]?.tokens ?? []) expect(tok.encode(text)[1]).toBe(id);
  });

  test("SDXL: clip_l rows into encoder 1, clip_g rows into encoder 2", async () => {
    const path = join(tmp, "xlglow.safetensors");
    const l = Float32Array.from({ length: 2 * 32 }, (_, i) => i / 7);
    const g = Float32Array.from({ length: 2 * 24 }, (_, i) => -i / 5);
    await writeSafetensors(path, {
      clip_l: { shape: [2, 32], data: l },
      clip_g: { shape: [2, 24], data: g },
    });
    const { overrides, added } = await embeddingOverrides(await readSafetensorsHeader(SDXL), "sdxl", [
      { name: "xlglow", path },
    ]);
    expect([...overrides.keys()]).toEqual(XL_TOKEN_KEYS);
    expect(overrides.get(XL_TOKEN_KEYS[0] as string)?.shape).toEqual([49410, 32]);
    expect(overrides.get(XL_TOKEN_KEYS[1] as string)?.shape).toEqual([49410, 24]);
    expect(overrides.get(XL_TOKEN_KEYS[0] as string)?.data.subarray(49408 * 32)).toEqual(l);
    expect(overrides.get(XL_TOKEN_KEYS[1] as string)?.data.subarray(49408 * 24)).toEqual(g);
    const tokens = [
      { text: "xlglow", id: 49408 },
      { text: "xlglow_1", id: 49409 },
    ];
    expect(added).toEqual([
      { encoder: 1, tokens },
      { encoder: 2, tokens },
    ]);
  });

  test("a width mismatch or the wrong number of encoders is an AdapterError naming the embedding", async () => {
    const p768 = join(tmp, "bigstyle.safetensors");
    await writeSafetensors(p768, { emb_params: { shape: [1, 768], data: new Float32Array(768) } });
    const sd15 = await readSafetensorsHeader(SD15);
    const err = await embeddingOverrides(sd15, "sd1", [{ name: "bigstyle", path: p768 }]).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AdapterError);
    expect((err as AdapterError).adapter).toBe("bigstyle");
    expect((err as Error).message).toMatch(/bigstyle has width 768 .* width 32/);
    const xl = await readSafetensorsHeader(SDXL);
    const err2 = await embeddingOverrides(xl, "sdxl", [
      { name: "tinystyle", path: join(EMB_DIR, "tinystyle.safetensors") },
    ]).catch((e: unknown) => e);
    expect(err2).toBeInstanceOf(AdapterError);
    expect((err2 as Error).message).toContain("tinystyle");
  });
});
