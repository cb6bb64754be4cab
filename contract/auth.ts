/**
 * Who may call the API: with an API key set, every path but the public ones needs `Authorization: Bearer
 * <key>` (deny by default, unknown paths included).
 */

/** Paths that never need the key. */
export const PUBLIC_PATHS: readonly string[] = ["/health", "/swagger", "/swagger/json"];
/** Swagger UI's static files: `/swagger/assets/<file>`, public too. */
export const PUBLIC_PREFIX = "/swagger/assets/";

/** The `WWW-Authenticate` challenge of a 401. */
export const AUTH_REALM = 'Bearer realm="sdx"';
/** The spec's name for the bearer security scheme. */
export const BEARER_SCHEME_NAME = "bearer";
