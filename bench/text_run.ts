/**
 * The text-to-image run the engine and previews benchmarks time: their shared options
 * (`--model DIR --size 512 --steps N --scheduler NAME --runs 2 --provider cpu|cuda`), the loaded model and the
 * generation they describe (one image, a fixed prompt and seed, CFG at sdx's default).
 */
import { parseArgs } from "node:util";
import { inspectModelFolder } from "../api/engine/model_folder.ts";
import { loadOnnxPipeline } from "../api/engine/pipeline/load.ts";
import type { GenerateInput, PipelineComponents } from "../api/engine/pipeline/types.ts";
import { type ExecutionProvider, GENERATE_DEFAULTS, isSchedulerName } from "../contract/index.ts";
import { TINY_SD15 } from "../test/helpers/fixtures.ts";

export interface TextRun {
  /** The model folder's path. */
  path: string;
  pipeline: PipelineComponents;
  provider: ExecutionProvider;
  input: GenerateInput;
  runs: number;
}

export async function textRun(argv: string[], defaults: { steps: number }): Promise<TextRun> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: "string", default: TINY_SD15 },
      size: { type: "string", default: "512" },
      steps: { type: "string", default: String(defaults.steps) },
      scheduler: { type: "string", default: GENERATE_DEFAULTS.scheduler_type },
      runs: { type: "string", default: "2" },
      provider: { type: "string", default: "cpu" },
    },
  });
  const size = Number(values.size);
  const scheduler = values.scheduler;
  if (!isSchedulerName(scheduler)) throw new Error(`unknown scheduler ${scheduler}`);
  const provider = values.provider === "cuda" ? "cuda" : "cpu";
  const entry = await inspectModelFolder("bench", values.model);
  return {
    path: entry.path,
    pipeline: await loadOnnxPipeline(entry, provider),
    provider,
    runs: Number(values.runs),
    input: {
      prompt: "a lighthouse on a rocky coast at dawn, dramatic clouds, oil painting",
      negativePrompt: "blurry, low quality",
      promptSyntax: GENERATE_DEFAULTS.prompt_syntax,
      seeds: [42],
      width: size,
      height: size,
      numSteps: Number(values.steps),
      guidanceScale: GENERATE_DEFAULTS.guidance_scale,
      scheduler,
      schedulerOptions: {},
      clipSkip: GENERATE_DEFAULTS.clip_skip,
      vaeSlicing: false,
      vaeTiling: false,
    },
  };
}
