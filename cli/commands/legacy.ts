import { Command, Option, UsageError } from "clipanion";
import { SdxCommand } from "../base.ts";

/**
 * The seed's own spelling, without a subcommand: `sdx --project X --list`, `--prompt NAME`, `--batch N`,
 * `--ollama`. It is mapped onto `sdx list` / `sdx gen` with the same options.
 */
export class LegacyCommand extends SdxCommand {
  static override paths = [Command.Default];
  static override usage = Command.Usage({
    description:
      "The seed's option-only form: --list, --prompt NAME or --ollama (same as `sdx list` / `sdx gen`)",
    examples: [
      ["List prompt sets", "sdx --input projects --project example --list"],
      ["Generate two images of a set", "sdx --project example --prompt portrait --batch 2"],
      ["Generate with Ollama prompts", "sdx --project example --ollama --batch 2"],
    ],
  });

  projectName = Option.String("--project", { description: "Project folder name" });
  list = Option.Boolean("--list", false, { description: "List the project's prompt sets (sdx list)" });
  promptName = Option.String("--prompt", { description: "Generate this prompt set (sdx gen --prompt)" });
  ollama = Option.Boolean("--ollama", false, {
    description: "Generate with Ollama prompts (sdx gen --ollama)",
  });
  batch = Option.String("--batch", { description: "Images to make" });
  seed = Option.String("--seed", { description: "Seed of the first image" });

  async execute(): Promise<number> {
    if (!this.projectName) {
      this.context.stdout.write(this.cli.usage(null));
      throw new UsageError(
        "no command: see the commands above, or pass --project with --list, --prompt or --ollama",
      );
    }
    const common = [
      "--project",
      this.projectName,
      "--input",
      this.input,
      "--output",
      this.output,
      ...(this.server !== undefined ? ["--server", this.server] : []),
      ...(this.apiKey !== undefined ? ["--api-key", this.apiKey] : []),
      ...(this.json ? ["--json"] : []),
    ];
    const modes = [this.list, this.promptName !== undefined, this.ollama].filter(Boolean).length;
    if (modes !== 1) throw new UsageError("pass exactly one of --list, --prompt NAME or --ollama");
    let args: string[];
    if (this.list) {
      if (this.batch !== undefined || this.seed !== undefined)
        throw new UsageError("--batch and --seed go with --prompt or --ollama");
      args = ["list", ...common];
    } else {
      args = [
        "gen",
        ...common,
        ...(this.promptName !== undefined ? ["--prompt", this.promptName] : ["--ollama"]),
        ...(this.batch !== undefined ? ["--batch", this.batch] : []),
        ...(this.seed !== undefined ? ["--seed", this.seed] : []),
      ];
    }
    const command = this.cli.process(args);
    command.cli = this.cli;
    return command.validateAndExecute();
  }
}
