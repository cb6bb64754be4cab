/**
 * AUTOMATIC1111 stable-diffusion-webui's attention ("emphasis") syntax: `modules/prompt_parser.py`,
 * `parse_prompt_attention` with its `re_attention` and `re_break` regular expressions, reproduced with Python's
 * `re` semantics (Unicode `\d`, `\s` and `\b` as CPython defines them, not as JavaScript does).
 *
 * Accepted syntax, as in A1111's docstring:
 * - `(abc)` multiplies the weight of abc by 1.1, `[abc]` by 1 / 1.1, `(abc:3.12)` by 3.12 (nesting multiplies);
 * - `\(`, `\)`, `\[`, `\]`, `\\` are the literal characters; any other backslash is dropped;
 * - brackets still open at the end apply to the rest of the prompt; a closing bracket without an opener is text;
 * - `BREAK` (upper case, a whole word) becomes its own `["BREAK", -1]` entry, which starts a new 75-token chunk.
 */

/**
 * Thrown where A1111 itself fails: `(text:1.2.3)` or `(text:.)` makes `float(weight)` raise ValueError in
 * `parse_prompt_attention`, which aborts the generation in the webui.
 */
export class PromptSyntaxError extends Error {
  override name = "PromptSyntaxError";
}

/**
 * `re_attention`, alternative for alternative:
 * `\\\(` `\\\)` `\\\[` `\\]` `\\\\` `\\` `\(` `\[` `:([+-]?[.\d]+)\)` `\)` `]` `[^\\()\[\]:]+` `:`.
 * Python's `\d` on str patterns is any Unicode decimal digit (category Nd), hence `\p{Nd}`. Every character of
 * the input is covered by one alternative, so `finditer` never skips text.
 */
const RE_ATTENTION = /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:([+-]?[.\p{Nd}]+)\)|\)|\]|[^\\()[\]:]+|:/gu;

/** Python's `\s` for str patterns (`str.isspace()`): bidi WS/B/S or category Zs (Unicode 14). */
const PY_SPACE =
  "[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/** Python's `\w` for str patterns: `str.isalnum()` (letters and numeric characters) or `_`. */
const PY_WORD = "[\\p{L}\\p{N}_]";

/** `re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)`, with `\b` spelled as look-arounds over Python's `\w`. */
const RE_BREAK = new RegExp(`${PY_SPACE}*(?<!${PY_WORD})BREAK(?!${PY_WORD})${PY_SPACE}*`, "u");

/** `round_bracket_multiplier` and `square_bracket_multiplier` of `parse_prompt_attention`. */
const ROUND_BRACKET_MULTIPLIER = 1.1;
const SQUARE_BRACKET_MULTIPLIER = 1 / 1.1;

const IS_DECIMAL_DIGIT = /^\p{Nd}$/u;

/**
 * Value of one Unicode decimal digit (what `int(ch)` gives): decimal digits come in runs of ten consecutive code
 * points from 0 to 9, so the value is the position in the run of Nd code points ending at `cp`.
 */
function decimalDigitValue(cp: number): number {
  let start = cp;
  while (start > 0 && IS_DECIMAL_DIGIT.test(String.fromCodePoint(start - 1))) start--;
  return (cp - start) % 10;
}

/**
 * Python's `float(s)` for the strings `[+-]?[.\d]+` can produce: Unicode decimal digits count as their ASCII
 * value; anything other than `digits[.digits]` / `.digits` (like `1.2.3` or `.`) is a ValueError in Python.
 */
function pythonFloat(s: string): number {
  const ascii = s.replace(/\p{Nd}/gu, (d) => String(decimalDigitValue(d.codePointAt(0) ?? 0)));
  if (!/^[+-]?(?:\d+\.?\d*|\.\d+)$/.test(ascii)) {
    throw new PromptSyntaxError(`could not convert string to float: '${s}' (attention weight in the prompt)`);
  }
  return Number(ascii);
}

/**
 * A1111's `parse_prompt_attention(text)`: the prompt as `[text, weight]` pieces, in order, adjacent pieces of
 * equal weight merged; `["", 1]` for a prompt with no text. `BREAK` gives `["BREAK", -1]` (its weight is
 * multiplied like any other entry's, so a BREAK inside brackets stops being a chunk break, as in A1111).
 *
 * @throws PromptSyntaxError for an explicit weight Python cannot parse (`(a:1.2.3)`), where A1111 fails too.
 */
export function parsePromptAttention(text: string): Array<[string, number]> {
  const res: Array<[string, number]> = [];
  const roundBrackets: number[] = [];
  const squareBrackets: number[] = [];

  const multiplyRange = (startPosition: number, multiplier: number): void => {
    for (let p = startPosition; p < res.length; p++) {
      const entry = res[p] as [string, number];
      entry[1] *= multiplier;
    }
  };

  for (const m of text.matchAll(RE_ATTENTION)) {
    const piece = m[0];
    const weight = m[1];
    if (piece.startsWith("\\")) {
      res.push([piece.slice(1), 1.0]);
    } else if (piece === "(") {
      roundBrackets.push(res.length);
    } else if (piece === "[") {
      squareBrackets.push(res.length);
    } else if (weight !== undefined && roundBrackets.length > 0) {
      multiplyRange(roundBrackets.pop() as number, pythonFloat(weight));
    } else if (piece === ")" && roundBrackets.length > 0) {
      multiplyRange(roundBrackets.pop() as number, ROUND_BRACKET_MULTIPLIER);
    } else if (piece === "]" && squareBrackets.length > 0) {
      multiplyRange(squareBrackets.pop() as number, SQUARE_BRACKET_MULTIPLIER);
    } else {
      const parts = piece.split(RE_BREAK);
      for (const [i, part] of parts.entries()) {
        if (i > 0) res.push(["BREAK", -1]);
        res.push([part, 1.0]);
      }
    }
  }

  for (const pos of roundBrackets) multiplyRange(pos, ROUND_BRACKET_MULTIPLIER);
  for (const pos of squareBrackets) multiplyRange(pos, SQUARE_BRACKET_MULTIPLIER);

  if (res.length === 0) res.push(["", 1.0]);

  // Merge runs of identical weights.
  let i = 0;
  while (i + 1 < res.length) {
    const cur = res[i] as [string, number];
    const next = res[i + 1] as [string, number];
    if (cur[1] === next[1]) {
      cur[0] += next[0];
      res.splice(i + 1, 1);
    } else {
      i += 1;
    }
  }
  return res;
}
