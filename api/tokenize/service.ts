/** POST /v1/tokenize: the prompt as the text encoder will receive it, so a client can fit it to 75 tokens. */
import type { ModelHost } from "../engine/model_host.ts";
import { PromptSyntaxError } from "../engine/prompt/attention.ts";
import {
  CHUNK_TOKENS,
  type PromptSyntax,
  type TokenizedPrompt,
  tokenizePrompt,
} from "../engine/prompt/chunks.ts";
import type { ClipTokenizer } from "../engine/tokenizer/clip.ts";
import { ApiError } from "../errors.ts";
import { requestedModel, withModel } from "../models/service.ts";
import type { TokenizeRequest, TokenizeResponse } from "./model.ts";

/** Tokenizes one prompt field; a malformed attention syntax is a 422 naming that field. */
export function tokenizeField(
  tokenizer: ClipTokenizer,
  field: string,
  text: string,
  syntax: PromptSyntax,
): TokenizedPrompt {
  try {
    return tokenizePrompt(tokenizer, text, syntax);
  } catch (e) {
    if (!(e instanceof PromptSyntaxError)) throw e;
    const message = `${e.message}; escape literal brackets as \\( \\) or send prompt_syntax "diffusers"`;
    throw new ApiError(422, "validation_failed", `${field}: ${message}`, [{ field, message }]);
  }
}

/** Tokenizes with the requested model's tokenizer, loading the model first when it is not loaded. */
export async function tokenize(host: ModelHost, req: TokenizeRequest): Promise<TokenizeResponse> {
  const entry = await requestedModel(host, req.model);
  const tokenizer =
    host.loadedModel(entry.name)?.tokenizer ?? (await withModel(host, entry, (m) => m.tokenizer));
  const syntax = req.prompt_syntax ?? "a1111";
  const tokenized = tokenizeField(tokenizer, "prompt", req.prompt, syntax);
  return {
    model: entry.name,
    prompt_syntax: syntax,
    token_count: tokenized.tokenCount,
    chunk_tokens: CHUNK_TOKENS,
    chunks: tokenized.chunks.map((c) => ({ input_ids: c.ids, weights: c.weights })),
    truncated: { tokens: tokenized.truncatedTokens, text: tokenized.truncatedText },
  };
}
