/**
 * The pure logic of the security plugin: limits, loopback and Host checks, bearer-key comparison,
 * CORS headers and the reading of a body within its limit. No Elysia.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import {
  ApiError,
  DEFAULT_LIMITS,
  type Limits,
  PUBLIC_PATHS,
  PUBLIC_PREFIXES,
} from "../../contract/index.ts";

/** Who may reach the API. Everything is off by default except the loopback Host guard. */
export interface SecurityOptions {
  /** With a key, every route but the public ones needs `Authorization: Bearer <key>`. */
  apiKey?: string | undefined;
  /** Origins (scheme://host[:port]) that get CORS headers; empty: CORS off. */
  corsOrigins?: readonly string[];
  /** Host names accepted besides the loopback names while bound to a loopback address. */
  allowedHosts?: readonly string[];
  /** The address the server binds; a loopback one turns on the DNS-rebinding guard. Default 127.0.0.1. */
  bindHost?: string;
}

export class SettingError extends Error {
  override name = "SettingError";
}

/** Configured limits over the defaults, checked for sense; throws SettingError naming the bad one. */
export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
  const limits: Limits = { ...DEFAULT_LIMITS, ...defined };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new SettingError(`limit ${name} must be a positive integer; got ${value}`);
    }
  }
  for (const name of ["sizeMin", "sizeMax"] as const) {
    if (limits[name] % 8 !== 0)
      throw new SettingError(`limit ${name} must be a multiple of 8; got ${limits[name]}`);
  }
  if (limits.sizeMin > limits.sizeMax) {
    throw new SettingError(`limit sizeMin (${limits.sizeMin}) is larger than sizeMax (${limits.sizeMax})`);
  }
  return limits;
}

const LOOPBACK_NAMES = new Set(["localhost", "127.0.0.1", "[::1]", "::1"]);

/** A bind address that only this machine can reach. */
export function isLoopbackAddress(address: string): boolean {
  const a = address.trim().toLowerCase();
  return LOOPBACK_NAMES.has(a) || /^127(\.\d{1,3}){3}$/.test(a) || a === "[::1]";
}

/** The host name of a Host header value, lower-case, without port or trailing dot; null if malformed. */
export function hostName(hostHeader: string): string | null {
  const value = hostHeader.trim().toLowerCase();
  const match = /^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)(?::\d{1,5})?$/.exec(value);
  if (!match?.[1]) return null;
  return match[1].replace(/\.$/, "");
}

/** The host name of an Origin header (`scheme://host[:port]`); null for `null` or malformed ones. */
export function originHostName(origin: string): string | null {
  try {
    const url = new URL(origin);
    if (url.protocol !== "http:" && url.protocol !== "https:") return null;
    return url.hostname.toLowerCase().replace(/\.$/, "");
  } catch {
    return null;
  }
}

/** A name that resolves to this machine only: 127.0.0.1, localhost or [::1]. */
export function isLoopbackName(name: string): boolean {
  return name === "localhost" || name === "127.0.0.1" || name === "[::1]";
}

/**
 * The DNS-rebinding guard: a page on evil.example that rebinds its name to 127.0.0.1 sends
 * `Host: evil.example`. Accepted: loopback names, configured names, and (for Origin) configured CORS origins.
 */
export function hostIsAllowed(
  host: string | null,
  origin: string | null,
  allowedHosts: ReadonlySet<string>,
  corsOrigins: ReadonlySet<string>,
): { ok: true } | { ok: false; header: "Host" | "Origin" } {
  const name = host === null ? null : hostName(host);
  if (name === null || !(isLoopbackName(name) || allowedHosts.has(name)))
    return { ok: false, header: "Host" };
  if (origin !== null && !corsOrigins.has(origin)) {
    const originName = originHostName(origin);
    if (originName === null || !(isLoopbackName(originName) || allowedHosts.has(originName))) {
      return { ok: false, header: "Origin" };
    }
  }
  return { ok: true };
}

/** The path exactly as the router sees it: from the first `/` after the authority to `?` or `#`. */
export function requestPath(url: string): string {
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start === -1) return "/";
  const end = url.slice(start).search(/[?#]/);
  return end === -1 ? url.slice(start) : url.slice(start, start + end);
}

/** Deny by default: only the listed paths and the files of the public folders are open without the key. */
export function isPublicPath(path: string): boolean {
  if (PUBLIC_PATHS.includes(path)) return true;
  return PUBLIC_PREFIXES.some((prefix) => {
    if (!path.startsWith(prefix)) return false;
    const file = path.slice(prefix.length);
    return /^[A-Za-z0-9._-]+$/.test(file) && !file.includes("..");
  });
}

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest();

/** Checks bearer tokens against one key in constant time: both sides are hashed to equal-length digests. */
export function createKeyCheck(apiKey: string): (authorization: string | null) => boolean {
  const expected = sha256(apiKey);
  return (authorization) => {
    const token = authorization === null ? null : bearerToken(authorization);
    // Hash something even without a token so that the answer takes the same time.
    const actual = sha256(token ?? "");
    return timingSafeEqual(actual, expected) && token !== null;
  };
}

/** The token of an `Authorization: Bearer <token>` header, or null. */
export function bearerToken(authorization: string): string | null {
  const match = /^Bearer[ ]+([^\s]+)[ ]*$/i.exec(authorization);
  return match?.[1] ?? null;
}

/** Parses a comma-separated list, dropping blanks. */
export function commaList(text: string | undefined): string[] {
  return (text ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** CORS origins must be exact `scheme://host[:port]` strings; `*` is refused (never a wildcard). */
export function normalizeOrigin(origin: string): string {
  const url = new URL(origin);
  if ((url.protocol !== "http:" && url.protocol !== "https:") || url.origin === "null") {
    throw new SettingError(`--cors-origin must be http(s)://host[:port]; got "${origin}"`);
  }
  return url.origin;
}

/** Headers for a CORS response to an allowed origin: that origin only, no credentials. */
export function corsHeaders(origin: string): Record<string, string> {
  return { "access-control-allow-origin": origin, vary: "Origin" };
}

/** Headers answering an allowed origin's preflight. */
export function preflightHeaders(origin: string): Record<string, string> {
  return {
    ...corsHeaders(origin),
    "access-control-allow-methods": "GET, POST, OPTIONS",
    "access-control-allow-headers": "Authorization, Content-Type",
    "access-control-max-age": "600",
  };
}

/** The body as text, or a 413 as soon as more than `limit` bytes have arrived (whatever Content-Length said). */
export async function readBodyText(body: ReadableStream<Uint8Array>, limit: number): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > limit) {
      await body.cancel().catch(() => {});
      throw new ApiError(413, "payload_too_large", `request body is over ${limit} bytes, the limit`, [
        { field: "body", message: `must be at most ${limit} bytes` },
      ]);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
