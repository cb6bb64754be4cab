/**
 * Server-sent events, the framing every streamed route shares: `event: <name>` + one JSON `data:` line per event,
 * a heartbeat comment so proxies and idle timeouts never cut a quiet stream, and cancellation when the client
 * goes away (the request's signal, or the stream cancelled by the server). Which events a stream sends, and
 * their data, is the contract's (contract/events.ts).
 */
import { ApiError, type ErrorBody, HEARTBEAT_MS, type SendEvent } from "../../contract/index.ts";

export function wantsEventStream(request: Request): boolean {
  return (request.headers.get("accept") ?? "").includes("text/event-stream");
}

/** What the `error` event carries: the ApiError's body, or a 500 `internal`. */
export function errorBody(e: unknown): ErrorBody {
  if (e instanceof ApiError) return e.toBody();
  return {
    status: 500,
    code: "internal",
    message: `internal error: ${e instanceof Error ? e.message : String(e)}`,
  };
}

/** An AbortController that aborts when the client goes away; `unlink` once the request is over. */
export function clientSignal(request: Request): { controller: AbortController; unlink(): void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort();
  request.signal.addEventListener("abort", onAbort, { once: true });
  return { controller, unlink: () => request.signal.removeEventListener("abort", onAbort) };
}

/**
 * Answers with an event stream of the events `E` maps (every stream ends with `error` when it fails):
 * `produce(send)` sends the events and settles when it is done; a throw is sent as an `error` event. `client`
 * (see clientSignal) is aborted when the connection closes; `onEnd` runs last.
 */
export function eventStreamResponse<E extends { error: ErrorBody }>(
  client: ReturnType<typeof clientSignal>,
  produce: (send: SendEvent<E>) => Promise<void>,
  options: { heartbeatMs?: number; onEnd?: () => void } = {},
): Response {
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
          client.controller.abort();
        }
      };
      const send: SendEvent<E> = (event, data) => write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      const heartbeat = setInterval(() => write(": heartbeat\n\n"), options.heartbeatMs ?? HEARTBEAT_MS);
      produce(send)
        .catch((e: unknown) => send("error", errorBody(e) as E["error"]))
        .finally(() => {
          clearInterval(heartbeat);
          client.unlink();
          options.onEnd?.();
          if (closed) return;
          closed = true;
          controller.close();
        });
    },
    cancel() {
      closed = true;
      client.controller.abort();
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
