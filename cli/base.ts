/** Options every project command shares, and the conversions of errors into what a user should read. */
import { type BaseContext, Command, Option, UsageError } from "clipanion";
import { createSdxClient, type SdxClient, SdxError } from "../sdk/index.ts";
import { loadProject, type Project, ProjectError } from "./project.ts";

export interface SdxContext extends BaseContext {
  env: Record<string, string | undefined>;
}

export abstract class SdxCommand extends Command<SdxContext> {
  input = Option.String("--input", "projects", { description: "Projects folder (default: projects)" });
  output = Option.String("--output", "outputs", { description: "Outputs folder (default: outputs)" });
  server = Option.String("--server", { description: "Server URL; overrides the project's server_url" });
  apiKey = Option.String("--api-key", { description: "API key sent as a bearer token (env SDX_API_KEY)" });
  json = Option.Boolean("--json", false, { description: "Print machine-readable JSON" });

  protected async project(name: string): Promise<Project> {
    try {
      return await loadProject(this.input, name);
    } catch (e) {
      if (e instanceof ProjectError) throw new UsageError(`project "${name}" is not valid:\n${e.message}`);
      throw e;
    }
  }

  protected client(serverUrl: string | undefined): SdxClient {
    const baseUrl = this.server ?? serverUrl;
    if (!baseUrl)
      throw new UsageError("no server: pass --server URL or run inside a project with server_url");
    const apiKey = this.apiKey ?? this.context.env.SDX_API_KEY;
    return createSdxClient({ baseUrl, ...(apiKey ? { apiKey } : {}) });
  }

  protected print(text: string): void {
    this.context.stdout.write(`${text}\n`);
  }

  protected printJson(value: unknown): void {
    this.context.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** A server error as the user should see it: status, message and each rejected field. */
  protected describeError(e: SdxError): string {
    // The message already lists allowed values where the server gave them.
    const fields = e.fields.map((f: SdxError["fields"][number]) => `\n  ${f.field}: ${f.message}`);
    const status = e.status === 0 ? "" : ` ${e.status}`;
    return `server error${status} (${e.code}): ${e.message}${fields.join("")}`;
  }
}

export { SdxError };
