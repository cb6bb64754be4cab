/** The adapter folders as /v1 lists them: every LoRA, embedding and VAE file, usable or not and why. */
import type { AdapterList } from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";

/** GET /v1/adapters: the folders as they are now (read again when the last scan is a couple of seconds old). */
export function listAdapters(host: ModelHost): Promise<AdapterList> {
  return host.adapters.listing();
}

/** POST /v1/adapters/refresh: reads the folders again at once and lists them. */
export function refreshAdapters(host: ModelHost): Promise<AdapterList> {
  return host.adapters.listing({ fresh: true });
}
