import type { Writable } from "node:stream";
import { Command, Option, UsageError } from "clipanion";
import * as tanyan from "typanion";
import {
  GENERATE_DEFAULTS,
  HIRES_SCALE_MAX,
  HIRES_UPSCALERS,
  type HiresUpscaler,
  IMAGE_DEFAULTS,
  randomSeed,
  SEED_MAX,
} from "../../contract/index.ts";
import type { GenerateRequest } from "../../sdk/index.ts";
import { EXIT, SdxCommand } from "../base.ts";
import { Comparison } from "../gallery/comparison.ts";
import { projectDefaults } from "../gallery/parameters.ts";
import type { RunGallery } from "../gallery/run_gallery.ts";
import { batchPlans, MAX_BATCH, type PlannedRequest, runGeneration } from "../generate.ts";
import {
  IMAGE_FIELDS,
  type ImageField,
  ImageInputError,
  type InputFiles,
  projectImagePath,
  readImageFile,
} from "../images.ts";
import { ollamaPlans } from "../ollama.ts";
import { BarView, type GenerationView, JsonView, LineView } from "../progress.ts";
import {
  checkParams,
  effectiveRequest,
  type Project,
  type ProjectParams,
  type ProjectRequest,
} from "../project.ts";
import { detectGraphics, type TerminalGraphics, type TerminalInput } from "../terminal/detect.ts";
import { TerminalImages } from "../terminal/images.ts";

/** Previews asked for per image when the terminal shows them. */
const PREVIEWS_PER_IMAGE = 10;

/** Output folder name of `--ollama` runs. */
export const OLLAMA_PROMPT_NAME = "ollama";
export const MAX_IMAGES = 10_000;

export class GenCommand extends SdxCommand {
  static override paths = [["gen"]];
  static override usage = Command.Usage({
    description:
      "Generate images for a prompt set (or Ollama-written prompts) with metadata under the outputs folder",
    details: `
      Parameters are the project's \`default_params\`, then the prompt set's \`params\`, then the options
      (\`--batch\`, \`--seed\`, the image options).
      Images land in \`<output>/<project>/<prompt set>/<timestamp>_<model>/images/\`, one YAML metadata file per
      image in \`metadata/\`. Image i of a batch uses seed + i, so any image can be made again alone; batches above
      ${MAX_BATCH} are sent as several requests. A failed request is written to \`errors/\` and the batch goes on.

      With \`--ollama\`, the project's \`ollama\` block asks a local LLM for a new prompt per image (fitted to CLIP's
      75 tokens); outputs go under the prompt name \`ollama\`.

      On a terminal, a bar for the batch (images done, ETA) and one for the running request (its place in the
      server's queue, then its denoising steps); otherwise one line per image; with \`--json\`, one JSON object
      per image on stdout. A terminal that shows images (kitty, iTerm2 or WezTerm, sixel: asked of the terminal)
      also gets the running request's preview, then each finished image, above the bars.

      Each run folder gets a gallery, \`index.html\` and a contact sheet \`grid.png\`, rewritten after each image;
      \`--all-models\` adds a comparison, \`<timestamp>_all-models/\`, with a row per model (see \`sdx gallery\`).

      \`--model NAME\` sends every request to that model of the server (loaded on demand); \`--all-models\` makes the
      same images — same prompts, same seeds — on every loadable model of the server, one run folder per model
      side by side under the prompt set's folder (with \`--ollama\`, the prompts are written once and reused).

      Image to image: \`init_image\` (and \`mask_image\` for inpainting: white is repainted) in \`params\` name files
      relative to the project folder; \`--init-image FILE\` and \`--mask FILE\` (relative to the working folder)
      replace them for one run, with \`--strength\` (how much is repainted, (0, 1]). \`--hires-scale\`,
      \`--hires-strength\`, \`--hires-steps\` and \`--hires-upscaler\` set the hires fix's second pass. The files
      are sent base64-encoded; each image's metadata keeps their paths and SHA-256 under \`inputs\`.

      Exit codes: 0 all images made, 1 some failed, 2 usage or config error, 3 server unreachable, 130 Ctrl-C.
    `,
    examples: [
      ["One image of the 'portrait' set", "sdx gen --project example --prompt portrait"],
      ["Four images from seed 42", "sdx gen --project example --prompt portrait --batch 4 --seed 42"],
      ["Three images, each with a prompt written by Ollama", "sdx gen --project example --ollama --batch 3"],
      ["One JSON object per image", "sdx gen --project example --prompt lighthouse --batch 2 --json"],
      ["On one model of the server", "sdx gen --project example --prompt portrait --model sd15"],
      [
        "The same prompt and seed on every model, side by side",
        "sdx gen --project example --prompt portrait --seed 42 --all-models",
      ],
      [
        "Image to image from a file, keeping 40% of it",
        "sdx gen --project example --prompt portrait --init-image photo.png --strength 0.6",
      ],
      [
        "Inpainting: repaint what the mask paints white",
        "sdx gen --project example --prompt portrait --init-image photo.png --mask mask.png --strength 1",
      ],
      ["With the hires fix at twice the size", "sdx gen --project example --prompt portrait --hires-scale 2"],
      [
        "Another server and outputs folder",
        "sdx gen --project example --prompt portrait --server http://gpu:8001 --output /data/sd",
      ],
    ],
  });

  projectName = Option.String("--project", { required: true, description: "Project folder name" });
  promptName = Option.String("--prompt", { description: "Prompt-set name" });
  ollama = Option.Boolean("--ollama", false, {
    description: "Let the project's Ollama model write the prompts",
  });
  batch = Option.String("--batch", {
    description: `Images to make (1-${MAX_IMAGES}; sent ${MAX_BATCH} per request)`,
    validator: tanyan.cascade(tanyan.isNumber(), [
      tanyan.isInteger(),
      tanyan.isInInclusiveRange(1, MAX_IMAGES),
    ]),
  });
  seed = Option.String("--seed", {
    description: `Seed of the first image (0-${SEED_MAX}); default: the prompt set's, else random`,
    validator: tanyan.cascade(tanyan.isNumber(), [
      tanyan.isInteger(),
      tanyan.isInInclusiveRange(0, SEED_MAX),
    ]),
  });

  model = Option.String("--model", {
    description: "A model of the server (see `sdx models`); default: the config's `model`, else the server's",
  });
  allModels = Option.Boolean("--all-models", false, {
    description: "Make the same images on every loadable model of the server, side by side",
  });

  initImage = Option.String("--init-image", {
    description: "Image to start from (PNG, JPEG, WebP; relative to the working folder); replaces init_image",
  });
  mask = Option.String("--mask", {
    description: "Inpainting mask (white is repainted; relative to the working folder); replaces mask_image",
  });
  strength = Option.String("--strength", {
    description: `How much of the init image is repainted, in (0, 1]; default ${IMAGE_DEFAULTS.strength}`,
    validator: tanyan.isNumber(),
  });
  hiresScale = Option.String("--hires-scale", {
    description: `Hires fix: final size = size × scale (1-${HIRES_SCALE_MAX})`,
    validator: tanyan.isNumber(),
  });
  hiresStrength = Option.String("--hires-strength", {
    description: "Hires fix: denoising strength of the second pass, in (0, 1]",
    validator: tanyan.isNumber(),
  });
  hiresSteps = Option.String("--hires-steps", {
    description: "Hires fix: steps of the second pass's schedule (0: num_steps)",
    validator: tanyan.isNumber(),
  });
  hiresUpscaler = Option.String("--hires-upscaler", {
    description: `Hires fix: ${HIRES_UPSCALERS.join(", ")}`,
    validator: tanyan.isEnum(HIRES_UPSCALERS),
  });

  async execute(): Promise<number> {
    if (this.ollama === (this.promptName !== undefined)) {
      throw new UsageError("pass either --prompt <set> or --ollama");
    }
    if (this.allModels && this.model !== undefined) {
      throw new UsageError("pass either --model <name> or --all-models, not both");
    }
    const overrides = this.imageOverrides();
    const project = await this.project(this.projectName);
    const signal = this.context.signal;
    let source: ProjectRequest;
    let folder: string;
    /** Where the project's parameters came from, for messages about them. */
    let owner: string;
    if (this.ollama) {
      if (!project.config.ollama) {
        throw new UsageError(
          `${project.folder}/config.yaml has no ollama block; see \`sdx init\` for an example`,
        );
      }
      const { prompt: _unused, ...params } = effectiveRequest(
        project,
        { name: OLLAMA_PROMPT_NAME, prompt: "" },
        overrides,
      );
      source = { ...params, prompt: "" };
      folder = OLLAMA_PROMPT_NAME;
      owner = "default_params";
    } else {
      const set = project.promptSets.find((s) => s.name === this.promptName);
      if (!set) {
        throw new UsageError(
          `no prompt set "${this.promptName}" in ${project.folder}; sets: ${project.promptSets.map((s) => s.name).join(", ")}`,
        );
      }
      source = effectiveRequest(project, set, overrides);
      folder = set.name;
      owner = `prompt set "${set.name}"`;
    }
    const { request: base, inputs } = await this.readImages(project, owner, source);
    const total = this.batch ?? base.batch_size ?? 1;
    const seed = this.seed ?? (base.seed !== undefined && base.seed >= 0 ? base.seed : randomSeed());
    const { seed: _s, batch_size: _b, ...request } = base;
    const graphics = await this.terminalGraphics();
    // Previews only where they can be shown: about PREVIEWS_PER_IMAGE per image, as cheap approximations.
    const steps = request.num_steps ?? GENERATE_DEFAULTS.num_steps;
    const rest: GenerateRequest = graphics
      ? {
          ...request,
          preview: { every: Math.max(1, Math.round(steps / PREVIEWS_PER_IMAGE)), method: "approx" },
        }
      : request;
    const client = this.client(project.config.server_url);
    const models = this.allModels ? await this.serverModels(client) : [this.model ?? project.config.model];
    const ollamaConfig = project.config.ollama;
    const first = models[0];
    const plansFor = (model: string | undefined): AsyncIterable<PlannedRequest> =>
      this.ollama && ollamaConfig
        ? ollamaPlans({
            client,
            config: ollamaConfig,
            base: { ...rest, ...(model !== undefined ? { model } : {}) },
            total,
            seed,
            ...(signal ? { signal } : {}),
          })
        : batchPlans({ ...rest, ...(model !== undefined ? { model } : {}) }, total, seed);
    // Every model gets the same requests: Ollama's prompts are written once, for the first, and replayed.
    const shared = models.length > 1 && this.ollama ? await collect(plansFor(first)) : null;
    const comparison = this.allModels ? new Comparison((message) => this.warn(`warning: ${message}`)) : null;
    const run = { client, project: project.name, folder, total, seed, inputs, comparison, graphics };
    const defaults = projectDefaults(project.config.default_params);
    let code: number = EXIT.ok;
    try {
      for (const model of models) {
        if (models.length > 1) this.warn(`model ${model}:`);
        const plans = shared ? replay(shared, model as string) : plansFor(model);
        const summary = await this.runOne({ ...run, plans, model, defaults });
        if (summary.interrupted) return EXIT.interrupted;
        if (summary.unreachable) return EXIT.unreachable;
        if (summary.failed) code = EXIT.failed;
      }
    } finally {
      await comparison?.close();
    }
    return code;
  }

  /** The image options as parameters (paths still unread), checked against the API's own rules. */
  private imageOverrides(): ProjectParams {
    const hires = {
      ...(this.hiresUpscaler !== undefined ? { upscaler: this.hiresUpscaler as HiresUpscaler } : {}),
      ...(this.hiresScale !== undefined ? { scale: this.hiresScale } : {}),
      ...(this.hiresStrength !== undefined ? { strength: this.hiresStrength } : {}),
      ...(this.hiresSteps !== undefined ? { steps: this.hiresSteps } : {}),
    };
    const overrides: ProjectParams = {
      ...(this.strength !== undefined ? { strength: this.strength } : {}),
      ...(Object.keys(hires).length > 0 ? { hires } : {}),
    };
    const problems = checkParams(overrides);
    if (problems.length > 0) {
      const option = (key: string) => `--${key.replace("hires.", "hires-").replaceAll("_", "-")}`;
      throw new UsageError(problems.map((p) => `${option(p.key)}: ${p.message}`).join("\n"));
    }
    return overrides;
  }

  /**
   * The request with its image files read: `--init-image`/`--mask` (relative to the working folder) replace the
   * project's `init_image`/`mask_image` (relative to the project folder, and checked to stay inside it).
   */
  private async readImages(
    project: Project,
    owner: string,
    source: ProjectRequest,
  ): Promise<{ request: GenerateRequest; inputs: InputFiles }> {
    const given: Record<ImageField, string | undefined> = {
      init_image: this.initImage,
      mask_image: this.mask,
    };
    const option: Record<ImageField, string> = { init_image: "--init-image", mask_image: "--mask" };
    const inputs: InputFiles = {};
    for (const field of IMAGE_FIELDS) {
      const fromOption = given[field];
      const path = fromOption ?? source[field];
      if (path === undefined) continue;
      const where = fromOption !== undefined ? `${option[field]} "${path}"` : `${owner}: ${field} "${path}"`;
      try {
        const file = fromOption !== undefined ? fromOption : await projectImagePath(project.dir, path);
        inputs[field] = await readImageFile(file, path);
      } catch (e) {
        if (e instanceof ImageInputError) throw new UsageError(`${where}: ${e.message}`);
        throw e;
      }
    }
    if (inputs.mask_image && !inputs.init_image) {
      throw new UsageError(`${option.mask_image} needs an init image: pass --init-image or set init_image`);
    }
    const { init_image: _i, mask_image: _m, ...rest } = source;
    return {
      request: {
        ...rest,
        ...(inputs.init_image ? { init_image: inputs.init_image.base64 } : {}),
        ...(inputs.mask_image ? { mask_image: inputs.mask_image.base64 } : {}),
      },
      inputs,
    };
  }

  /** The loadable models of the server, for --all-models. */
  private async serverModels(client: ReturnType<SdxCommand["client"]>): Promise<string[]> {
    const signal = this.context.signal;
    const list = await client.models.list(signal ? { signal } : {});
    const names = list.models.filter((m) => m.loadable).map((m) => m.name);
    if (names.length === 0)
      throw new UsageError(`${client.baseUrl} has no loadable model (see \`sdx models\`)`);
    return names;
  }

  private async runOne(options: {
    client: ReturnType<SdxCommand["client"]>;
    project: string;
    folder: string;
    total: number;
    seed: number;
    plans: AsyncIterable<PlannedRequest>;
    model: string | undefined;
    inputs: InputFiles;
    defaults: Record<string, unknown>;
    comparison: Comparison | null;
    graphics: TerminalGraphics | null;
  }) {
    const { client, project, folder, total, seed, plans, model, inputs, defaults, comparison, graphics } =
      options;
    const signal = this.context.signal;
    const view = this.view(total, graphics);
    let summary: Awaited<ReturnType<typeof runGeneration>>;
    try {
      summary = await runGeneration({
        client,
        ...(signal ? { signal } : {}),
        outputRoot: this.output,
        project,
        promptName: folder,
        total,
        seed,
        ...(model !== undefined ? { model } : {}),
        inputs,
        plans,
        defaults,
        ...(comparison ? { onGallery: (gallery: RunGallery) => comparison.add(gallery) } : {}),
        report: (event) => view.report(event),
        warn: (message) => view.warn(message),
        progress: (event) => view.progress(event),
      });
    } finally {
      view.close();
    }
    const notMade = summary.total - summary.made - summary.failed;
    const line = `${summary.made} of ${summary.total} image${summary.total === 1 ? "" : "s"} made in ${summary.run_dir}${
      summary.failed ? `; ${summary.failed} failed (see errors/)` : ""
    }${summary.interrupted ? `; interrupted, ${notMade} not made` : ""}`;
    if (this.json || summary.failed || summary.interrupted) this.warn(line);
    else this.print(line);
    return summary;
  }

  /**
   * Whether the terminal shows images (asked of it, see terminal/detect.ts): only for the bars' view, on a
   * terminal at both ends, and never of a "dumb" one (which would print the queries).
   */
  private async terminalGraphics(): Promise<TerminalGraphics | null> {
    const { stdin, stdout, isTTY, env } = this.context;
    if (this.json || !isTTY || env.TERM === "dumb") return null;
    return detectGraphics(stdin as TerminalInput, stdout as Writable & { isTTY?: boolean });
  }

  /** Bars on a terminal (stdout; with images where it shows them), plain lines elsewhere, JSON lines with --json. */
  private view(total: number, graphics: TerminalGraphics | null): GenerationView {
    const { stdout, stderr, isTTY, stderrIsTTY, signal } = this.context;
    if (this.json) return new JsonView({ stdout, stderr });
    if (!isTTY) return new LineView({ stdout, stderr });
    return new BarView({
      stdout,
      stderr,
      total,
      ...(signal ? { signal } : {}),
      stderrIsTTY: stderrIsTTY === true,
      ...(graphics
        ? { images: new TerminalImages(graphics, stdout as { rows?: number; columns?: number }) }
        : {}),
    });
  }
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** The same planned requests, sent to another model. */
async function* replay(plans: PlannedRequest[], model: string): AsyncGenerator<PlannedRequest> {
  for (const plan of plans) yield { ...plan, request: { ...plan.request, model } };
}
