/**
 * What Stable Diffusion XL adds to the shared pipeline stages, as diffusers' StableDiffusionXLPipeline
 * (v0.29.2) does it: a second text encoder (OpenCLIP bigG, `text_encoder_2` + `tokenizer_2`, padded with "!"),
 * the two encoders' penultimate hidden states concatenated along the width (768 + 1280 = 2048), the pooled
 * `text_embeds` of encoder 2 and the micro-conditioning `time_ids` (Podell et al. 2023, §2.2) as extra UNet
 * inputs, and zero unconditional embeddings when no negative prompt is given (`force_zeros_for_empty_prompt`).
 * Timesteps, seeded latents, denoising and decoding are the shared stages of `stages.ts`.
 */
import type { ExecutionProvider, PromptSyntax } from "../../../contract/index.ts";
import type { PipelineFiles } from "../checkpoint/build.ts";
import { OnnxModel } from "../onnx/runtime.ts";
import { CHUNK_LENGTH, type TokenizedPrompt, tokenizePrompt } from "../prompt/chunks.ts";
import { type Conditioning, type EncodeChunks, encodePrompt } from "../prompt/encode.ts";
import { ClipTokenizer } from "../tokenizer/clip.ts";
import { GenerationInvalid } from "./errors.ts";
import type {
  EncodedPrompts,
  GenerateInput,
  PipelineComponents,
  PromptConditioning,
  PromptReport,
  XlComponents,
} from "./types.ts";

/** Values in SDXL's `time_ids`: original_size (2) + crops_coords_top_left (2) + target_size (2). */
export const TIME_IDS = 6;

const HIDDEN_STATE = /^hidden_states\.(\d+)$/;

/** The highest `hidden_states.N` output of a text encoder graph: its number of transformer layers. */
export function exposedLayers(encoder: OnnxModel): number {
  const indices = [...encoder.outputs.keys()]
    .map((name) => Number(HIDDEN_STATE.exec(name)?.[1] ?? Number.NaN))
    .filter((n) => Number.isInteger(n));
  return indices.length > 0 ? Math.max(...indices) : 0;
}

/**
 * Opens text_encoder_2 and tokenizer_2 (of an optimum SDXL folder or a built checkpoint) and checks that the already opened encoder 1
 * and UNet have what SDXL needs; a folder that lacks something fails here, naming it.
 */
export async function loadXlComponents(
  files: NonNullable<PipelineFiles["xl"]>,
  provider: ExecutionProvider,
  textEncoder: OnnxModel,
  unet: OnnxModel,
): Promise<XlComponents> {
  const textEncoder2Path = files.textEncoder2;
  const [tokenizer2, textEncoder2] = await Promise.all([
    ClipTokenizer.fromDir(files.tokenizer2Dir),
    OnnxModel.load(textEncoder2Path, { provider }),
  ]);
  const layers = [exposedLayers(textEncoder), exposedLayers(textEncoder2)] as const;
  const problems: string[] = [];
  if (layers[0] === 0 || layers[1] === 0) {
    problems.push(
      "its text encoders export no hidden_states.* outputs (SDXL conditions on the penultimate layer; re-export with optimum, which enables them for SDXL)",
    );
  }
  if (!textEncoder2.outputs.has("text_embeds")) {
    problems.push("text_encoder_2 has no text_embeds output (the pooled, projected embedding)");
  }
  for (const name of ["text_embeds", "time_ids"]) {
    if (!unet.hasInput(name)) problems.push(`its UNet has no ${name} input`);
  }
  const timeIds = unet.fixedDim("time_ids", 1);
  if (timeIds !== null && timeIds !== TIME_IDS) {
    problems.push(
      `its UNet takes ${timeIds} time ids, not SDXL base's ${TIME_IDS} (a refiner's aesthetic-score conditioning is not supported)`,
    );
  }
  const pooledWidth = unet.fixedDim("text_embeds", 1) ?? textEncoder2.fixedDim("text_embeds", 1);
  if (pooledWidth === null) problems.push("the width of the UNet's text_embeds input is not fixed");
  if (problems.length > 0 || pooledWidth === null) {
    await textEncoder2.release();
    throw new Error(`not a loadable SDXL export: ${problems.join("; ")}`);
  }
  return {
    tokenizer2,
    textEncoder2,
    textEncoder2Path,
    layers,
    forceZerosForEmptyPrompt: files.forceZerosForEmptyPrompt,
    pooledWidth,
  };
}

/**
 * Deepest `clip_skip` (sdx counting) both encoders allow: k reads hidden_states[-(k + 1)], so k = L reads
 * hidden_states.0 (the embeddings), the deepest diffusers' SDXL clip_skip (L − 1) reaches.
 */
export function xlClipSkipMax(xl: Pick<XlComponents, "layers">): number {
  return Math.max(1, Math.min(...xl.layers));
}

/** The texts each encoder reads; `negative` null means the unconditional embeddings are zeros. */
export interface XlPromptTexts {
  prompt2: string;
  negative: string | null;
  negative2: string | null;
}

/**
 * Which text each encoder reads, as diffusers' `encode_prompt` decides it: `prompt_2 or prompt`; zero
 * unconditional embeddings when `negative_prompt is None` and `force_zeros_for_empty_prompt` (whatever
 * negative_prompt_2 says); otherwise `negative_prompt or ""` and `negative_prompt_2 or negative_prompt`.
 * An explicit "" negative prompt is encoded. In the a1111 syntax an empty negative prompt ("" or none, and no
 * negative_prompt_2) gives zeros, as AUTOMATIC1111's `force_zero_negative_prompt` does for SDXL.
 */
export function xlPromptTexts(
  syntax: PromptSyntax,
  texts: {
    prompt: string;
    prompt2: string | null;
    negativePrompt: string | null;
    negativePrompt2: string | null;
  },
  forceZerosForEmptyPrompt: boolean,
): XlPromptTexts {
  const prompt2 = texts.prompt2 || texts.prompt;
  const empty =
    syntax === "diffusers" ? texts.negativePrompt === null : !texts.negativePrompt && !texts.negativePrompt2;
  if (empty && forceZerosForEmptyPrompt) return { prompt2, negative: null, negative2: null };
  const negative = texts.negativePrompt ?? "";
  return { prompt2, negative, negative2: texts.negativePrompt2 || negative };
}

/**
 * SDXL's micro-conditioning, diffusers' `_get_add_time_ids`: original_size + crops_coords_top_left +
 * target_size, each in diffusers' order ((height, width), (top, left), (height, width)); by default
 * (height, width), (0, 0), (height, width).
 */
export function addTimeIds(input: GenerateInput): Float32Array {
  const size = [input.height, input.width] as const;
  return Float32Array.from([
    ...(input.originalSize ?? size),
    ...(input.cropsCoordsTopLeft ?? [0, 0]),
    ...(input.targetSize ?? size),
  ]);
}

/**
 * One text encoder as the prompt encoder sees it: 77-id rows in, `hidden_states[-(clipSkip + 1)]` out
 * (sdx's clip_skip k = diffusers' clip_skip k − 1, whose SDXL branch reads hidden_states[-(clip_skip + 2)],
 * with no final layer norm). With `pooled`, each row's `text_embeds` is kept too.
 */
function hiddenStates(encoder: OnnxModel, layers: number, clipSkip: number, pooled: boolean) {
  const output = `hidden_states.${layers - clipSkip}`;
  const outputs = pooled ? [output, "text_embeds"] : [output];
  const kept: { rows: Float32Array | null } = { rows: null };
  const encode: EncodeChunks = async (rows) => {
    const seq = rows[0]?.length ?? CHUNK_LENGTH;
    const result = await encoder.runBatched(
      { input_ids: { data: rows.flat(), dims: [rows.length, seq] } },
      ["input_ids"],
      rows.length,
      outputs,
    );
    const states = result[output] as { data: Float32Array; dims: number[] };
    if (pooled) kept.rows = (result.text_embeds as { data: Float32Array }).data;
    return { data: states.data, dims: [rows.length, seq, states.dims[2] as number] };
  };
  return { encode, kept };
}

/** Appends copies of `empty` (one encoded chunk) until `c` is `length` tokens long. */
function padTo(c: Conditioning, length: number, empty: Conditioning): Conditioning {
  if (c.dims[1] >= length) return c;
  const width = c.dims[2];
  const data = new Float32Array(length * width);
  data.set(c.data);
  for (let at = c.data.length; at < data.length; at += empty.data.length) data.set(empty.data, at);
  return { data, dims: [1, length, width] };
}

/** `torch.concat([a, b], dim=-1)` of two `[1, T, ·]` conditionings. */
function concatWidth(a: Conditioning, b: Conditioning): Conditioning {
  const [, seq, wa] = a.dims;
  const wb = b.dims[2];
  const data = new Float32Array(seq * (wa + wb));
  for (let t = 0; t < seq; t++) {
    data.set(a.data.subarray(t * wa, (t + 1) * wa), t * (wa + wb));
    data.set(b.data.subarray(t * wb, (t + 1) * wb), t * (wa + wb) + wa);
  }
  return { data, dims: [1, seq, wa + wb] };
}

function report(prompt: TokenizedPrompt): PromptReport {
  return { tokens: prompt.tokenCount, chunks: prompt.chunks.length, truncatedTokens: prompt.truncatedTokens };
}

/**
 * Stages 2–3 for SDXL: tokenize each text with its encoder's tokenizer, encode, weight (a1111) and join the
 * chunks per encoder, concatenate the two encoders' states along the width; the pooled embedding is encoder
 * 2's `text_embeds` of the first chunk (AUTOMATIC1111 pools the first chunk too). Clip skip applies to the
 * negative prompt in a1111 syntax only; diffusers encodes it from hidden_states[-2].
 */
export async function encodeXlPrompts(
  components: Pick<PipelineComponents, "textEncoder" | "tokenizer">,
  xl: XlComponents,
  input: GenerateInput,
  doCfg: boolean,
  longPrompts: boolean,
  enterTextEncoder: () => Promise<void>,
): Promise<EncodedPrompts> {
  const syntax = input.promptSyntax;
  const { tokenizer } = components;
  const texts = xlPromptTexts(
    syntax,
    {
      prompt: input.prompt,
      prompt2: input.prompt2 ?? null,
      negativePrompt: input.negativePrompt,
      negativePrompt2: input.negativePrompt2 ?? null,
    },
    xl.forceZerosForEmptyPrompt,
  );
  // 2. Tokenize: encoder 1 pads with <|endoftext|>, encoder 2 with "!" (id 0), each tokenizer's pad token.
  //    Embeddings are added to both tokenizers (same vocabulary size, so the same ids).
  const options = { embeddings: input.embeddings };
  const cond = {
    first: tokenizePrompt(tokenizer, input.prompt, syntax, options),
    second: tokenizePrompt(xl.tokenizer2, texts.prompt2, syntax, options),
  };
  const uncond =
    texts.negative === null
      ? null
      : {
          first: tokenizePrompt(tokenizer, texts.negative, syntax, options),
          second: tokenizePrompt(xl.tokenizer2, texts.negative2 ?? texts.negative, syntax, options),
        };

  const rows = [cond, ...(doCfg && uncond ? [uncond] : [])].flatMap((p) => [p.first, p.second]);
  if (!longPrompts && rows.some((p) => p.chunks.length > 1)) {
    throw new GenerationInvalid(
      'this model\'s UNet takes exactly 77 text tokens, so prompts over 75 tokens or with BREAK cannot be encoded in chunks; shorten the prompt or send prompt_syntax "diffusers" to cut it',
    );
  }

  // 3. Encode both encoders, then join them along the width.
  await enterTextEncoder();
  const timeIds = addTimeIds(input);
  const encodeBoth = async (
    prompts: { first: TokenizedPrompt; second: TokenizedPrompt },
    clipSkip: number,
  ): Promise<PromptConditioning> => {
    // Sessions are read after enterTextEncoder: with model offload it may have created them again.
    const one = hiddenStates(components.textEncoder, xl.layers[0], clipSkip, false);
    const two = hiddenStates(xl.textEncoder2, xl.layers[1], clipSkip, true);
    let a = await encodePrompt(one.encode, prompts.first);
    let b = await encodePrompt(two.encode, prompts.second);
    const pooled = (two.kept.rows as Float32Array).slice(0, xl.pooledWidth);
    // a1111 with a prompt_2 of another length: the shorter side gets encoded empty chunks, as A1111 pads.
    if (a.dims[1] !== b.dims[1]) {
      const length = Math.max(a.dims[1], b.dims[1]);
      const empty = (t: ClipTokenizer) => tokenizePrompt(t, "", syntax);
      a = padTo(a, length, await encodePrompt(one.encode, empty(tokenizer)));
      b = padTo(b, length, await encodePrompt(two.encode, empty(xl.tokenizer2)));
    }
    return { embeds: concatWidth(a, b), added: { textEmbeds: pooled, timeIds } };
  };
  const condConditioning = await encodeBoth(cond, input.clipSkip);
  let uncondConditioning: PromptConditioning | null = null;
  if (doCfg && uncond !== null) {
    uncondConditioning = await encodeBoth(uncond, syntax === "diffusers" ? 1 : input.clipSkip);
  } else if (doCfg) {
    // torch.zeros_like(prompt_embeds) and of the pooled embeds; one 77-token chunk (A1111 zeroes the encoded "").
    const width = condConditioning.embeds.dims[2];
    const seq = syntax === "diffusers" ? condConditioning.embeds.dims[1] : CHUNK_LENGTH;
    uncondConditioning = {
      embeds: { data: new Float32Array(seq * width), dims: [1, seq, width] },
      added: { textEmbeds: new Float32Array(xl.pooledWidth), timeIds },
    };
  }
  const none: PromptReport = { tokens: 0, chunks: 0, truncatedTokens: 0 };
  return {
    cond: condConditioning,
    uncond: uncondConditioning,
    prompt: report(cond.first),
    negativePrompt: uncond ? report(uncond.first) : none,
    xl: {
      prompt2: report(cond.second),
      negativePrompt2: uncond ? report(uncond.second) : none,
      zeroUncond: doCfg && uncond === null,
      timeIds: [...timeIds],
    },
  };
}
