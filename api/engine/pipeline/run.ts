/** Which pipeline kind a generation runs: hires fix, inpainting, image-to-image or text-to-image. */
import { generateHires } from "./hires.ts";
import { generateFromImage } from "./image_to_image.ts";
import { generateInpainting } from "./inpaint.ts";
import { generate } from "./text_to_image.ts";
import type { GenerateHooks, GenerateInput, GenerateOutput, PipelineComponents } from "./types.ts";

export function runPipeline(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  if (input.hires) return generateHires(components, input, hooks);
  if (input.image?.mask) return generateInpainting(components, input, hooks);
  if (input.image) return generateFromImage(components, input, hooks);
  return generate(components, input, hooks);
}
