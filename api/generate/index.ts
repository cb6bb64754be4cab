import { Elysia } from "elysia";
import {
  DEFAULT_LIMITS,
  describeEvents,
  GenerateEventsSchema,
  GenerateResponseSchema,
  generateRequestSchema,
  HEARTBEAT_MS,
  type Limits,
} from "../../contract/index.ts";
import { generateImages } from "../engine/generation/run.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel, GENERATION_ERROR_RESPONSES } from "../http/errors.ts";
import { wantsEventStream } from "../http/sse.ts";
import { generationEventStream } from "./sse.ts";

const STREAM_DESCRIPTION =
  "\n\n**Progress as server-sent events.** Send `Accept: text/event-stream` to get `text/event-stream` instead of JSON. " +
  "Request errors (422, 429, 503) are still plain JSON answers; once the stream starts, events are " +
  "`event: <name>` with one JSON `data:` line:\n" +
  describeEvents(GenerateEventsSchema) +
  "With `preview` in the request, `preview` events follow the steps they preview (a JSON answer carries none and says so in `warnings`). " +
  `A \`: heartbeat\` comment comes every ${HEARTBEAT_MS / 1000} s. Closing the connection cancels the generation (queued: dropped; running: stopped before the next step).\n\n` +
  "**Admission.** Generations run a few at a time (`--concurrency`) and the rest wait in a bounded queue (`--max-queue`); " +
  "a request that finds it full gets 429 `queue_full` at once, with `Retry-After` in seconds. While the server drains for shutdown, 503 `draining`.";

export interface GeneratePluginOptions {
  /** The server's limits (createApp passes them); default: the spec's. */
  limits?: Limits;
  /** Called with a streamed request's whole time, in seconds, when its stream ends. */
  onStreamEnd?: (seconds: number) => void;
}

export const generatePlugin = (host: ModelHost, options: GeneratePluginOptions = {}) => {
  const limits = options.limits ?? DEFAULT_LIMITS;
  return new Elysia({ name: "sdx.generate" })
    .use(errorModel)
    .model({
      GenerateRequest: generateRequestSchema(limits),
      GenerateResponse: GenerateResponseSchema,
      GenerateEvents: GenerateEventsSchema,
    })
    .post(
      "/v1/generate",
      ({ body, request }) =>
        wantsEventStream(request)
          ? generationEventStream(host, body, request, {
              limits,
              ...(options.onStreamEnd ? { onEnd: options.onStreamEnd } : {}),
            })
          : generateImages(host, body, request.signal, {}, limits),
      {
        body: "GenerateRequest",
        response: { 200: "GenerateResponse", ...GENERATION_ERROR_RESPONSES },
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
};
