import { Command, Option } from "clipanion";
import { SdxCommand } from "../base.ts";

export class HealthCommand extends SdxCommand {
  static override paths = [["health"]];
  static override usage = Command.Usage({
    description: "Show the server's state, model, execution provider and version",
    examples: [
      ["Check the server of a project", "sdx health --project example"],
      ["Check a server by URL", "sdx health --server http://127.0.0.1:8001"],
      ["As JSON (exit 3 when the server cannot be reached)", "sdx health --server http://gpu:8001 --json"],
    ],
  });

  projectName = Option.String("--project", { description: "Take server_url from this project" });

  async execute(): Promise<number> {
    const client = await this.serverClient(this.projectName);
    // Unreachable exits 3 and other server errors 1 (SdxCommand.validateAndExecute).
    const health = await client.health(this.context.signal ? { signal: this.context.signal } : {});
    if (this.json) this.printJson(health);
    else {
      this.print(
        `${client.baseUrl}: ${health.status} (sdx ${health.version}, onnxruntime ${health.onnxruntime_version}, ${health.execution_provider})`,
      );
      this.print(health.message);
    }
    return health.status === "ok" ? 0 : 1;
  }
}
