import { Elysia } from "elysia";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../errors.ts";
import { GenerateRequestSchema, GenerateResponseSchema } from "./model.ts";
import { generateImages } from "./service.ts";

export const generatePlugin = (host: ModelHost) =>
  new Elysia({ name: "sdx.generate" })
    .use(errorModel)
    .model({ GenerateRequest: GenerateRequestSchema, GenerateResponse: GenerateResponseSchema })
    .post("/v1/generate", ({ body, request }) => generateImages(host, body, request.signal), {
      body: "GenerateRequest",
      response: {
        200: "GenerateResponse",
        400: "Error",
        413: "Error",
        422: "Error",
        500: "Error",
        503: "Error",
      },
      parse: "json",
      detail: {
        tags: ["generate"],
        operationId: "generate",
        summary: "Generate images from a prompt",
        description:
          "Runs text-to-image on the server's model. Image i of a batch uses seed + i, so any image can be remade alone. " +
          "Parameters that did not change the result are listed in `warnings`. 503 while no model is ready.",
      },
    });
