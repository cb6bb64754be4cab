import { Command, Option } from "clipanion";
import { SdxCommand } from "../base.ts";

export class ValidateCommand extends SdxCommand {
  static override paths = [["validate"]];
  static override usage = Command.Usage({
    description: "Check a project's config.yaml and prompts.yaml without contacting any server",
    details: `
      Every problem is listed with its file, line and column: unknown keys (with "did you mean"), wrong types and
      ranges, duplicate prompt-set names and unsafe names. Exits 0 when the project is valid, 2 otherwise.
    `,
    examples: [
      ["Check the example project", "sdx validate --project example"],
      ["Check a project in another folder", "sdx validate --project mine --input ~/sd/projects"],
    ],
  });

  projectName = Option.String("--project", { required: true, description: "Project folder name" });

  async execute(): Promise<number> {
    const project = await this.project(this.projectName);
    const sets = project.promptSets.length;
    if (this.json) {
      this.printJson({
        project: project.folder,
        valid: true,
        prompt_sets: sets,
        ollama: !!project.config.ollama,
      });
    } else {
      this.print(
        `${project.dir}: valid (${sets} prompt set${sets === 1 ? "" : "s"}${project.config.ollama ? ", ollama" : ""})`,
      );
    }
    return 0;
  }
}
