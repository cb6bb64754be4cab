/**
 * Who may call the API: with an API key set, every path but the public ones needs `Authorization: Bearer
 * <key>` (deny by default, unknown paths included).
 */

/** Paths that never need the key: the web page, health and the API's documentation. */
export const PUBLIC_PATHS: readonly string[] = ["/", "/health", "/swagger", "/swagger/json"];
/**
 * Folders of static files, public too: `<prefix><file>`, one plain file name (no further `/`). Swagger UI's
 * assets and the web page's scripts, styles and its vendored event-stream parser.
 */
export const PUBLIC_PREFIXES: readonly string[] = ["/swagger/assets/", "/web/", "/web/eventsource-parser/"];

/** The `WWW-Authenticate` challenge of a 401. */
export const AUTH_REALM = 'Bearer realm="sdx"';
/** The spec's name for the bearer security scheme. */
export const BEARER_SCHEME_NAME = "bearer";
