import { Elysia } from "elysia";
import { AdapterListSchema } from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../http/errors.ts";
import { listAdapters, refreshAdapters } from "./service.ts";

const DESCRIPTION =
  "The files of the adapter folders beside the checkpoints (`loras/`, `embeddings/`, `vae/`, `vae_approx/` in the models directory unless --loras-dir, --embeddings-dir, --vae-dir, --vae-approx-dir say otherwise), sorted by name. " +
  "Each has its kind, format (kohya or PEFT LoRA, embedding, VAE), the model family read from its tensor shapes (SD 1.x: 768-wide text states, SD 2.x: 1024, SDXL: a second text encoder or 2048; null when the shapes do not tell, e.g. a VAE), size, SHA-256 once computed (it is computed when a request first uses the file) and what it holds. " +
  "`vae_approx` holds the TAESD preview decoders (`preview.method` taesd; `sdx models pull taesd` / `taesdxl` fetches them): taesd.py's `.pth` or `.safetensors` and diffusers' AutoencoderTiny, their family told by the file name (taesd: SD 1.x/2.x, taesdxl: SDXL, as `details.families` says), since both take the same latents. " +
  "Only headers are read: a safetensors file's JSON header, a `.pt` embedding's or `.pth` decoder's pickle (never executed). " +
  "A file that is not what its folder says, or is truncated, or is a symbolic link leading out of its folder, is listed with `usable: false` and the reason; dotfiles, sub-folders and other extensions are not listed. " +
  "Requests name a file by `name` (its stem), never by path.";

export const adaptersPlugin = (host: ModelHost) =>
  new Elysia({ name: "sdx.adapters" })
    .use(errorModel)
    .model({ AdapterList: AdapterListSchema })
    .get("/v1/adapters", () => listAdapters(host), {
      response: { 200: "AdapterList" },
      parse: "json",
      detail: {
        tags: ["adapters"],
        operationId: "listAdapters",
        summary: "List the LoRA, embedding, VAE and preview-decoder files",
        description: DESCRIPTION,
      },
    })
    .post("/v1/adapters/refresh", () => refreshAdapters(host), {
      response: { 200: "AdapterList" },
      parse: [() => ({}), "json"],
      detail: {
        tags: ["adapters"],
        operationId: "refreshAdapters",
        summary: "Read the adapter folders again now and list them",
        description:
          "The same answer as GET /v1/adapters, from a scan made now (GET reuses one up to a couple of seconds old). Takes no body.",
      },
    });
