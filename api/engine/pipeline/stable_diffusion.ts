/**
 * What Stable Diffusion 1.x/2.x brings to the shared stages of `stages.ts`: its text stage, as diffusers'
 * StableDiffusionPipeline.encode_prompt. SDXL's text stage and added conditions are in
 * `stable_diffusion_xl.ts`.
 */
import { layerNorm } from "../onnx/final_layer_norm.ts";
import { type TokenizedPrompt, tokenizePrompt } from "../prompt/chunks.ts";
import { encodePrompt } from "../prompt/encode.ts";
import { GenerationInvalid } from "./errors.ts";
import type { EncodedPrompts, GenerateInput, PipelineComponents, PromptReport } from "./types.ts";

function report(prompt: TokenizedPrompt): PromptReport {
  return { tokens: prompt.tokenCount, chunks: prompt.chunks.length, truncatedTokens: prompt.truncatedTokens };
}

/**
 * The text encoder as the prompt encoder sees it: 77-token rows in, hidden states out — the last layer after
 * the final layer norm, or for clip skip k the output of layer L+1−k passed through that same norm
 * (diffusers: final_layer_norm(hidden_states[-(clip_skip + 1)]) with clip_skip = k − 1).
 */
function textEncoderFor(components: PipelineComponents, clipSkip: number) {
  const { textEncoder, finalLayerNorm, textEncoderLayers } = components;
  const output = clipSkip > 1 ? `hidden_states.${textEncoderLayers + 1 - clipSkip}` : "last_hidden_state";
  return async (rows: number[][]): Promise<{ data: Float32Array; dims: [number, number, number] }> => {
    const seq = rows[0]?.length ?? 77;
    const result = await textEncoder.runBatched(
      { input_ids: { data: rows.flat(), dims: [rows.length, seq] } },
      ["input_ids"],
      rows.length,
      [output],
    );
    const states = result[output] as { data: Float32Array; dims: number[] };
    const dims: [number, number, number] = [rows.length, seq, states.dims[2] as number];
    if (clipSkip > 1 && finalLayerNorm) return { data: layerNorm(states.data, dims, finalLayerNorm), dims };
    return { data: states.data, dims };
  };
}

/** Stages 2–3 for SD 1.x/2.x: one text encoder, the last layer after its final layer norm (or clip skip). */
export async function encodeSdPrompts(
  components: PipelineComponents,
  input: GenerateInput,
  doCfg: boolean,
  enterTextEncoder: () => Promise<void>,
): Promise<EncodedPrompts> {
  // 2. Tokenize: A1111 chunks of 75 tokens with attention weights, or diffusers' literal 77-token cut.
  const options = { embeddings: input.embeddings };
  const cond = tokenizePrompt(components.tokenizer, input.prompt, input.promptSyntax, options);
  const uncond = tokenizePrompt(
    components.tokenizer,
    input.negativePrompt ?? "",
    input.promptSyntax,
    options,
  );
  if (
    !components.capabilities.longPrompts &&
    (cond.chunks.length > 1 || (doCfg && uncond.chunks.length > 1))
  ) {
    throw new GenerationInvalid(
      'this model\'s UNet takes exactly 77 text tokens, so prompts over 75 tokens or with BREAK cannot be encoded in chunks; shorten the prompt or send prompt_syntax "diffusers" to cut it',
    );
  }

  // 3. Encode: each chunk through the text encoder, weighted, concatenated along the sequence.
  await enterTextEncoder();
  //    Clip skip applies to both prompts in AUTOMATIC1111; diffusers' encode_prompt applies it to the prompt only
  //    and encodes the negative prompt from the last layer, so the diffusers syntax does the same.
  const encodeRows = textEncoderFor(components, input.clipSkip);
  const encodeUncondRows = input.promptSyntax === "diffusers" ? textEncoderFor(components, 1) : encodeRows;
  const condEmbeds = await encodePrompt(encodeRows, cond);
  const uncondEmbeds = doCfg ? await encodePrompt(encodeUncondRows, uncond) : null;
  return {
    cond: { embeds: condEmbeds, added: null },
    uncond: uncondEmbeds ? { embeds: uncondEmbeds, added: null } : null,
    prompt: report(cond),
    negativePrompt: report(uncond),
  };
}
