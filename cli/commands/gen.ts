import { Command, Option, UsageError } from "clipanion";
import * as tanyan from "typanion";
import type { GenerateRequest } from "../../sdk/index.ts";
import { EXIT, SdxCommand } from "../base.ts";
import { batchPlans, type PlannedRequest, type RunEvent, runGeneration, SEED_RANGE } from "../generate.ts";
import { ollamaPlans } from "../ollama.ts";
import { effectiveRequest } from "../project.ts";

/** Output folder name of `--ollama` runs. */
export const OLLAMA_PROMPT_NAME = "ollama";
export const MAX_IMAGES = 10_000;

export class GenCommand extends SdxCommand {
  static override paths = [["gen"]];
  static override usage = Command.Usage({
    description:
      "Generate images for a prompt set (or Ollama-written prompts) with metadata under the outputs folder",
    details: `
      Parameters are the project's \`default_params\`, then the prompt set's \`params\`, then \`--batch\` and \`--seed\`.
      Images land in \`<output>/<project>/<prompt set>/<timestamp>_<model>/images/\`, one YAML metadata file per
      image in \`metadata/\`. Image i of a batch uses seed + i, so any image can be made again alone; batches above
      16 are sent as several requests. A failed request is written to \`errors/\` and the batch goes on.

      With \`--ollama\`, the project's \`ollama\` block asks a local LLM for a new prompt per image (fitted to CLIP's
      75 tokens); outputs go under the prompt name \`ollama\`.

      Exit codes: 0 all images made, 1 some failed, 2 usage or config error, 3 server unreachable, 130 Ctrl-C.
    `,
    examples: [
      ["One image of the 'portrait' set", "sdx gen --project example --prompt portrait"],
      ["Four images from seed 42", "sdx gen --project example --prompt portrait --batch 4 --seed 42"],
      ["Three images, each with a prompt written by Ollama", "sdx gen --project example --ollama --batch 3"],
      ["One JSON object per image", "sdx gen --project example --prompt lighthouse --batch 2 --json"],
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
    description: `Images to make (1-${MAX_IMAGES}; sent 16 per request)`,
    validator: tanyan.cascade(tanyan.isNumber(), [
      tanyan.isInteger(),
      tanyan.isInInclusiveRange(1, MAX_IMAGES),
    ]),
  });
  seed = Option.String("--seed", {
    description: "Seed of the first image (0-4294967295); default: the prompt set's, else random",
    validator: tanyan.cascade(tanyan.isNumber(), [
      tanyan.isInteger(),
      tanyan.isInInclusiveRange(0, SEED_RANGE - 1),
    ]),
  });

  async execute(): Promise<number> {
    if (this.ollama === (this.promptName !== undefined)) {
      throw new UsageError("pass either --prompt <set> or --ollama");
    }
    const project = await this.project(this.projectName);
    const signal = this.context.signal;
    let base: GenerateRequest;
    let folder: string;
    if (this.ollama) {
      if (!project.config.ollama) {
        throw new UsageError(
          `${project.folder}/config.yaml has no ollama block; see \`sdx init\` for an example`,
        );
      }
      const { prompt: _unused, ...params } = effectiveRequest(project, {
        name: OLLAMA_PROMPT_NAME,
        prompt: "",
      });
      base = { ...params, prompt: "" };
      folder = OLLAMA_PROMPT_NAME;
    } else {
      const set = project.promptSets.find((s) => s.name === this.promptName);
      if (!set) {
        throw new UsageError(
          `no prompt set "${this.promptName}" in ${project.folder}; sets: ${project.promptSets.map((s) => s.name).join(", ")}`,
        );
      }
      base = effectiveRequest(project, set);
      folder = set.name;
    }
    const total = this.batch ?? base.batch_size ?? 1;
    const seed = this.seed ?? (base.seed !== undefined && base.seed >= 0 ? base.seed : randomSeed());
    const { seed: _s, batch_size: _b, ...rest } = base;
    const client = this.client(project.config.server_url);
    const ollamaConfig = project.config.ollama;
    const plans: AsyncIterable<PlannedRequest> =
      this.ollama && ollamaConfig
        ? ollamaPlans({
            client,
            config: ollamaConfig,
            base: rest,
            total,
            seed,
            ...(signal ? { signal } : {}),
          })
        : batchPlans(rest, total, seed);
    const summary = await runGeneration({
      client,
      ...(signal ? { signal } : {}),
      outputRoot: this.output,
      project: project.name,
      promptName: folder,
      total,
      seed,
      plans,
      report: (event) => this.report(event),
      warn: (message) => this.warn(`warning: ${message}`),
    });
    const notMade = summary.total - summary.made - summary.failed;
    const line = `${summary.made} of ${summary.total} image${summary.total === 1 ? "" : "s"} made in ${summary.run_dir}${
      summary.failed ? `; ${summary.failed} failed (see errors/)` : ""
    }${summary.interrupted ? `; interrupted, ${notMade} not started` : ""}`;
    if (this.json || summary.failed || summary.interrupted) this.warn(line);
    else this.print(line);
    if (summary.interrupted) return EXIT.interrupted;
    if (summary.unreachable) return EXIT.unreachable;
    return summary.failed ? EXIT.failed : EXIT.ok;
  }

  private report(event: RunEvent): void {
    if (this.json) {
      this.printJsonLine(event);
      return;
    }
    const n = `${event.index + 1}/${event.total}`;
    if (event.event === "image") this.print(`image ${n}: ${event.image} (seed ${event.seed})`);
    else this.warn(`image ${n} failed: ${event.error}\n  details: ${event.error_file}`);
  }
}

function randomSeed(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0] as number;
}
