/** POST /v1/tokenize: the prompt as the text encoder will receive it, so a client can fit it to 75 tokens. */
import { GENERATE_DEFAULTS, type TokenizeRequest, type TokenizeResponse } from "../../contract/index.ts";
import { tokenizeField } from "../engine/generation/prompt_fields.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { requestedModel, withModel } from "../engine/models.ts";
import { CHUNK_TOKENS } from "../engine/prompt/chunks.ts";

/** Tokenizes with the requested model's tokenizer, loading the model first when it is not loaded. */
export async function tokenize(host: ModelHost, req: TokenizeRequest): Promise<TokenizeResponse> {
  const entry = await requestedModel(host, req.model);
  const tokenizer =
    host.loadedModel(entry.name)?.tokenizer ?? (await withModel(host, entry, (m) => m.tokenizer));
  const syntax = req.prompt_syntax ?? GENERATE_DEFAULTS.prompt_syntax;
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
