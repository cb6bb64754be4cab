import { Command, Option } from "clipanion";
import YAML from "yaml";
import { SdxCommand } from "../base.ts";
import { effectiveRequest } from "../project.ts";

export class ListCommand extends SdxCommand {
  static override paths = [["list"]];
  static override usage = Command.Usage({
    description: "List a project's prompt sets with the parameters each would be sent with",
    examples: [
      ["List the example project", "sdx list --project example"],
      ["From another projects folder, as JSON", "sdx list --project mine --input ~/sd/projects --json"],
    ],
  });

  projectName = Option.String("--project", { required: true, description: "Project folder name" });

  async execute(): Promise<number> {
    const project = await this.project(this.projectName);
    const sets = project.promptSets.map((set) => ({
      name: set.name,
      request: effectiveRequest(project, set),
    }));
    if (this.json) {
      this.printJson({ project: project.name, server_url: project.config.server_url, prompt_sets: sets });
      return 0;
    }
    this.print(
      `${project.name} (${project.config.server_url}): ${sets.length} prompt set${sets.length === 1 ? "" : "s"}`,
    );
    for (const { name, request } of sets) {
      const { prompt, ...params } = request;
      this.print(`\n${name}\n  prompt: ${prompt}`);
      const body = YAML.stringify(params, { lineWidth: 0 }).trimEnd();
      if (body !== "{}") this.print(body.replace(/^/gm, "  "));
    }
    return 0;
  }
}
