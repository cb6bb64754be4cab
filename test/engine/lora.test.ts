/**
 * api/engine/adapters/lora.ts and layers.ts: every fixture LoRA file's header (format, family, rank, modules),
 * the checkpoint layers each module targets (adapter_files.json, incl. OpenCLIP's fused q/k/v rows), the merged
 * weights against diffusers' own merged tensors (case tensors) and against a plain re-computation of the
 * reference formula, the layer map on full-size SD 1.5 / SD 2.1 / SDXL key sets, and the errors.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { layerNames } from "../../api/engine/adapters/layers.ts";
import { inspectLora, type LoraInput, loraFactors, loraOverrides } from "../../api/engine/adapters/lora.ts";
import { AdapterError } from "../../api/engine/adapters/types.ts";
import { ldmTensors, PRESETS } from "../../api/engine/checkpoint/ldm_layout.ts";
import {
  loadSafetensors,
  readSafetensorsHeader,
  readTensorAsFloat32,
  type SafetensorsHeader,
  type TensorInfo,
} from "../../api/engine/safetensors.ts";
import type { ModelKind } from "../../contract/index.ts";
import { parsePythonJson } from "../helpers/scheduler_fixtures.ts";

const FIXTURES = join(import.meta.dir, "../fixtures");
const LORAS = join(FIXTURES, "adapters/loras");
const CHECKPOINTS = { sd1: "tiny_sd15", sdxl: "tiny_sdxl" } as const;

interface ModuleEntry {
  key: string;
  component: string;
  module: string;
  weight_shape: number[];
  rank: number;
  alpha: number | null;
  kind: string;
  single_file_weight: { ldm_key: string; rows: [number, number] | null };
}
interface LoraEntry {
  file: string;
  format: "kohya" | "peft";
  arch: "sd15" | "sdxl";
  rank: number;
  num_modules: number;
  modules: ModuleEntry[];
}

const suites = ["lora_sd15", "lora_sdxl"] as const;
const files = new Map<string, LoraEntry & { kind: "sd1" | "sdxl" }>();
for (const suite of suites) {
  const json = (await Bun.file(join(FIXTURES, "cases", suite, "adapter_files.json")).json()) as {
    loras: Record<string, LoraEntry>;
  };
  for (const [name, entry] of Object.entries(json.loras))
    files.set(name, { ...entry, kind: entry.arch === "sd15" ? "sd1" : "sdxl" });
}
const lora = (name: string, weight = 1): LoraInput => ({
  name,
  path: join(LORAS, `${name}.safetensors`),
  weight,
});
const checkpoints = {
  sd1: await readSafetensorsHeader(join(FIXTURES, "checkpoints", `${CHECKPOINTS.sd1}.safetensors`)),
  sdxl: await readSafetensorsHeader(join(FIXTURES, "checkpoints", `${CHECKPOINTS.sdxl}.safetensors`)),
};

const tmp = mkdtempSync(join(tmpdir(), "sdx-lora-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A float32 safetensors file (shape [] for a scalar). */
async function writeSafetensors(path: string, tensors: Record<string, { shape: number[]; data: number[] }>) {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: "F32", shape: t.shape, data_offsets: [offset, offset + t.data.length * 4] };
    offset += t.data.length * 4;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (json.length % 8)) % 8);
  const head = new Uint8Array(8);
  new DataView(head.buffer).setBigUint64(0, BigInt(json.length), true);
  const data = Float32Array.from(Object.values(tensors).flatMap((t) => t.data));
  await Bun.write(path, new Blob([head, json, data]));
}

/**
 * The reference merge, written out as plainly as possible: delta[o][c] = Σ_k up[o][k]·down[k][c] in float64,
 * rounded to float32, times s = float32(weight·alpha/r), rounded, added to W, rounded.
 */
async function referenceMerge(
  checkpoint: SafetensorsHeader,
  loras: { input: LoraInput; entry: LoraEntry }[],
): Promise<Map<string, Float32Array>> {
  const merged = new Map<string, Float32Array>();
  for (const { input, entry } of loras) {
    const file = await loadSafetensors(input.path);
    for (const m of entry.modules) {
      const { ldm_key: key, rows } = m.single_file_weight;
      const weight = merged.get(key) ?? (await readTensorAsFloat32(checkpoint, key));
      const shape = checkpoint.tensors.get(key)?.shape as number[];
      const cols = shape.slice(1).reduce((a, b) => a * b, 1);
      const [down, up] =
        entry.format === "peft"
          ? [`${m.key}.lora_A.weight`, `${m.key}.lora_B.weight`]
          : [`${m.key}.lora_down.weight`, `${m.key}.lora_up.weight`];
      const d = file.get(down)?.data as Float32Array;
      const u = file.get(up)?.data as Float32Array;
      const r = m.rank;
      const alpha = entry.format === "peft" ? r : (file.get(`${m.key}.alpha`)?.data[0] as number);
      const s = Math.fround(input.weight * (alpha / r));
      const first = rows ? rows[0] : 0;
      const out = rows ? rows[1] - rows[0] : (shape[0] as number);
      for (let o = 0; o < out; o++) {
        for (let c = 0; c < cols; c++) {
          let sum = 0;
          for (let k = 0; k < r; k++) sum += (u[o * r + k] as number) * (d[k * cols + c] as number);
          const i = (first + o) * cols + c;
          weight[i] = Math.fround((weight[i] as number) + Math.fround(Math.fround(sum) * s));
        }
      }
      merged.set(key, weight);
    }
  }
  return merged;
}

/** Largest |a − b| over the largest |b| (relative to the tensor's scale). */
function maxRelativeDiff(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs((a[i] as number) - (b[i] as number)));
    scale = Math.max(scale, Math.abs(b[i] as number));
  }
  return diff / scale;
}

describe("inspectLora", () => {
  for (const [name, entry] of files) {
    test(`${name}: ${entry.format}, ${entry.kind}, rank ${entry.rank}, ${entry.num_modules} modules`, async () => {
      expect(await inspectLora(join(LORAS, entry.file))).toEqual({
        format: entry.format,
        family: entry.kind,
        rank: entry.rank,
        modules: entry.num_modules,
        textEncoder: entry.modules.some((m) => m.component !== "unet"),
      });
    });
  }
});

describe("layer targets", () => {
  for (const [name, entry] of files) {
    test(`${name}: every module names the LDM key (and rows) adapter_files.json gives`, async () => {
      const layers = layerNames(checkpoints[entry.kind], entry.kind);
      for (const m of entry.modules) {
        const target = layers.get(m.key);
        expect({ module: m.key, key: target?.key, rows: target?.rows }).toEqual({
          module: m.key,
          key: m.single_file_weight.ldm_key,
          rows: m.single_file_weight.rows,
        });
      }
      const { overrides, reports } = await loraOverrides(checkpoints[entry.kind], entry.kind, [lora(name)]);
      expect([...overrides.keys()].sort()).toEqual(
        [...new Set(entry.modules.map((m) => m.single_file_weight.ldm_key))].sort(),
      );
      for (const [key, o] of overrides)
        expect(o.shape).toEqual(checkpoints[entry.kind].tensors.get(key)?.shape ?? []);
      expect(reports).toEqual([
        {
          name,
          modules: entry.num_modules,
          textEncoder: entry.modules.some((m) => m.component !== "unet"),
          unusedKeys: [],
        },
      ]);
    });
  }

  test("tiny_sd15: every UNet and text-encoder weight has its diffusers name (the fixture's full key map)", async () => {
    const map = (await Bun.file(
      join(FIXTURES, "checkpoints/tiny_sd15_ldm_to_diffusers_keys.json"),
    ).json()) as Record<string, { component: string; diffusers_key: string; ldm_shape: number[] }>;
    const layers = layerNames(checkpoints.sd1, "sd1");
    let checked = 0;
    for (const [ldmKey, { component, diffusers_key, ldm_shape }] of Object.entries(map)) {
      if (!diffusers_key.endsWith(".weight") || ldm_shape.length < 2) continue;
      if (component !== "unet" && component !== "text_encoder") continue;
      const module = diffusers_key.slice(0, -".weight".length);
      expect({ module, key: layers.get(`${component}.${module}`)?.key }).toEqual({ module, key: ldmKey });
      checked++;
    }
    expect(checked).toBeGreaterThan(300);
  });

  /** An in-memory header with a preset's keys and shapes (no data: the map reads names and shapes only). */
  const presetHeader = (preset: keyof typeof PRESETS): SafetensorsHeader => {
    const tensors = new Map<string, TensorInfo>();
    for (const t of ldmTensors(PRESETS[preset]))
      tensors.set(t.key, { name: t.key, dtype: "F16", shape: t.shape, begin: 0, end: 0 });
    return { path: `${preset}.safetensors`, tensors, metadata: {}, dataOffset: 0 };
  };
  const cases: [keyof typeof PRESETS, ModelKind, [string, string, [number, number] | null][]][] = [
    [
      "sd15",
      "sd1",
      [
        [
          "unet.down_blocks.0.attentions.1.proj_in",
          "model.diffusion_model.input_blocks.2.1.proj_in.weight",
          null,
        ],
        [
          "lora_unet_down_blocks_2_downsamplers_0_conv",
          "model.diffusion_model.input_blocks.9.0.op.weight",
          null,
        ],
        [
          "lora_unet_down_blocks_3_resnets_1_conv2",
          "model.diffusion_model.input_blocks.11.0.out_layers.3.weight",
          null,
        ],
        [
          "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
          "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
          null,
        ],
        [
          "lora_unet_mid_block_resnets_1_time_emb_proj",
          "model.diffusion_model.middle_block.2.emb_layers.1.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_0_upsamplers_0_conv",
          "model.diffusion_model.output_blocks.2.1.conv.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_1_upsamplers_0_conv",
          "model.diffusion_model.output_blocks.5.2.conv.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_1_resnets_0_conv_shortcut",
          "model.diffusion_model.output_blocks.3.0.skip_connection.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0",
          "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight",
          null,
        ],
        [
          "lora_te_text_model_encoder_layers_11_mlp_fc2",
          "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
          null,
        ],
      ],
    ],
    [
      "sd21",
      "sd2",
      [
        [
          "lora_unet_up_blocks_2_attentions_1_proj_out",
          "model.diffusion_model.output_blocks.7.1.proj_out.weight",
          null,
        ],
        [
          "lora_te_text_model_encoder_layers_22_self_attn_v_proj",
          "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight",
          [2048, 3072],
        ],
        [
          "text_encoder.text_model.encoder.layers.0.mlp.fc1",
          "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight",
          null,
        ],
      ],
    ],
    [
      "sdxl",
      "sdxl",
      [
        [
          "unet.down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2",
          "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.weight",
          null,
        ],
        [
          "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
          "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.ff.net.2.weight",
          null,
        ],
        [
          "lora_unet_down_blocks_1_downsamplers_0_conv",
          "model.diffusion_model.input_blocks.6.0.op.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_0_attentions_2_transformer_blocks_3_attn1_to_k",
          "model.diffusion_model.output_blocks.2.1.transformer_blocks.3.attn1.to_k.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_0_upsamplers_0_conv",
          "model.diffusion_model.output_blocks.2.2.conv.weight",
          null,
        ],
        [
          "lora_unet_up_blocks_2_resnets_2_conv1",
          "model.diffusion_model.output_blocks.8.0.in_layers.2.weight",
          null,
        ],
        [
          "lora_unet_mid_block_attentions_0_transformer_blocks_9_attn2_to_v",
          "model.diffusion_model.middle_block.1.transformer_blocks.9.attn2.to_v.weight",
          null,
        ],
        [
          "lora_te1_text_model_encoder_layers_11_self_attn_q_proj",
          "conditioner.embedders.0.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight",
          null,
        ],
        [
          "lora_te2_text_model_encoder_layers_31_self_attn_k_proj",
          "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight",
          [1280, 2560],
        ],
        [
          "text_encoder_2.text_model.encoder.layers.5.mlp.fc2",
          "conditioner.embedders.1.model.transformer.resblocks.5.mlp.c_proj.weight",
          null,
        ],
      ],
    ],
  ];
  for (const [preset, kind, expected] of cases) {
    test(`full-size ${preset}: diffusers, SGM and CLIP names map to the released file's keys`, () => {
      const header = presetHeader(preset);
      const layers = layerNames(header, kind);
      for (const [name, key, rows] of expected) {
        expect({ name, key: layers.get(name)?.key, rows: layers.get(name)?.rows }).toEqual({
          name,
          key,
          rows,
        });
      }
      // Every UNet weight layer has a diffusers name, and each diffusers name one layer.
      const unetLayers = [...header.tensors.values()].filter(
        (t) =>
          t.name.startsWith("model.diffusion_model.") && t.name.endsWith(".weight") && t.shape.length >= 2,
      );
      const diffusersNames = [...layers.keys()].filter((n) => n.startsWith("unet."));
      expect(diffusersNames.length).toBe(unetLayers.length);
      expect(new Set(diffusersNames.map((n) => layers.get(n)?.key)).size).toBe(unetLayers.length);
    });
  }
});

describe("merged weights", () => {
  const caseDirs = async (suite: string) =>
    (
      (await Bun.file(join(FIXTURES, "cases", suite, "index.json")).json()) as { cases: { name: string }[] }
    ).cases.map((c) => c.name);
  for (const suite of suites) {
    test(`${suite}: the saved diffusers merges (linear, 1×1, 3×3 per component) agree to float32 rounding`, async () => {
      for (const name of await caseDirs(suite)) {
        const dir = join(FIXTURES, "cases", suite, name);
        const info = parsePythonJson(await Bun.file(join(dir, "case.json")).text()) as {
          loras: { name: string; weight: number }[];
          merged_weights_saved: { component: string; module: string; first_lora_key: string }[];
        };
        const kind = suite === "lora_sd15" ? "sd1" : "sdxl";
        const { overrides } = await loraOverrides(
          checkpoints[kind],
          kind,
          info.loras.map((l) => lora(l.name, l.weight)),
        );
        const tensors = await loadSafetensors(join(dir, "tensors.safetensors"));
        for (const saved of info.merged_weights_saved) {
          const entry = [...files.values()]
            .flatMap((f) => f.modules)
            .find((m) => m.key === saved.first_lora_key) as ModuleEntry;
          const { ldm_key, rows } = entry.single_file_weight;
          const expected = tensors.get(`merged.${saved.component}.${saved.module}.weight`)
            ?.data as Float32Array;
          const original = tensors.get(`original.${saved.component}.${saved.module}.weight`)
            ?.data as Float32Array;
          const got = overrides.get(ldm_key)?.data as Float32Array;
          const cols = rows ? expected.length / (rows[1] - rows[0]) : 0;
          const slice = rows ? got.subarray(rows[0] * cols, rows[1] * cols) : got;
          expect(slice.length).toBe(expected.length);
          // the merge moved the weights by far more than the tolerance, and lands on diffusers' result
          expect(maxRelativeDiff(original, expected)).toBeGreaterThan(1e-3);
          expect({ case: name, module: saved.module, diff: maxRelativeDiff(slice, expected) < 1e-6 }).toEqual(
            {
              case: name,
              module: saved.module,
              diff: true,
            },
          );
        }
      }
    });
  }

  const combos: { kind: "sd1" | "sdxl"; loras: [string, number][] }[] = [
    {
      kind: "sd1",
      loras: [
        ["tiny_sd15_lora_attn", 0.8],
        ["tiny_sd15_locon", 0.5],
      ],
    },
    {
      kind: "sd1",
      loras: [
        ["tiny_sd15_peft", -1.25],
        ["tiny_sd15_te_only", 2],
      ],
    },
    {
      kind: "sdxl",
      loras: [
        ["tiny_sdxl_lora", 1],
        ["tiny_sdxl_locon", 0.7],
      ],
    },
  ];
  for (const { kind, loras } of combos) {
    test(`${loras.map(([n, w]) => `${n} × ${w}`).join(" + ")}: every override equals the formula computed plainly`, async () => {
      const inputs = loras.map(([n, w]) => ({ input: lora(n, w), entry: files.get(n) as LoraEntry }));
      const { overrides } = await loraOverrides(
        checkpoints[kind],
        kind,
        inputs.map((l) => l.input),
      );
      const expected = await referenceMerge(checkpoints[kind], inputs);
      expect([...overrides.keys()].sort()).toEqual([...expected.keys()].sort());
      for (const [key, want] of expected) {
        const got = overrides.get(key)?.data as Float32Array;
        // float32 sums in another order: a few ulps of the delta at most
        expect({ key, close: maxRelativeDiff(got, want) < 1e-6 }).toEqual({ key, close: true });
      }
    });
  }

  for (const { kind, loras } of combos) {
    test(`${loras.map(([n, w]) => `${n} × ${w}`).join(" + ")}: W + up·down of the UNet factors is the merged weight`, async () => {
      const inputs = loras.map(([n, w]) => lora(n, w));
      const factors = await loraFactors(checkpoints[kind], kind, inputs);
      const { overrides } = await loraOverrides(checkpoints[kind], kind, inputs);
      const unetKeys = [...overrides.keys()].filter((k) => k.startsWith("model.diffusion_model."));
      expect([...factors.keys()].sort()).toEqual(unetKeys.sort());
      const textOnly = await loraOverrides(checkpoints[kind], kind, inputs, { unet: false });
      expect([...textOnly.overrides.keys()].sort()).toEqual(
        [...overrides.keys()].filter((k) => !k.startsWith("model.diffusion_model.")).sort(),
      );
      for (const key of unetKeys) {
        const f = factors.get(key);
        if (!f) throw new Error(`no factors for ${key}`);
        const [out = 0, rank = 0] = f.upShape;
        const cols = f.down.length / rank;
        expect(f.downShape[0]).toBe(rank);
        const w = await readTensorAsFloat32(checkpoints[kind], key);
        // W[o, c] + Σ_k up[o, k]·down[k, c] (the scale is in up)
        const got = new Float32Array(out * cols);
        for (let o = 0; o < out; o++)
          for (let c = 0; c < cols; c++) {
            let sum = 0;
            for (let k = 0; k < rank; k++)
              sum += (f.up[o * rank + k] as number) * (f.down[k * cols + c] as number);
            got[o * cols + c] = (w[o * cols + c] as number) + sum;
          }
        const close = maxRelativeDiff(got, overrides.get(key)?.data as Float32Array) < 1e-5;
        expect({ key, close }).toEqual({ key, close: true });
      }
    });
  }

  test("the checkpoint's own tensors are left as they were; weight 0 reproduces them", async () => {
    const key = "model.diffusion_model.input_blocks.1.1.proj_in.weight";
    const before = await readTensorAsFloat32(checkpoints.sd1, key);
    const { overrides } = await loraOverrides(checkpoints.sd1, "sd1", [lora("tiny_sd15_lora_attn", 0)]);
    expect(overrides.get(key)?.data).toEqual(before);
    expect(await readTensorAsFloat32(checkpoints.sd1, key)).toEqual(before);
  });
});

describe("errors and unused keys", () => {
  test("an SDXL LoRA on an SD 1.x model: AdapterError naming the LoRA", async () => {
    const error = await loraOverrides(checkpoints.sd1, "sd1", [lora("tiny_sdxl_lora")]).catch((e) => e);
    expect(error).toBeInstanceOf(AdapterError);
    expect(error.name).toBe("AdapterError");
    expect(error.adapter).toBe("tiny_sdxl_lora");
    expect(error.message).toContain("tiny_sdxl_lora");
    expect(error.message).toContain("sdxl");
  });

  test("an SD 1.x LoRA on an SDXL model: AdapterError", async () => {
    const error = await loraOverrides(checkpoints.sdxl, "sdxl", [lora("tiny_sd15_locon")]).catch((e) => e);
    expect(error).toBeInstanceOf(AdapterError);
    expect(error.adapter).toBe("tiny_sd15_locon");
  });

  const r4 = (n: number) => Array.from({ length: n }, (_, i) => ((i % 7) - 3) / 50);
  const unet = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";

  test("a file of only LoHa / LoKr / DoRA / unknown modules: AdapterError, and inspectLora counts no modules", async () => {
    const path = join(tmp, "only_other.safetensors");
    await writeSafetensors(path, {
      [`${unet}.hada_w1_a`]: { shape: [32, 4], data: r4(128) },
      [`${unet}.hada_w1_b`]: { shape: [4, 32], data: r4(128) },
      [`${unet}.alpha`]: { shape: [], data: [4] },
      "lora_unet_down_blocks_0_attentions_0_proj_in.lokr_w1": { shape: [4, 4], data: r4(16) },
      // DoRA: down/up present, but the magnitude makes it something else
      "lora_unet_down_blocks_0_attentions_0_proj_out.lora_down.weight": {
        shape: [4, 32, 1, 1],
        data: r4(128),
      },
      "lora_unet_down_blocks_0_attentions_0_proj_out.lora_up.weight": { shape: [32, 4, 1, 1], data: r4(128) },
      "lora_unet_down_blocks_0_attentions_0_proj_out.dora_scale": { shape: [32, 1, 1, 1], data: r4(32) },
      "lora_unet_no_such_layer.lora_down.weight": { shape: [4, 32], data: r4(128) },
      "lora_unet_no_such_layer.lora_up.weight": { shape: [32, 4], data: r4(128) },
    });
    expect((await inspectLora(path)).modules).toBe(1);
    const error = await loraOverrides(checkpoints.sd1, "sd1", [
      { name: "only_other", path, weight: 1 },
    ]).catch((e) => e);
    expect(error).toBeInstanceOf(AdapterError);
    expect(error.adapter).toBe("only_other");
    expect(error.message).toContain("only_other");
  });

  test("a mixed file: the LoRA modules are applied, the rest listed in unusedKeys", async () => {
    const path = join(tmp, "mixed.safetensors");
    const down = r4(128);
    const up = r4(128).reverse();
    await writeSafetensors(path, {
      [`${unet}.lora_down.weight`]: { shape: [4, 32], data: down },
      [`${unet}.lora_up.weight`]: { shape: [32, 4], data: up },
      "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a": { shape: [32, 4], data: r4(128) },
      "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": { shape: [], data: [2] },
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": {
        shape: [4, 32],
        data: r4(128),
      },
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": { shape: [32, 4], data: up },
      "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_mid.weight": { shape: [4, 4], data: r4(16) },
      "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight": { shape: [4, 32], data: r4(128) },
      "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_up.weight": { shape: [37, 4], data: r4(148) },
    });
    expect(await inspectLora(path)).toMatchObject({ format: "kohya", family: "sd1", rank: 4, modules: 2 });
    const { overrides, reports } = await loraOverrides(checkpoints.sd1, "sd1", [
      { name: "mixed", path, weight: 1.5 },
    ]);
    expect(reports).toEqual([
      {
        name: "mixed",
        modules: 1,
        textEncoder: false,
        unusedKeys: [
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_mid.weight",
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight",
          "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_down.weight",
          "lora_te_text_model_encoder_layers_9_mlp_fc1.lora_up.weight",
          "lora_unet_down_blocks_0_attentions_0_proj_in.alpha",
          "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a",
        ],
      },
    ]);
    // no alpha: alpha = rank, s = weight
    const key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight";
    const w = await readTensorAsFloat32(checkpoints.sd1, key);
    const got = overrides.get(key)?.data as Float32Array;
    for (const [o, c] of [
      [0, 0],
      [5, 17],
      [31, 31],
    ] as const) {
      let sum = 0;
      for (let k = 0; k < 4; k++) sum += (up[o * 4 + k] as number) * (down[k * 32 + c] as number);
      expect(got[o * 32 + c]).toBe(
        Math.fround((w[o * 32 + c] as number) + Math.fround(Math.fround(sum) * 1.5)),
      );
    }
  });

  test("a module whose shapes do not fit its layer: AdapterError naming the LoRA and the layer", async () => {
    const path = join(tmp, "wrong_shape.safetensors");
    await writeSafetensors(path, {
      [`${unet}.lora_down.weight`]: { shape: [4, 40], data: r4(160) },
      [`${unet}.lora_up.weight`]: { shape: [32, 4], data: r4(128) },
    });
    const error = await loraOverrides(checkpoints.sd1, "sd1", [
      { name: "wrong_shape", path, weight: 1 },
    ]).catch((e) => e);
    expect(error).toBeInstanceOf(AdapterError);
    expect(error.adapter).toBe("wrong_shape");
    expect(error.message).toContain("input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight");
  });

  test("not a LoRA, or not a safetensors file: AdapterError", async () => {
    const vae = join(tmp, "not_lora.safetensors");
    await writeSafetensors(vae, { "decoder.conv_in.weight": { shape: [2, 2], data: [1, 2, 3, 4] } });
    expect(await inspectLora(vae).catch((e) => e)).toBeInstanceOf(AdapterError);
    const junk = join(tmp, "junk.safetensors");
    await Bun.write(junk, "not a safetensors file at all");
    const error = await loraOverrides(checkpoints.sd1, "sd1", [
      { name: "junk", path: junk, weight: 1 },
    ]).catch((e) => e);
    expect(error).toBeInstanceOf(AdapterError);
    expect(error.adapter).toBe("junk");
  });
});
