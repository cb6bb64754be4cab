import { Command, Option } from "clipanion";
import { type AdapterInfo, type AdapterList, SdxError } from "../../sdk/index.ts";
import { SdxCommand } from "../base.ts";

/** A size in the unit that reads best: KiB for embeddings, MiB for LoRAs, GiB for checkpoints. */
function size(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
}

/** One adapter line: name, family, format, what it holds, size, and why it cannot be used. */
function adapterLine(a: AdapterInfo): string {
  const holds = [
    a.details.rank !== undefined ? `rank ${a.details.rank}` : null,
    a.details.modules !== undefined ? `${a.details.modules} layers` : null,
    a.details.text_encoder ? "text encoder" : null,
    a.details.vectors !== undefined
      ? `${a.details.vectors} vector${a.details.vectors === 1 ? "" : "s"}`
      : null,
  ].filter((x) => x !== null);
  const family =
    a.details.families?.join("/") ?? a.family ?? (a.kind === "vae" && a.usable ? "any" : "unknown");
  const parts = [a.name, family, a.format ?? "?", ...holds, size(a.size_bytes)];
  const state = a.usable ? "" : `  not usable: ${a.reason ?? "unknown reason"}`;
  return `  ${parts.join("  ")}${state}`;
}

export class ModelsCommand extends SdxCommand {
  static override paths = [["models"], ["models", "list"]];
  static override usage = Command.Usage({
    description:
      "List the models in the server's models directory, marking the one it serves, then its LoRAs, embeddings, VAEs and preview decoders",
    examples: [
      ["Models of a project's server", "sdx models --project example"],
      ["Models of a server by URL, as JSON", "sdx models --server http://127.0.0.1:8001 --json"],
      ["Download one from the Hugging Face hub (see `sdx models pull --help`)", "sdx models pull sd-turbo"],
    ],
  });

  projectName = Option.String("--project", { description: "Take server_url from this project" });

  async execute(): Promise<number> {
    const client = await this.serverClient(this.projectName);
    const opts = this.context.signal ? { signal: this.context.signal } : {};
    const list = await client.models.list(opts);
    const adapters = await this.adapters(client, opts);
    if (this.json) {
      this.printJson(adapters ? { ...list, adapters } : list);
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
    if (!adapters) return 0;
    const sections = [
      ["LoRAs", adapters.loras, adapters.folders.loras],
      ["Embeddings", adapters.embeddings, adapters.folders.embeddings],
      ["VAEs", adapters.vaes, adapters.folders.vae],
      // A server older than the vae_approx kind lists none.
      ["Preview decoders (taesd)", adapters.vae_approx ?? [], adapters.folders.vae_approx ?? "vae_approx"],
    ] as const;
    for (const [title, items, folder] of sections) {
      this.print(`\n${title} (${items.length} in ${folder})`);
      for (const a of items) this.print(adapterLine(a));
    }
    return 0;
  }

  /** The server's adapters, or null from a server that has no /v1/adapters (an older sdx). */
  private async adapters(
    client: Awaited<ReturnType<SdxCommand["serverClient"]>>,
    opts: { signal?: AbortSignal },
  ): Promise<AdapterList | null> {
    try {
      return await client.adapters(opts);
    } catch (e) {
      if (e instanceof SdxError && e.status === 404) return null;
      throw e;
    }
  }
}
