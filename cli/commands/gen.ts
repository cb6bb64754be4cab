import { Command, Option, UsageError } from "clipanion";
import * as tanyan from "typanion";
import { VERSION } from "../../api/version.ts";
import type { GenerateResponse } from "../../sdk/index.ts";
import { SdxCommand, SdxError } from "../base.ts";
import { createRunFolder, TimestampClock, writeImageWithMetadata } from "../outputs.ts";
import { effectiveRequest } from "../project.ts";

export class GenCommand extends SdxCommand {
  static override paths = [["gen"]];
  static override usage = Command.Usage({
    description: "Generate images for a prompt set and write them, with metadata, under the outputs folder",
    details: `
      Parameters are the project's \`default_params\`, then the prompt set's \`params\`, then \`--batch\` and \`--seed\`.
      Images land in \`<output>/<project>/<prompt set>/<timestamp>_<model>/images/\`, one YAML metadata file per
      image in \`metadata/\`. Image i of a batch uses seed + i, so any image can be made again alone.
    `,
    examples: [
      ["One image of the 'portrait' set", "sdx gen --project example --prompt portrait"],
      ["Four images from seed 42", "sdx gen --project example --prompt portrait --batch 4 --seed 42"],
      [
        "Another server and outputs folder",
        "sdx gen --project example --prompt portrait --server http://gpu:8001 --output /data/sd",
      ],
    ],
  });

  projectName = Option.String("--project", { required: true, description: "Project folder name" });
  promptName = Option.String("--prompt", { required: true, description: "Prompt-set name" });
  batch = Option.String("--batch", {
    description: "Images to make (1-16)",
    validator: tanyan.cascade(tanyan.isNumber(), [tanyan.isInteger(), tanyan.isInInclusiveRange(1, 16)]),
  });
  seed = Option.String("--seed", {
    description: "Seed of the first image (0-4294967295)",
    validator: tanyan.cascade(tanyan.isNumber(), [
      tanyan.isInteger(),
      tanyan.isInInclusiveRange(0, 4294967295),
    ]),
  });

  async execute(): Promise<number> {
    const project = await this.project(this.projectName);
    const set = project.promptSets.find((s) => s.name === this.promptName);
    if (!set) {
      throw new UsageError(
        `no prompt set "${this.promptName}" in ${project.folder}; sets: ${project.promptSets.map((s) => s.name).join(", ")}`,
      );
    }
    const request = effectiveRequest(project, set, {
      ...(this.batch !== undefined ? { batch_size: this.batch } : {}),
      ...(this.seed !== undefined ? { seed: this.seed } : {}),
    });
    const client = this.client(project.config.server_url);
    let response: GenerateResponse;
    try {
      response = await client.generate(request);
    } catch (e) {
      if (e instanceof SdxError) {
        this.context.stderr.write(`${this.describeError(e)}\n`);
        return 1;
      }
      throw e;
    }
    const { metadata } = response;
    const clock = new TimestampClock();
    const run = await createRunFolder(this.output, project.name, set.name, metadata.model.name, clock);
    const written: { image: string; metadata: string; seed: number }[] = [];
    for (const image of response.images) {
      const { date, stamp } = clock.next();
      const paths = await writeImageWithMetadata(run, stamp, Buffer.from(image.png, "base64"), {
        timestamp: date.toISOString(),
        project: project.name,
        prompt_set: set.name,
        prompt: metadata.parameters.prompt,
        negative_prompt: metadata.parameters.negative_prompt,
        prompt_tokens: metadata.prompt_tokens,
        model: metadata.model,
        seed: image.seed,
        parameters: { ...metadata.parameters, seed: image.seed, batch_size: 1 },
        batch: { seed: metadata.parameters.seed, size: metadata.parameters.batch_size },
        warnings: response.warnings,
        timings: metadata.timings,
        execution_provider: metadata.execution_provider,
        server_version: metadata.sdx_version,
        sdx_version: VERSION,
      });
      written.push({ ...paths, seed: image.seed });
    }
    if (this.json) {
      this.printJson({ run_dir: run.dir, images: written, warnings: response.warnings });
    } else {
      for (const w of written) this.print(`${w.image} (seed ${w.seed})`);
      for (const warning of response.warnings) this.context.stderr.write(`warning: ${warning}\n`);
    }
    return 0;
  }
}
