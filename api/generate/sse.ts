/**
 * POST /v1/generate as server-sent events: the HTTP framing of a generation's progress. The generation itself
 * (checks, admission, engine) is the engine's; this file only turns its progress hooks into the contract's
 * events (contract/events.ts).
 */
import {
  type GenerateEvents,
  type GenerateRequest,
  HEARTBEAT_MS,
  type Limits,
} from "../../contract/index.ts";
import { prepareGeneration } from "../engine/generation/run.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { clientSignal, eventStreamResponse } from "../http/sse.ts";

export interface StreamOptions {
  limits?: Limits;
  heartbeatMs?: number;
  /** Called with the stream's whole time, in seconds, when it ends (the request metrics). */
  onEnd?: (seconds: number) => void;
}

/**
 * Checks and admits the request now (so a bad request, a full queue or a draining server is a plain JSON
 * error), then streams `queued`, `started`, `loading`, `step`… (each followed by its `preview`s when the request
 * asks for them), `image`… and `done` or `error`. A client that goes away (the request's signal, or the stream cancelled) cancels the generation.
 */
export async function generationEventStream(
  host: ModelHost,
  body: GenerateRequest,
  request: Request,
  options: StreamOptions = {},
): Promise<Response> {
  const startedAt = performance.now();
  const client = clientSignal(request);
  let job: Awaited<ReturnType<typeof prepareGeneration>>;
  try {
    job = await prepareGeneration(host, body, client.controller.signal, options.limits);
  } catch (e) {
    client.unlink();
    throw e;
  }
  return eventStreamResponse<GenerateEvents>(
    client,
    async (send) => {
      const res = await job.run({
        queued: (position) => send("queued", { position }),
        started: () => send("started", {}),
        loading: (model) => send("loading", { model }),
        step: (e) =>
          send("step", {
            image: 0,
            step: e.step,
            total: e.total,
            elapsed_ms: Math.round(e.elapsedMs),
            eta_ms: Math.round(e.etaMs),
          }),
        preview: (e) => send("preview", e),
      });
      res.images.forEach((image, index) => {
        send("image", { index, seed: image.seed, png: image.png });
      });
      send("done", { metadata: res.metadata, warnings: res.warnings });
    },
    {
      heartbeatMs: options.heartbeatMs ?? HEARTBEAT_MS,
      onEnd: () => options.onEnd?.((performance.now() - startedAt) / 1000),
    },
  );
}
