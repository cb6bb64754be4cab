#!/usr/bin/env bun
/** The `sdx` command line: the only place that touches `process`. */
import { Builtins, Cli } from "clipanion";
import { VERSION } from "../api/version.ts";
import type { SdxContext } from "./base.ts";
import { GenCommand } from "./commands/gen.ts";
import { HealthCommand } from "./commands/health.ts";
import { ListCommand } from "./commands/list.ts";

export function createCli(): Cli<SdxContext> {
  const cli = new Cli<SdxContext>({ binaryLabel: "sdx", binaryName: "sdx", binaryVersion: VERSION });
  cli.register(ListCommand);
  cli.register(GenCommand);
  cli.register(HealthCommand);
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  return cli;
}

if (import.meta.main) {
  const code = await createCli().run(process.argv.slice(2), { ...Cli.defaultContext, env: process.env });
  process.exitCode = code;
}
