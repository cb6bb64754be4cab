import { Elysia } from "elysia";
import type { ServerMetrics } from "./service.ts";

/** GET /metrics: Prometheus text exposition. Never queues; documented as text/plain. */
export const metricsPlugin = (metrics: ServerMetrics) =>
  new Elysia({ name: "sdx.metrics" }).get(
    "/metrics",
    async () => {
      const { text, contentType } = await metrics.render();
      return new Response(text, { headers: { "content-type": contentType } });
    },
    {
      detail: {
        tags: ["health"],
        operationId: "metrics",
        summary: "Prometheus metrics",
        description:
          "Prometheus text exposition (version 0.0.4): HTTP requests by route, method and status, and request-time " +
          "histograms (a streamed generation counts until its stream ends); queue depth and running generations; " +
          "denoising steps and images done; cancellations (queued, running); admission rejections (queue_full, draining); " +
          "engine failures by stage; step-time histogram; model loads by model and the last load's time. Never queues.",
        responses: {
          200: {
            description: "The metrics, as Prometheus scrapes them.",
            content: {
              "text/plain": {
                schema: { type: "string" },
                example:
                  "# HELP sdx_steps_total Denoising steps completed.\n# TYPE sdx_steps_total counter\nsdx_steps_total 120\n",
              },
            },
          },
        },
      },
    },
  );

/** Counts every answer by route, method and status, and times it; registered first so it sees every request. */
export const requestMetricsPlugin = (metrics: ServerMetrics) => {
  const started = new WeakMap<Request, number>();
  return new Elysia({ name: "sdx.request-metrics" })
    .onRequest(({ request }) => {
      started.set(request, performance.now());
    })
    .onAfterResponse({ as: "global" }, ({ request, route, set, responseValue }) => {
      const t0 = started.get(request);
      const status =
        responseValue instanceof Response
          ? responseValue.status
          : typeof set.status === "number"
            ? set.status
            : 200;
      const path = route || "unmatched";
      metrics.requests.inc({ route: path, method: request.method, status: String(status) });
      // A stream's time is observed when it ends (see `observeStreamEnd`), not when its headers leave.
      const streamed = responseValue instanceof Response && isEventStream(responseValue);
      if (t0 !== undefined && !streamed)
        metrics.requestSeconds.observe({ route: path }, (performance.now() - t0) / 1000);
    });
};

function isEventStream(response: Response): boolean {
  return (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
}
