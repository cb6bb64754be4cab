/** What sdx uses when a request, a server or a client leaves something out. */

/**
 * The value /v1/generate applies for each field a request leaves out (the size aside: the model's native size).
 * The request schema's `default`s, the warm-up generation and the CLI's project template read them here.
 */
export const GENERATE_DEFAULTS = {
  batch_size: 1,
  num_steps: 30,
  guidance_scale: 7.5,
  scheduler_type: "dpmsolver++",
  prompt_syntax: "a1111",
  clip_skip: 1,
} as const;

/** A server started without options; api/config.ts applies them, the README's table shows them. */
export const SERVER_DEFAULTS = {
  modelsDir: "models",
  host: "127.0.0.1",
  port: 8001,
  /** Generations that run at once. */
  concurrency: 1,
  /** Generations that may wait for a slot; more are refused with 429. */
  maxQueue: 16,
  /** On SIGTERM/SIGINT, seconds running and queued generations get to finish. */
  drainTimeoutS: 60,
  /** Seconds without a denoising step before /health reports a generation stuck. */
  stepTimeoutS: 120,
  /** Models kept loaded at once, by where the engine runs. */
  maxLoadedModels: { gpu: 1, cpu: 2 },
  /** The Hugging Face hub models are pulled from (HF_ENDPOINT). */
  hubEndpoint: "https://huggingface.co",
} as const;

/** Where a client finds a server started with the defaults. */
export const DEFAULT_SERVER_URL = `http://${SERVER_DEFAULTS.host}:${SERVER_DEFAULTS.port}`;
