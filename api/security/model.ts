/**
 * Types and defaults of the exposure and input-limit settings: who may call the API (bearer key, CORS
 * origins, Host names) and how large a request may be. The defaults are the spec's values.
 */
import { LIMITS } from "../generate/model.ts";
import type { HubSettings } from "../hub/service.ts";

/** Request limits; each is a flag and an SDX_* variable (api/config.ts) and appears in the spec. */
export interface Limits {
  /** Smallest width/height in pixels (a multiple of 8). */
  sizeMin: number;
  /** Largest width/height in pixels (a multiple of 8). */
  sizeMax: number;
  /** Most denoising steps. */
  stepsMax: number;
  /** Most images per request. */
  batchMax: number;
  /** Longest prompt (and negative prompt) in UTF-16 code units. */
  promptMaxChars: number;
  /** Largest request body in bytes. */
  bodyMaxBytes: number;
}

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  sizeMin: LIMITS.sizeMin,
  sizeMax: LIMITS.sizeMax,
  stepsMax: LIMITS.stepsMax,
  batchMax: LIMITS.batchMax,
  promptMaxChars: LIMITS.promptMaxChars,
  bodyMaxBytes: 1024 * 1024,
});

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

/** What createApp takes besides the model host. */
export interface AppOptions {
  limits?: Partial<Limits>;
  security?: SecurityOptions;
  /** Where POST /v1/models/pull downloads from (HF_ENDPOINT, HF_TOKEN). */
  hub?: HubSettings;
}

/** Paths that never need the key; every other path, known or not, does (deny by default). */
export const PUBLIC_PATHS: readonly string[] = ["/health", "/swagger", "/swagger/json"];
/** Swagger UI's static files: `/swagger/assets/<file>`. */
export const PUBLIC_PREFIX = "/swagger/assets/";

export const AUTH_REALM = 'Bearer realm="sdx"';
export const BEARER_SCHEME_NAME = "bearer";
