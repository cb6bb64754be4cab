import { Type } from "@sinclair/typebox";
import { t } from "elysia";
import { PROMPT_SYNTAXES } from "../engine/prompt/chunks.ts";
import { LIMITS } from "../generate/model.ts";
import { Enum } from "../schema.ts";

export const TokenizeRequestSchema = t.Object(
  {
    prompt: t.String({
      maxLength: LIMITS.promptMaxChars,
      description: "The prompt, as it would be sent to /v1/generate.",
    }),
    model: t.Optional(
      t.String({
        minLength: 1,
        maxLength: 255,
        description: "Whose tokenizer to use, as in /v1/generate (default: the server's default model).",
      }),
    ),
    prompt_syntax: t.Optional(
      Enum(PROMPT_SYNTAXES, { default: "a1111", description: "As in /v1/generate." }),
    ),
  },
  { additionalProperties: false },
);

export const TokenizeResponseSchema = t.Object({
  model: t.String({ description: "The model whose tokenizer was used." }),
  prompt_syntax: Enum(PROMPT_SYNTAXES),
  token_count: Type.Integer({ description: "Text tokens, without start, end and padding tokens." }),
  chunk_tokens: Type.Integer({ description: "Text tokens one chunk holds (75)." }),
  chunks: t.Array(
    t.Object({
      input_ids: t.Array(Type.Integer(), {
        description: "The 77 ids the text encoder receives for this chunk.",
      }),
      weights: t.Array(t.Number(), {
        description: "Attention weight per position (1 outside weighted text).",
      }),
    }),
  ),
  truncated: t.Object({
    tokens: Type.Integer({ description: "Tokens that would be cut off (prompt_syntax diffusers only)." }),
    text: t.Union([t.String(), t.Null()], { description: "The text that would be cut off." }),
  }),
});

export type TokenizeRequest = typeof TokenizeRequestSchema.static;
export type TokenizeResponse = typeof TokenizeResponseSchema.static;
