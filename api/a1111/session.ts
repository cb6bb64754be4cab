/** What the A1111 routes keep between requests, and the A1111 jobs in flight (for /progress, /interrupt, /skip). */
import {
  A1111_PREVIEW_DEFAULTS,
  A1111_SD_VAE_AUTOMATIC,
  type A1111PreviewSettings,
  GENERATE_DEFAULTS,
} from "../../contract/index.ts";

export class A1111Session {
  /** CLIP_stop_at_last_layers of requests that do not override it (POST /sdapi/v1/options). */
  clipSkip: number = GENERATE_DEFAULTS.clip_skip;
  /** sd_vae of requests that do not override it (POST /sdapi/v1/options): "Automatic", "None" or a VAE file. */
  sdVae: string = A1111_SD_VAE_AUTOMATIC;
  /** Live previews of requests that do not override them (POST /sdapi/v1/options). */
  previews: A1111PreviewSettings = { ...A1111_PREVIEW_DEFAULTS };
  readonly jobs = new Set<A1111Job>();
}

/** One txt2img or img2img call: n_iter sdx generations, one after the other. */
export interface A1111Job {
  readonly route: "txt2img" | "img2img";
  readonly startedAt: number;
  readonly timestamp: string;
  readonly nIter: number;
  iteration: number;
  step: number;
  steps: number;
  /** The current iteration holds an engine slot. */
  running: boolean;
  /** Place in sdx's queue while the current iteration waits (1 = next). */
  queuePosition: number;
  interrupted: boolean;
  skipped: boolean;
  /** Stops the current iteration (interrupt and skip). */
  controller: AbortController;
  /** The latest live preview of the batch's first image, PNG base64 (null: none yet, or previews off). */
  currentImage: string | null;
}
