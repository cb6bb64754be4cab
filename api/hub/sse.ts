/**
 * POST /v1/models/pull as server-sent events: the HTTP framing of a pull's progress. The pull itself is the
 * service's; this file only turns its progress into `progress` events and its end into `done` or `error`.
 */
import type { PullTarget } from "../engine/hub/catalog.ts";
import { clientSignal, eventStreamResponse, HEARTBEAT_MS } from "../sse.ts";
import type { PullRequest } from "./model.ts";
import type { HubService } from "./service.ts";

/** Streams `progress`… then `done` or `error`. Closing the connection leaves the pull (see HubService.pull). */
export function pullEventStream(
  service: HubService,
  target: PullTarget,
  request: Request,
  heartbeatMs = HEARTBEAT_MS,
): Response {
  const client = clientSignal(request);
  return eventStreamResponse(
    client,
    async (send) => {
      const result = await service.pull(target, client.controller.signal, (p) =>
        send("progress", {
          file: p.file,
          file_bytes: p.fileBytes,
          file_total: p.fileTotal,
          bytes: p.bytes,
          total: p.total,
          files_done: p.filesDone,
          files_total: p.filesTotal,
        }),
      );
      send("done", result);
    },
    { heartbeatMs },
  );
}

/** Checks the request (a plain JSON error when it is refused), then answers with the event stream. */
export async function pullAsEvents(
  service: HubService,
  body: PullRequest,
  request: Request,
): Promise<Response> {
  return pullEventStream(service, await service.check(body), request);
}
