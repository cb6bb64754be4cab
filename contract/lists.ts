/**
 * The closed lists of the API. Each drives its enum in the request and response schemas, the spec, the SDK's
 * types and the CLI's checks; the engine reads them from here.
 */

/** How a prompt is read: AUTOMATIC1111's syntax (weights, chunks, BREAK) or diffusers' literal text. */
export const PROMPT_SYNTAXES = ["a1111", "diffusers"] as const;
export type PromptSyntax = (typeof PROMPT_SYNTAXES)[number];

/** Timestep spacings of Lin et al. 2024, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2. */
export const TIMESTEP_SPACINGS = ["linspace", "leading", "trailing"] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

/** What the network predicts: the noise ε, v = α·ε − σ·x₀ (Salimans & Ho 2022), or x₀ itself (diffusers' names). */
export const PREDICTION_TYPES = ["epsilon", "v_prediction", "sample"] as const;
export type PredictionType = (typeof PREDICTION_TYPES)[number];

/** Model families sdx knows. */
export const MODEL_KINDS = ["sd1", "sd2", "sdxl"] as const;
export type ModelKind = (typeof MODEL_KINDS)[number];

/** How a model is stored: an optimum ONNX folder or a single-file checkpoint. */
export const MODEL_FORMATS = ["onnx", "safetensors"] as const;
export type ModelFormat = (typeof MODEL_FORMATS)[number];

/** onnxruntime execution providers sdx runs on. */
export const EXECUTION_PROVIDERS = ["cpu", "cuda", "webgpu"] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];
