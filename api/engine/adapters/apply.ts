/**
 * Puts a generation's adapters in place on a loaded model, in the engine's thread: the LoRA and embedding
 * overrides of the text encoders (merged only when the set changes), the UNet's LoRA branch factors, and the VAE file. What it cost
 * and what the files could not give (LoRA keys no layer took) go back with the generation.
 */
import { dirname } from "node:path";
import { CheckpointError } from "../checkpoint/weights.ts";
import { cacheDirOf } from "../model_folder.ts";
import { GenerationInvalid } from "../pipeline/errors.ts";
import type { Residency } from "../pipeline/residency.ts";
import type { AdapterInput, PipelineComponents } from "../pipeline/types.ts";
import { readSafetensorsHeader } from "../safetensors.ts";
import { embeddingOverrides } from "./embedding.ts";
import { loraFactors, loraOverrides } from "./lora.ts";
import { type AdapterWeights, adapterStats, useWeightOverrides } from "./sessions.ts";
import { AdapterError, type WeightOverrides } from "./types.ts";
import { useVae, vaeSessionBuilds } from "./vae_sessions.ts";

const NO_ADAPTERS: AdapterInput = { key: "", loras: [], embeddings: [], vae: null };

/** Warnings of each adapter set, kept so a request reusing a set hears them too. */
const setWarnings = new Map<string, string[]>();

/**
 * The weights of an adapter set: the text encoders' merged overrides (every LoRA in order, then the embeddings'
 * token tables) and the UNet's LoRA factors.
 */
async function weightsOf(
  components: PipelineComponents,
  adapters: AdapterInput,
): Promise<AdapterWeights & { warnings: string[] }> {
  const build = components.checkpoint;
  if (!build) return { overrides: new Map(), unet: new Map(), warnings: [] };
  const header = await readSafetensorsHeader(build.checkpointPath);
  const lora = await loraOverrides(header, build.kind, adapters.loras, { unet: false });
  const unet = await loraFactors(header, build.kind, adapters.loras);
  const embeddings = await embeddingOverrides(header, build.kind, adapters.embeddings);
  const overrides: WeightOverrides = new Map([...lora.overrides, ...embeddings.overrides]);
  const warnings = lora.reports
    .filter((r) => r.unusedKeys.length > 0)
    .map(
      (r) =>
        `LoRA ${r.name}: ${r.unusedKeys.length} of its tensors match no layer sdx can change and were not applied (${r.unusedKeys.slice(0, 3).join(", ")}${r.unusedKeys.length > 3 ? ", …" : ""}).`,
    );
  return { overrides, unet, warnings };
}

/**
 * Generations running on a model's sessions, and the adapter choice they run with: a generation wanting
 * another choice waits until those have finished (with --concurrency above 1, sessions are never swapped under
 * a running generation).
 */
interface Gate {
  choice: string;
  running: number;
  waiters: (() => void)[];
}
const gates = new WeakMap<PipelineComponents, Gate>();

/** What a generation holds while it runs on its adapters: release it when done. */
export interface AdapterLease {
  cost: { sessionsCreated: number; ms: number } | undefined;
  warnings: string[];
  release(): void;
}

/**
 * Waits until `components` can take `adapters` (null: none), puts them in place and holds them until the lease
 * is released. The lease says what the switch cost (nothing when the set was already in place) and the set's
 * warnings. Files that do not fit are GenerationInvalid (a 422 naming the adapter).
 */
export async function acquireAdapters(
  components: PipelineComponents,
  residency: Residency,
  adapters: AdapterInput | null | undefined,
): Promise<AdapterLease> {
  const a = adapters ?? NO_ADAPTERS;
  const choice = `${a.key}|${a.vae?.path ?? ""}`;
  let gate = gates.get(components);
  if (!gate) {
    gate = { choice, running: 0, waiters: [] };
    gates.set(components, gate);
  }
  while (gate.running > 0 && gate.choice !== choice) {
    await new Promise<void>((resolve) => (gate as Gate).waiters.push(resolve));
  }
  gate.running++;
  gate.choice = choice;
  const g = gate;
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    g.running--;
    if (g.running === 0) for (const wake of g.waiters.splice(0)) wake();
  };
  try {
    return { ...(await applyAdapters(components, residency, a)), release };
  } catch (e) {
    release();
    throw e;
  }
}

/**
 * Makes `components` compute with `adapters` (null: none). Returns the sessions it created and how long it took
 * (nothing when the set was already in place), and the set's warnings. Files that do not fit are
 * GenerationInvalid (a 422 naming the adapter).
 */
export async function applyAdapters(
  components: PipelineComponents,
  residency: Residency,
  adapters: AdapterInput | null | undefined,
): Promise<{ cost: { sessionsCreated: number; ms: number } | undefined; warnings: string[] }> {
  const a = adapters ?? NO_ADAPTERS;
  const t0 = performance.now();
  const before = adapterStats.sessionsCreated + vaeSessionBuilds(components);
  try {
    const names = [
      ...a.loras.map((l) => `LoRA ${l.name}`),
      ...a.embeddings.map((e) => `embedding ${e.name}`),
    ];
    await useWeightOverrides(
      components,
      residency,
      a.key,
      async () => {
        const { warnings, ...weights } = await weightsOf(components, a);
        setWarnings.set(a.key, warnings);
        return weights;
      },
      names.join(", ") || "adapters",
    );
    // A VAE file's graphs are cached beside it, whatever the model's layout.
    await useVae(components, a.vae, a.vae ? cacheDirOf(dirname(a.vae.path)) : "");
  } catch (e) {
    if (e instanceof AdapterError || e instanceof CheckpointError) throw new GenerationInvalid(e.message);
    throw e;
  }
  const created = adapterStats.sessionsCreated + vaeSessionBuilds(components) - before;
  return {
    cost: created > 0 ? { sessionsCreated: created, ms: performance.now() - t0 } : undefined,
    warnings: setWarnings.get(a.key) ?? [],
  };
}
