/** Options every project command shares, and the conversions of errors into what a user should read. */
import { type BaseContext, Command, Option, UsageError } from "clipanion";
import { DEFAULT_SERVER_URL } from "../contract/index.ts";
import { createSdxClient, type SdxClient, SdxError } from "../sdk/index.ts";
import { loadProject, type Project, ProjectError } from "./project.ts";

export interface SdxContext extends BaseContext {
  env: Record<string, string | undefined>;
  /** Aborted on Ctrl-C: the running request is cancelled and finished images stay. */
  signal?: AbortSignal;
  /** Whether stdout is a terminal: `sdx gen` then draws progress bars there. */
  isTTY?: boolean;
  /** Whether stderr is a terminal too: warnings are then drawn above the bars instead of across them. */
  stderrIsTTY?: boolean;
  /** `process.platform`: how `sdx gallery --open` opens a browser. */
  platform?: string;
}

/** Exit codes: 0 all images made, 1 some failed, 2 usage or config error, 3 server unreachable, 130 interrupted. */
export const EXIT = { ok: 0, failed: 1, usage: 2, unreachable: 3, interrupted: 130 } as const;

/** Thrown when the sdx server cannot be reached at all; exits 3. */
export class UnreachableError extends Error {
  override name = "UnreachableError";
}

export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return EXIT.usage;
  if (error instanceof UnreachableError) return EXIT.unreachable;
  if (error instanceof SdxError && error.status === 0) return EXIT.unreachable;
  return EXIT.failed;
}

export abstract class SdxCommand extends Command<SdxContext> {
  input = Option.String("--input", "projects", { description: "Projects folder (default: projects)" });
  output = Option.String("--output", "outputs", { description: "Outputs folder (default: outputs)" });
  server = Option.String("--server", { description: "Server URL; overrides the project's server_url" });
  apiKey = Option.String("--api-key", { description: "API key sent as a bearer token (env SDX_API_KEY)" });
  json = Option.Boolean("--json", false, { description: "Print machine-readable JSON" });

  /** Errors become a message on stderr and an exit code (see EXIT) instead of clipanion's 1 on stdout. */
  override async validateAndExecute(): Promise<number> {
    try {
      return await super.validateAndExecute();
    } catch (e) {
      const error = e instanceof SdxError && e.status === 0 ? new UnreachableError(e.message) : e;
      const text =
        error instanceof UnreachableError || error instanceof SdxError
          ? `${error instanceof SdxError ? this.describeError(error) : error.message}\n`
          : this.cli.error(error instanceof Error ? error : new Error(String(error)), { command: this });
      this.context.stderr.write(text);
      return exitCodeFor(error);
    }
  }

  protected async project(name: string): Promise<Project> {
    try {
      return await loadProject(this.input, name);
    } catch (e) {
      if (e instanceof ProjectError) throw new UsageError(`project "${name}" is not valid:\n${e.message}`);
      throw e;
    }
  }

  /** The client of the project's server (`--project`), of `--server`, or of a server here at the default address. */
  protected async serverClient(projectName: string | undefined): Promise<SdxClient> {
    const serverUrl = projectName ? (await this.project(projectName)).config.server_url : undefined;
    return this.client(serverUrl ?? (this.server ? undefined : DEFAULT_SERVER_URL));
  }

  protected client(serverUrl: string | undefined): SdxClient {
    const baseUrl = this.server ?? serverUrl;
    if (!baseUrl)
      throw new UsageError("no server: pass --server URL or run inside a project with server_url");
    if (!/^https?:\/\/[^/]/.test(baseUrl))
      throw new UsageError(`--server must be an http(s) URL, not "${baseUrl}"`);
    const apiKey = this.apiKey ?? this.context.env.SDX_API_KEY;
    return createSdxClient({ baseUrl, ...(apiKey ? { apiKey } : {}) });
  }

  protected print(text: string): void {
    this.context.stdout.write(`${text}\n`);
  }

  protected warn(text: string): void {
    this.context.stderr.write(`${text}\n`);
  }

  protected printJson(value: unknown): void {
    this.context.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
  }

  /** One compact JSON object per line (`--json` output of long runs). */
  protected printJsonLine(value: unknown): void {
    this.context.stdout.write(`${JSON.stringify(value)}\n`);
  }

  /** A server error as the user should see it: status, message and each rejected field. */
  protected describeError(e: SdxError): string {
    return describeSdxError(e);
  }
}

/** A server error as the user should see it: status, message and each rejected field. */
export function describeSdxError(e: SdxError): string {
  // The message already lists allowed values where the server gave them.
  const fields = e.fields.map((f: SdxError["fields"][number]) => `\n  ${f.field}: ${f.message}`);
  const status = e.status === 0 ? "" : ` ${e.status}`;
  return `server error${status} (${e.code}): ${e.message}${fields.join("")}`;
}

export { SdxError };
