/**
 * The OpenAPI document at /swagger/json and Swagger UI at /swagger, served entirely from installed
 * packages (swagger-ui-dist) so the page renders on a machine with no internet.
 */
import { dirname, join } from "node:path";
import { swagger } from "@elysiajs/swagger";
import { Elysia, t } from "elysia";
import { BEARER_SCHEME_NAME, DEFAULT_LIMITS, type Limits, PUBLIC_PATHS } from "../../contract/index.ts";
import { VERSION } from "../../lib/version.ts";

const SPEC_PATH = "/swagger/json";
const ASSETS_DIR = dirname(Bun.resolveSync("swagger-ui-dist/package.json", import.meta.dir));
const ASSETS = [
  "swagger-ui.css",
  "swagger-ui-bundle.js",
  "swagger-ui-standalone-preset.js",
  "favicon-32x32.png",
] as const;

export const API_DESCRIPTION =
  "Stable Diffusion on onnxruntime. Errors share one shape (the `Error` model): `{ status, code, message, fields? }`; " +
  "`fields` names each rejected request field and, where it helps, the allowed values.";

const PAGE = `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8" />
  <meta name="viewport" content="width=device-width, initial-scale=1" />
  <title>sdx API</title>
  <link rel="icon" type="image/png" href="/swagger/assets/favicon-32x32.png" />
  <link rel="stylesheet" href="/swagger/assets/swagger-ui.css" />
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/swagger/assets/swagger-ui-bundle.js"></script>
  <script src="/swagger/assets/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = () => {
      window.ui = SwaggerUIBundle({
        url: "${SPEC_PATH}",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "BaseLayout",
      });
    };
  </script>
</body>
</html>`;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** @elysiajs/swagger marks each response object with the `$id` of its model, which OpenAPI 3.0 does not allow. */
export function withoutResponseIds(value: Json): Json {
  if (Array.isArray(value)) return value.map(withoutResponseIds);
  if (value === null || typeof value !== "object") return value;
  const out: { [key: string]: Json } = {};
  for (const [key, v] of Object.entries(value)) if (key !== "$id") out[key] = withoutResponseIds(v);
  return out;
}

/** Request limits and authentication, said once in the spec's description. */
export function limitsDescription(limits: Limits): string {
  return (
    ` Limits: width and height ${limits.sizeMin}–${limits.sizeMax} px in multiples of 8, num_steps 1–${limits.stepsMax}, ` +
    `batch_size 1–${limits.batchMax}, prompts up to ${limits.promptMaxChars} characters (422), request bodies up to ` +
    `${limits.bodyMaxBytes} bytes (413). When the server has an API key (--api-key / SDX_API_KEY), every route but ` +
    `${PUBLIC_PATHS.join(", ")} needs \`Authorization: Bearer <key>\` (401 otherwise).`
  );
}

/** The public routes need no key: they override the document's global bearer requirement. */
export function withPublicRoutes(spec: Json): Json {
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) return spec;
  const paths = spec.paths;
  if (paths === null || typeof paths !== "object" || Array.isArray(paths)) return spec;
  const out: { [key: string]: Json } = {};
  for (const [path, item] of Object.entries(paths)) {
    if (!PUBLIC_PATHS.includes(path) || item === null || typeof item !== "object" || Array.isArray(item)) {
      out[path] = item;
      continue;
    }
    const ops: { [key: string]: Json } = {};
    for (const [method, op] of Object.entries(item)) {
      ops[method] =
        op !== null && typeof op === "object" && !Array.isArray(op) ? { ...op, security: [] } : op;
    }
    out[path] = ops;
  }
  // The plugin puts `components` and `security` first when documentation names them; keep the usual order.
  const ordered: { [key: string]: Json } = {};
  for (const key of ["openapi", "info", "tags", "paths", "components", "security"]) {
    if (key in spec) ordered[key] = key === "paths" ? out : (spec[key] ?? null);
  }
  return { ...ordered, ...spec, paths: out };
}

export const docsPlugin = (limits: Limits = DEFAULT_LIMITS) =>
  new Elysia({ name: "sdx.docs", seed: limits })
    .onAfterHandle(({ request, response }) => {
      if (request.method === "GET" && new URL(request.url).pathname === SPEC_PATH) {
        return Response.json(withPublicRoutes(withoutResponseIds(response as Json)));
      }
    })
    .use(
      swagger({
        path: "/swagger",
        specPath: SPEC_PATH,
        provider: "swagger-ui",
        documentation: {
          info: { title: "sdx", version: VERSION, description: API_DESCRIPTION + limitsDescription(limits) },
          components: {
            securitySchemes: {
              [BEARER_SCHEME_NAME]: {
                type: "http",
                scheme: "bearer",
                description: "The server's API key (--api-key / SDX_API_KEY); needed only when one is set.",
              },
            },
          },
          security: [{ [BEARER_SCHEME_NAME]: [] }],
          tags: [
            { name: "generate", description: "Text to image" },
            {
              name: "models",
              description:
                "What the models directory holds, and ready ONNX models pulled from the Hugging Face hub into it",
            },
            {
              name: "adapters",
              description:
                "The LoRA, textual-inversion embedding and VAE files in the folders beside the checkpoints",
            },
            { name: "health", description: "Server state and Prometheus metrics" },
            {
              name: "automatic1111",
              description:
                "AUTOMATIC1111's web UI API (/sdapi/v1): txt2img, models, samplers, schedulers, options, progress and interrupt in its JSON shapes, for existing A1111 clients",
            },
          ],
        },
      }),
    )
    // Replaces the plugin's page, which loads Swagger UI from a CDN, with one that loads the installed copy.
    .get("/swagger", () => new Response(PAGE, { headers: { "content-type": "text/html; charset=utf-8" } }), {
      detail: { hide: true },
    })
    .get(
      "/swagger/assets/:file",
      ({ params, status }) => {
        const name = ASSETS.find((a) => a === params.file);
        if (!name) return status(404, "not found");
        return Bun.file(join(ASSETS_DIR, name));
      },
      { params: t.Object({ file: t.String() }), detail: { hide: true } },
    );
