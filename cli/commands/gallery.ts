import { resolve } from "node:path";
import { Command, Option, UsageError } from "clipanion";
import { SAFE_NAME } from "../../contract/index.ts";
import { isDirectory } from "../../lib/fs/exists.ts";
import { EXIT, SdxCommand } from "../base.ts";
import { openFile } from "../desktop.ts";
import { projectDefaults } from "../gallery/parameters.ts";
import { rebuildProject } from "../gallery/project.ts";
import { loadProject, ProjectError } from "../project.ts";

export class GalleryCommand extends SdxCommand {
  static override paths = [["gallery"]];
  static override usage = Command.Usage({
    description: "Rebuild a project's galleries and its page linking every run, newest first",
    details: `
      \`sdx gen\` writes each run folder's \`index.html\` (thumbnails, prompt, negative prompt, seeds, the
      parameters that differ from the project's defaults, links to each image and its metadata) and \`grid.png\`
      (a contact sheet, seeds beneath the images) as it goes; an \`--all-models\` run also writes
      \`<timestamp>_all-models/\` beside its run folders, one row per model. This command makes all of them again
      from the files on disk (metadata YAML, images, errors) and writes \`<output>/<project>/index.html\`.

      With \`--open\`, the project's page opens in the desktop's browser (macOS, Windows, or a Linux session with
      DISPLAY or WAYLAND_DISPLAY); elsewhere its path is printed with the reason.
    `,
    examples: [
      ["Rebuild the example project's galleries", "sdx gallery --project example"],
      ["Rebuild and open the project's page", "sdx gallery --project example --open"],
      ["Outputs in another folder", "sdx gallery --project example --output /data/sd"],
    ],
  });

  projectName = Option.String("--project", { required: true, description: "Project folder name" });
  open = Option.Boolean("--open", false, { description: "Open the project's page in the desktop's browser" });

  async execute(): Promise<number> {
    const { name, defaults } = await this.projectOutputs();
    const projectDir = resolve(this.output, name);
    if (!(await isDirectory(projectDir))) {
      throw new UsageError(
        `no outputs of project "${name}" in ${projectDir}; make some with \`sdx gen\` first`,
      );
    }
    const gallery = await rebuildProject(projectDir, name, defaults);
    for (const f of gallery.failures) this.warn(`gallery of ${f.path}: ${f.error}`);
    const whyNot = this.open
      ? openFile(gallery.index, this.context.platform ?? "linux", this.context.env)
      : undefined;
    if (this.json) {
      this.printJson({
        ...gallery,
        opened: this.open ? whyNot === null : false,
        ...(whyNot ? { not_opened: whyNot } : {}),
      });
    } else {
      this.print(
        `${gallery.runs} run${gallery.runs === 1 ? "" : "s"}${gallery.comparisons ? `, ${gallery.comparisons} comparison${gallery.comparisons === 1 ? "" : "s"}` : ""}: ${gallery.index}`,
      );
      if (whyNot) this.warn(`not opened: ${whyNot}`);
    }
    return gallery.failures.length > 0 ? EXIT.failed : EXIT.ok;
  }

  /**
   * The project's output folder name and default parameters. A project whose files are gone or broken can still
   * have its outputs: then its folder name is used, and parameters are compared with the API's defaults.
   */
  private async projectOutputs(): Promise<{ name: string; defaults: Record<string, unknown> }> {
    try {
      const project = await loadProject(this.input, this.projectName);
      return { name: project.name, defaults: projectDefaults(project.config.default_params) };
    } catch (e) {
      if (!(e instanceof ProjectError)) throw e;
      if (!SAFE_NAME.test(this.projectName) || !(await isDirectory(resolve(this.output, this.projectName)))) {
        throw new UsageError(`project "${this.projectName}" is not valid:\n${e.message}`);
      }
      this.warn(
        `project "${this.projectName}" could not be read, so parameters are compared with the API's defaults:\n${e.message}`,
      );
      return { name: this.projectName, defaults: projectDefaults(undefined) };
    }
  }
}
