import { Elysia } from "elysia";
import type { ServerMetrics } from "./service.ts";

/** GET /metrics: Prometheus text exposition. Never queues; documented as text/plain. */
export const metricsPlugin = (metrics: ServerMetrics) =>
  new Elysia({ name: "sdx.metrics" }).get(
    "/metrics",
    () =>
      new Response(metrics.render(), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      }),
    // Hidden from the spec: not JSON. Requests by route and status, request and step time histograms, queue
    // depth, running, steps and images done, cancellations, admission rejections, failures by stage, load time.
    { detail: { hide: true } },
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
      if (t0 !== undefined) metrics.requestSeconds.observe((performance.now() - t0) / 1000, { route: path });
    });
};
