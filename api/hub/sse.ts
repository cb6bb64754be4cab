/**
 * POST /v1/models/pull as server-sent events: the HTTP framing of a pull's progress. The pull itself is the
 * service's; this file only turns its progress into `progress` events and its end into `done` or `error`.
 */
import type { PullTarget } from "../engine/hub/catalog.ts";
import { ApiError, type ErrorBody } from "../errors.ts";
import { HEARTBEAT_MS } from "../generate/sse.ts";
import type { PullRequest } from "./model.ts";
import type { HubService } from "./service.ts";

function errorBody(e: unknown): ErrorBody {
  if (e instanceof ApiError) return e.toBody();
  return {
    status: 500,
    code: "internal",
    message: `internal error: ${e instanceof Error ? e.message : String(e)}`,
  };
}

/** Streams `progress`… then `done` or `error`. Closing the connection leaves the pull (see HubService.pull). */
export function pullEventStream(
  service: HubService,
  target: PullTarget,
  request: Request,
  heartbeatMs = HEARTBEAT_MS,
): Response {
  const leave = new AbortController();
  const onAbort = () => leave.abort();
  request.signal.addEventListener("abort", onAbort, { once: true });
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
          leave.abort();
        }
      };
      const send = (event: string, data: unknown) =>
        write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const heartbeat = setInterval(() => write(": heartbeat\n\n"), heartbeatMs);
      service
        .pull(target, leave.signal, (p) =>
          send("progress", {
            file: p.file,
            file_bytes: p.fileBytes,
            file_total: p.fileTotal,
            bytes: p.bytes,
            total: p.total,
            files_done: p.filesDone,
            files_total: p.filesTotal,
          }),
        )
        .then((result) => send("done", result))
        .catch((e: unknown) => send("error", errorBody(e)))
        .finally(() => {
          clearInterval(heartbeat);
          request.signal.removeEventListener("abort", onAbort);
          if (closed) return;
          closed = true;
          controller.close();
        });
    },
    cancel() {
      closed = true;
      leave.abort();
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

/** Checks the request (a plain JSON error when it is refused), then answers with the event stream. */
export async function pullAsEvents(
  service: HubService,
  body: PullRequest,
  request: Request,
): Promise<Response> {
  return pullEventStream(service, await service.check(body), request);
}
