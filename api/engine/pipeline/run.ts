/** Which pipeline kind a generation runs: hires fix, inpainting, image-to-image or text-to-image. */
import { createPreviewer } from "../previews/preview.ts";
import { generateHires } from "./hires.ts";
import { generateFromImage } from "./image_to_image.ts";
import { generateInpainting } from "./inpaint.ts";
import { generate } from "./text_to_image.ts";
import type { GenerateHooks, GenerateInput, GenerateOutput, PipelineComponents } from "./types.ts";

export async function runPipeline(
  components: PipelineComponents,
  input: GenerateInput,
  hooks: GenerateHooks = {},
): Promise<GenerateOutput> {
  const withPreviews = input.preview
    ? { ...hooks, previews: await createPreviewer(components, input.preview) }
    : hooks;
  if (input.hires) return generateHires(components, input, withPreviews);
  if (input.image?.mask) return generateInpainting(components, input, withPreviews);
  if (input.image) return generateFromImage(components, input, withPreviews);
  return generate(components, input, withPreviews);
}
