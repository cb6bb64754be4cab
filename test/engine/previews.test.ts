/**
 * Live previews in the engine: the approx projection is ComfyUI's formula on a hand-made latent, a previewer is
 * due after every n-th step and the last, the hires fix numbers its previews over both passes, and inpainting with
 * a 4-channel model previews the latents after its blend.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { inspectModelFolder } from "../../api/engine/model_folder.ts";
import { inpaintToLatents } from "../../api/engine/pipeline/inpaint.ts";
import { loadOnnxPipeline, releasePipeline } from "../../api/engine/pipeline/load.ts";
import { runPipeline } from "../../api/engine/pipeline/run.ts";
import type {
  GenerateInput,
  PipelineComponents,
  Previewer,
  StepEvent,
} from "../../api/engine/pipeline/types.ts";
import { type ApproxFactors, approxRgb, SD_APPROX, SDXL_APPROX } from "../../api/engine/previews/approx.ts";
import { createPreviewer } from "../../api/engine/previews/preview.ts";
import { pixels, TINY_SD15 } from "../helpers/fixtures.ts";

/** ComfyUI's Latent2RGB for one latent cell, written out: round((clamp(z·F + b, −1, 1) + 1) · 127.5). */
function expected(z: number[], f: ApproxFactors): number[] {
  return [0, 1, 2].map((k) => {
    let v = f.bias[k] as number;
    for (let c = 0; c < 4; c++) v += (z[c] as number) * ((f.factors[c] as readonly number[])[k] as number);
    const x = (Math.min(1, Math.max(-1, v)) + 1) * 127.5;
    const r = Math.round(x);
    return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
  });
}

/** A 2 × 3 latent, channel-major: ordinary values, zeros (mid-gray, a rounding tie) and values that clamp. */
const CELLS: number[][] = [
  [0.5, -0.25, 1.0, 0.1],
  [0, 0, 0, 0],
  [4, 4, 4, -4],
  [-4, -4, -4, 4],
  [-0.7, 0.3, -0.2, 0.9],
  [1.2, -1.1, 0.05, -0.33],
];

function latentOf(cells: number[][]): Float32Array {
  const plane = cells.length;
  const z = new Float32Array(4 * plane);
  for (const [p, cell] of cells.entries()) for (let c = 0; c < 4; c++) z[c * plane + p] = cell[c] as number;
  return z;
}

describe("approx", () => {
  test("ComfyUI's SD15 factors, no bias, and SDXL's with bias (comfy/latent_formats.py)", () => {
    expect(SD_APPROX.factors[0]).toEqual([0.3512, 0.2297, 0.3227]);
    expect(SD_APPROX.factors[3]).toEqual([-0.212, -0.2616, -0.7177]);
    expect(SD_APPROX.bias).toEqual([0, 0, 0]);
    expect(SDXL_APPROX.factors[0]).toEqual([0.3651, 0.4232, 0.4341]);
    expect(SDXL_APPROX.bias).toEqual([0.1084, -0.0175, -0.0011]);
  });

  for (const [family, factors] of [
    ["SD 1.x/2.x", SD_APPROX],
    ["SDXL", SDXL_APPROX],
  ] as const) {
    test(`${family}: each pixel is the formula of its latent cell, at latent size`, () => {
      const z = latentOf(CELLS);
      // Stored with float32 precision, as the latents are.
      const cells = CELLS.map((_, p) => [0, 1, 2, 3].map((c) => z[c * CELLS.length + p] as number));
      const rgb = approxRgb(z, 2, 3, factors);
      expect({ width: rgb.width, height: rgb.height }).toEqual({ width: 3, height: 2 });
      expect([...rgb.data]).toEqual(cells.flatMap((cell) => expected(cell, factors)));
    });
  }

  test("zero latents are mid-gray (127.5 rounds half to even: 128), saturated ones black and white", () => {
    const rgb = approxRgb(latentOf(CELLS), 2, 3, SD_APPROX);
    expect([...rgb.data.subarray(3, 6)]).toEqual([128, 128, 128]);
    expect([...rgb.data.subarray(6, 9)]).toEqual([255, 255, 255]);
    expect([...rgb.data.subarray(9, 12)]).toEqual([0, 0, 0]);
  });
});

describe("previewer", () => {
  test("due after every n-th step and the last: steps 5, every 2 → 2, 4, 5", async () => {
    const previewer = await createPreviewer({ xl: null }, { every: 2, method: "approx", decoderPath: null });
    const due = [1, 2, 3, 4, 5].filter((step) => previewer.due({ step, total: 5, timestep: 0 }));
    expect(due).toEqual([2, 4, 5]);
  });

  test("one PNG per image, the approx pixels at latent size", async () => {
    const previewer = await createPreviewer({ xl: null }, { every: 1, method: "approx", decoderPath: null });
    const a = latentOf(CELLS);
    const b = a.map((v) => -v);
    const previews = await previewer.make([a, b], 2, 3);
    expect(previews.map((p) => [p.image, p.width, p.height])).toEqual([
      [0, 3, 2],
      [1, 3, 2],
    ]);
    for (const [i, z] of [a, b].entries()) {
      const png = await pixels((previews[i] as { png: Uint8Array }).png);
      expect(png.data).toEqual(approxRgb(z, 2, 3, SD_APPROX).data);
    }
  });
});

describe("in the pipeline", () => {
  let pipeline: PipelineComponents;
  beforeAll(async () => {
    pipeline = await loadOnnxPipeline(await inspectModelFolder("tiny_sd15", TINY_SD15), "cpu");
  });
  afterAll(async () => {
    await releasePipeline(pipeline);
  });

  const base: GenerateInput = {
    prompt: "a lighthouse at dawn",
    negativePrompt: null,
    promptSyntax: "a1111",
    seeds: [3],
    width: 64,
    height: 64,
    numSteps: 3,
    guidanceScale: 5,
    scheduler: "euler",
    schedulerOptions: {},
    clipSkip: 1,
    vaeSlicing: false,
    vaeTiling: false,
  };

  test("the hires fix previews over both passes, each at its own latent size", async () => {
    const events: StepEvent[] = [];
    const input: GenerateInput = {
      ...base,
      hires: { upscaler: "latent", width: 128, height: 128, strength: 0.5, steps: 4 },
      preview: { every: 2, method: "approx", decoderPath: null },
    };
    const out = await runPipeline(pipeline, input, { onStep: (e) => events.push(e) });
    // 3 first-pass steps, then int(4 · 0.5) = 2 of the second pass: 5 in all.
    expect(events.map((e) => [e.step, e.total])).toEqual([
      [1, 5],
      [2, 5],
      [3, 5],
      [4, 5],
      [5, 5],
    ]);
    const previews = events.filter((e) => e.previews).map((e) => [e.step, e.previews?.[0]?.width]);
    expect(previews).toEqual([
      [2, 8],
      [4, 16],
      [5, 16],
    ]);
    const plain = await runPipeline(pipeline, { ...input, preview: null });
    expect(out.images[0]?.png).toEqual(plain.images[0]?.png as Uint8Array);
  });

  test("inpainting with a 4-channel model previews the latents after its blend", async () => {
    const seen: Float32Array[][] = [];
    const recorder: Previewer = {
      due: () => true,
      make: async (latents) => {
        seen.push(latents.map((z) => z.slice()));
        return [];
      },
    };
    const rgb = new Uint8Array(3 * 64 * 64).fill(90);
    const mask = new Uint8Array(64 * 64).map((_, i) => (i % 64 < 32 ? 255 : 0));
    const run = await inpaintToLatents(
      pipeline,
      { ...base, numSteps: 4 },
      { rgb, mask, strength: 0.75, maskedContent: "original", overlay: null },
      { previews: recorder },
    );
    expect(seen).toHaveLength(run.timesteps.length);
    // The last step's blend puts the kept half back to the picture's clean latents: what the loop returns.
    expect(seen.at(-1)?.[0]).toEqual(run.latents[0] as Float32Array);
  });
});
