/**
 * POST /v1/generate as server-sent events: the HTTP framing of a generation's progress. The generation itself
 * (checks, admission, engine) is the service's; this file only turns its progress hooks into an event stream.
 */
import type { ModelHost } from "../engine/model_host.ts";
import { clientSignal, eventStreamResponse, HEARTBEAT_MS } from "../sse.ts";
import type { GenerateRequest } from "./model.ts";
import { type ModelFacts, prepareGeneration } from "./service.ts";

/**
 * Checks and admits the request now (so a bad request, a full queue or a draining server is a plain JSON
 * error), then streams `queued`, `started`, `loading`, `step`…, `image`… and `done` or `error`. A client that
 * goes away (the request's signal, or the stream cancelled) cancels the generation.
 */
export async function generationEventStream(
  host: ModelHost,
  body: GenerateRequest,
  request: Request,
  sizeRange?: ModelFacts["sizeRange"],
  heartbeatMs = HEARTBEAT_MS,
): Promise<Response> {
  const startedAt = performance.now();
  const client = clientSignal(request);
  let job: Awaited<ReturnType<typeof prepareGeneration>>;
  try {
    job = await prepareGeneration(host, body, client.controller.signal, sizeRange);
  } catch (e) {
    client.unlink();
    throw e;
  }
  return eventStreamResponse(
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
      });
      res.images.forEach((image, index) => {
        send("image", { index, seed: image.seed, png: image.png });
      });
      send("done", { metadata: res.metadata, warnings: res.warnings });
    },
    {
      heartbeatMs,
      // The request's time in /metrics is the whole stream's (the HTTP hook sees only its start).
      onEnd: () =>
        host.metrics.requestSeconds.observe(
          { route: "/v1/generate" },
          (performance.now() - startedAt) / 1000,
        ),
    },
  );
}
