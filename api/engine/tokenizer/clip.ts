/**
 * CLIP byte-level BPE tokenizer, reproducing Hugging Face transformers' *slow* `CLIPTokenizer` (4.44) exactly
 * as Stable Diffusion pipelines load it from a `tokenizer/` folder, in the default configuration where `ftfy`
 * is not installed. The pipeline, in transformers' order:
 *
 * 1. `PreTrainedTokenizer.tokenize`: added tokens (BOS/EOS/UNK/PAD and any other added/special token) are cut
 *    out of the raw text first (the added-tokens trie), honouring each token's `lstrip`/`rstrip`/`single_word`.
 * 2. `CLIPTokenizer._tokenize` on each remaining piece, with the ftfy-less fallback
 *    `" ".join(BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text))`:
 *    drop NUL, U+FFFD and every Unicode 14 "C*" character except \t\n\r; map \t\n\r and Zs to " "; put spaces
 *    around CJK ideographs; NFC; split on whitespace; lower-case each piece.
 * 3. The CLIP pre-tokenizer regex (IGNORECASE), GPT-2 `bytes_to_unicode` byte encoding, BPE with `</w>`.
 * 4. ids: added tokens first, then the vocabulary, else the UNK id; BOS + ids + EOS, truncation, padding.
 *
 * Textual-inversion embeddings ({@link ClipTokenizer.withEmbeddings}) follow diffusers 0.29's
 * `load_textual_inversion` + `maybe_convert_prompt`: an n-vector embedding `name` adds the tokens
 * `name, name_1, …, name_{n-1}` (ids from `len(tokenizer)` = 49408 on, in load order), and before tokenizing,
 * each embedding name found among the tokens of the text is replaced, with a plain `str.replace` (every
 * occurrence, even inside longer words), by `"name name_1 … name_{n-1}"`; step 1 then cuts those out as added tokens.
 */

/** Thrown when the tokenizer files are missing or malformed. */
export class TokenizerError extends Error {
  override name = "TokenizerError";
}

/** One added token (transformers' `AddedToken`) with the flags that matter to the slow tokenizer. */
interface AddedTokenSpec {
  content: string;
  lstrip: boolean;
  rstrip: boolean;
  singleWord: boolean;
}

/** A textual-inversion embedding as the tokenizer sees it: the word that names it and its number of vectors. */
export interface PromptEmbedding {
  name: string;
  vectors: number;
}

/** Default `model_max_length` when the config has none (or only transformers' "no limit" sentinel). */
const DEFAULT_MODEL_MAX_LENGTH = 77;

/** transformers reads only `merges.txt` lines [1 : 49152 - 256 - 2 + 1], i.e. at most 48894 merges. */
const MAX_MERGES = 49152 - 256 - 2;

/** Order of `SPECIAL_TOKENS_ATTRIBUTES`, which is the order transformers adds missing special tokens in. */
const SPECIAL_TOKEN_KEYS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const;

/** `CLIPTokenizer.__init__` defaults for tokens a config does not name. */
const CLIP_DEFAULT_TOKENS: Partial<Record<(typeof SPECIAL_TOKEN_KEYS)[number], string>> = {
  bos_token: "<|startoftext|>",
  eos_token: "<|endoftext|>",
  unk_token: "<|endoftext|>",
  pad_token: "<|endoftext|>",
};

// ---------------------------------------------------------------------------------------------------------------
// Unicode helpers (Python 3.11 / Unicode 14.0 semantics, independent of the JS engine's Unicode version)
// ---------------------------------------------------------------------------------------------------------------

/**
 * Code point ranges whose `unicodedata.category` starts with "C" (Cc, Cf, Cs, Co, Cn) in Unicode 14.0, the
 * database of the Python 3.11 the reference ran on. transformers' `_is_control` removes all of them, including
 * code points unassigned in 14.0 that newer Unicode versions assign (e.g. Unicode 15 emoji), so the table is
 * fixed rather than taken from the engine's `\p{C}`. Encoding: base-36 numbers, alternately the gap since the
 * previous range's end and the range length minus one.
 */
const UNICODE14_OTHER_TABLE = [
  "0 v 2n w d 0 ju 1 6 3 7 0 1 0 k 0 b1 0 12 1 1e 1 3 0 1j 7 r 3 6 g m 0 5c 0 1c 1 1n 1 2t d 1n 1",
  "1d 1 f 0 s 1 1 0 b 4 v 8 22 0 4h 0 8 1 2 1 m 0 7 0 1 2 4 1 9 1 2 1 4 7 1 3 2 0 5 1 p 1 3 0 6 3 2",
  "1 m 0 7 0 2 0 2 0 2 1 1 0 5 3 2 1 3 2 1 6 4 0 1 6 h 9 3 0 9 0 3 0 m 0 7 0 2 0 5 1 a 0 3 0 3 1 1",
  "e 4 1 c 6 7 0 3 0 8 1 2 1 m 0 7 0 2 0 5 1 9 1 2 1 3 6 3 3 2 0 5 1 i 9 2 0 6 2 3 0 4 2 2 0 1 0 2",
  "2 2 2 3 2 c 3 5 2 3 0 4 1 1 5 1 d l 4 d 0 3 0 n 0 g 1 9 0 3 0 4 6 2 0 3 1 1 1 4 1 a 6 m 0 3 0 n",
  "0 a 0 5 1 9 0 3 0 4 6 2 5 2 0 4 1 a 0 2 c d 0 3 0 1f 0 3 0 6 3 g 1 q 0 3 0 i 2 o 0 9 0 1 1 7 2 1",
  "3 6 0 1 0 8 5 a 1 3 b 1m 3 t 10 2 0 1 0 5 0 o 0 1 0 n 1 5 0 1 0 6 1 a 1 4 v 20 0 10 3 13 0 10 0",
  "f 0 d 10 5i 0 1 4 1 1 ah 0 4 1 7 0 1 0 4 1 15 0 4 1 x 0 4 1 7 0 1 0 4 1 f 0 1l 0 4 1 1v 1 w 2 q",
  "5 2e 1 6 1 il 2 2h 6 m 8 o 8 k b d 0 3 0 2 b 2m 1 a 5 a 5 e 0 b 5 2h 6 17 4 1y 9 v 0 c 3 c 3 1 2",
  "16 1 5 a 18 3 q 5 b 2 1q 1 1t 0 t 1 b 5 a 5 e 1 v 1c 25 2 1b 0 38 7 1o 2 f 2 1o 6 17 1 b 7 17 4",
  "eu 1 6 1 12 1 6 1 8 0 1 0 1 0 1 0 v 1 1h 0 f 0 e 1 6 0 j 1 3 0 9 0 b 4 q 4 1d f 2 1 r 0 d 2 x e",
  "x e 3w 3 if o b k 1ec 1 w 0 9p 4 19 0 1 4 1 1 1k 6 2 d o 8 7 0 7 0 7 0 7 0 7 0 7 0 7 0 7 0 3i x",
  "q 0 2h b 5y p c 3 1s 0 2e 1 2v 4 17 0 2m 0 2c b 1b 0 mlp 2 1j 8 9o j 54 7 5n 4 2 0 1 0 5 n 1n 2",
  "a 5 1k 7 1y 7 c 5 38 a u 2 26 0 b 3 x 0 1j 8 e 1 a 1 2v n s 9 6 1 6 1 6 8 7 0 7 0 1o 3 3i 1 a 5",
  "8mc b n 3 1d 6ir a6 1 2y 11 7 b 5 4 q 0 5 0 1 0 2 0 2 0 3h f cd 1 1i 6 1 v 16 5 1f 0 j 0 4 3 5 0",
  "3r 3 5a 2 6 1 6 1 6 1 3 2 7 0 7 c 2 1 c 0 q 0 j 0 2 0 f 1 e x 3f 4 3 3 19 2 2g 0 d 2 1 1a 1a 3l",
  "t 2 1d e s 3 10 8 u 4 17 4 u 0 11 3 e 15 4e 1 a 5 10 3 10 3 14 7 1g a c 0 f 0 7 0 2 0 b 0 f 0 7",
  "0 2 1u 8n 8 m 9 8 n 6 0 16 0 9 1w 6 1 1 0 18 0 2 2 1 1 n 0 20 7 9 1b j 0 2 4 x 2 r 4 1 1r 1k 3 k",
  "1 1e 0 2 4 8 0 3 0 t 1 3 3 a 6 9 6 1s v 13 3 c 8 1i 2 t 1 r 4 q 6 4 b 7 27 21 1i 1f c 1f 6 1a 7",
  "a 85 v 0 16 0 3 1 2 25 14 7 16 l q 11 s j n 8 26 3 10 8 1q 0 5 c p 6 a 5 1h 0 i 7 13 8 2o 0 k a",
  "i 0 18 1s 7 0 1 0 4 0 f 0 b 5 1n 4 a 5 4 0 8 1 2 1 m 0 7 0 2 0 5 0 a 1 2 1 3 1 1 5 1 4 7 1 7 2 5",
  "3u 2k 0 5 t 20 7 a 4l 1i 1 12 x 1x a a 5 d i 1m 5 a 1h r 1 f 3 n 54 1o 2r 2b b 8 1 1 1 8 0 2 0 u",
  "0 2 1 c 8 a 1x 8 1 1a 1 b q 20 7 2b c 21 7a 9 0 19 0 e 9 t 2 w 1 m 0 e 20 7 0 2 0 18 2 1 0 2 0 9",
  "7 a 5 6 0 2 0 11 0 2 0 6 6 a 8l p 52 1 e 1e c pn 2t 33 0 5 a 5g 217 2r c tr 34g g7 6ns ft 6 v 0",
  "a 3 29 0 a 5 u 1 6 9 1y 9 a 0 7 0 l 4 j j3 2j 2s 23 3 1l 6 h 1r 5 a 2 d 4qg 7 ye 15 9 6w6 4 0 7",
  "0 2 0 83 18 3 g 4 7 b0 1s3 2z 4 d 2 9 6 a 1 4 3mn 1a 1 n 8 38 1n 6u 9 13 1 22 7 34 k 1y 49 k b",
  "2f 8 p 3q 2d 0 1z 0 2 1 1 1 2 1 4 0 c 0 1 0 7 0 1t 0 4 1 8 0 7 0 s 0 4 0 5 0 1 2 7 0 9g 1 84 1",
  "ji e 5 0 f un v 68 7 0 h 1 7 0 2 0 5 5w 19 2 e 1 a 3 2 8v v g 1m 4 1 yn 7 0 4 0 2 0 f 0 5h 1 g",
  "14 24 3 a 3 2 ls 1w 23 1p 5d 4 0 r 0 2 0 1 1 1 0 a 0 4 0 1 0 1 5 1 3 1 0 1 0 1 0 3 0 2 0 1 1 1 0",
  "1 0 1 0 1 0 1 0 2 0 1 1 4 0 7 0 4 0 4 0 1 0 a 0 h 4 3 0 5 0 h 1f 2 7h 18 3 2s b f 1 f 0 f 0 11 9",
  "4u 1j t c 18 3 9 6 2 d 6 49 rc 4 g 2 d 2 38 b 2h 6 c 3 1 e c 3 1k 7 a 5 14 7 u 1 2 25 9g b e 1 5",
  "2 5 2 7 8 t 2 b 4 6 9 a 5 8 7 7 8 43 0 1j 10 a sl wyo v 37d 6 66 1 4g2 d 5rl 2e6 f2 15t 3t7 fcms",
  "6o 47bj",
].join(" ");

const [OTHER_STARTS, OTHER_ENDS] = ((): [Uint32Array, Uint32Array] => {
  const nums = UNICODE14_OTHER_TABLE.split(" ").map((s) => Number.parseInt(s, 36));
  const n = nums.length >> 1;
  const starts = new Uint32Array(n);
  const ends = new Uint32Array(n);
  let prevEnd = -1;
  for (let i = 0; i < n; i++) {
    const start = prevEnd + 1 + (nums[2 * i] ?? 0);
    const end = start + (nums[2 * i + 1] ?? 0);
    starts[i] = start;
    ends[i] = end;
    prevEnd = end;
  }
  return [starts, ends];
})();

/** `unicodedata.category(chr(cp)).startswith("C")` under Unicode 14.0. */
function isUnicode14Other(cp: number): boolean {
  if (cp < 0x7f) return cp < 0x20;
  let lo = 0;
  let hi = OTHER_STARTS.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (cp < (OTHER_STARTS[mid] ?? 0)) hi = mid - 1;
    else if (cp > (OTHER_ENDS[mid] ?? 0)) lo = mid + 1;
    else return true;
  }
  return false;
}

/** transformers' `_is_whitespace`: " ", \t, \n, \r or category Zs (the Zs set is the same in Unicode 14). */
function isBertWhitespace(cp: number): boolean {
  return (
    cp === 0x20 ||
    cp === 0x09 ||
    cp === 0x0a ||
    cp === 0x0d ||
    cp === 0xa0 ||
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

/** transformers' `_is_control` (every "C*" category except \t\n\r), plus the NUL / U+FFFD check of `_clean_text`. */
function isRemovedByCleanText(cp: number): boolean {
  if (cp === 0x09 || cp === 0x0a || cp === 0x0d) return false;
  return cp === 0xfffd || isUnicode14Other(cp);
}

/** BERT's `BasicTokenizer._is_chinese_char` ranges (CJK ideographs only; not kana or hangul). */
function isCjkIdeograph(cp: number): boolean {
  return (
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x20000 && cp <= 0x2a6df) ||
    (cp >= 0x2a700 && cp <= 0x2b73f) ||
    (cp >= 0x2b740 && cp <= 0x2b81f) ||
    (cp >= 0x2b820 && cp <= 0x2ceaf) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0x2f800 && cp <= 0x2fa1f)
  );
}

/** Python's `str.isspace()` (used by `str.split()` / `strip()`): bidi WS/B/S or category Zs. */
export function isPythonSpace(cp: number): boolean {
  return (
    (cp >= 0x09 && cp <= 0x0d) ||
    (cp >= 0x1c && cp <= 0x20) ||
    cp === 0x85 ||
    cp === 0xa0 ||
    cp === 0x1680 ||
    (cp >= 0x2000 && cp <= 0x200a) ||
    cp === 0x2028 ||
    cp === 0x2029 ||
    cp === 0x202f ||
    cp === 0x205f ||
    cp === 0x3000
  );
}

/** Python's `str.lstrip()` (all whitespace-class characters are in the BMP). */
function pyLstrip(s: string): string {
  let i = 0;
  while (i < s.length && isPythonSpace(s.charCodeAt(i))) i++;
  return s.slice(i);
}

/** Python's `str.rstrip()`. */
function pyRstrip(s: string): string {
  let i = s.length;
  while (i > 0 && isPythonSpace(s.charCodeAt(i - 1))) i--;
  return s.slice(0, i);
}

/**
 * CLIP's pre-tokenizer `<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`
 * compiled by the Python `regex` module with IGNORECASE, specialised to the already lower-cased text it sees:
 * IGNORECASE lets `'s` also match `'ſ` (U+017F case-folds to "s"), which lower-casing keeps. The other
 * IGNORECASE effect is handled by {@link COMBINING_YPOGEGRAMMENI}. Checked against `regex` on every
 * Unicode 14 character in several contexts.
 */
const CLIP_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'[s\u017f]|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+/gu;

/**
 * U+0345 (combining ypogegrammeni, which case-folds to ι) matches neither `[\p{L}]` nor `[^\s\p{L}\p{N}]` under
 * `regex`'s IGNORECASE, so no branch of the CLIP pattern matches it: like a space, it ends the current match and
 * is dropped. JS `/iu` would count it as a letter, so it is turned into a space before matching instead.
 */
const COMBINING_YPOGEGRAMMENI = "\u0345";

/** GPT-2 `bytes_to_unicode`: printable latin-1 bytes map to themselves, the other 68 bytes to U+0100.. */
const BYTE_ENCODER: readonly string[] = (() => {
  const table: string[] = new Array<string>(256);
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    table[b] = printable(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++);
  }
  return table;
})();

const UTF8 = new TextEncoder();

/** `"".join(byte_encoder[b] for b in token.encode("utf-8"))`. */
function byteEncode(token: string): string {
  let ascii = true;
  for (let i = 0; i < token.length; i++) {
    if (token.charCodeAt(i) > 0x7e || token.charCodeAt(i) < 0x21) {
      ascii = false;
      break;
    }
  }
  if (ascii) return token;
  let out = "";
  for (const b of UTF8.encode(token)) out += BYTE_ENCODER[b];
  return out;
}

/**
 * `BasicTokenizer(strip_accents=False, do_split_on_punc=False).tokenize(text)` joined by " ":
 * `_clean_text`, `_tokenize_chinese_chars`, NFC over the whole text, `whitespace_tokenize`, then `lower()` of
 * each whitespace-separated piece (so Final_Sigma context is per piece, as in Python).
 */
function basicTokenize(text: string): string {
  let cleaned = "";
  for (const ch of text) {
    const cp = ch.codePointAt(0) ?? 0;
    if (cp === 0 || isRemovedByCleanText(cp)) continue;
    if (isBertWhitespace(cp)) cleaned += " ";
    else if (isCjkIdeograph(cp)) cleaned += ` ${ch} `;
    else cleaned += ch;
  }
  return pySplit(cleaned.normalize("NFC"))
    .map((piece) => piece.toLowerCase())
    .join(" ");
}

// ---------------------------------------------------------------------------------------------------------------
// File loading
// ---------------------------------------------------------------------------------------------------------------

type JsonObject = Record<string, unknown>;

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

async function readText(path: string): Promise<string> {
  const file = Bun.file(path);
  if (!(await file.exists())) throw new TokenizerError(`tokenizer file not found: ${path}`);
  try {
    return await file.text();
  } catch (err) {
    throw new TokenizerError(`cannot read tokenizer file ${path}: ${(err as Error).message}`);
  }
}

async function readJson(path: string): Promise<unknown> {
  const text = await readText(path);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new TokenizerError(`${path} is not valid JSON: ${(err as Error).message}`);
  }
}

/** An optional JSON object file: `undefined` when absent, TokenizerError when present but not an object. */
async function readOptionalJsonObject(path: string): Promise<JsonObject | undefined> {
  if (!(await Bun.file(path).exists())) return undefined;
  const value = await readJson(path);
  if (!isObject(value)) throw new TokenizerError(`${path} must contain a JSON object`);
  return value;
}

/** A token as saved by transformers: a plain string or an `AddedToken` dict (`{"content": ..., "lstrip": ...}`). */
function parseAddedToken(value: unknown, where: string): AddedTokenSpec | undefined {
  if (value === null || value === undefined) return undefined;
  if (typeof value === "string") return { content: value, lstrip: false, rstrip: false, singleWord: false };
  if (isObject(value) && typeof value.content === "string") {
    return {
      content: value.content,
      lstrip: value.lstrip === true,
      rstrip: value.rstrip === true,
      singleWord: value.single_word === true,
    };
  }
  throw new TokenizerError(`${where}: expected a token string or an AddedToken object`);
}

function joinPath(dir: string, name: string): string {
  return dir.endsWith("/") ? `${dir}${name}` : `${dir}/${name}`;
}

// ---------------------------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------------------------

interface ClipTokenizerInit {
  vocab: Map<string, number>;
  bpeRanks: Map<string, number>;
  addedTokens: Map<string, { id: number; spec: AddedTokenSpec }>;
  bos: string;
  eos: string;
  unk: string;
  pad: string;
  modelMaxLength: number;
  /** Base id → vectors of each embedding (its tokens have ids base … base + vectors − 1). */
  embeddingIds?: Map<number, number>;
  /** Embeddings in load order, for `maybe_convert_prompt`. */
  embeddings?: readonly PromptEmbedding[];
  /** A BPE cache to share with the tokenizer this one derives from. */
  cache?: Map<string, readonly string[]>;
}

/** Upper bound on cached words; the cache is dropped when it grows past it (results do not depend on it). */
const MAX_CACHE_ENTRIES = 100_000;

export class ClipTokenizer {
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;
  readonly modelMaxLength: number;

  private readonly vocab: Map<string, number>;
  private readonly bpeRanks: Map<string, number>;
  private readonly addedTokens: Map<string, { id: number; spec: AddedTokenSpec }>;
  /** Added-token contents, longest first, for the leftmost-longest split. */
  private readonly addedContents: string[];
  private readonly embeddingIds: Map<number, number>;
  private readonly embeddings: readonly PromptEmbedding[];
  private readonly init: ClipTokenizerInit;
  private cache = new Map<string, readonly string[]>();

  private constructor(init: ClipTokenizerInit) {
    this.init = init;
    this.vocab = init.vocab;
    this.bpeRanks = init.bpeRanks;
    this.addedTokens = init.addedTokens;
    this.addedContents = [...init.addedTokens.keys()].sort((a, b) => b.length - a.length);
    this.modelMaxLength = init.modelMaxLength;
    this.embeddingIds = init.embeddingIds ?? new Map();
    this.embeddings = init.embeddings ?? [];
    if (init.cache) this.cache = init.cache;
    else this.resetCache();
    const idOf = (token: string, role: string): number => {
      const id = this.addedTokens.get(token)?.id ?? this.vocab.get(token);
      if (id === undefined)
        throw new TokenizerError(`${role} token ${JSON.stringify(token)} is not in the vocabulary`);
      return id;
    };
    this.unkId = idOf(init.unk, "unk");
    this.bosId = idOf(init.bos, "bos");
    this.eosId = idOf(init.eos, "eos");
    this.padId = idOf(init.pad, "pad");
  }

  /**
   * Loads `vocab.json` + `merges.txt` and the special tokens from `tokenizer_config.json` /
   * `special_tokens_map.json`, following `PreTrainedTokenizerBase._from_pretrained`: when the config has
   * `added_tokens_decoder` (newer `save_pretrained`), it defines the added tokens and `special_tokens_map.json`
   * is ignored; otherwise (legacy folders) `special_tokens_map.json` overrides the config's special tokens and
   * `added_tokens.json`, if present, lists extra added tokens.
   */
  static async fromDir(dir: string): Promise<ClipTokenizer> {
    const vocabPath = joinPath(dir, "vocab.json");
    const mergesPath = joinPath(dir, "merges.txt");
    const [vocabJson, mergesText, config, specialMap] = await Promise.all([
      readJson(vocabPath),
      readText(mergesPath),
      readOptionalJsonObject(joinPath(dir, "tokenizer_config.json")),
      readOptionalJsonObject(joinPath(dir, "special_tokens_map.json")),
    ]);

    if (!isObject(vocabJson)) throw new TokenizerError(`${vocabPath} must map token strings to ids`);
    const vocab = new Map<string, number>();
    for (const [token, id] of Object.entries(vocabJson)) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0) {
        throw new TokenizerError(
          `${vocabPath}: id of ${JSON.stringify(token)} is not a non-negative integer`,
        );
      }
      vocab.set(token, id);
    }
    if (vocab.size === 0) throw new TokenizerError(`${vocabPath} is empty`);

    const bpeRanks = parseMerges(mergesText, mergesPath);
    const cfg = config ?? {};

    // Added tokens (transformers' `_added_tokens_decoder` / `_added_tokens_encoder`).
    const addedTokens = new Map<string, { id: number; spec: AddedTokenSpec }>();
    const byContent = new Map<string, AddedTokenSpec>();
    const hasDecoder = isObject(cfg.added_tokens_decoder);
    let specialSource: JsonObject = cfg;
    if (hasDecoder) {
      for (const [idText, raw] of Object.entries(cfg.added_tokens_decoder as JsonObject)) {
        const id = Number(idText);
        const spec = parseAddedToken(raw, `added_tokens_decoder[${idText}]`);
        if (!Number.isInteger(id) || id < 0 || !spec) {
          throw new TokenizerError(
            `tokenizer_config.json: bad added_tokens_decoder entry ${JSON.stringify(idText)}`,
          );
        }
        addedTokens.set(spec.content, { id, spec });
        byContent.set(spec.content, spec);
      }
    } else {
      if (specialMap) specialSource = { ...cfg, ...specialMap };
      const legacyAdded = await readOptionalJsonObject(joinPath(dir, "added_tokens.json"));
      for (const [content, id] of Object.entries(legacyAdded ?? {})) {
        if (typeof id !== "number" || !Number.isInteger(id)) {
          throw new TokenizerError(`added_tokens.json: id of ${JSON.stringify(content)} is not an integer`);
        }
        addedTokens.set(content, { id, spec: { content, lstrip: false, rstrip: false, singleWord: false } });
      }
    }

    // Special tokens, resolved to AddedTokens (a plain string takes the flags of the matching decoder entry).
    const special = new Map<string, AddedTokenSpec>();
    const specialList: AddedTokenSpec[] = [];
    for (const key of SPECIAL_TOKEN_KEYS) {
      const raw = specialSource[key];
      // A missing (or null) entry falls back to `CLIPTokenizer.__init__`'s default for that token.
      let spec = parseAddedToken(raw, key) ?? parseAddedToken(CLIP_DEFAULT_TOKENS[key], key);
      if (!spec) continue;
      spec = byContent.get(spec.content) ?? spec;
      special.set(key, spec);
      specialList.push(spec);
    }
    const extra = specialSource.additional_special_tokens;
    if (Array.isArray(extra)) {
      for (const [i, raw] of extra.entries()) {
        const spec = parseAddedToken(raw, `additional_special_tokens[${i}]`);
        if (spec) specialList.push(byContent.get(spec.content) ?? spec);
      }
    }
    // `PreTrainedTokenizer.__init__`: every special token not yet added becomes an added token, with its vocab
    // id when the vocabulary has it, else the next free id.
    let nextId = vocab.size + [...addedTokens.keys()].filter((content) => !vocab.has(content)).length;
    for (const spec of specialList) {
      if (addedTokens.has(spec.content) || spec.content === "") continue;
      const id = vocab.get(spec.content) ?? nextId++;
      addedTokens.set(spec.content, { id, spec });
    }

    const tokenOf = (key: (typeof SPECIAL_TOKEN_KEYS)[number]): string => {
      const spec = special.get(key);
      if (!spec) throw new TokenizerError(`no ${key} configured in ${dir}`);
      return spec.content;
    };

    const rawMax = cfg.model_max_length;
    const modelMaxLength =
      typeof rawMax === "number" && Number.isInteger(rawMax) && rawMax >= 2 && rawMax <= 1_000_000
        ? rawMax
        : DEFAULT_MODEL_MAX_LENGTH;

    return new ClipTokenizer({
      vocab,
      bpeRanks,
      addedTokens,
      bos: tokenOf("bos_token"),
      eos: tokenOf("eos_token"),
      unk: tokenOf("unk_token"),
      pad: tokenOf("pad_token"),
      modelMaxLength,
    });
  }

  /** `len(tokenizer)`: vocabulary plus added tokens, the id the next added token gets. */
  get size(): number {
    let extra = 0;
    for (const content of this.addedTokens.keys()) if (!this.vocab.has(content)) extra++;
    return this.vocab.size + extra;
  }

  /**
   * This tokenizer with textual-inversion embeddings loaded, in order (diffusers `load_textual_inversion`, once per
   * embedding): each adds `name`, `name_1`, … `name_{n-1}` as plain added tokens (no strip flags) with the next
   * free ids, and {@link tokenize} expands the names first. Unlike diffusers, a name that is also a vocabulary
   * entry is accepted (diffusers refuses it); it still gets a new id, as added tokens take precedence.
   */
  withEmbeddings(embeddings: readonly PromptEmbedding[]): ClipTokenizer {
    if (embeddings.length === 0) return this;
    const addedTokens = new Map(this.addedTokens);
    const embeddingIds = new Map(this.embeddingIds);
    let next = this.size;
    for (const { name, vectors } of embeddings) {
      if (name === "" || !Number.isInteger(vectors) || vectors < 1)
        throw new TokenizerError(`embedding ${JSON.stringify(name)}: needs a name and at least one vector`);
      embeddingIds.set(next, vectors);
      for (let i = 0; i < vectors; i++) {
        const content = i === 0 ? name : `${name}_${i}`;
        if (addedTokens.has(content))
          throw new TokenizerError(
            `embedding ${JSON.stringify(name)}: the token ${JSON.stringify(content)} already exists`,
          );
        addedTokens.set(content, {
          id: next++,
          spec: { content, lstrip: false, rstrip: false, singleWord: false },
        });
      }
    }
    return new ClipTokenizer({
      ...this.init,
      addedTokens,
      embeddingIds,
      embeddings: [...this.embeddings, ...embeddings],
      cache: this.cache,
    });
  }

  /**
   * The number of ids an embedding occupies at `ids[pos]`: n when `ids[pos]` is the first token of an n-vector
   * embedding followed by its other n − 1 tokens, else 0.
   */
  embeddingSpanAt(ids: readonly number[], pos: number): number {
    const n = this.embeddingIds.get(ids[pos] ?? -1);
    if (n === undefined) return 0;
    const base = ids[pos] as number;
    for (let i = 1; i < n; i++) if (ids[pos + i] !== base + i) return 0;
    return n;
  }

  /**
   * diffusers' `TextualInversionLoaderMixin._maybe_convert_prompt`: for each embedding name among the tokens of
   * `text`, `text.replace(name, "name name_1 … name_{n-1}")` — Python's `str.replace`, every occurrence. diffusers
   * walks a `set` of the tokens (no defined order); here names go in order of first appearance.
   */
  expandEmbeddings(text: string): string {
    if (this.embeddings.every((e) => e.vectors === 1 || !text.includes(e.name))) return text;
    const vectors = new Map(this.embeddings.map((e) => [e.name, e.vectors]));
    const seen = new Set<string>();
    let out = text;
    for (const token of this.tokenizeLiteral(text)) {
      const n = vectors.get(token);
      if (n === undefined || n === 1 || seen.has(token)) continue;
      seen.add(token);
      const replacement = [token, ...Array.from({ length: n - 1 }, (_, i) => `${token}_${i + 1}`)].join(" ");
      out = out.replaceAll(token, replacement);
    }
    return out;
  }

  /**
   * BPE token strings of `text` (e.g. `"a</w>"`), without BOS/EOS: `CLIPTokenizer.tokenize(text)`, after
   * expanding embedding names ({@link expandEmbeddings}) when embeddings are loaded.
   */
  tokenize(text: string): string[] {
    return this.tokenizeLiteral(this.expandEmbeddings(text));
  }

  /** `CLIPTokenizer.tokenize(text)` with no embedding expansion. */
  private tokenizeLiteral(text: string): string[] {
    const parts = this.splitOnAddedTokens(text);
    // `PreTrainedTokenizer.tokenize`: whitespace stripping / single_word gluing around added tokens. The list
    // is edited in place while it is walked, exactly like the Python loop.
    for (let i = 0; i < parts.length; i++) {
      const token = parts[i] ?? "";
      const added = this.addedTokens.get(token);
      if (!added) continue;
      const left = i > 0 ? parts[i - 1] : undefined;
      const right = i < parts.length - 1 ? parts[i + 1] : undefined;
      const { lstrip, rstrip, singleWord } = added.spec;
      if (rstrip && right) parts[i + 1] = pyLstrip(right);
      if (lstrip && left) parts[i - 1] = pyRstrip(left);
      if (singleWord && left && !left.endsWith(" ")) {
        parts[i - 1] = `${parts[i - 1] ?? ""}${token}`;
        parts[i] = "";
      } else if (singleWord && right && !right.startsWith(" ")) {
        parts[i + 1] = `${token}${parts[i + 1] ?? ""}`;
        parts[i] = "";
      }
    }
    const out: string[] = [];
    for (const part of parts) {
      if (!part) continue;
      if (this.addedTokens.has(part)) out.push(part);
      else this.tokenizeText(part, out);
    }
    return out;
  }

  /** `tok(text).input_ids`: BOS + ids + EOS, no truncation, no padding. */
  encode(text: string): number[] {
    return [this.bosId, ...this.tokensToIds(this.tokenize(text)), this.eosId];
  }

  /**
   * `tok(text, padding="max_length", max_length=maxLength, truncation=True).input_ids`: BOS, the first
   * `maxLength - 2` text tokens, EOS, then `padId` up to `maxLength`. `tokenCount` counts the text tokens before
   * truncation (no BOS/EOS).
   */
  encodePadded(
    text: string,
    maxLength: number = this.modelMaxLength,
  ): { ids: number[]; tokenCount: number; truncated: boolean } {
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new RangeError(`maxLength must be an integer >= 2 (BOS + EOS), got ${maxLength}`);
    }
    const tokenIds = this.tokensToIds(this.tokenize(text));
    const room = maxLength - 2;
    const ids = [this.bosId, ...tokenIds.slice(0, room), this.eosId];
    while (ids.length < maxLength) ids.push(this.padId);
    return { ids, tokenCount: tokenIds.length, truncated: tokenIds.length > room };
  }

  /** `convert_tokens_to_ids`: added tokens first, then the vocabulary, else the UNK id. */
  private tokensToIds(tokens: readonly string[]): number[] {
    return tokens.map((t) => this.addedTokens.get(t)?.id ?? this.vocab.get(t) ?? this.unkId);
  }

  /**
   * `Trie.split`: cuts the text around added-token occurrences, leftmost match first and, among matches
   * starting at the same place, the longest.
   */
  private splitOnAddedTokens(text: string): string[] {
    const parts: string[] = [];
    let pieceStart = 0;
    let i = 0;
    while (i < text.length) {
      let match: string | undefined;
      for (const content of this.addedContents) {
        if (text.startsWith(content, i)) {
          match = content;
          break;
        }
      }
      if (match === undefined) {
        i++;
        continue;
      }
      if (i > pieceStart) parts.push(text.slice(pieceStart, i));
      parts.push(match);
      i += match.length;
      pieceStart = i;
    }
    if (pieceStart < text.length) parts.push(text.slice(pieceStart));
    return parts;
  }

  /** `CLIPTokenizer._tokenize` (ftfy-less path): BasicTokenizer, CLIP regex, byte encoding, BPE. */
  private tokenizeText(text: string, out: string[]): void {
    const normalized = basicTokenize(text).replaceAll(COMBINING_YPOGEGRAMMENI, " ");
    for (const m of normalized.matchAll(CLIP_PATTERN)) {
      for (const piece of this.bpe(byteEncode(m[0]))) out.push(piece);
    }
  }

  /** `CLIPTokenizer.bpe`: lowest-rank merge first, all its non-overlapping occurrences left to right. */
  private bpe(token: string): readonly string[] {
    const cached = this.cache.get(token);
    if (cached) return cached;
    let word: string[] = token.split("");
    word[word.length - 1] = `${word[word.length - 1] ?? ""}</w>`;
    while (word.length > 1) {
      let bestRank = Number.POSITIVE_INFINITY;
      let bestFirst = "";
      let bestSecond = "";
      for (let i = 0; i < word.length - 1; i++) {
        const first = word[i] ?? "";
        const second = word[i + 1] ?? "";
        const rank = this.bpeRanks.get(`${first} ${second}`);
        if (rank !== undefined && rank < bestRank) {
          bestRank = rank;
          bestFirst = first;
          bestSecond = second;
        }
      }
      if (bestRank === Number.POSITIVE_INFINITY) break;
      const merged: string[] = [];
      for (let i = 0; i < word.length; ) {
        if (i < word.length - 1 && word[i] === bestFirst && word[i + 1] === bestSecond) {
          merged.push(bestFirst + bestSecond);
          i += 2;
        } else {
          merged.push(word[i] ?? "");
          i += 1;
        }
      }
      word = merged;
    }
    if (this.cache.size >= MAX_CACHE_ENTRIES) this.resetCache();
    this.cache.set(token, word);
    return word;
  }

  /** The initial `self.cache` of `CLIPTokenizer`: the two CLIP specials map to themselves (no `</w>`). */
  private resetCache(): void {
    this.cache = new Map<string, readonly string[]>([
      ["<|startoftext|>", ["<|startoftext|>"]],
      ["<|endoftext|>", ["<|endoftext|>"]],
    ]);
  }
}

/**
 * `merges.txt` as `CLIPTokenizer.__init__` reads it: `read().strip().split("\n")[1:48895]`, each line
 * `tuple(line.split())`, rank = line index (a repeated pair keeps its last rank, as `dict(zip(...))` does).
 */
function parseMerges(text: string, path: string): Map<string, number> {
  const lines = pyStrip(text).split("\n");
  const end = Math.min(lines.length, MAX_MERGES + 1);
  const ranks = new Map<string, number>();
  for (let i = 1; i < end; i++) {
    const fields = pySplit(lines[i] ?? "");
    // A line that is not exactly two symbols can never match a bigram in transformers; it only uses a rank.
    if (fields.length === 2) ranks.set(`${fields[0]} ${fields[1]}`, i - 1);
  }
  if (ranks.size === 0) throw new TokenizerError(`${path} contains no merges`);
  return ranks;
}

/** Python's `str.split()` with no separator: split on runs of whitespace, no empty fields. */
function pySplit(s: string): string[] {
  const fields: string[] = [];
  let start = -1;
  for (let i = 0; i <= s.length; i++) {
    if (i === s.length || isPythonSpace(s.charCodeAt(i))) {
      if (start >= 0) fields.push(s.slice(start, i));
      start = -1;
    } else if (start < 0) {
      start = i;
    }
  }
  return fields;
}

/** Python's `str.strip()`. */
function pyStrip(s: string): string {
  return pyRstrip(pyLstrip(s));
}
