#!/usr/bin/env bun
/** The `sdx` command line: the only place that touches `process`. */
import { Builtins, Cli } from "clipanion";
import { VERSION } from "../lib/version.ts";
import { EXIT, type SdxContext } from "./base.ts";
import { GalleryCommand } from "./commands/gallery.ts";
import { GenCommand } from "./commands/gen.ts";
import { HealthCommand } from "./commands/health.ts";
import { InitCommand } from "./commands/init.ts";
import { LegacyCommand } from "./commands/legacy.ts";
import { ListCommand } from "./commands/list.ts";
import { ModelsCommand } from "./commands/models.ts";
import { ModelsCatalogCommand } from "./commands/models_catalog.ts";
import { ModelsPullCommand } from "./commands/models_pull.ts";
import { ValidateCommand } from "./commands/validate.ts";

export function createCli(options: { colors?: boolean } = {}): Cli<SdxContext> {
  const cli = new Cli<SdxContext>({
    binaryLabel: "sdx",
    binaryName: "sdx",
    binaryVersion: VERSION,
    enableColors: options.colors ?? false,
  });
  // First, so that `sdx --help` lists every command rather than only the default one.
  cli.register(LegacyCommand);
  cli.register(InitCommand);
  cli.register(ValidateCommand);
  cli.register(ListCommand);
  cli.register(GenCommand);
  cli.register(GalleryCommand);
  cli.register(HealthCommand);
  cli.register(ModelsCommand);
  cli.register(ModelsPullCommand);
  cli.register(ModelsCatalogCommand);
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  return cli;
}

/** Parses and runs; a command line clipanion cannot parse is a usage error (exit 2, message on stderr). */
export async function runCli(argv: string[], context: SdxContext): Promise<number> {
  const cli = createCli({ colors: context.isTTY === true });
  // The option-only form is the default command; plain `sdx`/`sdx --help` still list every command.
  if (argv.length === 0 || (argv.length === 1 && (argv[0] === "--help" || argv[0] === "-h"))) {
    context.stdout.write(cli.usage(null));
    return argv.length === 0 ? EXIT.usage : EXIT.ok;
  }
  try {
    cli.process(argv, context);
  } catch (e) {
    context.stderr.write(
      cli.error(e instanceof Error ? e : new Error(String(e)), { colored: context.isTTY === true }),
    );
    return EXIT.usage;
  }
  return cli.run(argv, context);
}

if (import.meta.main) {
  // Output piped into a reader that stops early (`sdx list … | head`) is not an error.
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });
  // Ctrl-C: the first cancels the running request (finished images stay); a second one exits at once.
  const controller = new AbortController();
  process.on("SIGINT", () => {
    if (controller.signal.aborted) process.exit(EXIT.interrupted);
    // Aborting first stops any progress bars, so the message lands below them.
    controller.abort();
    process.stderr.write("\ninterrupted: cancelling the running request (Ctrl-C again to quit now)\n");
  });
  const code = await runCli(process.argv.slice(2), {
    ...Cli.defaultContext,
    env: process.env,
    signal: controller.signal,
    isTTY: process.stdout.isTTY === true,
    stderrIsTTY: process.stderr.isTTY === true,
    platform: process.platform,
  });
  process.exitCode = code;
}
