/**
 * POST /v1/generate as server-sent events: the HTTP framing of a generation's progress. The generation itself
 * (checks, admission, engine) is the service's; this file only turns its progress hooks into an event stream.
 */
import type { ModelHost } from "../engine/model_host.ts";
import { ApiError, type ErrorBody } from "../errors.ts";
import type { GenerateRequest } from "./model.ts";
import { type ModelFacts, prepareGeneration } from "./service.ts";

/** A comment line this often keeps proxies from cutting a long, quiet generation. */
export const HEARTBEAT_MS = 10_000;

export function wantsEventStream(request: Request): boolean {
  return (request.headers.get("accept") ?? "").includes("text/event-stream");
}

function errorBody(e: unknown): ErrorBody {
  if (e instanceof ApiError) return e.toBody();
  return {
    status: 500,
    code: "internal",
    message: `internal error: ${e instanceof Error ? e.message : String(e)}`,
  };
}

/**
 * Checks and admits the request now (so a bad request, a full queue or a draining server is a plain JSON
 * error), then streams `queued`, `started`, `step`…, `image`… and `done` or `error`. A client that goes away
 * (the request's signal, or the stream cancelled) cancels the generation.
 */
export async function generationEventStream(
  host: ModelHost,
  body: GenerateRequest,
  request: Request,
  sizeRange?: ModelFacts["sizeRange"],
  heartbeatMs = HEARTBEAT_MS,
): Promise<Response> {
  const startedAt = performance.now();
  const cancel = new AbortController();
  const onAbort = () => cancel.abort();
  request.signal.addEventListener("abort", onAbort, { once: true });
  let job: Awaited<ReturnType<typeof prepareGeneration>>;
  try {
    job = await prepareGeneration(host, body, cancel.signal, sizeRange);
  } catch (e) {
    request.signal.removeEventListener("abort", onAbort);
    throw e;
  }
  const encoder = new TextEncoder();
  let closed = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      const write = (text: string) => {
        if (closed) return;
        try {
          controller.enqueue(encoder.encode(text));
        } catch {
          closed = true;
          cancel.abort();
        }
      };
      const send = (event: string, data: unknown) =>
        write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const heartbeat = setInterval(() => write(": heartbeat\n\n"), heartbeatMs);
      job
        .run({
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
        })
        .then((res) => {
          res.images.forEach((image, index) => {
            send("image", { index, seed: image.seed, png: image.png });
          });
          send("done", { metadata: res.metadata, warnings: res.warnings });
        })
        .catch((e: unknown) => send("error", errorBody(e)))
        .finally(() => {
          clearInterval(heartbeat);
          host.metrics.requestSeconds.observe(
            { route: "/v1/generate" },
            (performance.now() - startedAt) / 1000,
          );
          request.signal.removeEventListener("abort", onAbort);
          if (closed) return;
          closed = true;
          controller.close();
        });
    },
    cancel() {
      closed = true;
      cancel.abort();
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "x-accel-buffering": "no",
    },
  });
}
