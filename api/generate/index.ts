import { Elysia } from "elysia";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../errors.ts";
import { wantsEventStream } from "../sse.ts";
import { GenerateRequestSchema, GenerateResponseSchema, LIMITS } from "./model.ts";
import { generateImages, type ModelFacts } from "./service.ts";
import { generationEventStream } from "./sse.ts";

const STREAM_DESCRIPTION =
  "\n\n**Progress as server-sent events.** Send `Accept: text/event-stream` to get `text/event-stream` instead of JSON. " +
  "Request errors (422, 429, 503) are still plain JSON answers; once the stream starts, events are " +
  "`event: <name>` with one JSON `data:` line:\n" +
  "- `queued` `{ position }`: place in the queue (1 = next, 0 = runs now); sent first and whenever it changes.\n" +
  "- `started` `{}`: the generation holds a slot and the engine starts.\n" +
  "- `loading` `{ model }`: the requested model is not loaded and loads now (its time is `timings.load_ms`).\n" +
  "- `step` `{ image, step, total, elapsed_ms, eta_ms }`: a denoising step finished (a batch is denoised together; `image` is the first image's index).\n" +
  "- `image` `{ index, seed, png }`: a finished image, PNG base64.\n" +
  "- `done` `{ metadata, warnings }`: the JSON answer's body without `images`. Last event.\n" +
  "- `error` `Error`: the error body (e.g. `generation_failed`, `cancelled`). Last event.\n" +
  "A `: heartbeat` comment comes every 10 s. Closing the connection cancels the generation (queued: dropped; running: stopped before the next step).\n\n" +
  "**Admission.** Generations run a few at a time (`--concurrency`) and the rest wait in a bounded queue (`--max-queue`); " +
  "a request that finds it full gets 429 `queue_full` at once, with `Retry-After` in seconds. While the server drains for shutdown, 503 `draining`.";

/** `requestSchema`: the request schema with the server's limits (createApp builds it); default: the spec's. */
export const generatePlugin = (
  host: ModelHost,
  requestSchema = GenerateRequestSchema,
  sizeRange: ModelFacts["sizeRange"] = { min: LIMITS.sizeMin, max: LIMITS.sizeMax },
) =>
  new Elysia({ name: "sdx.generate" })
    .use(errorModel)
    .model({ GenerateRequest: requestSchema, GenerateResponse: GenerateResponseSchema })
    .post(
      "/v1/generate",
      ({ body, request }) =>
        wantsEventStream(request)
          ? generationEventStream(host, body, request, sizeRange)
          : generateImages(host, body, request.signal, {}, sizeRange),
      {
        body: "GenerateRequest",
        response: {
          200: "GenerateResponse",
          400: "Error",
          413: "Error",
          422: "Error",
          429: "Error",
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
            "Parameters that did not change the result are listed in `warnings`. 503 while no model is ready." +
            STREAM_DESCRIPTION,
        },
      },
    );
