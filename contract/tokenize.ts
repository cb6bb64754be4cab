/** POST /v1/tokenize: the prompt as the text encoder will receive it. */
import { Type } from "@sinclair/typebox";
import { GENERATE_DEFAULTS } from "./defaults.ts";
import { DEFAULT_LIMITS, FIXED_LIMITS, type Limits } from "./limits.ts";
import { PROMPT_SYNTAXES } from "./lists.ts";
import { Enum } from "./schema.ts";

/** POST /v1/tokenize's body, with a server's prompt length. */
export function tokenizeRequestSchema(limits: Limits = DEFAULT_LIMITS) {
  return Type.Object(
    {
      prompt: Type.String({
        maxLength: limits.promptMaxChars,
        description: "The prompt, as it would be sent to /v1/generate.",
      }),
      model: Type.Optional(
        Type.String({
          minLength: 1,
          maxLength: FIXED_LIMITS.modelNameMaxChars,
          description: "Whose tokenizer to use, as in /v1/generate (default: the server's default model).",
        }),
      ),
      prompt_syntax: Type.Optional(
        Enum(PROMPT_SYNTAXES, {
          default: GENERATE_DEFAULTS.prompt_syntax,
          description: "As in /v1/generate.",
        }),
      ),
    },
    { additionalProperties: false },
  );
}

export const TokenizeRequestSchema = tokenizeRequestSchema();

export const TokenizeResponseSchema = Type.Object({
  model: Type.String({ description: "The model whose tokenizer was used." }),
  prompt_syntax: Enum(PROMPT_SYNTAXES),
  token_count: Type.Integer({ description: "Text tokens, without start, end and padding tokens." }),
  chunk_tokens: Type.Integer({ description: "Text tokens one chunk holds (75)." }),
  chunks: Type.Array(
    Type.Object({
      input_ids: Type.Array(Type.Integer(), {
        description: "The 77 ids the text encoder receives for this chunk.",
      }),
      weights: Type.Array(Type.Number(), {
        description: "Attention weight per position (1 outside weighted text).",
      }),
    }),
  ),
  truncated: Type.Object({
    tokens: Type.Integer({ description: "Tokens that would be cut off (prompt_syntax diffusers only)." }),
    text: Type.Union([Type.String(), Type.Null()], { description: "The text that would be cut off." }),
  }),
});

export type TokenizeRequest = typeof TokenizeRequestSchema.static;
export type TokenizeResponse = typeof TokenizeResponseSchema.static;
