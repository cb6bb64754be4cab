/** `bun run bench <name> [options]`: the benchmarks, each printing its figures as one table. */
import { benchCpu } from "./cpu.ts";
import { benchEngine } from "./engine.ts";
import { benchGpu } from "./gpu.ts";
import { benchLoad } from "./load.ts";
import { benchLora } from "./lora.ts";
import { benchPreviews } from "./previews.ts";
import { benchServe } from "./serve.ts";
import { benchTaesd } from "./taesd.ts";

const BENCHMARKS: Record<string, (argv: string[]) => Promise<void>> = {
  cpu: benchCpu,
  engine: benchEngine,
  gpu: benchGpu,
  load: benchLoad,
  lora: benchLora,
  previews: benchPreviews,
  serve: benchServe,
  taesd: benchTaesd,
};

const [name, ...rest] = process.argv.slice(2);
const run = name ? BENCHMARKS[name] : undefined;
if (!run) {
  console.error(`usage: bun run bench <${Object.keys(BENCHMARKS).join("|")}> [options]`);
  process.exit(2);
}
await run(rest);
