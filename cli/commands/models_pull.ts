import { Command, Option, UsageError } from "clipanion";
import { checkPullFolder, PullNameError, parseRepoReference } from "../../contract/index.ts";
import { formatBytes, progressView } from "../../lib/terminal/download_progress.ts";
import { EXIT, SdxCommand, SdxError } from "../base.ts";

export class ModelsPullCommand extends SdxCommand {
  static override paths = [["models", "pull"]];
  static override usage = Command.Usage({
    description:
      "Download a model or a preview decoder from the Hugging Face hub into the server's models directory",
    details: `
      NAME is a name from \`sdx models catalog\`, or any Hugging Face repository holding an ONNX Stable Diffusion
      export in the optimum layout, as \`org/name\` or \`org/name@revision\`. The server downloads it (only the ONNX
      folder's files), checks every file's size and the hub's SHA-256, and the model appears in its models
      directory only once every file is there; an existing folder is never replaced. The catalog's \`taesd\` and
      \`taesdxl\` are the preview decoders of \`preview.method\` taesd: their one file lands in the server's
      vae_approx folder (never over an existing one). An interrupted pull (Ctrl-C,
      a lost connection) resumes where it stopped when run again. The server reads HF_ENDPOINT and HF_TOKEN
      (for gated or private repositories) from its own environment.

      Progress is a bar on a terminal and a line per file otherwise, on stderr; \`--json\` prints the result as
      JSON on stdout.
    `,
    examples: [
      ["A catalog model, on the local server", "sdx models pull sd-turbo"],
      [
        "A repository at a branch, into a folder of your choice",
        "sdx models pull CompVis/stable-diffusion-v1-4@onnx --folder sd14",
      ],
      [
        "On a project's server, as JSON",
        "sdx models pull stable-diffusion-v1-5-onnx --project example --json",
      ],
      ["The preview decoder for SD 1.x/2.x models (taesdxl: SDXL)", "sdx models pull taesd"],
    ],
  });

  name = Option.String({ name: "NAME" });
  folder = Option.String("--folder", {
    description: "Folder name in the models directory (default: derived from NAME)",
  });
  projectName = Option.String("--project", { description: "Take server_url from this project" });

  async execute(): Promise<number> {
    // The naming rules are checked here; whether a bare name is in the catalog, the server says.
    try {
      if (this.folder !== undefined) checkPullFolder(this.folder);
      parseRepoReference(this.name);
    } catch (e) {
      if (e instanceof PullNameError) throw new UsageError(e.message);
      throw e;
    }
    const client = await this.serverClient(this.projectName);
    const view = progressView(this.context.stderr, this.context.stderrIsTTY === true);
    let result: Awaited<ReturnType<typeof client.models.pull>>;
    try {
      result = await client.models.pull(this.name, {
        ...(this.folder !== undefined ? { folder: this.folder } : {}),
        ...(this.context.signal ? { signal: this.context.signal } : {}),
        onProgress: (p) => view.update(p),
      });
    } catch (e) {
      view.stop();
      if (this.context.signal?.aborted) {
        this.warn(`interrupted: the download stops; \`sdx models pull ${this.name}\` resumes it`);
        return EXIT.interrupted;
      }
      if (e instanceof SdxError && (e.code === "not_in_catalog" || e.code === "validation_failed")) {
        throw new UsageError(e.message);
      }
      throw e;
    }
    view.stop();
    if (this.json) {
      this.printJson(result);
      return result.loadable ? 0 : 1;
    }
    const resumed = result.resumed_bytes > 0 ? ` (${formatBytes(result.resumed_bytes)} resumed)` : "";
    this.print(
      `${result.joined ? "joined the running pull: " : ""}${result.name}: ${result.files} files, ${formatBytes(result.size_bytes)}${resumed} from ${result.repo}@${result.commit.slice(0, 10)}`,
    );
    if (!result.loadable) {
      this.warn(`${result.name} cannot be loaded: ${result.problem ?? "unknown reason"}`);
      return EXIT.failed;
    }
    if (result.type === "vae_approx") {
      this.print(
        `preview decoder ${result.name} ready in the server's vae_approx folder: "preview": {"every": N, "method": "taesd"} uses it`,
      );
      return 0;
    }
    this.print(
      `${result.kind ?? "model"} ready: send "model": "${result.name}" with a request, or start the server with --model ${result.name}`,
    );
    return 0;
  }
}
