/** A request's prompt fields as the text encoder will read them, or a 422 naming the malformed field. */
import { ApiError, type PromptSyntax } from "../../../contract/index.ts";
import { type TokenizedPrompt, tokenizePrompt } from "../prompt/chunks.ts";
import { PromptSyntaxError } from "../prompt/emphasis.ts";
import type { ClipTokenizer, PromptEmbedding } from "../tokenizer/clip.ts";

/** Tokenizes one prompt field; a malformed attention syntax is a 422 naming that field. */
export function tokenizeField(
  tokenizer: ClipTokenizer,
  field: string,
  text: string,
  syntax: PromptSyntax,
  embeddings?: readonly PromptEmbedding[],
): TokenizedPrompt {
  try {
    return tokenizePrompt(tokenizer, text, syntax, { embeddings });
  } catch (e) {
    if (!(e instanceof PromptSyntaxError)) throw e;
    const message = `${e.message}; escape literal brackets as \\( \\) or send prompt_syntax "diffusers"`;
    throw new ApiError(422, "validation_failed", `${field}: ${message}`, [{ field, message }]);
  }
}
