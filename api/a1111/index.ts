/**
 * The AUTOMATIC1111 compatibility plugin: `/sdapi/v1/*` routes in A1111's JSON shapes over sdx's own generation
 * path and model host, so A1111 clients (sdwebuiapi, UIs, bots) work against sdx. Errors keep sdx's shape.
 */
import { Elysia } from "elysia";
import {
  A1111EmptySchema,
  A1111InfoSchema,
  A1111OptionsSchema,
  A1111OptionsUpdateSchema,
  A1111ProgressQuerySchema,
  A1111ProgressSchema,
  A1111SamplersSchema,
  A1111SchedulersSchema,
  A1111SdModelsSchema,
  A1111Txt2ImgResponseSchema,
  DEFAULT_LIMITS,
  type Limits,
  txt2imgRequestSchema,
} from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { errorModel } from "../http/errors.ts";
import { listSdModels } from "./checkpoints.ts";
import { getOptions, setOptions } from "./options.ts";
import { interrupt, progressOf, skip } from "./progress.ts";
import { withoutNulls } from "./request.ts";
import { listSamplers, listSchedulers } from "./samplers.ts";
import { A1111Session } from "./session.ts";
import { txt2img } from "./txt2img.ts";

const TAG = "automatic1111";

const ERRORS =
  " Errors keep sdx's shape `{ status, code, message, fields? }` (the `Error` model), not A1111's `{ error, detail, body, errors }`; a 422 names each rejected field in A1111's spelling.";

/**
 * For the body-less POSTs: A1111 clients send none, or an empty one with a JSON content type. The first parser
 * answers without reading; "json" only tells the spec the answers are JSON.
 */
const ignoreBody = () => ({});

/** The raw request bodies as received (with their nulls), for txt2img's `parameters` echo. */
const rawBodies = new WeakMap<object, Record<string, unknown>>();

export const a1111Plugin = (host: ModelHost, limits: Limits = DEFAULT_LIMITS) => {
  const session = new A1111Session();
  return new Elysia({ name: "sdx.a1111", seed: limits })
    .use(errorModel)
    .model({
      A1111Txt2ImgRequest: txt2imgRequestSchema(limits),
      A1111Txt2ImgResponse: A1111Txt2ImgResponseSchema,
      A1111Info: A1111InfoSchema,
      A1111SdModels: A1111SdModelsSchema,
      A1111Samplers: A1111SamplersSchema,
      A1111Schedulers: A1111SchedulersSchema,
      A1111Options: A1111OptionsSchema,
      A1111OptionsUpdate: A1111OptionsUpdateSchema,
      A1111Progress: A1111ProgressSchema,
      A1111Empty: A1111EmptySchema,
    })
    .post(
      "/sdapi/v1/txt2img",
      ({ body, request }) =>
        txt2img(host, session, body, rawBodies.get(body) ?? body, request.signal, limits),
      {
        // A1111's Optional fields: null means the default, so nulls go before validation.
        transform: ({ body }) => {
          if (body && typeof body === "object" && !Array.isArray(body)) {
            rawBodies.set(body, structuredClone(body) as Record<string, unknown>);
            withoutNulls(body as Record<string, unknown>);
          }
        },
        body: "A1111Txt2ImgRequest",
        response: {
          200: "A1111Txt2ImgResponse",
          400: "Error",
          413: "Error",
          422: "Error",
          429: "Error",
          500: "Error",
          503: "Error",
        },
        parse: "json",
        detail: {
          tags: [TAG],
          operationId: "a1111Txt2img",
          summary: "AUTOMATIC1111 txt2img",
          description:
            "A1111's `POST /sdapi/v1/txt2img` on sdx's engine: `images` (PNG base64, each with its A1111 infotext in the `parameters` chunk), `parameters` (the request echoed) and `info` (JSON text of `A1111Info`: `all_seeds`, `infotexts`, …, plus `sdx_warnings`). " +
            "Each of the `n_iter` iterations is one sdx generation of `batch_size` images (queued like a /v1 request); image i of iteration j has seed + j × batch_size + i, and gives the same PNG as `POST /v1/generate` with the same parameters. " +
            "Sampler and schedule are matched to sdx's by A1111's names (422 for one sdx does not have). Fields that would change A1111's image but that sdx cannot honour (enable_hr, tiling, subseed_strength > 0, seed_resize_from_*, refiner_checkpoint, script_name, alwayson_scripts entries, infotext) are 422s naming the field; harmless ones (restore_faces, styles, save_images, s_churn, s_noise, unknown fields and settings) are accepted and named in `info.sdx_warnings`. " +
            "After POST /sdapi/v1/interrupt the answer is still 200, with the images of the iterations that finished (possibly none) and the interruption in `info.sdx_warnings`." +
            ERRORS,
        },
      },
    )
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
          "The A1111 settings sdx has: the default model's title and hash, the clip skip of A1111 requests, and fixed values of settings that would change an image in A1111 (so a client can see what sdx does).",
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
            "`sd_model_checkpoint` makes that model the server's default (for /v1 requests too) and answers once it has loaded, as A1111 does; `CLIP_stop_at_last_layers` sets the clip skip of A1111 requests. Fixed settings must keep their value (422 naming the key); other keys are accepted, not applied, and listed in the `X-Sdx-Ignored-Options` header. Answers `null`, as A1111 does." +
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
    .get("/sdapi/v1/progress", () => progressOf(host, session), {
      parse: "json",
      query: A1111ProgressQuerySchema,
      response: { 200: "A1111Progress" },
      detail: {
        tags: [TAG],
        operationId: "a1111Progress",
        summary: "AUTOMATIC1111 progress",
        description:
          "A1111's ProgressResponse: the oldest running A1111 txt2img (iteration `job_no` of `job_count`, `sampling_step` of `sampling_steps`), else a running /v1 generation, else idle (progress 0, job_count 0). `current_image` is always null: sdx makes no previews.",
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
            "Stops whatever runs, as A1111's does: every running generation (/v1 ones too) stops before its next step, and A1111 txt2img calls start no further iterations. An interrupted txt2img still answers 200 with the images of its finished iterations. Answers `{}`.",
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
            "A1111 txt2img calls drop their running iteration (its images are not returned) and go on with the next. /v1 generations are not affected. Answers `{}`.",
        },
      },
    );
};
