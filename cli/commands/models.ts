import { Command, Option } from "clipanion";
import { SdxCommand } from "../base.ts";

export class ModelsCommand extends SdxCommand {
  static override paths = [["models"], ["models", "list"]];
  static override usage = Command.Usage({
    description: "List the models in the server's models directory, marking the one it serves",
    examples: [
      ["Models of a project's server", "sdx models --project example"],
      ["Models of a server by URL, as JSON", "sdx models --server http://127.0.0.1:8001 --json"],
      ["Download one from the Hugging Face hub (see `sdx models pull --help`)", "sdx models pull sd-turbo"],
    ],
  });

  projectName = Option.String("--project", { description: "Take server_url from this project" });

  async execute(): Promise<number> {
    const client = await this.serverClient(this.projectName);
    const list = await client.models.list(this.context.signal ? { signal: this.context.signal } : {});
    if (this.json) {
      this.printJson(list);
      return 0;
    }
    this.print(
      `${client.baseUrl}: ${list.models.length} model${list.models.length === 1 ? "" : "s"} in ${list.models_dir}`,
    );
    for (const m of list.models) {
      const mark = m.loaded ? "*" : " ";
      const kind = m.kind ?? "unknown";
      const size = `${(m.size_bytes / 2 ** 30).toFixed(2)} GiB`;
      const state = m.loadable ? "" : `  not loadable: ${m.problem ?? "unknown reason"}`;
      this.print(`${mark} ${m.name}  ${kind}  ${m.format}  ${m.native_size}px  ${size}${state}`);
    }
    return 0;
  }
}
