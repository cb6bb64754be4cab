import { beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  CHUNK_LENGTH,
  type PromptChunk,
  type TokenizedPrompt,
  tokenizePrompt,
} from "../../api/engine/prompt/chunks.ts";
import { PromptSyntaxError, parsePromptAttention } from "../../api/engine/prompt/emphasis.ts";
import {
  type Conditioning,
  type EncodeChunks,
  encodePrompt,
  padToSameLength,
} from "../../api/engine/prompt/encode.ts";
import { ClipTokenizer } from "../../api/engine/tokenizer/clip.ts";
import { PROMPT_SYNTAXES } from "../../contract/index.ts";

const FIXTURE_DIR = join(import.meta.dir, "../fixtures/tokenizer");

interface TokenizerCase {
  text: string;
  input_ids: number[];
  num_tokens_untruncated: number;
}

const cases: TokenizerCase[] = await Bun.file(join(FIXTURE_DIR, "tokenizer_cases.json")).json();

let tok: ClipTokenizer;
beforeAll(async () => {
  tok = await ClipTokenizer.fromDir(FIXTURE_DIR);
});

const BOS = 49406;
const EOS = 49407;
const COMMA = 267;
/** Single-token words of the SD 1.x vocabulary and their ids. */
const WORDS: ReadonlyArray<[string, number]> = [
  ["cat", 2368],
  ["dog", 1929],
  ["red", 736],
  ["blue", 1746],
  ["tree", 2677],
  ["house", 1212],
  ["sun", 2176],
  ["moon", 3293],
  ["star", 1565],
  ["sky", 2390],
];

/** `n` single-token words, cycling through WORDS. */
function words(n: number, offset = 0): Array<[string, number]> {
  return Array.from({ length: n }, (_, i) => WORDS[(i + offset) % WORDS.length] as [string, number]);
}

/** A chunk row as A1111 builds it for SD1: BOS, tokens, EOS padding to 77. */
function row(tokens: readonly number[]): number[] {
  const ids = [BOS, ...tokens];
  while (ids.length < CHUNK_LENGTH) ids.push(EOS);
  return ids;
}

function ones(n = CHUNK_LENGTH): number[] {
  return new Array<number>(n).fill(1);
}

describe("parsePromptAttention (A1111 prompt_parser.parse_prompt_attention)", () => {
  test("docstring examples", () => {
    expect(parsePromptAttention("normal text")).toEqual([["normal text", 1.0]]);
    expect(parsePromptAttention("an (important) word")).toEqual([
      ["an ", 1.0],
      ["important", 1.1],
      [" word", 1.0],
    ]);
    expect(parsePromptAttention("(unbalanced")).toEqual([["unbalanced", 1.1]]);
    expect(parsePromptAttention("\\(literal\\]")).toEqual([["(literal]", 1.0]]);
    expect(parsePromptAttention("(unnecessary)(parens)")).toEqual([["unnecessaryparens", 1.1]]);
    expect(parsePromptAttention("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).")).toEqual([
      ["a ", 1.0],
      ["house", 1.5730000000000004],
      [" ", 1.1],
      ["on", 1.0],
      [" a ", 1.1],
      ["hill", 0.55],
      [", sun, ", 1.1],
      ["sky", 1.4641000000000006],
      [".", 1.1],
    ]);
  });

  test("weights, nesting and square brackets", () => {
    expect(parsePromptAttention("a (red:1.5) cat")).toEqual([
      ["a ", 1],
      ["red", 1.5],
      [" cat", 1],
    ]);
    expect(parsePromptAttention("[dog]")).toEqual([["dog", 1 / 1.1]]);
    expect(parsePromptAttention("((cat))")).toEqual([["cat", 1.1 * 1.1]]);
    expect(parsePromptAttention("[[a]]")).toEqual([["a", 1 / 1.1 / 1.1]]);
    expect(parsePromptAttention("(a:-1)")).toEqual([["a", -1]]);
    expect(parsePromptAttention("(a:+.5)(b:2.)")).toEqual([
      ["a", 0.5],
      ["b", 2],
    ]);
    // Python's \d and float() accept any Unicode decimal digit.
    expect(parsePromptAttention("(a:١.٥)")).toEqual([["a", 1.5]]);
    // An explicit weight only closes a round bracket; `[a:1.5]` is text plus a square bracket.
    expect(parsePromptAttention("[a:1.5]")).toEqual([["a:1.5", 1 / 1.1]]);
  });

  test("escapes", () => {
    expect(parsePromptAttention("\\(escaped\\)")).toEqual([["(escaped)", 1]]);
    expect(parsePromptAttention("\\[x\\] \\\\ y")).toEqual([["[x] \\ y", 1]]);
    // A backslash before anything else is dropped (the `\\` alternative, then text[1:]).
    expect(parsePromptAttention("a\\b")).toEqual([["ab", 1]]);
    expect(parsePromptAttention("\\")).toEqual([["", 1]]);
  });

  test("unbalanced brackets and colons", () => {
    expect(parsePromptAttention("a) b] c")).toEqual([["a) b] c", 1]]);
    expect(parsePromptAttention("a [b (c")).toEqual([
      ["a ", 1],
      ["b ", 1 / 1.1],
      ["c", 1.1 * (1 / 1.1)],
    ]);
    expect(parsePromptAttention("a:1.5) b")).toEqual([["a:1.5) b", 1]]);
    expect(parsePromptAttention("time: 12:30")).toEqual([["time: 12:30", 1]]);
    expect(parsePromptAttention("a (b:1.2.3")).toEqual([
      ["a ", 1],
      ["b:1.2.3", 1.1],
    ]);
    expect(parsePromptAttention("")).toEqual([["", 1]]);
    expect(parsePromptAttention("()")).toEqual([["", 1]]);
  });

  test("a weight Python's float() rejects fails as in A1111", () => {
    expect(() => parsePromptAttention("(a:1.2.3)")).toThrow(PromptSyntaxError);
    expect(() => parsePromptAttention("(a:.)")).toThrow(PromptSyntaxError);
  });

  test("BREAK", () => {
    expect(parsePromptAttention("a BREAK b")).toEqual([
      ["a", 1],
      ["BREAK", -1],
      ["b", 1],
    ]);
    expect(parsePromptAttention("BREAK")).toEqual([
      ["", 1],
      ["BREAK", -1],
      ["", 1],
    ]);
    expect(parsePromptAttention("a\nBREAK\tb")).toEqual([
      ["a", 1],
      ["BREAK", -1],
      ["b", 1],
    ]);
    // Only the whole upper-case word (Python's Unicode \b: é is a word character).
    expect(parsePromptAttention("aBREAK b")).toEqual([["aBREAK b", 1]]);
    expect(parsePromptAttention("éBREAK b")).toEqual([["éBREAK b", 1]]);
    expect(parsePromptAttention("a break b")).toEqual([["a break b", 1]]);
    // BREAK inside brackets gets multiplied like any entry (-1.1), so it is no longer a chunk break.
    expect(parsePromptAttention("(a BREAK b)")).toEqual([
      ["a", 1.1],
      ["BREAK", -1.1],
      ["b", 1.1],
    ]);
    expect(parsePromptAttention("(x) BREAK (y)")).toEqual([
      ["x", 1.1],
      ["", 1],
      ["BREAK", -1],
      ["", 1],
      ["y", 1.1],
    ]);
  });
});

describe("tokenizePrompt", () => {
  test("syntaxes", () => {
    expect([...PROMPT_SYNTAXES]).toEqual(["a1111", "diffusers"]);
  });

  test("ordinary prompts of ≤ 75 tokens give the same ids in both modes", () => {
    const plain = cases.filter(
      (c) => c.num_tokens_untruncated - 2 <= 75 && !/[()[\]\\]/.test(c.text) && !c.text.includes("BREAK"),
    );
    expect(plain.length).toBeGreaterThan(50);
    for (const c of plain) {
      const a = tokenizePrompt(tok, c.text, "a1111");
      const d = tokenizePrompt(tok, c.text, "diffusers");
      expect({ text: c.text, ids: a.chunks.map((x) => x.ids) }).toEqual({ text: c.text, ids: [c.input_ids] });
      expect(d.chunks.map((x) => x.ids)).toEqual([c.input_ids]);
      expect(a.chunks[0]?.weights).toEqual(ones());
      expect(d.chunks[0]?.weights).toEqual(ones());
      expect(a.tokenCount).toBe(c.num_tokens_untruncated - 2);
      expect(d.tokenCount).toBe(c.num_tokens_untruncated - 2);
    }
  });

  test("empty prompt: one chunk", () => {
    for (const syntax of PROMPT_SYNTAXES) {
      const t = tokenizePrompt(tok, "", syntax);
      expect(t.chunks).toEqual([{ ids: row([]), weights: ones() }]);
      expect(t.tokenCount).toBe(0);
      expect(t.truncatedTokens).toBe(0);
      expect(t.truncatedText).toBeNull();
    }
  });

  test("a (red:1.5) cat", () => {
    const t = tokenizePrompt(tok, "a (red:1.5) cat", "a1111");
    expect(t.chunks.length).toBe(1);
    const chunk = t.chunks[0] as PromptChunk;
    expect(chunk.ids).toEqual(tok.encodePadded("a red cat").ids);
    expect(chunk.weights.slice(0, 5)).toEqual([1, 1, 1.5, 1, 1]);
    expect(chunk.weights.slice(4)).toEqual(ones(73));
    expect(t.tokenCount).toBe(3);
    // diffusers takes it literally: the parentheses, colon and digits are tokens.
    const d = tokenizePrompt(tok, "a (red:1.5) cat", "diffusers");
    expect(d.chunks[0]?.ids).toEqual(tok.encodePadded("a (red:1.5) cat").ids);
    expect(d.tokenCount).toBeGreaterThan(3);
  });

  test("[dog], ((cat)), \\(escaped\\)", () => {
    const dog = tokenizePrompt(tok, "[dog]", "a1111").chunks[0] as PromptChunk;
    expect(dog.ids).toEqual(row([1929]));
    expect(dog.weights.slice(0, 3)).toEqual([1, 1 / 1.1, 1]);
    const cat = tokenizePrompt(tok, "((cat))", "a1111").chunks[0] as PromptChunk;
    expect(cat.ids).toEqual(row([2368]));
    expect(cat.weights.slice(0, 3)).toEqual([1, 1.2100000000000002, 1]);
    const esc = tokenizePrompt(tok, "\\(escaped\\)", "a1111").chunks[0] as PromptChunk;
    expect(esc.ids).toEqual(tok.encodePadded("(escaped)").ids);
    expect(esc.weights).toEqual(ones());
  });

  test("a prompt of exactly 75 tokens is one chunk; 76 tokens are two", () => {
    const w75 = words(75);
    const t75 = tokenizePrompt(tok, w75.map(([w]) => w).join(" "), "a1111");
    expect(t75.chunks.length).toBe(1);
    expect(t75.chunks[0]?.ids).toEqual([BOS, ...w75.map(([, id]) => id), EOS]);
    expect(t75.tokenCount).toBe(75);
    const d75 = tokenizePrompt(tok, w75.map(([w]) => w).join(" "), "diffusers");
    expect(d75.truncatedTokens).toBe(0);
    expect(d75.truncatedText).toBeNull();

    const w76 = words(76);
    const t76 = tokenizePrompt(tok, w76.map(([w]) => w).join(" "), "a1111");
    expect(t76.chunks.map((c) => c.ids)).toEqual([
      [BOS, ...w76.slice(0, 75).map(([, id]) => id), EOS],
      row([w76[75]?.[1] as number]),
    ]);
  });

  test("100 tokens without a comma: split after 75 tokens", () => {
    const w = words(100);
    const prompt = w.map(([s]) => s).join(" ");
    const ids = w.map(([, id]) => id);
    const t = tokenizePrompt(tok, prompt, "a1111");
    expect(t.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 75)), row(ids.slice(75))]);
    expect(t.chunks.map((c) => c.weights)).toEqual([ones(), ones()]);
    expect(t.tokenCount).toBe(100);
    expect(t.truncatedTokens).toBe(0);

    const d = tokenizePrompt(tok, prompt, "diffusers");
    expect(d.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 75))]);
    expect(d.tokenCount).toBe(100);
    expect(d.truncatedTokens).toBe(25);
    expect(d.truncatedText).toBe(
      w
        .slice(75)
        .map(([s]) => s)
        .join(" "),
    );
  });

  /** 100 tokens of which token `commaAt` (0-based) is a comma. */
  function withComma(commaAt: number): { prompt: string; ids: number[] } {
    const w = words(100);
    const parts: string[] = [];
    const ids: number[] = [];
    for (const [i, [s, id]] of w.entries()) {
      if (i === commaAt) {
        parts.push(",");
        ids.push(COMMA);
      } else {
        parts.push(s);
        ids.push(id);
      }
    }
    return { prompt: parts.join(" "), ids };
  }

  test("100 tokens with a comma in the last 20 tokens of the chunk: split after the comma", () => {
    for (const commaAt of [55, 60, 73, 74]) {
      const { prompt, ids } = withComma(commaAt);
      expect(tok.encode(prompt).slice(1, -1)).toEqual(ids);
      const t = tokenizePrompt(tok, prompt, "a1111");
      expect(t.chunks.map((c) => c.ids)).toEqual([
        row(ids.slice(0, commaAt + 1)),
        row(ids.slice(commaAt + 1)),
      ]);
      expect(t.tokenCount).toBe(100);
    }
  });

  test("a comma further back than 20 tokens, or backtracking off: split after 75 tokens", () => {
    for (const commaAt of [10, 54]) {
      const { prompt, ids } = withComma(commaAt);
      const t = tokenizePrompt(tok, prompt, "a1111");
      expect(t.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 75)), row(ids.slice(75))]);
    }
    const { prompt, ids } = withComma(60);
    const off = tokenizePrompt(tok, prompt, "a1111", { commaPaddingBacktrack: 0 });
    expect(off.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 75)), row(ids.slice(75))]);
    const narrow = tokenizePrompt(tok, prompt, "a1111", { commaPaddingBacktrack: 14 });
    expect(narrow.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 75)), row(ids.slice(75))]);
    const wide = tokenizePrompt(tok, prompt, "a1111", { commaPaddingBacktrack: 15 });
    expect(wide.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 61)), row(ids.slice(61))]);
  });

  test("a comma as the 76th token starts the next chunk (no backtracking)", () => {
    const { prompt, ids } = withComma(75);
    const t = tokenizePrompt(tok, prompt, "a1111");
    expect(t.chunks.map((c) => c.ids)).toEqual([row(ids.slice(0, 75)), row(ids.slice(75))]);
  });

  test("weights travel with relocated tokens", () => {
    const w = words(80);
    const parts = w.map(([s]) => s);
    parts[69] = ",";
    parts[72] = `(${parts[72]}:1.3)`;
    const t = tokenizePrompt(tok, parts.join(" "), "a1111");
    expect(t.chunks.length).toBe(2);
    // Token 69 (the comma) is at row index 70, after BOS; the rest of the chunk is padding.
    expect(t.chunks[0]?.ids.slice(70, 73)).toEqual([COMMA, EOS, EOS]);
    expect(t.chunks[0]?.weights).toEqual(ones());
    // Tokens 70.. go to chunk 2: token 72 is its third token (index 3 after BOS).
    expect(t.chunks[1]?.ids.slice(0, 4)).toEqual([BOS, ...w.slice(70, 73).map(([, id]) => id)]);
    expect(t.chunks[1]?.weights.slice(0, 5)).toEqual([1, 1, 1, 1.3, 1]);
  });

  test("a BREAK b: two chunks", () => {
    const t = tokenizePrompt(tok, "a BREAK b", "a1111");
    expect(t.chunks).toEqual([
      { ids: row([320]), weights: ones() },
      { ids: row([321]), weights: ones() },
    ]);
    expect(t.tokenCount).toBe(2);
    // A trailing BREAK closes the chunk and adds nothing; a leading one gives an empty first chunk.
    expect(tokenizePrompt(tok, "a BREAK", "a1111").chunks.map((c) => c.ids)).toEqual([row([320])]);
    expect(tokenizePrompt(tok, "BREAK a", "a1111").chunks.map((c) => c.ids)).toEqual([row([]), row([320])]);
    // In diffusers mode BREAK is a word.
    const d = tokenizePrompt(tok, "a BREAK b", "diffusers");
    expect(d.chunks[0]?.ids).toEqual(tok.encodePadded("a BREAK b").ids);
  });

  test("BREAK inside brackets is tokenized as text", () => {
    const t = tokenizePrompt(tok, "(a BREAK b)", "a1111");
    expect(t.chunks.length).toBe(1);
    expect(t.chunks[0]?.ids).toEqual(tok.encodePadded("a BREAK b").ids);
  });

  test("padId: everything after the first EOS (A1111's id_pad rewrite for OpenCLIP)", () => {
    const t = tokenizePrompt(tok, "a cat BREAK dog", "a1111", { padId: 0 });
    expect(t.chunks[0]?.ids.slice(0, 5)).toEqual([BOS, 320, 2368, EOS, 0]);
    expect(t.chunks[0]?.ids.slice(4)).toEqual(new Array<number>(73).fill(0));
    expect(t.chunks[1]?.ids.slice(0, 4)).toEqual([BOS, 1929, EOS, 0]);
    const full = tokenizePrompt(
      tok,
      words(75)
        .map(([s]) => s)
        .join(" "),
      "a1111",
      { padId: 0 },
    );
    expect(full.chunks[0]?.ids[76]).toBe(EOS);
  });

  test("diffusers mode cuts at 77 and reports the cut text as diffusers decodes it", () => {
    const prompt = `${words(74)
      .map(([s]) => s)
      .join(" ")} sun , moon's star .`;
    const d = tokenizePrompt(tok, prompt, "diffusers");
    expect(d.chunks.length).toBe(1);
    expect(d.chunks[0]?.ids).toEqual(tok.encodePadded(prompt).ids);
    expect(d.tokenCount).toBe(74 + 6);
    expect(d.truncatedTokens).toBe(5);
    expect(d.truncatedText).toBe(", moon's star.");
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------------------------

/** A fake text encoder: hidden state (t, d) of a row is a deterministic function of its ids. */
function fakeEncoder(width: number, calls: number[][][] = []): EncodeChunks {
  return async (ids) => {
    calls.push(ids);
    const data = new Float32Array(ids.length * CHUNK_LENGTH * width);
    for (const [c, rowIds] of ids.entries()) {
      for (const [t, id] of rowIds.entries()) {
        for (let d = 0; d < width; d++) {
          data[(c * CHUNK_LENGTH + t) * width + d] = ((id % 101) - 50) / 37 + (d + 1) * 0.25 - t * 0.01;
        }
      }
    }
    return { data, dims: [ids.length, CHUNK_LENGTH, width] };
  };
}

/** Reference of EmphasisOriginal.after_transformers, written out independently (float32 at each step). */
function referenceEmphasis(z: Float32Array, weights: readonly number[], width: number): Float32Array {
  const f = Math.fround;
  let sum = 0;
  for (const v of z) sum += v;
  const originalMean = f(sum / z.length);
  const scaled = new Float32Array(z.length);
  for (let t = 0; t < weights.length; t++) {
    for (let d = 0; d < width; d++)
      scaled[t * width + d] = f((z[t * width + d] as number) * f(weights[t] as number));
  }
  let sum2 = 0;
  for (const v of scaled) sum2 += v;
  const ratio = f(originalMean / f(sum2 / z.length));
  return scaled.map((v) => f(v * ratio));
}

function prompt(chunks: PromptChunk[]): TokenizedPrompt {
  return { chunks, tokenCount: 0, truncatedTokens: 0, truncatedText: null };
}

describe("encodePrompt", () => {
  test("constant hidden states: hand-computed mean restoration", async () => {
    const constant: EncodeChunks = async (ids) => ({
      data: new Float32Array(ids.length * CHUNK_LENGTH * 2).fill(1),
      dims: [ids.length, CHUNK_LENGTH, 2],
    });
    const weights = ones();
    weights[1] = 1.5;
    const out = await encodePrompt(constant, prompt([{ ids: row([2368]), weights }]));
    expect(out.dims).toEqual([1, 77, 2]);
    // original mean 1; after ×weights the sum is 76·2·1 + 2·1.5 = 155 over 154 values, so the new mean is
    // fround(155/154) and the ratio fround(1 / fround(155/154)) (float32 at each step, as torch).
    const newMean = Math.fround(155 / 154);
    const ratio = Math.fround(1 / newMean);
    expect(ratio).not.toBe(Math.fround(154 / 155));
    expect(out.data[0]).toBe(ratio);
    expect(out.data[1]).toBe(ratio);
    expect(out.data[2]).toBe(Math.fround(1.5 * ratio));
    expect(out.data[3]).toBe(Math.fround(1.5 * ratio));
    expect(out.data[4]).toBe(ratio);
    expect(out.data[153]).toBe(ratio);
    let sum = 0;
    for (const v of out.data) sum += v;
    expect(sum / out.data.length).toBeCloseTo(1, 6);
  });

  test("weighted chunk matches the reference computation; the mean is restored", async () => {
    const width = 8;
    const t = tokenizePrompt(tok, "a (red:1.5) cat, [dog], ((tree))", "a1111");
    const calls: number[][][] = [];
    const encode = fakeEncoder(width, calls);
    const out = await encodePrompt(encode, t);
    const raw = (await fakeEncoder(width)(t.chunks.map((c) => c.ids))).data;
    const expected = referenceEmphasis(raw, t.chunks[0]?.weights ?? [], width);
    expect(out.data).toEqual(expected);
    expect(out.data).not.toEqual(raw);
    let a = 0;
    let b = 0;
    for (const [j, v] of out.data.entries()) {
      a += v;
      b += raw[j] as number;
    }
    expect(a / out.data.length).toBeCloseTo(b / raw.length, 5);
    expect(calls).toEqual([t.chunks.map((c) => c.ids)]);
  });

  test("all-1 weights: bit-identical to the encoder output (diffusers mode)", async () => {
    const width = 4;
    const d = tokenizePrompt(tok, "a (red:1.5) cat", "diffusers");
    const out = await encodePrompt(fakeEncoder(width), d);
    const raw = await fakeEncoder(width)(d.chunks.map((c) => c.ids));
    expect(out.data).toEqual(raw.data);
    expect(out.dims).toEqual([1, 77, width]);
  });

  test("multi-chunk: chunks concatenated along the sequence axis in order, each weighted on its own", async () => {
    const width = 3;
    const chunkA: PromptChunk = { ids: row([2368]), weights: ones() };
    const weightsB = ones();
    weightsB[1] = 1.2;
    const chunkB: PromptChunk = { ids: row([1929, 736]), weights: weightsB };
    const chunkC: PromptChunk = { ids: row([2677]), weights: ones() };
    const calls: number[][][] = [];
    const out = await encodePrompt(fakeEncoder(width, calls), prompt([chunkA, chunkB, chunkC]));
    expect(out.dims).toEqual([1, 3 * 77, width]);
    expect(calls).toEqual([[chunkA.ids, chunkB.ids, chunkC.ids]]);
    const size = 77 * width;
    const rawA = (await fakeEncoder(width)([chunkA.ids])).data;
    const rawB = (await fakeEncoder(width)([chunkB.ids])).data;
    const rawC = (await fakeEncoder(width)([chunkC.ids])).data;
    expect(out.data.subarray(0, size)).toEqual(rawA);
    expect(out.data.subarray(size, 2 * size)).toEqual(referenceEmphasis(rawB, weightsB, width));
    expect(out.data.subarray(2 * size)).toEqual(rawC);
  });

  test("a long prompt: two chunks end to end", async () => {
    const width = 2;
    const t = tokenizePrompt(
      tok,
      words(100)
        .map(([s]) => s)
        .join(" "),
      "a1111",
    );
    const out = await encodePrompt(fakeEncoder(width), t);
    expect(out.dims).toEqual([1, 154, width]);
    const raw = (await fakeEncoder(width)(t.chunks.map((c) => c.ids))).data;
    expect(out.data).toEqual(raw);
  });

  test("rejects encoder output of the wrong shape", async () => {
    const bad: EncodeChunks = async () => ({ data: new Float32Array(10), dims: [1, 5, 2] });
    await expect(encodePrompt(bad, tokenizePrompt(tok, "cat", "a1111"))).rejects.toThrow(RangeError);
  });
});

describe("padToSameLength (A1111 pad_cond)", () => {
  const width = 2;
  const cond = (chunks: number, value: number): Conditioning => ({
    data: Float32Array.from({ length: chunks * 77 * width }, (_, i) => value + i * 1e-3),
    dims: [1, chunks * 77, width],
  });
  const empty = cond(1, -7);

  test("the shorter one gets empty-prompt chunks appended", () => {
    const a = cond(1, 1);
    const b = cond(3, 2);
    const [pa, pb] = padToSameLength(a, b, empty);
    expect(pb).toBe(b);
    expect(pa.dims).toEqual([1, 231, width]);
    const size = 77 * width;
    expect(pa.data.subarray(0, size)).toEqual(a.data);
    expect(pa.data.subarray(size, 2 * size)).toEqual(empty.data);
    expect(pa.data.subarray(2 * size)).toEqual(empty.data);

    const [qb, qa] = padToSameLength(b, a, empty);
    expect(qb).toBe(b);
    expect(qa.data).toEqual(pa.data);
    expect(qa.dims).toEqual([1, 231, width]);
  });

  test("equal lengths are returned as they are", () => {
    const a = cond(2, 1);
    const b = cond(2, 2);
    const [pa, pb] = padToSameLength(a, b, empty);
    expect(pa).toBe(a);
    expect(pb).toBe(b);
  });

  test("with a real empty prompt", async () => {
    const encode = fakeEncoder(width);
    const emptyCond = await encodePrompt(encode, tokenizePrompt(tok, "", "a1111"));
    const long = await encodePrompt(
      encode,
      tokenizePrompt(
        tok,
        words(100)
          .map(([s]) => s)
          .join(" "),
        "a1111",
      ),
    );
    const short = await encodePrompt(encode, tokenizePrompt(tok, "blurry", "a1111"));
    const [l, s] = padToSameLength(long, short, emptyCond);
    expect(l).toBe(long);
    expect(s.dims).toEqual(long.dims);
    expect(s.data.subarray(77 * width)).toEqual(emptyCond.data);
  });

  test("mismatched widths or lengths are errors", () => {
    expect(() =>
      padToSameLength(cond(1, 1), { data: new Float32Array(77 * 3), dims: [1, 77, 3] }, empty),
    ).toThrow(RangeError);
    expect(() =>
      padToSameLength(cond(1, 1), { data: new Float32Array(10 * width), dims: [1, 10, width] }, empty),
    ).toThrow(RangeError);
  });
});
