/**
 * Which components' onnxruntime sessions are resident. With model CPU offload (diffusers'
 * enable_model_cpu_offload) only the stage that is running keeps its weights on the device: the others'
 * sessions are released, and created again when their stage next runs. SDXL's second text encoder belongs to
 * the text_encoder stage. The VAE encoder starts released: only image-to-image creates it.
 */
import { OnnxModel } from "../onnx/runtime.ts";
import type { PipelineComponents, Stage } from "./types.ts";

const FIELD = {
  text_encoder: "textEncoder",
  unet: "unet",
  vae_decoder: "vaeDecoder",
  vae_encoder: "vaeEncoder",
} as const;
const STAGES = Object.keys(FIELD) as Stage[];

export class Residency {
  private readonly released = new Set<Stage>();
  /** Sessions created again after an offload released them, for reports and tests. */
  reloads = 0;

  constructor(private readonly components: PipelineComponents) {}

  isResident(stage: Stage): boolean {
    return this.components[FIELD[stage]] !== null && !this.released.has(stage);
  }

  /** The hook the pipeline calls before each stage: make it resident, and with offload release the rest. */
  enterStage(offload: boolean): (stage: Stage) => Promise<void> {
    return async (stage) => {
      if (offload) {
        for (const other of STAGES) if (other !== stage) await this.release(other);
      }
      await this.ensure(stage);
    };
  }

  private async ensure(stage: Stage): Promise<void> {
    if (this.isResident(stage)) return;
    const { paths, provider, xl } = this.components;
    const path = paths[stage];
    if (path === null) return; // no VAE encoder: the pipeline says so when it needs one
    const wasReleased = this.released.has(stage);
    const session = await OnnxModel.load(path, { provider });
    if (stage === "vae_encoder") this.components.vaeEncoder = session;
    else this.components[FIELD[stage]] = session;
    if (stage === "text_encoder" && xl)
      xl.textEncoder2 = await OnnxModel.load(xl.textEncoder2Path, { provider });
    this.released.delete(stage);
    if (wasReleased) this.reloads++;
  }

  private async release(stage: Stage): Promise<void> {
    const session = this.components[FIELD[stage]];
    if (this.released.has(stage) || session === null) return;
    await session.release();
    if (stage === "text_encoder") await this.components.xl?.textEncoder2.release();
    if (stage === "vae_encoder") this.components.vaeEncoder = null;
    this.released.add(stage);
  }

  /**
   * Points a stage at other graphs (an adapter set's, or back to the model's own) and creates its sessions from
   * them now; the old ones are released first. `second` is SDXL's second text encoder (null: unchanged).
   */
  async replace(stage: "text_encoder" | "unet", path: string, second: string | null = null): Promise<void> {
    await this.release(stage);
    const { provider, xl } = this.components;
    if (stage === "unet") {
      this.components.paths.unet = path;
      this.components.unet = await OnnxModel.load(path, { provider });
    } else {
      this.components.paths.text_encoder = path;
      this.components.textEncoder = await OnnxModel.load(path, { provider });
      if (xl) {
        if (second !== null) xl.textEncoder2Path = second;
        xl.textEncoder2 = await OnnxModel.load(xl.textEncoder2Path, { provider });
      }
    }
    this.released.delete(stage);
  }

  /** Releases every resident session (the model is being unloaded). */
  async releaseAll(): Promise<void> {
    for (const stage of STAGES) await this.release(stage);
  }
}
