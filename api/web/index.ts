/**
 * GET /: a page to generate from (the files in api/web/page/, plain HTML, CSS and JavaScript modules, plus
 * eventsource-parser served from its installed package). The page is static and public like /swagger; every
 * API call it makes carries the API key like any other client's. Only the listed files are served: no path
 * comes from the URL.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Elysia, t } from "elysia";
import { ApiError } from "../../contract/index.ts";

const PAGE_DIR = join(import.meta.dir, "page");
const PARSER_DIR = dirname(Bun.resolveSync("eventsource-parser", import.meta.dir));

const TYPES = {
  html: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
} as const;

/**
 * Nothing but this server: scripts and styles from its files only (nothing inline), pictures also from the
 * data: and blob: URLs the page makes of the PNGs it receives, requests to this origin only.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

interface Asset {
  body: Uint8Array;
  type: string;
  etag: string;
}

function asset(path: string): Asset {
  const body = new Uint8Array(readFileSync(path));
  const ext = path.slice(path.lastIndexOf(".") + 1) as keyof typeof TYPES;
  const etag = `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"`;
  return { body, type: TYPES[ext], etag };
}

/** The files, read once; a changed file is picked up on restart. */
const PAGE = asset(join(PAGE_DIR, "index.html"));
const PAGE_FILES = new Map(
  ["app.js", "api.js", "form.js", "results.js", "style.css"].map((f) => [f, asset(join(PAGE_DIR, f))]),
);
/** The parser's ES modules as published (index.js imports ./parse.js, which imports ./errors.js). */
const PARSER_FILES = new Map(
  ["index.js", "parse.js", "errors.js"].map((f) => [f, asset(join(PARSER_DIR, f))]),
);

/**
 * One file with its type and caching: `no-cache` with an ETag, so a browser asks again each time and gets a
 * 304 while the file is unchanged (the page changes when the server is upgraded; asking again costs little).
 */
function serve(file: Asset, request: Request): Response {
  const headers = {
    "content-type": file.type,
    "cache-control": "no-cache",
    etag: file.etag,
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  };
  if (request.headers.get("if-none-match") === file.etag) return new Response(null, { status: 304, headers });
  return new Response(file.body, { headers });
}

/** A route answering the files of `files` by name; any other name is a 404. */
const fromList =
  (files: Map<string, Asset>) =>
  ({ params, request }: { params: { file: string }; request: Request }) => {
    const file = files.get(params.file);
    if (!file) throw new ApiError(404, "not_found", "no such file");
    return serve(file, request);
  };

export const webPlugin = () =>
  new Elysia({ name: "sdx.web" })
    .get("/", ({ request }) => serve(PAGE, request), { detail: { hide: true } })
    .get("/web/:file", fromList(PAGE_FILES), {
      params: t.Object({ file: t.String() }),
      detail: { hide: true },
    })
    .get("/web/eventsource-parser/:file", fromList(PARSER_FILES), {
      params: t.Object({ file: t.String() }),
      detail: { hide: true },
    });
