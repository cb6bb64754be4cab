import { Command, Option } from "clipanion";
import { formatBytes } from "../../lib/terminal/download_progress.ts";
import { SdxCommand } from "../base.ts";

export class ModelsCatalogCommand extends SdxCommand {
  static override paths = [["models", "catalog"]];
  static override usage = Command.Usage({
    description: "List the ready ONNX models and preview decoders `sdx models pull` can download by name",
    examples: [
      ["The local server's catalog", "sdx models catalog"],
      ["As JSON", "sdx models catalog --server http://127.0.0.1:8001 --json"],
    ],
  });

  projectName = Option.String("--project", { description: "Take server_url from this project" });

  async execute(): Promise<number> {
    const client = await this.serverClient(this.projectName);
    const catalog = await client.models.catalog(this.context.signal ? { signal: this.context.signal } : {});
    if (this.json) {
      this.printJson(catalog);
      return 0;
    }
    this.print(`${client.baseUrl}: models to pull from ${catalog.hub} (installed ones marked *)`);
    for (const m of catalog.models) {
      const size = `~${formatBytes(m.approx_size_bytes)}`;
      // A server older than preview decoders in the catalog sends no type: all its entries are models.
      const what = m.type === "vae_approx" ? `${m.families.join("/")} preview decoder` : m.kind;
      this.print(`${m.installed ? "*" : " "} ${m.name}  ${what}  ${size}  ${m.repo}@${m.revision}`);
      this.print(`    ${m.description}`);
    }
    return 0;
  }
}
