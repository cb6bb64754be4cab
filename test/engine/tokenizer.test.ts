import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ClipTokenizer, TokenizerError } from "../../api/engine/tokenizer/clip.ts";

const FIXTURE_DIR = join(import.meta.dir, "../fixtures/tokenizer");
const MODEL_TOKENIZER_DIR = join(import.meta.dir, "../fixtures/models/tiny_sd15/tokenizer");

/** One entry of `tokenizer_cases.json` (transformers 4.44 slow CLIPTokenizer, ftfy absent). */
interface TokenizerCase {
  text: string;
  input_ids: number[];
  input_ids_untruncated: number[];
  tokens_untruncated: string[];
  num_tokens_untruncated: number;
  truncated: boolean;
}

const cases: TokenizerCase[] = await Bun.file(join(FIXTURE_DIR, "tokenizer_cases.json")).json();

/** First index where two arrays differ, for readable failure reports. */
function firstDiff<T>(a: readonly T[], b: readonly T[]): number {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function describeDiff<T>(
  what: string,
  text: string,
  got: readonly T[],
  want: readonly T[],
): string | undefined {
  const i = firstDiff(got, want);
  if (i < 0) return undefined;
  const window = (xs: readonly T[]) => JSON.stringify(xs.slice(Math.max(0, i - 2), i + 3));
  return `${what} for ${JSON.stringify(text)}: first difference at index ${i}: got …${window(got)}… want …${window(want)}… (lengths ${got.length} vs ${want.length})`;
}

let tmpRoot = "";
let tok: ClipTokenizer;

beforeAll(async () => {
  tmpRoot = await mkdtemp(join(tmpdir(), "clip-tokenizer-test-"));
  tok = await ClipTokenizer.fromDir(FIXTURE_DIR);
});

afterAll(async () => {
  if (tmpRoot) await rm(tmpRoot, { recursive: true, force: true });
});

/** Copies a tokenizer folder into a fresh temp dir, optionally rewriting its JSON files. */
async function copyTokenizerDir(
  src: string,
  name: string,
  edit: {
    config?: (c: Record<string, unknown>) => void;
    specialMap?: (m: Record<string, unknown>) => void;
  } = {},
): Promise<string> {
  const dst = join(tmpRoot, name);
  await mkdir(dst, { recursive: true });
  for (const f of ["vocab.json", "merges.txt"]) await copyFile(join(src, f), join(dst, f));
  const config: Record<string, unknown> = await Bun.file(join(src, "tokenizer_config.json")).json();
  const specialMap: Record<string, unknown> = await Bun.file(join(src, "special_tokens_map.json")).json();
  edit.config?.(config);
  edit.specialMap?.(specialMap);
  await Bun.write(join(dst, "tokenizer_config.json"), JSON.stringify(config));
  await Bun.write(join(dst, "special_tokens_map.json"), JSON.stringify(specialMap));
  return dst;
}

describe("ClipTokenizer.fromDir", () => {
  test("reads special tokens and model_max_length", () => {
    expect(tok.bosId).toBe(49406);
    expect(tok.eosId).toBe(49407);
    expect(tok.padId).toBe(49407);
    expect(tok.modelMaxLength).toBe(77);
  });

  test("the save_pretrained folder (pretty-printed vocab, added_tokens_decoder) gives the same ids", async () => {
    const other = await ClipTokenizer.fromDir(MODEL_TOKENIZER_DIR);
    expect([other.bosId, other.eosId, other.padId, other.modelMaxLength]).toEqual([
      tok.bosId,
      tok.eosId,
      tok.padId,
      tok.modelMaxLength,
    ]);
    const failures: string[] = [];
    for (const c of cases) {
      const msg = describeDiff("encodePadded", c.text, other.encodePadded(c.text).ids, c.input_ids);
      if (msg) failures.push(msg);
    }
    expect(failures).toEqual([]);
  });

  test("a missing vocab.json throws TokenizerError", async () => {
    const dir = join(tmpRoot, "no-vocab");
    await mkdir(dir, { recursive: true });
    await copyFile(join(FIXTURE_DIR, "merges.txt"), join(dir, "merges.txt"));
    const err = await ClipTokenizer.fromDir(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TokenizerError);
    expect((err as Error).message).toContain("vocab.json");
  });

  test("a missing directory or malformed vocab.json throws TokenizerError", async () => {
    await expect(ClipTokenizer.fromDir(join(tmpRoot, "does-not-exist"))).rejects.toBeInstanceOf(
      TokenizerError,
    );
    const dir = join(tmpRoot, "bad-vocab");
    await mkdir(dir, { recursive: true });
    await copyFile(join(FIXTURE_DIR, "merges.txt"), join(dir, "merges.txt"));
    await Bun.write(join(dir, "vocab.json"), "{not json");
    await expect(ClipTokenizer.fromDir(dir)).rejects.toBeInstanceOf(TokenizerError);
    await Bun.write(join(dir, "vocab.json"), JSON.stringify(["a", "b"]));
    await expect(ClipTokenizer.fromDir(dir)).rejects.toBeInstanceOf(TokenizerError);
  });
});

describe("reference cases (transformers 4.44 slow CLIPTokenizer, no ftfy)", () => {
  test("fixture has all 146 cases", () => {
    expect(cases.length).toBe(146);
  });

  test("encodePadded(text).ids == input_ids (77, truncated, padded)", () => {
    const failures: string[] = [];
    for (const c of cases) {
      const got = tok.encodePadded(c.text);
      const msg = describeDiff("input_ids", c.text, got.ids, c.input_ids);
      if (msg) failures.push(msg);
      if (got.tokenCount !== c.num_tokens_untruncated - 2) {
        failures.push(
          `tokenCount for ${JSON.stringify(c.text)}: ${got.tokenCount} vs ${c.num_tokens_untruncated - 2}`,
        );
      }
      if (got.truncated !== c.truncated) failures.push(`truncated flag for ${JSON.stringify(c.text)}`);
    }
    expect(failures).toEqual([]);
  });

  test("encode(text) == input_ids_untruncated", () => {
    const failures: string[] = [];
    for (const c of cases) {
      const msg = describeDiff("input_ids_untruncated", c.text, tok.encode(c.text), c.input_ids_untruncated);
      if (msg) failures.push(msg);
    }
    expect(failures).toEqual([]);
  });

  test("tokenize(text) == tokens_untruncated without the BOS/EOS strings", () => {
    const failures: string[] = [];
    for (const c of cases) {
      const want = c.tokens_untruncated;
      expect(want[0]).toBe("<|startoftext|>");
      expect(want[want.length - 1]).toBe("<|endoftext|>");
      const msg = describeDiff("tokens_untruncated", c.text, tok.tokenize(c.text), want.slice(1, -1));
      if (msg) failures.push(msg);
    }
    expect(failures).toEqual([]);
  });
});

describe("encodePadded", () => {
  test("custom maxLength truncates to BOS + (maxLength - 2) tokens + EOS", () => {
    const full = tok.encode("a photo of a cat");
    const r = tok.encodePadded("a photo of a cat", 5);
    expect(r.ids).toEqual([tok.bosId, ...full.slice(1, 4), tok.eosId]);
    expect(r.tokenCount).toBe(5);
    expect(r.truncated).toBe(true);
    expect(tok.encodePadded("", 4).ids).toEqual([tok.bosId, tok.eosId, tok.padId, tok.padId]);
    expect(() => tok.encodePadded("x", 1)).toThrow(RangeError);
  });
});

describe('SDXL tokenizer_2 style pad token "!"', () => {
  const sdxlCatIds = [49406, 320, 1125, 539, 320, 2368, 49407, ...new Array<number>(70).fill(0)];

  test("legacy folder: special_tokens_map.json pad_token overrides the config", async () => {
    const dir = await copyTokenizerDir(FIXTURE_DIR, "bang-legacy", {
      config: (c) => {
        c.pad_token = "!";
      },
      specialMap: (m) => {
        m.pad_token = { content: "!", lstrip: false, normalized: false, rstrip: false, single_word: false };
      },
    });
    const t2 = await ClipTokenizer.fromDir(dir);
    expect(t2.padId).toBe(0);
    expect([t2.bosId, t2.eosId]).toEqual([49406, 49407]);
    // tiny_sdxl case xp01 `input_ids_2` (tokenizer_2, "!"-padded).
    expect(t2.encodePadded("a photo of a cat").ids).toEqual(sdxlCatIds);
    // The pad token is an added token, so the slow tokenizer cuts every "!" out as the bare "!" (id 0)
    // instead of BPE-ing it (diffusers issue #4153: "! !! !!!" → six 0s).
    expect(t2.encode("! !! !!!")).toEqual([49406, 0, 0, 0, 0, 0, 0, 49407]);
    expect(t2.tokenize("hello!")).toEqual(["hello</w>", "!"]);
    expect(tok.tokenize("hello!")).toEqual(["hello</w>", "!</w>"]);
  });

  test("save_pretrained folder: added_tokens_decoder + tokenizer_config pad_token", async () => {
    const dir = await copyTokenizerDir(MODEL_TOKENIZER_DIR, "bang-decoder", {
      config: (c) => {
        c.pad_token = "!";
        const decoder = c.added_tokens_decoder as Record<string, unknown>;
        decoder["0"] = {
          content: "!",
          lstrip: false,
          normalized: false,
          rstrip: false,
          single_word: false,
          special: true,
        };
      },
      // With added_tokens_decoder present, transformers ignores special_tokens_map.json (left at "<|endoftext|>").
    });
    const t2 = await ClipTokenizer.fromDir(dir);
    expect(t2.padId).toBe(0);
    expect(t2.encodePadded("a photo of a cat").ids).toEqual(sdxlCatIds);
    expect(t2.encode("! !! !!!")).toEqual([49406, 0, 0, 0, 0, 0, 0, 49407]);
  });
});

describe("transformers/Python-specific details", () => {
  test("literal special tokens are cut out before BasicTokenizer; upper-case ones still map via the BPE cache", () => {
    expect(tok.tokenize("a<|endoftext|>b")).toEqual(["a</w>", "<|endoftext|>", "b</w>"]);
    // Not matched by the (case-sensitive) added-tokens trie, lower-cased, then matched by the CLIP regex and
    // mapped to itself by the pre-seeded `self.cache`.
    expect(tok.encode("<|ENDOFTEXT|>")).toEqual([49406, 49407, 49407]);
  });

  test("characters unassigned in Unicode 14 (Python 3.11) are removed like control characters", () => {
    // U+1FA77 PINK HEART (Unicode 15) is category Cn for Python 3.11's unicodedata.
    expect(tok.tokenize("\u{1FA77} heart")).toEqual(tok.tokenize("heart"));
    expect(tok.tokenize("zero\u200bwidth")).toEqual(tok.tokenize("zerowidth"));
  });

  test("U+0345 is matched by no branch of the CLIP regex (Python `regex`, IGNORECASE)", () => {
    expect(tok.tokenize("a\u0345b")).toEqual(tok.tokenize("a b"));
  });

  test("CJK ideographs get spaces around them, kana does not", () => {
    expect(tok.tokenize("猫猫")).toEqual([...tok.tokenize("猫"), ...tok.tokenize("猫")]);
    expect(tok.tokenize("ねこ")).not.toEqual([...tok.tokenize("ね"), ...tok.tokenize("こ")]);
  });
});

describe("performance", () => {
  test("loads quickly and tokenizes a prompt in well under a millisecond after warm-up", async () => {
    const t0 = performance.now();
    const t = await ClipTokenizer.fromDir(FIXTURE_DIR);
    const loadMs = performance.now() - t0;
    const prompt =
      "a highly detailed digital painting of an ancient castle on a cliff above a stormy sea, dramatic lighting";
    t.encodePadded(prompt);
    const n = 200;
    const t1 = performance.now();
    for (let i = 0; i < n; i++) t.encodePadded(prompt);
    const perPromptMs = (performance.now() - t1) / n;
    // Generous bounds so a loaded CI machine does not flake; typical figures are far lower.
    expect(loadMs).toBeLessThan(1000);
    expect(perPromptMs).toBeLessThan(1);
  });
});
