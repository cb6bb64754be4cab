/**
 * The OpenAPI document at /swagger/json and Swagger UI at /swagger, served entirely from installed
 * packages (swagger-ui-dist) so the page renders on a machine with no internet.
 */
import { dirname, join } from "node:path";
import { swagger } from "@elysiajs/swagger";
import { Elysia, t } from "elysia";
import { VERSION } from "../version.ts";

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

export const docsPlugin = () =>
  new Elysia({ name: "sdx.docs" })
    .onAfterHandle(({ request, response }) => {
      if (request.method === "GET" && new URL(request.url).pathname === SPEC_PATH) {
        return Response.json(withoutResponseIds(response as Json));
      }
    })
    .use(
      swagger({
        path: "/swagger",
        specPath: SPEC_PATH,
        provider: "swagger-ui",
        documentation: {
          info: { title: "sdx", version: VERSION, description: API_DESCRIPTION },
          tags: [
            { name: "generate", description: "Text to image" },
            { name: "models", description: "What the models directory holds" },
            { name: "health", description: "Server state" },
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
