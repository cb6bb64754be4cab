/**
 * What txt2img and img2img share: A1111's common fields mapped onto sdx's generation request, the n_iter
 * generations run one after the other (with progress, interrupt and skip), and the answer's `info`.
 */
import {
  A1111_PREVIEW_DEFAULTS,
  A1111_PREVIEW_METHODS,
  A1111_RANDOM_SEED_SPACE,
  type A1111Img2ImgRequest,
  type A1111Info,
  type A1111PreviewSettings,
  type A1111Txt2ImgRequest,
  ApiError,
  type FieldError,
  type GenerateRequest,
  type GenerateResponse,
  type Limits,
  RANDOM_SEED,
  randomSeed,
  type SchedulerName,
  seedAt,
  validationFailed,
} from "../../contract/index.ts";
import { generateImages } from "../engine/generation/run.ts";
import type { ModelHost } from "../engine/model_host.ts";
import { requestedModel } from "../engine/models.ts";
import { readPngText } from "../engine/pipeline/image.ts";
import { SCHEDULERS } from "../engine/schedulers/index.ts";
import { resolveSdVae, vaeInfo } from "./adapters.ts";
import { makeDefault, resolveCheckpoint } from "./checkpoints.ts";
import { checkSettings, previewRequest, previewSettings } from "./options.ts";
import { a1111Error, a1111Text } from "./request.ts";
import { a1111SamplerName, resolveSampler, type SamplerChoice } from "./samplers.ts";
import type { A1111Job, A1111Session } from "./session.ts";

/** A txt2img or img2img request: the fields they share are read here. */
export type A1111Request = A1111Txt2ImgRequest | A1111Img2ImgRequest;

/** Which route a request came by: its name and its fields with A1111's defaults. */
export interface A1111Route {
  name: "txt2img" | "img2img";
  defaults: Readonly<Record<string, unknown>>;
}

/** Shared fields that change A1111's image and that sdx cannot honour: a 422 each, with why. */
function unsupportedFields(req: A1111Request): FieldError[] {
  const fields: FieldError[] = [];
  const no = (field: string, message: string, allowed?: FieldError["allowed"]) =>
    fields.push({ field, message, ...(allowed ? { allowed } : {}) });
  if (req.tiling === true) no("tiling", "sdx cannot make seamless tiling images", [false]);
  if ((req.subseed_strength ?? 0) > 0)
    no("subseed_strength", "sdx has no variation seeds; only 0 is possible", [0]);
  for (const key of ["seed_resize_from_w", "seed_resize_from_h"] as const) {
    if ((req[key] ?? -1) > 0) no(key, "sdx cannot resize seeds; send 0 or -1", [0, -1]);
  }
  if (req.refiner_checkpoint && req.refiner_checkpoint !== "None")
    no("refiner_checkpoint", "sdx has no SDXL refiner pass", ["", "None"]);
  if (req.script_name) no("script_name", `sdx has no A1111 scripts; "${req.script_name}" cannot run`, [""]);
  for (const name of Object.keys(req.alwayson_scripts ?? {})) {
    no(`alwayson_scripts.${name}`, "sdx has no A1111 extension scripts; send alwayson_scripts {}");
  }
  if (req.infotext) no("infotext", "sdx does not read parameters from infotext; send them as fields");
  return fields;
}

/** Accepted fields that sdx does not apply, as warnings. */
function ignoredFieldWarnings(
  req: A1111Request,
  sampler: SchedulerName,
  raw: Record<string, unknown>,
  route: A1111Route,
) {
  const warnings: string[] = [];
  if (req.restore_faces === true)
    warnings.push("restore_faces was not applied: sdx has no face restoration; the image is as generated.");
  if (req.styles && req.styles.length > 0)
    warnings.push(
      `styles ${req.styles.map((s) => JSON.stringify(s)).join(", ")} were not applied: sdx has no prompt styles.`,
    );
  if (req.save_images === true)
    warnings.push("save_images was not applied: sdx never saves images on the server; they are in `images`.");
  if ((req.s_churn ?? 0) > 0)
    warnings.push(`s_churn ${req.s_churn} was not applied: sdx's samplers run without churn.`);
  if (req.s_noise !== undefined && req.s_noise !== 1)
    warnings.push(`s_noise ${req.s_noise} was not applied: sdx's samplers run at s_noise 1.`);
  if ((req.s_min_uncond ?? 0) > 0)
    warnings.push(
      `s_min_uncond ${req.s_min_uncond} was not applied: sdx has no negative guidance minimum sigma.`,
    );
  if (req.eta !== undefined && req.eta !== 1 && SCHEDULERS[sampler].stochastic && sampler !== "lcm")
    warnings.push(
      `eta ${req.eta} was not applied: sdx's ${a1111SamplerName(sampler)} always runs at η 1 (A1111's default eta_ancestral).`,
    );
  const known = new Set(Object.keys(route.defaults));
  const unknown = Object.keys(raw).filter((k) => !known.has(k));
  if (unknown.length > 0)
    warnings.push(
      `${unknown.join(", ")} ${unknown.length === 1 ? `is not an A1111 ${route.name} field and was` : `are not A1111 ${route.name} fields and were`} ignored.`,
    );
  return warnings;
}

/** A1111's job_timestamp: the local time as YYYYMMDDhhmmss. */
function jobTimestamp(date = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}`;
}

function dedupe(lines: string[]): string[] {
  return [...new Set(lines)];
}

/** The request mapped onto sdx: the generation request without seed and batch, and what A1111 reports. */
export interface MappedRequest {
  base: GenerateRequest;
  sampler: SamplerChoice;
  seed: number;
  subseed: number;
  batchSize: number;
  nIter: number;
  clipSkip: number;
  /** Overrides kept after the request (override_settings_restore_afterwards false). */
  keep: {
    model: string | null;
    clipSkip: number | null;
    sdVae: string | null;
    previews: A1111PreviewSettings | null;
  };
  warnings: string[];
}

/**
 * The shared fields mapped onto sdx's generation request. `fields` are the route's own 422s: every rejected
 * field of the request is named in one 422, the route's with the shared ones.
 */
export async function mapRequest(
  host: ModelHost,
  session: A1111Session,
  req: A1111Request,
  raw: Record<string, unknown>,
  limits: Limits,
  route: A1111Route,
  routeFields: FieldError[],
): Promise<MappedRequest> {
  const fields = [...routeFields, ...unsupportedFields(req)];
  const sampler = resolveSampler(req);
  const overrides = req.override_settings ?? {};
  const unknownSettings = await checkSettings(host, overrides, "override_settings.");
  const width = req.width ?? (route.defaults.width as number);
  const height = req.height ?? (route.defaults.height as number);
  for (const [key, value] of [
    ["width", width],
    ["height", height],
  ] as const) {
    if (req[key] === undefined && (value < limits.sizeMin || value > limits.sizeMax)) {
      fields.push({
        field: key,
        message: `defaults to A1111's ${value}, outside this server's limits ${limits.sizeMin}–${limits.sizeMax}; send ${key}`,
      });
    }
  }
  if (sampler.scheduler === "ddim" && req.eta !== undefined && (req.eta < 0 || req.eta > 1)) {
    fields.push({ field: "eta", message: `DDIM's η must be from 0 to 1; got ${req.eta}` });
  }
  if (fields.length > 0) throw validationFailed(fields);
  const checkpoint = overrides.sd_model_checkpoint;
  const model = checkpoint
    ? await resolveCheckpoint(host, checkpoint, "override_settings.sd_model_checkpoint")
    : null;
  let modelName = model?.name;
  if (!modelName) {
    try {
      modelName = (await requestedModel(host, undefined)).name;
    } catch (e) {
      if (e instanceof ApiError && e.code === "no_model") {
        throw new ApiError(
          503,
          "no_model",
          `${e.message} With the A1111 API: send override_settings.sd_model_checkpoint, or choose one with POST /sdapi/v1/options {"sd_model_checkpoint": …} (GET /sdapi/v1/sd-models lists them).`,
        );
      }
      throw e;
    }
  }
  const clipSkip = overrides.CLIP_stop_at_last_layers ?? session.clipSkip;
  const sdVae = overrides.sd_vae ?? session.sdVae;
  const vae = await resolveSdVae(
    host,
    sdVae,
    overrides.sd_vae !== undefined ? "override_settings.sd_vae" : "sd_vae",
  );
  const restore = req.override_settings_restore_afterwards !== false;
  const previews = previewSettings(session, overrides);
  const preview = previewRequest(previews);
  const previewType = overrides.show_progress_type;
  const previewsOverridden = Object.keys(A1111_PREVIEW_DEFAULTS).some(
    (key) => overrides[key as keyof A1111PreviewSettings] !== undefined,
  );
  const warnings = [
    ...sampler.warnings,
    ...ignoredFieldWarnings(req, sampler.scheduler, raw, route),
    ...(unknownSettings.length > 0
      ? [
          `override_settings ${unknownSettings.join(", ")} ${unknownSettings.length === 1 ? "was" : "were"} not applied: sdx has no such setting (GET /sdapi/v1/options lists those it has).`,
        ]
      : []),
    ...(previewType && previewType !== "Approx cheap" && A1111_PREVIEW_METHODS[previewType] === "approx"
      ? [
          `override_settings.show_progress_type "${previewType}": sdx makes these previews as "Approx cheap" (a linear projection of the latents); it has neither A1111's full-VAE previews nor its Approx NN network.`,
        ]
      : []),
  ];
  const base: GenerateRequest = {
    prompt: req.prompt ?? "",
    model: modelName,
    width,
    height,
    num_steps: req.steps ?? (route.defaults.steps as number),
    guidance_scale: req.cfg_scale ?? (route.defaults.cfg_scale as number),
    scheduler_type: sampler.scheduler,
    karras_sigmas: sampler.karras,
    clip_skip: clipSkip,
    prompt_syntax: "a1111",
    ...(req.negative_prompt ? { negative_prompt: req.negative_prompt } : {}),
    ...(sampler.scheduler === "ddim" ? { eta: req.eta ?? 0 } : {}),
    ...(vae !== undefined ? { vae } : {}),
    ...(preview ? { preview } : {}),
  };
  return {
    base,
    sampler,
    seed: req.seed === undefined || req.seed === RANDOM_SEED ? randomSeed(A1111_RANDOM_SEED_SPACE) : req.seed,
    subseed:
      req.subseed === undefined || req.subseed === RANDOM_SEED
        ? randomSeed(A1111_RANDOM_SEED_SPACE)
        : req.subseed,
    batchSize: req.batch_size ?? (route.defaults.batch_size as number),
    nIter: req.n_iter ?? (route.defaults.n_iter as number),
    clipSkip,
    keep: {
      model: !restore && model ? model.name : null,
      clipSkip: !restore && overrides.CLIP_stop_at_last_layers !== undefined ? clipSkip : null,
      sdVae: !restore && overrides.sd_vae !== undefined ? overrides.sd_vae : null,
      previews: !restore && previewsOverridden ? previews : null,
    },
    warnings,
  };
}

/** What the route adds to `info`: A1111's denoising_strength and extra_generation_params entries. */
export interface InfoExtras {
  denoisingStrength: number | null;
  extraGenerationParams: Record<string, string | number>;
}

/**
 * n_iter sdx generations of batch_size images; iteration j starts at seed + j × batch_size, so image i of
 * iteration j has A1111's seed + j × batch_size + i. An interrupt (POST /sdapi/v1/interrupt) stops the running
 * iteration and the rest: the answer holds the images of the iterations that finished (possibly none) and says
 * so in info.sdx_warnings. A skip (POST /sdapi/v1/skip) drops the running iteration only.
 */
export async function runIterations(
  host: ModelHost,
  session: A1111Session,
  route: A1111Route,
  req: A1111Request,
  mapped: MappedRequest,
  extras: InfoExtras,
  signal: AbortSignal | undefined,
  limits: Limits,
): Promise<{ images: string[]; info: string }> {
  const { base, batchSize, nIter, seed } = mapped;
  const total = batchSize * nIter;
  const allSeeds = Array.from({ length: total }, (_, x) => seedAt(seed, x));
  const job: A1111Job = {
    route: route.name,
    startedAt: performance.now(),
    timestamp: jobTimestamp(),
    nIter,
    iteration: 0,
    step: 0,
    steps: 0,
    running: false,
    queuePosition: 0,
    interrupted: false,
    skipped: false,
    controller: new AbortController(),
    currentImage: null,
  };
  session.jobs.add(job);
  const images: string[] = [];
  const warnings = [...mapped.warnings];
  let first: GenerateResponse | null = null;
  try {
    for (let j = 0; j < nIter; j++) {
      if (job.interrupted) {
        warnings.push(`interrupted: iterations ${j + 1} to ${nIter} did not run.`);
        break;
      }
      Object.assign(job, { iteration: j, step: 0, steps: 0, running: false, skipped: false });
      job.controller = new AbortController();
      const stop = signal ? AbortSignal.any([signal, job.controller.signal]) : job.controller.signal;
      let res: GenerateResponse;
      try {
        res = await generateImages(
          host,
          { ...base, seed: seedAt(seed, j * batchSize), batch_size: batchSize },
          stop,
          {
            queued: (position) => {
              job.queuePosition = position;
            },
            started: () => {
              job.running = true;
            },
            step: (e) => {
              job.step = e.step;
              job.steps = e.total;
            },
            preview: (e) => {
              if (e.image === 0) job.currentImage = e.png;
            },
          },
          limits,
        );
      } catch (e) {
        const cancelled = e instanceof ApiError && e.code === "cancelled" && !signal?.aborted;
        if (!cancelled) throw a1111Error(e);
        if (job.skipped && !job.interrupted) {
          warnings.push(`skipped: iteration ${j + 1} of ${nIter} was stopped, its images are not returned.`);
          continue;
        }
        job.interrupted = true;
        warnings.push(
          `interrupted: iteration ${j + 1} of ${nIter} was stopped before it finished, so its images are not returned (sdx does not decode unfinished latents).`,
        );
        break;
      } finally {
        job.running = false;
      }
      first ??= res;
      images.push(...res.images.map((img) => img.png));
      warnings.push(...res.warnings.map(a1111Text));
    }
  } finally {
    session.jobs.delete(job);
  }
  if (mapped.keep.model) await makeDefault(host, mapped.keep.model);
  if (mapped.keep.clipSkip !== null) session.clipSkip = mapped.keep.clipSkip;
  if (mapped.keep.sdVae !== null) session.sdVae = mapped.keep.sdVae;
  if (mapped.keep.previews !== null) session.previews = mapped.keep.previews;
  const vaeUsed = await vaeInfo(host, first);
  const infotexts = images.map((png) => readPngText(Buffer.from(png, "base64")).parameters ?? "");
  const prompt = base.prompt;
  const negative = req.negative_prompt ?? "";
  const info: A1111Info = {
    prompt,
    all_prompts: allSeeds.map(() => prompt),
    negative_prompt: negative,
    all_negative_prompts: allSeeds.map(() => negative),
    seed,
    all_seeds: allSeeds,
    subseed: mapped.subseed,
    all_subseeds: allSeeds.map((_, x) => mapped.subseed + x),
    subseed_strength: req.subseed_strength ?? 0,
    width: base.width as number,
    height: base.height as number,
    sampler_name: mapped.sampler.a1111Name,
    cfg_scale: base.guidance_scale as number,
    steps: base.num_steps as number,
    batch_size: batchSize,
    restore_faces: req.restore_faces ?? false,
    face_restoration_model: null,
    sd_model_name: first?.metadata.model.name ?? (base.model as string),
    sd_model_hash: first?.metadata.model.hash.slice(0, 10) ?? null,
    sd_vae_name: vaeUsed.name,
    sd_vae_hash: vaeUsed.hash,
    seed_resize_from_w: req.seed_resize_from_w ?? -1,
    seed_resize_from_h: req.seed_resize_from_h ?? -1,
    denoising_strength: extras.denoisingStrength,
    extra_generation_params: {
      "Schedule type": mapped.sampler.karras ? "Karras" : "Automatic",
      ...extras.extraGenerationParams,
    },
    index_of_first_image: 0,
    infotexts,
    styles: req.styles ?? [],
    job_timestamp: job.timestamp,
    clip_skip: mapped.clipSkip,
    // A1111 conditions an inpainting model (9-channel UNet) on a mask and masked image whatever the route.
    is_using_inpainting_conditioning:
      first !== null && host.loadedModel(first.metadata.model.name)?.capabilities.unetInChannels === 9,
    sdx_warnings: dedupe(warnings),
  };
  return { images: req.send_images === false ? [] : images, info: JSON.stringify(info) };
}
