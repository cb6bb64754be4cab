/** Messages between the server thread and the engine worker that owns the onnxruntime sessions. */
import type { ExecutionProvider } from "../../../contract/index.ts";
import type { ModelEntry } from "../model_folder.ts";
import type { FusedFolderUNet } from "../pipeline/folder_attention.ts";
import type {
  GenerateInput,
  GenerateOutput,
  LoadOptions,
  ModelCapabilities,
  StepEvent,
} from "../pipeline/types.ts";

export type WorkerRequest =
  | {
      type: "load";
      id: number;
      entry: ModelEntry;
      provider: ExecutionProvider;
      warmUp: boolean;
      options: LoadOptions;
    }
  | { type: "unload"; id: number; name: string }
  | { type: "generate"; id: number; input: GenerateInput; entry: ModelEntry; offload: Offload }
  | { type: "cancel"; id: number };

/**
 * Where weights live during a generation: "none" keeps every session resident; "model" (diffusers'
 * enable_model_cpu_offload) keeps only the running stage's; "sequential" runs on CPU sessions.
 */
export type Offload = "none" | "model" | "sequential";

/** Error kinds that keep their meaning across the thread boundary. */
export type WorkerErrorKind = "aborted" | "failed" | "invalid";

export type WorkerReply =
  | {
      type: "loaded";
      id: number;
      capabilities: ModelCapabilities;
      tokenizerDir: string;
      checkpointGraphs: { reused: boolean; buildMs: number } | null;
      folderAttention: FusedFolderUNet | null;
      loadMs: number;
      /** The warm-up generation's time and size, when one ran. */
      warmUp: { ms: number; size: number } | null;
    }
  | { type: "unloaded"; id: number }
  | { type: "step"; id: number; event: StepEvent }
  | { type: "generated"; id: number; output: GenerateOutput }
  | { type: "error"; id: number; kind: WorkerErrorKind; message: string; stage: string | null };
