/**
 * The AUTOMATIC1111 compatibility plugin: `/sdapi/v1/*` routes in A1111's JSON shapes over sdx's own generation
 * path and model host, so A1111 clients (sdwebuiapi, UIs, bots) work against sdx. Errors keep sdx's shape.
 */
import { Elysia } from "elysia";
import {
  A1111EmbeddingsSchema,
  A1111EmptySchema,
  A1111Img2ImgResponseSchema,
  A1111InfoSchema,
  A1111LatentUpscaleModesSchema,
  A1111LorasSchema,
  A1111OptionsSchema,
  A1111OptionsUpdateSchema,
  A1111ProgressQuerySchema,
  A1111ProgressSchema,
  A1111SamplersSchema,
  A1111SchedulersSchema,
  A1111SdModelsSchema,
  A1111SdVaesSchema,
  A1111Txt2ImgResponseSchema,
  A1111UpscalersSchema,
  DEFAULT_LIMITS,
  img2imgRequestSchema,
  type Limits,
  txt2imgRequestSchema,
} from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel, GENERATION_ERROR_RESPONSES } from "../http/errors.ts";
import { listEmbeddings, listLoras, listSdVaes, refreshLoras } from "./adapters.ts";
import { listSdModels } from "./checkpoints.ts";
import { img2img } from "./img2img.ts";
import { getOptions, setOptions } from "./options.ts";
import { interrupt, progressOf, skip } from "./progress.ts";
import { withoutNulls } from "./request.ts";
import { listSamplers, listSchedulers } from "./samplers.ts";
import { A1111Session } from "./session.ts";
import { txt2img } from "./txt2img.ts";
import { listLatentUpscaleModes, listUpscalers } from "./upscalers.ts";

const TAG = "automatic1111";

/** What txt2img and img2img share, for their spec descriptions. */
const SHARED =
  "Sampler and schedule are matched to sdx's by A1111's names (422 for one sdx does not have). Fields that would change A1111's image but that sdx cannot honour (tiling, subseed_strength > 0, seed_resize_from_*, refiner_checkpoint, script_name, alwayson_scripts entries, infotext) are 422s naming the field; harmless ones (restore_faces, styles, save_images, s_churn, s_noise, unknown fields and settings) are accepted and named in `info.sdx_warnings`. " +
  'override_settings.sd_vae ("Automatic", "None" or a file name of GET /sdapi/v1/sd-vae) is sdx\'s `vae` ("Automatic": omitted, "None": "none"), as is the sd_vae setting of POST /sdapi/v1/options for requests that do not override it. ' +
  "Live previews (GET /sdapi/v1/progress `current_image`) follow A1111's live-preview settings (live_previews_enable, show_progress_every_n_steps, show_progress_type), from POST /sdapi/v1/options or override_settings; they never change the images. " +
  "After POST /sdapi/v1/interrupt the answer is still 200, with the images of the iterations that finished (possibly none) and the interruption in `info.sdx_warnings`. ";

const ERRORS =
  " Errors keep sdx's shape `{ status, code, message, fields? }` (the `Error` model), not A1111's `{ error, detail, body, errors }`; a 422 names each rejected field in A1111's spelling.";

/**
 * For the body-less POSTs: A1111 clients send none, or an empty one with a JSON content type. The first parser
 * answers without reading; "json" only tells the spec the answers are JSON.
 */
const ignoreBody = () => ({});

/** The raw request bodies as received (with their nulls), for the `parameters` echo of txt2img and img2img. */
const rawBodies = new WeakMap<object, Record<string, unknown>>();

/** A1111's Optional fields: null means the default, so nulls go before validation; the raw body is kept. */
const keepRawWithoutNulls = ({ body }: { body: unknown }) => {
  if (body && typeof body === "object" && !Array.isArray(body)) {
    rawBodies.set(body, structuredClone(body) as Record<string, unknown>);
    withoutNulls(body as Record<string, unknown>);
  }
};

export const a1111Plugin = (host: ModelHost, limits: Limits = DEFAULT_LIMITS) => {
  const session = new A1111Session();
  return new Elysia({ name: "sdx.a1111", seed: limits })
    .use(errorModel)
    .model({
      A1111Txt2ImgRequest: txt2imgRequestSchema(limits),
      A1111Txt2ImgResponse: A1111Txt2ImgResponseSchema,
      A1111Img2ImgRequest: img2imgRequestSchema(limits),
      A1111Img2ImgResponse: A1111Img2ImgResponseSchema,
      A1111Upscalers: A1111UpscalersSchema,
      A1111LatentUpscaleModes: A1111LatentUpscaleModesSchema,
      A1111Info: A1111InfoSchema,
      A1111SdModels: A1111SdModelsSchema,
      A1111Samplers: A1111SamplersSchema,
      A1111Schedulers: A1111SchedulersSchema,
      A1111Options: A1111OptionsSchema,
      A1111OptionsUpdate: A1111OptionsUpdateSchema,
      A1111Progress: A1111ProgressSchema,
      A1111Empty: A1111EmptySchema,
      A1111Loras: A1111LorasSchema,
      A1111Embeddings: A1111EmbeddingsSchema,
      A1111SdVaes: A1111SdVaesSchema,
    })
    .post(
      "/sdapi/v1/txt2img",
      ({ body, request }) =>
        txt2img(host, session, body, rawBodies.get(body) ?? body, request.signal, limits),
      {
        transform: keepRawWithoutNulls,
        body: "A1111Txt2ImgRequest",
        response: { 200: "A1111Txt2ImgResponse", ...GENERATION_ERROR_RESPONSES },
        parse: "json",
        detail: {
          tags: [TAG],
          operationId: "a1111Txt2img",
          summary: "AUTOMATIC1111 txt2img",
          description:
            "A1111's `POST /sdapi/v1/txt2img` on sdx's engine: `images` (PNG base64, each with its A1111 infotext in the `parameters` chunk), `parameters` (the request echoed) and `info` (JSON text of `A1111Info`: `all_seeds`, `infotexts`, …, plus `sdx_warnings`). " +
            "Each of the `n_iter` iterations is one sdx generation of `batch_size` images (queued like a /v1 request); image i of iteration j has seed + j × batch_size + i, and gives the same PNG as `POST /v1/generate` with the same parameters. " +
            '`enable_hr` is sdx\'s hires fix (`hires`): hr_upscaler "Latent" → latent, "Latent (nearest)" → latent_nearest, "Lanczos" or "None" → lanczos; hr_scale or hr_resize_x/hr_resize_y → the final size; hr_second_pass_steps → steps; denoising_strength → strength. ' +
            SHARED +
            "Hires-fix fields sdx cannot honour (another upscaler, a second-pass checkpoint, sampler, schedule or prompt, a resize to another aspect ratio, firstphase_width/height, firstpass_image) are 422s naming the field too." +
            ERRORS,
        },
      },
    )
    .post(
      "/sdapi/v1/img2img",
      ({ body, request }) =>
        img2img(host, session, body, rawBodies.get(body) ?? body, request.signal, limits),
      {
        transform: keepRawWithoutNulls,
        body: "A1111Img2ImgRequest",
        response: { 200: "A1111Img2ImgResponse", ...GENERATION_ERROR_RESPONSES },
        parse: "json",
        detail: {
          tags: [TAG],
          operationId: "a1111Img2img",
          summary: "AUTOMATIC1111 img2img",
          description:
            "A1111's `POST /sdapi/v1/img2img` on sdx's engine, answered like txt2img (`images`, `parameters` without the input images unless include_init_images, `info`). " +
            "Each of the `n_iter` iterations is one sdx generation of `batch_size` images from the same picture, and gives the same PNG as `POST /v1/generate` with init_image = init_images[0], mask_image = mask (inverted first with inpainting_mask_invert 1), strength = denoising_strength, mask_blur, masked_content = inpainting_fill (0 fill, 1 original, 2 latent noise, 3 latent nothing), inpaint_full_res and inpaint_full_res_padding, at the request's width × height (default 512, as in A1111: the init image is resized to it, resize_mode 0). " +
            "A1111's defaults apply (denoising_strength 0.75, mask_blur 4, inpainting_fill 0, inpaint_full_res true with padding 0), not /v1's. " +
            SHARED +
            "img2img fields sdx cannot honour (resize_mode other than 0, several different init_images, mask_blur_x ≠ mask_blur_y, initial_noise_multiplier ≠ 1, latent_mask) are 422s naming the field too; image_cfg_scale (instruct-pix2pix only) is accepted and has no effect, as in A1111 with other models." +
            ERRORS,
        },
      },
    )
    .get("/sdapi/v1/upscalers", () => listUpscalers(), {
      parse: "json",
      response: { 200: "A1111Upscalers" },
      detail: {
        tags: [TAG],
        operationId: "a1111Upscalers",
        summary: "AUTOMATIC1111 upscaler list",
        description:
          'The image upscalers sdx has for txt2img\'s hr_upscaler, as A1111\'s UpscalerItem list: "None" and "Lanczos" (both a Lanczos resize of the decoded image, as in A1111). sdx has no model upscalers.',
      },
    })
    .get("/sdapi/v1/latent-upscale-modes", () => listLatentUpscaleModes(), {
      parse: "json",
      response: { 200: "A1111LatentUpscaleModes" },
      detail: {
        tags: [TAG],
        operationId: "a1111LatentUpscaleModes",
        summary: "AUTOMATIC1111 latent upscale modes",
        description:
          'The latent upscale modes sdx has for txt2img\'s hr_upscaler: "Latent" (bilinear) and "Latent (nearest)". A1111\'s antialiased, bicubic and nearest-exact modes are not in sdx.',
      },
    })
    .get("/sdapi/v1/sd-models", () => listSdModels(host), {
      parse: "json",
      response: { 200: "A1111SdModels" },
      detail: {
        tags: [TAG],
        operationId: "a1111SdModels",
        summary: "AUTOMATIC1111 checkpoint list",
        description:
          "The loadable models of `GET /v1/models` as A1111's SDModelItem list. `title` is A1111's \"<file> [<hash10>]\" once sdx knows the hash (after a model's first load), else the file name, as in A1111.",
      },
    })
    .get("/sdapi/v1/sd-vae", () => listSdVaes(host), {
      parse: "json",
      response: { 200: "A1111SdVaes" },
      detail: {
        tags: [TAG],
        operationId: "a1111SdVaes",
        summary: "AUTOMATIC1111 VAE list",
        description:
          'The usable VAE files of `GET /v1/adapters` as A1111\'s SDVaeItem list: `model_name` is the file name (what `sd_vae` takes, with "Automatic" and "None"); `filename` is the file name too, where A1111 sends a full path.',
      },
    })
    .get("/sdapi/v1/loras", () => listLoras(host), {
      parse: "json",
      response: { 200: "A1111Loras" },
      detail: {
        tags: [TAG],
        operationId: "a1111Loras",
        summary: "AUTOMATIC1111 LoRA list",
        description:
          "The usable LoRA files of `GET /v1/adapters` in the shape of A1111's Lora extension: `name` (used in `<lora:name:weight>`), `alias` (kohya's ss_output_name, else the name), `path` (the file name, where A1111 sends a full path) and `metadata` (the safetensors metadata).",
      },
    })
    .post(
      "/sdapi/v1/refresh-loras",
      async () => {
        await refreshLoras(host);
        return new Response("null", { headers: { "content-type": "application/json" } });
      },
      {
        parse: [ignoreBody, "json"],
        detail: {
          tags: [TAG],
          operationId: "a1111RefreshLoras",
          summary: "AUTOMATIC1111 LoRA rescan",
          description:
            "Reads the adapter folders again now (the LoRAs, embeddings and VAEs). Answers `null`, as A1111 does.",
          responses: {
            200: {
              description: "`null`, as A1111 answers.",
              content: { "application/json": { schema: { nullable: true, example: null } } },
            },
          },
        },
      },
    )
    .get("/sdapi/v1/embeddings", () => listEmbeddings(host), {
      parse: "json",
      response: { 200: "A1111Embeddings" },
      detail: {
        tags: [TAG],
        operationId: "a1111Embeddings",
        summary: "AUTOMATIC1111 embedding list",
        description:
          "The usable embedding files of `GET /v1/adapters` as A1111's EmbeddingsResponse: `loaded` fit the default model's family (or their family is unknown), `skipped` were made for another family. `step`, `sd_checkpoint` and `sd_checkpoint_name` come from an A1111 `.pt` file; `shape` is the vector width.",
      },
    })
    .get("/sdapi/v1/samplers", () => listSamplers(), {
      parse: "json",
      response: { 200: "A1111Samplers" },
      detail: {
        tags: [TAG],
        operationId: "a1111Samplers",
        summary: "AUTOMATIC1111 sampler list",
        description:
          "sdx's samplers under A1111's names, with A1111's aliases (plus sdx's scheduler_type name) and options.",
      },
    })
    .get("/sdapi/v1/schedulers", () => listSchedulers(), {
      parse: "json",
      response: { 200: "A1111Schedulers" },
      detail: {
        tags: [TAG],
        operationId: "a1111Schedulers",
        summary: "AUTOMATIC1111 schedule type list",
        description: "The schedule types sdx offers for `scheduler`: automatic and karras.",
      },
    })
    .get("/sdapi/v1/options", () => getOptions(host, session), {
      parse: "json",
      response: { 200: "A1111Options" },
      detail: {
        tags: [TAG],
        operationId: "a1111GetOptions",
        summary: "AUTOMATIC1111 settings",
        description:
          "The A1111 settings sdx has: the default model's title and hash, the clip skip, VAE and live-preview settings of A1111 requests, and fixed values of settings that would change an image in A1111 (so a client can see what sdx does).",
      },
    })
    .post(
      "/sdapi/v1/options",
      async ({ body }) => {
        const ignored = await setOptions(host, session, body);
        return new Response("null", {
          headers: {
            "content-type": "application/json",
            ...(ignored.length > 0 ? { "x-sdx-ignored-options": ignored.join(", ") } : {}),
          },
        });
      },
      {
        transform: ({ body }) => {
          if (body && typeof body === "object" && !Array.isArray(body))
            withoutNulls(body as Record<string, unknown>);
        },
        body: "A1111OptionsUpdate",
        parse: "json",
        detail: {
          tags: [TAG],
          operationId: "a1111SetOptions",
          summary: "Change AUTOMATIC1111 settings",
          description:
            '`sd_model_checkpoint` makes that model the server\'s default (for /v1 requests too) and answers once it has loaded, as A1111 does; `CLIP_stop_at_last_layers` sets the clip skip of A1111 requests; `sd_vae` their VAE ("Automatic", "None" or a file of GET /sdapi/v1/sd-vae); `live_previews_enable`, `show_progress_every_n_steps` and `show_progress_type` their live previews (GET /sdapi/v1/progress `current_image`). Fixed settings must keep their value (422 naming the key); other keys are accepted, not applied, and listed in the `X-Sdx-Ignored-Options` header. Answers `null`, as A1111 does.' +
            ERRORS,
          responses: {
            200: {
              description: "`null`, as A1111 answers.",
              headers: {
                "X-Sdx-Ignored-Options": {
                  description:
                    "The keys that were accepted and not applied, comma-separated (absent when none).",
                  schema: { type: "string" },
                },
              },
              content: { "application/json": { schema: { nullable: true, example: null } } },
            },
            400: {
              description: "Error",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
            },
            422: {
              description: "Error",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
            },
            503: {
              description: "Error",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
            },
          },
        },
      },
    )
    .get("/sdapi/v1/progress", ({ query }) => progressOf(host, session, query.skip_current_image), {
      parse: "json",
      query: A1111ProgressQuerySchema,
      response: { 200: "A1111Progress" },
      detail: {
        tags: [TAG],
        operationId: "a1111Progress",
        summary: "AUTOMATIC1111 progress",
        description:
          "A1111's ProgressResponse: the oldest running A1111 txt2img or img2img (iteration `job_no` of `job_count`, `sampling_step` of `sampling_steps`), else a running /v1 generation, else idle (progress 0, job_count 0). `current_image` is the latest live preview of the batch's first image (PNG base64), as the live-preview settings of POST /sdapi/v1/options (or override_settings) have A1111 jobs make them, or of a running /v1 generation that asks for previews on its event stream; null when there is none yet or with `skip_current_image=true`.",
      },
    })
    .post(
      "/sdapi/v1/interrupt",
      () => {
        interrupt(host, session);
        return {};
      },
      {
        response: { 200: "A1111Empty" },
        parse: [ignoreBody, "json"],
        detail: {
          tags: [TAG],
          operationId: "a1111Interrupt",
          summary: "AUTOMATIC1111 interrupt",
          description:
            "Stops whatever runs, as A1111's does: every running generation (/v1 ones too) stops before its next step, and A1111 txt2img and img2img calls start no further iterations. An interrupted one still answers 200 with the images of its finished iterations. Answers `{}`.",
        },
      },
    )
    .post(
      "/sdapi/v1/skip",
      () => {
        skip(session);
        return {};
      },
      {
        response: { 200: "A1111Empty" },
        parse: [ignoreBody, "json"],
        detail: {
          tags: [TAG],
          operationId: "a1111Skip",
          summary: "AUTOMATIC1111 skip",
          description:
            "A1111 txt2img and img2img calls drop their running iteration (its images are not returned) and go on with the next. /v1 generations are not affected. Answers `{}`.",
        },
      },
    );
};
