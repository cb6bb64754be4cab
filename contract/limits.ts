/** How large a request may be: the limits a server may set, with their defaults, and the fixed ones. */

/** Request limits; each is a server flag and an SDX_* variable (api/config.ts) and appears in the spec. */
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
  /** Largest request body in bytes (init images and masks travel in it, base64-encoded). */
  bodyMaxBytes: number;
  /** Most pixels (width × height) an init image or mask may have, checked from its header before decoding. */
  imageMaxPixels: number;
}

/** The limits of a server started without limit flags; the spec is written with these. */
export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  sizeMin: 64,
  sizeMax: 2048,
  stepsMax: 150,
  batchMax: 16,
  promptMaxChars: 10_000,
  bodyMaxBytes: 32 * 1024 * 1024,
  imageMaxPixels: 4096 * 4096,
});

/** Bounds no server setting changes. */
export const FIXED_LIMITS = {
  /** Largest classifier-free guidance scale. */
  guidanceMax: 50,
  /** Deepest clip skip a request may ask for (CLIP ViT-L has 12 layers); the model may allow fewer. */
  clipSkipMax: 12,
  /** Longest model name (a folder or file name). */
  modelNameMaxChars: 255,
  /** Largest value in SDXL's micro-conditioning pairs (pixels). */
  microConditioningMax: 16_384,
} as const;
