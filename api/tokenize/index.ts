import { Elysia } from "elysia";
import {
  DEFAULT_LIMITS,
  type Limits,
  TokenizeResponseSchema,
  tokenizeRequestSchema,
} from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../http/errors.ts";
import { tokenize } from "./service.ts";

/** `limits`: the server's (createApp passes them); default: the spec's. */
export const tokenizePlugin = (host: ModelHost, limits: Limits = DEFAULT_LIMITS) =>
  new Elysia({ name: "sdx.tokenize" })
    .use(errorModel)
    .model({ TokenizeRequest: tokenizeRequestSchema(limits), TokenizeResponse: TokenizeResponseSchema })
    .post("/v1/tokenize", ({ body }) => tokenize(host, body), {
      body: "TokenizeRequest",
      response: { 200: "TokenizeResponse", 400: "Error", 422: "Error", 503: "Error" },
      parse: "json",
      detail: {
        tags: ["generate"],
        operationId: "tokenize",
        summary: "Tokenize a prompt as the text encoder will see it",
        description:
          "The token count, each 77-id chunk exactly as the text encoder receives it (with attention weights) and what " +
          "would be cut, using the served model's tokenizer and the same prompt_syntax rules as /v1/generate.",
      },
    });
