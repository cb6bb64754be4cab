/**
 * Weight residency (api/engine/checkpoint/weight_residency.ts): which UNet layers run at which resolution, which weights a
 * "lean" graph keeps as float16, and that lean graphs compute what folded ones do.
 */
import { describe, expect, test } from "bun:test";
import { link, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildClipGraph, detectClip } from "../../api/engine/checkpoint/clip_graph.ts";
import { UNET_PREFIX } from "../../api/engine/checkpoint/keys.ts";
import { PRESETS, unetTensors } from "../../api/engine/checkpoint/ldm_layout.ts";
import { buildUNetGraph, detectUNet } from "../../api/engine/checkpoint/unet_graph.ts";
import {
  residencyForProvider,
  textEncoderKeepStored,
  unetKeepStored,
  unetLevelOf,
} from "../../api/engine/checkpoint/weight_residency.ts";
import { CheckpointWeights } from "../../api/engine/checkpoint/weights.ts";
import { GraphBuilder } from "../../api/engine/onnx/graph_builder.ts";
import { OnnxModel } from "../../api/engine/onnx/runtime.ts";
import { readSafetensorsHeader, type SafetensorsHeader } from "../../api/engine/safetensors.ts";

const FIXTURE = join(import.meta.dir, "../fixtures/checkpoints/tiny_sd15.safetensors");

/** A header with the full-size SD 1.5 UNet's keys and shapes (no file behind it: only shapes are read). */
function sd15Header(): SafetensorsHeader {
  const tensors = new Map();
  for (const t of unetTensors(PRESETS.sd15.unet)) {
    tensors.set(t.key, { dtype: "F16", shape: t.shape, begin: 0, end: 0 });
  }
  return { path: "sd15-shapes", tensors, metadata: {}, dataOffset: 0 };
}

const count = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

describe("the resolution level of each UNet layer", () => {
  const header = sd15Header();
  const config = detectUNet(new CheckpointWeights(header, "x"), UNET_PREFIX);
  const level = (key: string) => unetLevelOf(config, key);

  test("input blocks: conv_in and the first level at 0, a Downsample's conv at the level it produces", () => {
    expect(level("input_blocks.0.0.weight")).toBe(0);
    expect(level("input_blocks.1.0.in_layers.2.weight")).toBe(0);
    expect(level("input_blocks.2.1.transformer_blocks.0.attn1.to_q.weight")).toBe(0);
    expect(level("input_blocks.3.0.op.weight")).toBe(1);
    expect(level("input_blocks.4.0.in_layers.2.weight")).toBe(1);
    expect(level("input_blocks.6.0.op.weight")).toBe(2);
    expect(level("input_blocks.11.0.out_layers.3.weight")).toBe(3);
    expect(level("middle_block.1.proj_in.weight")).toBe(3);
  });

  test("output blocks: deepest level first, an Upsample's conv at the level above", () => {
    expect(level("output_blocks.0.0.in_layers.2.weight")).toBe(3);
    expect(level("output_blocks.2.1.conv.weight")).toBe(2); // level 3's Upsample
    expect(level("output_blocks.3.1.proj_in.weight")).toBe(2);
    expect(level("output_blocks.5.2.conv.weight")).toBe(1); // level 2's Upsample, after its transformer
    expect(level("output_blocks.8.2.conv.weight")).toBe(0);
    expect(level("output_blocks.11.1.proj_out.weight")).toBe(0);
    expect(level("out.2.weight")).toBe(0);
    expect(level("time_embed.0.weight")).toBeNull();
  });

  test("lean keeps 83 % of SD 1.5's UNet parameters as float16: every layer below the two highest resolutions", () => {
    const keep = unetKeepStored(config, "lean");
    if (!keep) throw new Error("lean keeps weights stored");
    let kept = 0;
    let total = 0;
    for (const [key, info] of header.tensors) {
      total += count(info.shape);
      if (keep(key)) kept += count(info.shape);
    }
    expect(total).toBe(859_520_964);
    // Levels 0 and 1 (64² and 32² latents at 512²): 148.65 M parameters folded.
    expect(total - kept).toBe(148_650_564);
    expect(keep(`${UNET_PREFIX}output_blocks.5.2.conv.weight`)).toBe(false);
    expect(keep(`${UNET_PREFIX}input_blocks.6.0.op.weight`)).toBe(true);
    expect(keep(`${UNET_PREFIX}time_embed.0.weight`)).toBe(true);
    expect(unetKeepStored(config, "folded")).toBeNull();
  });

  test("the CPU gets lean graphs, GPUs folded ones", () => {
    expect(residencyForProvider("cpu")).toBe("lean");
    expect(residencyForProvider("cuda")).toBe("folded");
    expect(residencyForProvider("webgpu")).toBe("folded");
  });
});

describe("lean graphs", () => {
  test("declare the weights they keep as graph inputs, listed after the real ones, and run them first", () => {
    const g = new GraphBuilder("t");
    const x = g.input("x", "float32", [2]);
    const stored = g.external(
      { location: "w.bin", offset: 0, length: 4, type: "float16", dims: [2] },
      "w",
      true,
    );
    const y = g.node("Add", [x, x]);
    const cast = g.node("Cast", [stored], { to: 1 });
    g.output(g.node("Mul", [y, cast]), "out", "float32", [2]);
    const text = new TextDecoder("latin1").decode(g.toBytes());
    // The weight's Cast is listed before the Add although it was built after it.
    expect(text.indexOf("Cast_node")).toBeLessThan(text.indexOf("Add_node"));
    // "w" appears as an initializer and again as a graph input (after "x").
    expect(text.lastIndexOf("\u0001w")).toBeGreaterThan(text.indexOf("\u0001x"));
  });

  test("compute the folded graphs' outputs (tiny SD 1.5: text encoder and UNet), with only the real inputs", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdx-residency-"));
    try {
      await link(FIXTURE, join(dir, "weights.safetensors"));
      const header = await readSafetensorsHeader(join(dir, "weights.safetensors"));
      const weights = new CheckpointWeights(header, "weights.safetensors");
      const clip = detectClip(weights, "cond_stage_model.transformer.text_model.");
      const unet = detectUNet(weights, UNET_PREFIX);
      const graphs = {
        text_folded: buildClipGraph(weights, clip),
        text_lean: buildClipGraph(weights.withKeepStored(textEncoderKeepStored("lean")), clip),
        unet_folded: buildUNetGraph(weights, unet, { attention: "fused" }),
        unet_lean: buildUNetGraph(weights.withKeepStored(unetKeepStored(unet, "lean")), unet, {
          attention: "fused",
        }),
      };
      // A weight is named by its initializer and its Cast's input; a kept one once more, as a graph input.
      const mentions = (graph: GraphBuilder, key: string) =>
        new TextDecoder("latin1").decode(graph.toBytes()).split(key).length - 1;
      const deep = `${UNET_PREFIX}middle_block.0.in_layers.2.weight`;
      const high = `${UNET_PREFIX}input_blocks.1.0.in_layers.2.weight`;
      expect([mentions(graphs.unet_folded, deep), mentions(graphs.unet_lean, deep)]).toEqual([2, 3]);
      expect([mentions(graphs.unet_folded, high), mentions(graphs.unet_lean, high)]).toEqual([2, 2]);
      const token = "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight";
      expect([mentions(graphs.text_folded, token), mentions(graphs.text_lean, token)]).toEqual([2, 3]);
      const outputs: Record<string, Float32Array> = {};
      for (const [name, graph] of Object.entries(graphs)) {
        const path = join(dir, `${name}.onnx`);
        await Bun.write(path, graph.toBytes());
        const model = await OnnxModel.load(path, { provider: "cpu" });
        try {
          if (name.startsWith("text")) {
            expect([...model.inputs.keys()]).toEqual(["input_ids"]);
            const ids = Int32Array.from({ length: 77 }, (_, i) =>
              i === 0 ? 49406 : i < 6 ? 320 + i : 49407,
            );
            const out = await model.run({ input_ids: { data: ids, dims: [1, 77] } }, ["last_hidden_state"]);
            outputs[name] = out.last_hidden_state?.data as Float32Array;
          } else {
            expect([...model.inputs.keys()].sort()).toEqual(["encoder_hidden_states", "sample", "timestep"]);
            const sample = Float32Array.from({ length: 2 * 4 * 16 * 16 }, (_, i) => Math.sin(i * 0.37));
            const context = Float32Array.from({ length: 2 * 77 * (unet.contextDim ?? 1) }, (_, i) =>
              Math.cos(i * 0.11),
            );
            const out = await model.run(
              {
                sample: { data: sample, dims: [2, 4, 16, 16] },
                timestep: { data: [500], dims: [] },
                encoder_hidden_states: { data: context, dims: [2, 77, unet.contextDim ?? 1] },
              },
              ["out_sample"],
            );
            outputs[name] = out.out_sample?.data as Float32Array;
          }
        } finally {
          await model.release();
        }
      }
      for (const part of ["text", "unet"]) {
        const folded = outputs[`${part}_folded`] as Float32Array;
        const lean = outputs[`${part}_lean`] as Float32Array;
        expect(lean.length).toBe(folded.length);
        let diff = 0;
        let scale = 0;
        for (let i = 0; i < folded.length; i++) {
          diff = Math.max(diff, Math.abs((folded[i] as number) - (lean[i] as number)));
          scale = Math.max(scale, Math.abs(folded[i] as number));
        }
        // The same float16 values cast to float32 either way: only the kernels' summation order differs.
        expect(diff).toBeLessThan(1e-5 * Math.max(1, scale));
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
