import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { Command, Option, UsageError } from "clipanion";
import { DEFAULT_SERVER_URL, SAFE_NAME } from "../../contract/index.ts";
import { FileExistsError, writeFileAtomic } from "../../lib/fs/atomic.ts";
import { SdxCommand } from "../base.ts";
import { configTemplate, promptsTemplate } from "../templates.ts";

export class InitCommand extends SdxCommand {
  static override paths = [["init"]];
  static override usage = Command.Usage({
    description: "Create a project with commented example config.yaml and prompts.yaml",
    details: `
      Writes \`<input>/<name>/config.yaml\` and \`prompts.yaml\`; existing files are never replaced. The server URL
      written is \`--server\`, else ${DEFAULT_SERVER_URL}.
    `,
    examples: [
      ["A new project in ./projects/demo", "sdx init demo"],
      [
        "Against another server, in another folder",
        "sdx init demo --server http://gpu:8001 --input ~/sd/projects",
      ],
    ],
  });

  name = Option.String({ name: "name" });

  async execute(): Promise<number> {
    if (!SAFE_NAME.test(this.name)) {
      throw new UsageError(
        `project names are letters, digits, '.', '-' and '_' (no path), not "${this.name}"`,
      );
    }
    if (this.server !== undefined && !/^https?:\/\/[^/]/.test(this.server)) {
      throw new UsageError(`--server must be an http(s) URL, not "${this.server}"`);
    }
    const dir = join(this.input, this.name);
    await mkdir(dir, { recursive: true });
    const files = [
      [join(dir, "config.yaml"), configTemplate(this.name, this.server ?? DEFAULT_SERVER_URL)],
      [join(dir, "prompts.yaml"), promptsTemplate()],
    ] as const;
    for (const [path] of files) {
      if (await Bun.file(path).exists()) throw new UsageError(`${path} exists; nothing was written`);
    }
    try {
      for (const [path, text] of files) await writeFileAtomic(path, text, { createOnly: true });
    } catch (e) {
      if (e instanceof FileExistsError) throw new UsageError(`${e.message}; nothing was overwritten`);
      throw e;
    }
    if (this.json) this.printJson({ project: this.name, dir, files: files.map(([p]) => p) });
    else {
      this.print(`created ${dir}/config.yaml and prompts.yaml`);
      this.print(
        `next: sdx list --project ${this.name}${this.input === "projects" ? "" : ` --input ${this.input}`}`,
      );
    }
    return 0;
  }
}
