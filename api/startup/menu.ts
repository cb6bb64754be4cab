/**
 * The startup menu of `bun api/index.ts` on a terminal with no --model: the local models (name, kind, size,
 * sidecar description; ones that cannot be loaded shown disabled, with why) and the online catalog's models not
 * installed yet, chosen with the arrow keys (@inquirer/select), or any Hugging Face repository typed in
 * (@inquirer/input). An online choice is downloaded first, with a progress bar. Input and output are injectable,
 * so tests drive it with real keystrokes.
 */
import { Writable } from "node:stream";
import input from "@inquirer/input";
import select, { Separator } from "@inquirer/select";
import { PullNameError, SERVER_DEFAULTS } from "../../contract/index.ts";
import { formatBytes, type ProgressStream, progressView } from "../../lib/terminal/download_progress.ts";
import { MODEL_CATALOG, resolvePullName } from "../engine/hub/catalog.ts";
import { HubError } from "../engine/hub/errors.ts";
import type { HubOptions } from "../engine/hub/hub_api.ts";
import { progressEvent } from "../engine/hub/progress_event.ts";
import { type PullOptions, pullModel } from "../engine/hub/pull.ts";
import { type ModelEntry, scanModelsDir } from "../engine/model_folder.ts";

export interface StartupMenuOptions {
  modelsDir: string;
  hub: HubOptions;
  /** Default: the process's stdin. */
  input?: NodeJS.ReadableStream;
  /** Default: the process's stdout. */
  output?: ProgressStream;
  signal?: AbortSignal;
  /** Download tuning (tests make retries quick). */
  pull?: Pick<PullOptions, "retryDelayMs" | "progressIntervalMs" | "stallTimeoutMs">;
}

/** The user left the menu (Ctrl-C). */
export class MenuCancelled extends Error {
  override name = "MenuCancelled";
}

type MenuPick =
  | { kind: "local"; name: string }
  | { kind: "online"; name: string }
  | { kind: "repository" }
  | { kind: "none" };

const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

function localChoice(e: ModelEntry) {
  const size = formatBytes(e.sizeBytes);
  const label = `${e.name.padEnd(28)} ${(e.kind ?? "?").padEnd(5)} ${e.format.padEnd(11)} ${size.padStart(10)}`;
  return {
    value: { kind: "local", name: e.name } as MenuPick,
    name: label,
    short: e.name,
    ...(e.sidecar?.description ? { description: e.sidecar.description } : {}),
    ...(e.problem !== null ? { disabled: `(cannot be loaded: ${cut(e.problem, 70)})` } : {}),
  };
}

/** The menu's entries: local models, then the catalog's models not installed, then going on without one. */
export function menuChoices(local: ModelEntry[], endpoint: string) {
  const names = new Set(local.map((e) => e.name));
  const online = MODEL_CATALOG.filter((e) => !names.has(e.name));
  return [
    new Separator(local.length > 0 ? "── Local models ──" : "── No local models yet ──"),
    ...local.map(localChoice),
    new Separator(`── Download from ${new URL(endpoint).host} ──`),
    ...online.map((e) => ({
      value: { kind: "online", name: e.name } as MenuPick,
      name: `${e.name.padEnd(28)} ${e.kind.padEnd(5)} ${"onnx".padEnd(11)} ${`~${formatBytes(e.approxBytes)}`.padStart(10)}`,
      short: e.name,
      description: `${e.description} From ${e.repo}${e.revision === "main" ? "" : `@${e.revision}`}.`,
    })),
    {
      value: { kind: "repository" } as MenuPick,
      name: "Another repository…",
      description:
        "Type a Hugging Face repository holding an ONNX Stable Diffusion export: org/name, or org/name@revision.",
    },
    new Separator(" "),
    {
      value: { kind: "none" } as MenuPick,
      name: "Continue without choosing",
      description:
        "The server serves the only loadable model if there is one; otherwise it starts with no model and /health says how to pick one.",
    },
  ];
}

/**
 * The prompt's output: inquirer ends the stream it is given when the prompt is done, so it gets one that writes
 * through to `output` at once (keeping order with what follows) and never ends it.
 */
function promptOutput(output: ProgressStream): Writable {
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      output.write(chunk);
      callback();
    },
  });
  Object.defineProperty(stream, "isTTY", { get: () => output.isTTY });
  Object.defineProperty(stream, "columns", { get: () => output.columns });
  return stream;
}

/**
 * Shows the menu until a model is ready: the chosen local model's name, an online model's once downloaded, or
 * null to go on without choosing. A failed download is reported and the menu comes back. MenuCancelled on Ctrl-C.
 */
export async function startupMenu(options: StartupMenuOptions): Promise<string | null> {
  const output = options.output ?? (process.stdout as ProgressStream);
  const context = () => ({
    ...(options.input ? { input: options.input } : {}),
    output: promptOutput(output),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const endpoint = options.hub.endpoint || SERVER_DEFAULTS.hubEndpoint;
  while (true) {
    const local = await scanModelsDir(options.modelsDir);
    const firstLoadable = local.find((e) => e.problem === null);
    const choices = menuChoices(local, endpoint);
    let picked: MenuPick;
    let repository = "";
    try {
      picked = await select<MenuPick>(
        {
          message: `Which model should sdx serve? (models in ${options.modelsDir})`,
          choices,
          pageSize: 16,
          loop: false,
          ...(firstLoadable
            ? {
                default: choices.find(
                  (c): c is ReturnType<typeof localChoice> =>
                    !(c instanceof Separator) &&
                    c.value.kind === "local" &&
                    c.value.name === firstLoadable.name,
                )?.value,
              }
            : {}),
        },
        context(),
      );
      if (picked.kind === "repository") {
        repository = await input(
          {
            message: "Repository (org/name or org/name@revision, empty to go back):",
            validate: (text) => {
              if (text.trim() === "") return true;
              try {
                const { destination } = resolvePullName(text.trim());
                if (destination.type !== "model")
                  return `${text.trim()} is a preview decoder, not a model to serve: \`sdx models pull ${text.trim()}\` fetches it`;
                return true;
              } catch (e) {
                if (e instanceof PullNameError) return e.message;
                throw e;
              }
            },
          },
          context(),
        );
        repository = repository.trim();
        if (repository === "") continue;
      }
    } catch (e) {
      const name = (e as Error).name;
      if (name === "ExitPromptError" || name === "AbortPromptError")
        throw new MenuCancelled("menu cancelled");
      throw e;
    }
    if (picked.kind === "none") return null;
    if (picked.kind === "local") return picked.name;

    const name = picked.kind === "repository" ? repository : picked.name;
    const target = resolvePullName(name);
    output.write(`Downloading ${target.folder} from ${target.repo} into ${options.modelsDir}\n`);
    const view = progressView(output);
    try {
      const result = await pullModel(target, {
        ...options.hub,
        ...options.pull,
        modelsDir: options.modelsDir,
        onProgress: (p) => view.update(progressEvent(p)),
        ...(options.signal ? { signal: options.signal } : {}),
      });
      view.stop();
      output.write(
        `Downloaded ${result.name}: ${result.files} files, ${formatBytes(result.bytes)}${result.resumedBytes > 0 ? ` (${formatBytes(result.resumedBytes)} resumed)` : ""}\n`,
      );
      const problem = result.entry?.problem ?? null;
      if (problem === null) return result.name;
      output.write(`${result.name} cannot be loaded: ${problem}\n`);
    } catch (e) {
      view.stop();
      if (options.signal?.aborted) throw new MenuCancelled("download cancelled");
      if (!(e instanceof HubError)) throw e;
      if (e.kind === "exists") return target.folder;
      output.write(`Download failed: ${e.message}\n`);
    }
  }
}
