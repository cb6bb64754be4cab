/**
 * The security plugin: one request hook, run before routing, in this order: the DNS-rebinding guard
 * (loopback binds only), CORS preflight, bearer auth (every path but PUBLIC_PATHS: deny by default) and
 * the body-size limit; and the JSON body parser, which counts a body sent without Content-Length as it arrives.
 * Refusals leave in the API's error shape.
 */
import { Elysia } from "elysia";
import { AUTH_REALM, type Limits } from "../../contract/index.ts";
import { errorResponse } from "../http/errors.ts";
import { parseJsonBody } from "../http/json_body.ts";
import {
  corsHeaders,
  createKeyCheck,
  hostIsAllowed,
  hostName,
  isLoopbackAddress,
  isPublicPath,
  normalizeOrigin,
  preflightHeaders,
  readBodyText,
  requestPath,
  type SecurityOptions,
} from "./service.ts";

export const securityPlugin = (options: SecurityOptions, limits: Limits) => {
  const checkKey = options.apiKey ? createKeyCheck(options.apiKey) : null;
  const corsOrigins = new Set((options.corsOrigins ?? []).map(normalizeOrigin));
  const allowedHosts = new Set(
    (options.allowedHosts ?? []).map((h) => hostName(h)).filter((h): h is string => h !== null),
  );
  const guardHost = isLoopbackAddress(options.bindHost ?? "127.0.0.1");

  return new Elysia()
    .onRequest(({ request, set }) => {
      const origin = request.headers.get("origin");
      const cors = origin !== null && corsOrigins.has(origin) ? corsHeaders(origin) : {};
      Object.assign(set.headers, cors);

      if (guardHost) {
        // In-process requests (app.handle) carry no Host header: the URL's authority is the host.
        const host = request.headers.get("host") ?? new URL(request.url).host;
        const verdict = hostIsAllowed(host, origin, allowedHosts, corsOrigins);
        if (!verdict.ok) {
          return errorResponse(
            {
              status: 403,
              code: "forbidden_host",
              message: `the ${verdict.header} header names a host this server does not answer to; use 127.0.0.1, localhost or [::1], or start the server with --allowed-host`,
              fields: [{ field: verdict.header.toLowerCase(), message: "is not a loopback or allowed host" }],
            },
            cors,
          );
        }
      }

      if (
        request.method === "OPTIONS" &&
        origin !== null &&
        request.headers.has("access-control-request-method")
      ) {
        return new Response(null, {
          status: 204,
          headers: corsOrigins.has(origin) ? preflightHeaders(origin) : {},
        });
      }

      if (
        checkKey &&
        !isPublicPath(requestPath(request.url)) &&
        !checkKey(request.headers.get("authorization"))
      ) {
        return errorResponse(
          {
            status: 401,
            code: "unauthorized",
            message: "this server needs an API key: send Authorization: Bearer <key>",
          },
          { ...cors, "www-authenticate": AUTH_REALM },
        );
      }

      const length = Number(request.headers.get("content-length") ?? 0);
      if (length > limits.bodyMaxBytes) {
        return errorResponse(
          {
            status: 413,
            code: "payload_too_large",
            message: `request body is ${length} bytes; the limit is ${limits.bodyMaxBytes}`,
            fields: [{ field: "body", message: `must be at most ${limits.bodyMaxBytes} bytes` }],
          },
          cors,
        );
      }
    })
    .onParse({ as: "global" }, async ({ request }) => {
      // Bodies sent without Content-Length (chunked) are counted as they arrive and cut at the limit.
      if (!request.body) return;
      const text = await readBodyText(request.body, limits.bodyMaxBytes);
      // An empty body is no body (e.g. POST /sdapi/v1/interrupt); routes that need one say it is required.
      if (text.trim() === "") return null;
      return parseJsonBody(text);
    });
};
