/**
 * The sdx HTTP application: feature plugins, the shared error model and the one error handler. This is the
 * composition root: the only module that wires features together (and the metrics to the model host).
 * Only api/index.ts listens; tests drive this app through `app.handle` or a loopback server.
 */
import { Elysia } from "elysia";
import { ApiError, type Limits, UNPARSABLE_BODY } from "../contract/index.ts";
import { a1111Plugin } from "./a1111/index.ts";
import { adaptersPlugin } from "./adapters/index.ts";
import { docsPlugin } from "./docs/index.ts";
import type { ModelHost } from "./engine/model_host.ts";
import { generatePlugin } from "./generate/index.ts";
import { healthPlugin } from "./health/index.ts";
import { errorModel, errorResponse, validationFields } from "./http/errors.ts";
import { hubPlugin } from "./hub/index.ts";
import type { HubSettings } from "./hub/service.ts";
import { metricsPlugin, requestMetricsPlugin } from "./metrics/index.ts";
import { ServerMetrics } from "./metrics/service.ts";
import { modelsPlugin } from "./models/index.ts";
import { schedulersPlugin } from "./schedulers/index.ts";
import { securityPlugin } from "./security/index.ts";
import { resolveLimits, type SecurityOptions } from "./security/service.ts";
import { tokenizePlugin } from "./tokenize/index.ts";
import { webPlugin } from "./web/index.ts";

/** What createApp takes besides the model host. */
export interface AppOptions {
  limits?: Partial<Limits>;
  security?: SecurityOptions;
  /** Where POST /v1/models/pull downloads from (HF_ENDPOINT, HF_TOKEN). */
  hub?: HubSettings;
}

/** The app; `options` sets limits and exposure (api key, CORS, Host guard). The defaults are the spec's. */
export function createApp(host: ModelHost, options: AppOptions = {}) {
  const limits = resolveLimits(options.limits);
  const metrics = new ServerMetrics(() => host.admission);
  host.observe(metrics.hostObserver);
  return new Elysia({ name: "sdx", normalize: false })
    .use(requestMetricsPlugin(metrics))
    .use(securityPlugin(options.security ?? {}, limits))
    .use(errorModel)
    .onError(({ code, error, request }) => {
      // The body parser's own refusals (a body over the limit) reach here wrapped in Elysia's ParseError.
      const cause = code === "PARSE" ? (error as { cause?: unknown }).cause : undefined;
      if (cause instanceof ApiError) return errorResponse(cause.toBody(), cause.headers);
      if (error instanceof ApiError) return errorResponse(error.toBody(), error.headers);
      switch (code) {
        case "VALIDATION": {
          const fields = validationFields(error);
          const message = `invalid ${error.type}: ${fields.map((f) => `${f.field} ${f.message}`).join("; ")}`;
          return errorResponse({ status: 422, code: "validation_failed", message, fields });
        }
        case "PARSE":
          return errorResponse({
            status: 400,
            code: "bad_request",
            message: UNPARSABLE_BODY,
          });
        case "NOT_FOUND": {
          const path = new URL(request.url).pathname;
          return errorResponse({
            status: 404,
            code: "not_found",
            message: `no route ${request.method} ${path}`,
          });
        }
        default: {
          const message = error instanceof Error ? error.message : String(error);
          console.error(`[sdx] unexpected error on ${request.method} ${request.url}:`, error);
          return errorResponse({ status: 500, code: "internal", message: `internal error: ${message}` });
        }
      }
    })
    .use(docsPlugin(limits))
    .use(webPlugin())
    .use(healthPlugin(host))
    .use(metricsPlugin(metrics))
    .use(modelsPlugin(host))
    .use(adaptersPlugin(host))
    .use(hubPlugin(host, options.hub))
    .use(schedulersPlugin())
    .use(tokenizePlugin(host, limits))
    .use(a1111Plugin(host, limits))
    .use(
      generatePlugin(host, {
        limits,
        // A stream's time in /metrics is the whole stream's (the HTTP hook sees only its start).
        onStreamEnd: (seconds) => metrics.requestSeconds.observe({ route: "/v1/generate" }, seconds),
      }),
    );
}

export type App = ReturnType<typeof createApp>;
