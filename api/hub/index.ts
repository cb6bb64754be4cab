import { Elysia } from "elysia";
import {
  describeEvents,
  HEARTBEAT_MS,
  ModelCatalogSchema,
  PullEventsSchema,
  PullRequestSchema,
  PullResultSchema,
} from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../http/errors.ts";
import { wantsEventStream } from "../http/sse.ts";
import { HubService, type HubSettings } from "./service.ts";
import { pullAsEvents } from "./sse.ts";

const PULL_DESCRIPTION =
  "Downloads an ONNX Stable Diffusion export from the Hugging Face hub into the models directory: a catalog name " +
  "(GET /v1/models/catalog) or any repository as `org/name` or `org/name@revision`. Only the files of the ONNX " +
  "folder are fetched (model_index.json, scheduler/, tokenizer*/, text_encoder*/, unet/, vae_decoder/, vae_encoder/; " +
  "other weight formats and docs are skipped). Each file's size and the hub's SHA-256 (git SHA-1 for small files) are " +
  "checked; the folder appears in the models directory, in one rename, only when every file is; an existing folder " +
  "is never replaced (409 `model_exists`). The catalog's `taesd` and `taesdxl` are the preview decoders of " +
  "`preview.method` taesd (madebyollin/taesd): their one decoder file lands in the vae_approx folder (--vae-approx-dir), " +
  "never over an existing file, and `folder` does not apply to them. An interrupted pull resumes where it stopped, on the next request. The " +
  "server reads the hub from HF_ENDPOINT (default https://huggingface.co) and sends HF_TOKEN, when set, to the hub only " +
  "(never to the CDN it redirects to). Requests for a model already being pulled join that pull.\n\n" +
  "Errors: 404 `not_in_catalog` (a name that is neither a catalog name nor `org/name`), 404 `hub_not_found` (no such " +
  "repository or revision, or a private one without HF_TOKEN), 403 `hub_forbidden` (gated, or the token refused), " +
  "422 `hub_not_onnx` (no ONNX export in the optimum layout), 409 `download_busy`, 502 `hub_unreachable`, 502 " +
  "`download_failed` (a file failed its hash check or the connection kept failing), 507 `insufficient_storage`.\n\n" +
  "**Progress as server-sent events.** Send `Accept: text/event-stream`; request errors are still plain JSON, then " +
  "events are `event: <name>` with one JSON `data:` line:\n" +
  describeEvents(PullEventsSchema) +
  `A \`: heartbeat\` comment comes every ${HEARTBEAT_MS / 1000} s. Closing the connection leaves the pull; it stops when no request ` +
  "waits for it any more, keeping what was downloaded for the next pull.";

export const hubPlugin = (host: ModelHost, settings: HubSettings = {}) => {
  const service = new HubService(host, settings);
  return new Elysia({ name: "sdx.hub" })
    .use(errorModel)
    .model({
      ModelCatalog: ModelCatalogSchema,
      PullRequest: PullRequestSchema,
      PullResult: PullResultSchema,
      PullEvents: PullEventsSchema,
    })
    .get("/v1/models/catalog", () => service.catalog(), {
      response: { 200: "ModelCatalog" },
      parse: "json",
      detail: {
        tags: ["models"],
        operationId: "listCatalog",
        summary: "List the online catalog: ready ONNX models on the Hugging Face hub",
        description:
          "A few ONNX Stable Diffusion exports sdx can pull by name, and the TAESD preview decoders (`type` vae_approx), with their approximate download size and whether each is already installed.",
      },
    })
    .post(
      "/v1/models/pull",
      ({ body, request }) =>
        wantsEventStream(request)
          ? pullAsEvents(service, body, request)
          : service.pullRequest(body, request.signal),
      {
        body: "PullRequest",
        response: {
          200: "PullResult",
          400: "Error",
          403: "Error",
          404: "Error",
          409: "Error",
          422: "Error",
          502: "Error",
          507: "Error",
        },
        parse: "json",
        detail: {
          tags: ["models"],
          operationId: "pullModel",
          summary: "Download a model from the Hugging Face hub into the models directory",
          description: PULL_DESCRIPTION,
        },
      },
    );
};
