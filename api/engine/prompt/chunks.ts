/**
 * Prompt → rows of 77 CLIP token ids for the text encoder, in one of two conventions:
 *
 * - `"a1111"`: AUTOMATIC1111 stable-diffusion-webui, `modules/sd_hijack_clip.py`,
 *   `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` (+ the padding fix-up of `process_tokens`): attention
 *   syntax and BREAK ({@link parsePromptAttention}), any length, split into chunks of 75 tokens with comma
 *   backtracking, one weight per token.
 * - `"diffusers"`: diffusers' `StableDiffusionPipeline.encode_prompt`: the prompt taken literally, one row of
 *   `tokenizer(prompt, padding="max_length", max_length=77, truncation=True)`, anything past 75 tokens cut off.
 *
 * Textual-inversion embeddings ({@link TokenizePromptOptions.embeddings}) are added tokens of the tokenizer
 * (diffusers' rule, `ClipTokenizer.withEmbeddings`): an n-vector embedding's name becomes n consecutive ids
 * ≥ 49408 in both modes. In a1111 mode the n positions take the weight of the text they stand in, and an
 * embedding that does not fit in what is left of a chunk starts the next one (A1111's `tokenize_line`:
 * `if len(chunk.tokens) + emb_len > self.chunk_length: next_chunk()`), so a chunk never splits an embedding.
 * In diffusers mode the 75-token cut may split one, as diffusers' truncation does.
 */
import type { PromptSyntax } from "../../../contract/index.ts";
import { type ClipTokenizer, isPythonSpace, type PromptEmbedding } from "../tokenizer/clip.ts";
import { parsePromptAttention } from "./emphasis.ts";

/** Text tokens per chunk: A1111's `chunk_length`. */
export const CHUNK_TOKENS = 75;
/** Ids per chunk row: BOS + 75 tokens + EOS, the CLIP text encoder's 77 positions. */
export const CHUNK_LENGTH = CHUNK_TOKENS + 2;
/** Default of A1111's `opts.comma_padding_backtrack` ("Prompt word wrap length limit"). */
export const DEFAULT_COMMA_PADDING_BACKTRACK = 20;

/** One encoder row (A1111's `PromptChunk`). */
export interface PromptChunk {
  /** Exactly 77: BOS, 75 tokens (padded), EOS. */
  ids: number[];
  /** 77 multipliers, 1.0 for BOS/EOS/padding (A1111's `multipliers`). */
  weights: number[];
}

export interface TokenizedPrompt {
  chunks: PromptChunk[];
  /** Text tokens, without BOS/EOS/padding (in diffusers mode: before truncation). */
  tokenCount: number;
  /** Tokens dropped (only in diffusers mode). */
  truncatedTokens: number;
  /** The cut-off text as diffusers logs it (`tokenizer.batch_decode` of the dropped ids); null if none. */
  truncatedText: string | null;
}

export interface TokenizePromptOptions {
  /**
   * a1111 mode: the id that fills a chunk after its first EOS. A1111 builds every chunk as BOS + tokens + EOS
   * repeated to 77 (`next_chunk`, `empty_chunk`), then `process_tokens` rewrites everything after the first EOS
   * to the model's `id_pad` when `id_pad != id_end`: SD1's `FrozenCLIPEmbedderWithCustomWords` has
   * `id_pad = id_end` (49407, so rows stay EOS-padded), the OpenCLIP embedders of SD2 / SDXL's second encoder
   * have `id_pad = 0`. The diffusers tokenizers of those models have exactly these pad tokens
   * (`<|endoftext|>` = 49407 for SD1, `!` = 0 for SD2), hence the default `tokenizer.padId`.
   */
  padId?: number;
  /** a1111 mode: `opts.comma_padding_backtrack`, 0 to disable; default 20. */
  commaPaddingBacktrack?: number;
  /**
   * Textual-inversion embeddings loaded for this prompt, in load order (their ids follow that order and must
   * match the rows appended to the text encoder's token-embedding table).
   */
  embeddings?: readonly PromptEmbedding[];
}

/**
 * Splits a prompt into 77-id rows with per-token weights, following `syntax` (see the module comment).
 * An empty prompt gives one chunk (BOS, EOS, padding) in both modes.
 */
export function tokenizePrompt(
  tokenizer: ClipTokenizer,
  prompt: string,
  syntax: PromptSyntax,
  options: TokenizePromptOptions = {},
): TokenizedPrompt {
  const tok = options.embeddings?.length ? tokenizer.withEmbeddings(options.embeddings) : tokenizer;
  if (syntax === "diffusers") return tokenizeDiffusers(tok, prompt);
  if (syntax === "a1111") return tokenizeA1111(tok, prompt, options);
  throw new RangeError(`unknown prompt syntax ${JSON.stringify(syntax)}`);
}

/** diffusers' `encode_prompt`: one truncated, padded row; the dropped text decoded as diffusers' warning shows it. */
function tokenizeDiffusers(tokenizer: ClipTokenizer, prompt: string): TokenizedPrompt {
  const { ids, tokenCount, truncated } = tokenizer.encodePadded(prompt, CHUNK_LENGTH);
  const truncatedTokens = truncated ? tokenCount - CHUNK_TOKENS : 0;
  const truncatedText = truncated ? decodeTokens(tokenizer.tokenize(prompt).slice(CHUNK_TOKENS)) : null;
  return {
    chunks: [{ ids, weights: new Array<number>(CHUNK_LENGTH).fill(1.0) }],
    tokenCount,
    truncatedTokens,
    truncatedText,
  };
}

/** `self.comma_token = vocab.get(',</w>', None)`: the id of the lone-comma token, or null. */
function commaTokenId(tokenizer: ClipTokenizer): number | null {
  const pieces = tokenizer.tokenize(",");
  if (pieces.length !== 1 || pieces[0] !== ",</w>") return null;
  const ids = tokenizer.encode(",");
  return ids.length === 3 ? (ids[1] ?? null) : null;
}

/**
 * `FrozenCLIPEmbedderWithCustomWordsBase.tokenize_line` (emphasis enabled, as with the default
 * `opts.emphasis = "Original"`), with the `id_pad` rewrite of `process_tokens` applied to each row.
 * Each parsed piece is tokenized on its own (`tokenizer(texts, truncation=False, add_special_tokens=False)`).
 */
function tokenizeA1111(
  tokenizer: ClipTokenizer,
  prompt: string,
  options: TokenizePromptOptions,
): TokenizedPrompt {
  const padId = options.padId ?? tokenizer.padId;
  const backtrack = options.commaPaddingBacktrack ?? DEFAULT_COMMA_PADDING_BACKTRACK;
  if (!Number.isInteger(backtrack) || backtrack < 0) {
    throw new RangeError(`commaPaddingBacktrack must be a non-negative integer, got ${backtrack}`);
  }
  const { bosId, eosId } = tokenizer;
  const commaId = commaTokenId(tokenizer);

  const chunks: PromptChunk[] = [];
  let tokens: number[] = [];
  let multipliers: number[] = [];
  let lastComma = -1;
  let tokenCount = 0;

  /** `next_chunk`: pad with EOS (`id_end`) to 75, wrap in BOS/EOS, start an empty chunk. */
  const nextChunk = (): void => {
    const ids = [bosId, ...tokens];
    const weights = [1.0, ...multipliers];
    while (ids.length < CHUNK_LENGTH - 1) {
      ids.push(eosId);
      weights.push(1.0);
    }
    ids.push(eosId);
    weights.push(1.0);
    // `process_tokens`: "SD1 uses the same token for padding and end of text, while SD2 uses different ones."
    if (padId !== eosId) {
      const end = ids.indexOf(eosId);
      for (let j = end + 1; j < ids.length; j++) ids[j] = padId;
    }
    chunks.push({ ids, weights });
    tokens = [];
    multipliers = [];
    lastComma = -1;
  };

  for (const [text, weight] of parsePromptAttention(prompt)) {
    if (text === "BREAK" && weight === -1) {
      nextChunk();
      continue;
    }
    const ids = tokenizer.encode(text).slice(1, -1);
    for (let position = 0; position < ids.length; ) {
      const token = ids[position] as number;
      if (token === commaId) {
        lastComma = tokens.length;
      } else if (
        backtrack !== 0 &&
        tokens.length === CHUNK_TOKENS &&
        lastComma !== -1 &&
        tokens.length - lastComma <= backtrack
      ) {
        // The chunk is full and a comma is near its end: move the words after the comma to the next chunk.
        const breakLocation = lastComma + 1;
        const relocTokens = tokens.slice(breakLocation);
        const relocMultipliers = multipliers.slice(breakLocation);
        tokens = tokens.slice(0, breakLocation);
        multipliers = multipliers.slice(0, breakLocation);
        nextChunk();
        tokens = relocTokens;
        multipliers = relocMultipliers;
      }
      if (tokens.length === CHUNK_TOKENS) nextChunk();
      const span = Math.max(1, tokenizer.embeddingSpanAt(ids, position));
      if (span > CHUNK_TOKENS)
        throw new RangeError(`an embedding of ${span} vectors does not fit in a chunk`);
      if (tokens.length + span > CHUNK_TOKENS) nextChunk();
      for (let i = 0; i < span; i++) {
        tokens.push(ids[position + i] as number);
        multipliers.push(weight);
      }
      tokenCount += span;
      position += span;
    }
  }
  if (tokens.length > 0 || chunks.length === 0) nextChunk();

  return { chunks, tokenCount, truncatedTokens: 0, truncatedText: null };
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding the truncated tail (diffusers' warning text)
// ---------------------------------------------------------------------------------------------------------------

/** Inverse of GPT-2's `bytes_to_unicode`: the byte each BPE alphabet character stands for. */
const BYTE_DECODER: ReadonlyMap<string, number> = (() => {
  const map = new Map<string, number>();
  const printable = (b: number) =>
    (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++)
    map.set(printable(b) ? String.fromCharCode(b) : String.fromCharCode(256 + n++), b);
  return map;
})();

/** Python's `str.strip()`. */
function pyStrip(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isPythonSpace(s.charCodeAt(start))) start++;
  while (end > start && isPythonSpace(s.charCodeAt(end - 1))) end--;
  return s.slice(start, end);
}

/**
 * transformers' `tokenizer.decode(ids)` for CLIP (slow tokenizer, 4.44 defaults): `CLIPTokenizer.
 * convert_tokens_to_string` (`"".join(tokens)` → bytes via the byte decoder → UTF-8 with errors="replace" →
 * `</w>` to " " → strip), then `clean_up_tokenization` (`clean_up_tokenization_spaces` defaults to True).
 * Characters outside the byte alphabet (only possible in non-byte added tokens) are kept as their UTF-8 bytes.
 */
function decodeTokens(tokens: readonly string[]): string {
  const bytes: number[] = [];
  const utf8 = new TextEncoder();
  for (const ch of tokens.join("")) {
    const b = BYTE_DECODER.get(ch);
    if (b !== undefined) bytes.push(b);
    else bytes.push(...utf8.encode(ch));
  }
  const text = pyStrip(
    new TextDecoder("utf-8", { fatal: false, ignoreBOM: true })
      .decode(new Uint8Array(bytes))
      .replaceAll("</w>", " "),
  );
  return text
    .replaceAll(" .", ".")
    .replaceAll(" ?", "?")
    .replaceAll(" !", "!")
    .replaceAll(" ,", ",")
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}
