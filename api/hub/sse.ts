/**
 * POST /v1/models/pull as server-sent events: the HTTP framing of a pull's progress. The pull itself is the
 * service's; this file only turns its progress into the contract's `progress` events and its end into `done` or
 * `error` (contract/events.ts).
 */
import { HEARTBEAT_MS, type PullEvents, type PullRequest } from "../../contract/index.ts";
import type { PullTarget } from "../engine/hub/catalog.ts";
import { progressEvent } from "../engine/hub/progress_event.ts";
import { clientSignal, eventStreamResponse } from "../http/sse.ts";
import type { HubService } from "./service.ts";

/** Streams `progress`… then `done` or `error`. Closing the connection leaves the pull (see HubService.pull). */
export function pullEventStream(
  service: HubService,
  target: PullTarget,
  request: Request,
  heartbeatMs = HEARTBEAT_MS,
): Response {
  const client = clientSignal(request);
  return eventStreamResponse<PullEvents>(
    client,
    async (send) => {
      const result = await service.pull(target, client.controller.signal, (p) =>
        send("progress", progressEvent(p)),
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
