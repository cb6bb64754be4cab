/**
 * `sdx gen --ollama`: a local LLM (through the `ollama` package) writes one new prompt per image, fitted to
 * CLIP's 75 usable tokens with the server's /v1/tokenize. When Ollama times out, does not know the model
 * (404) or cannot be reached, the config's `fallback_prompt` is used, with a warning and metadata saying so.
 */
import { Ollama } from "ollama";
import { seedAt } from "../contract/index.ts";
import type { GenerateRequest, SdxClient } from "../sdk/index.ts";
import { SdxError } from "../sdk/index.ts";
import type { PlannedRequest } from "./generate.ts";
import type { OllamaConfig } from "./project.ts";

export const DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434";
export const DEFAULT_OLLAMA_TIMEOUT_S = 60;
/** Text tokens one CLIP chunk holds; the server's tokenize answer says so too (`chunk_tokens`). */
export const CLIP_TOKENS = 75;

export interface OllamaPrompt {
  prompt: string;
  source: "ollama" | "fallback";
  /** Why the fallback prompt was used. */
  reason?: string;
  /** The model's answer before fitting. */
  raw?: string;
}

export interface FittedPrompt {
  prompt: string;
  tokens: number;
  /** The text cut off to fit CLIP's 75 tokens; null when nothing was cut. */
  cut: string | null;
  /** Why the prompt could not be measured (the server's tokenize failed); it is sent as it is. */
  problem?: string;
}

/** Collapses whitespace and strips the quotes and "Prompt:" labels models like to add. */
export function cleanAnswer(text: string): string {
  let t = text.replace(/\s+/g, " ").trim();
  t = t.replace(/^(?:here(?:'s| is) (?:a|the|your) [^:]*:|prompt:)\s*/i, "");
  const quoted = /^["'“”](.*)["'“”]$/.exec(t);
  return (quoted?.[1] ?? t).trim();
}

/** Asks Ollama for one prompt; any failure but a Ctrl-C gives the fallback prompt and the reason. */
export async function askOllama(
  config: OllamaConfig,
  options: { signal?: AbortSignal; seed?: number } = {},
): Promise<OllamaPrompt> {
  const host = config.server_url ?? DEFAULT_OLLAMA_URL;
  const timeoutS = config.timeout_seconds ?? DEFAULT_OLLAMA_TIMEOUT_S;
  const timeout = AbortSignal.timeout(timeoutS * 1000);
  const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
  // The package passes no signal on non-streamed calls, so every request gets ours through `fetch`.
  const withSignal: typeof fetch = Object.assign(
    (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) =>
      fetch(input, { ...init, signal }),
    { preconnect: fetch.preconnect },
  );
  const ollama = new Ollama({ host, fetch: withSignal });
  const fallback = (reason: string): OllamaPrompt => ({
    prompt: config.fallback_prompt,
    source: "fallback",
    reason,
  });
  try {
    const stream = await ollama.chat({
      model: config.model,
      stream: true,
      messages: [
        ...(config.system_message ? [{ role: "system", content: config.system_message }] : []),
        { role: "user", content: config.prompt },
      ],
      options: {
        ...(config.temperature !== undefined ? { temperature: config.temperature } : {}),
        ...(options.seed !== undefined ? { seed: options.seed } : {}),
      },
    });
    let raw = "";
    for await (const part of stream) raw += part.message.content;
    const prompt = cleanAnswer(raw);
    if (!prompt) return fallback(`model "${config.model}" at ${host} answered with an empty prompt`);
    return { prompt, source: "ollama", raw };
  } catch (e) {
    if (options.signal?.aborted) throw e;
    if (timeout.aborted) return fallback(`Ollama at ${host} did not answer within ${timeoutS} s`);
    const err = e as Error & { status_code?: number; code?: string };
    if (err.status_code === 404)
      return fallback(`Ollama at ${host}: ${err.message} (try \`ollama pull ${config.model}\`)`);
    if (err.status_code !== undefined)
      return fallback(`Ollama at ${host} answered ${err.status_code}: ${err.message}`);
    if (
      err.name === "TypeError" ||
      err.code === "ConnectionRefused" ||
      /connect|fetch|socket/i.test(err.message)
    )
      return fallback(`cannot reach Ollama at ${host}: ${err.message}`);
    return fallback(`Ollama at ${host} failed: ${err.message}`);
  }
}

/** Ends of every prefix that stops at a word or comma boundary, shortest first. */
function boundaries(text: string): number[] {
  const ends: number[] = [];
  for (let i = 1; i < text.length; i++) {
    const c = text[i] as string;
    const prev = text[i - 1] as string;
    if ((/\s/.test(c) || c === ",") && !/[\s,]/.test(prev)) ends.push(i);
  }
  ends.push(text.length);
  return ends;
}

/**
 * Fits a prompt to CLIP's 75 usable tokens, measured by the server's own tokenizer: the longest prefix that
 * ends at a word or comma boundary (never mid-word), found by binary search over the boundaries.
 */
export async function fitToClip(
  client: SdxClient,
  text: string,
  syntax: "a1111" | "diffusers" = "a1111",
  signal?: AbortSignal,
  model?: string,
): Promise<FittedPrompt> {
  const opts = signal ? { signal } : {};
  const count = async (t: string) =>
    (await client.tokenize({ prompt: t, prompt_syntax: syntax, ...(model ? { model } : {}) }, opts))
      .token_count;
  let full: number;
  try {
    full = await count(text);
  } catch (e) {
    if (e instanceof SdxError) return { prompt: text, tokens: -1, cut: null, problem: e.message };
    throw e;
  }
  if (full <= CLIP_TOKENS) return { prompt: text, tokens: full, cut: null };
  const ends = boundaries(text);
  let lo = 0;
  let hi = ends.length - 1; // ends[hi] is the whole text, known too long
  let best = -1;
  let bestTokens = 0;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const candidate = text.slice(0, ends[mid]).replace(/[\s,]+$/, "");
    const tokens = await count(candidate);
    if (tokens <= CLIP_TOKENS) {
      best = mid;
      bestTokens = tokens;
      lo = mid + 1;
    } else hi = mid;
  }
  if (best < 0) return { prompt: "", tokens: 0, cut: text };
  const end = ends[best] as number;
  return {
    prompt: text.slice(0, end).replace(/[\s,]+$/, ""),
    tokens: bestTokens,
    cut: text.slice(end).replace(/^[\s,]+/, ""),
  };
}

/** One request per image, each with a new prompt from Ollama, image i using seed + i. */
export async function* ollamaPlans(options: {
  client: SdxClient;
  config: OllamaConfig;
  base: GenerateRequest;
  total: number;
  seed: number;
  signal?: AbortSignal;
}): AsyncGenerator<PlannedRequest> {
  const { client, config, base, total, seed, signal } = options;
  const syntax = base.prompt_syntax ?? "a1111";
  for (let index = 0; index < total; index++) {
    const imageSeed = seedAt(seed, index);
    const answer = await askOllama(config, { seed: imageSeed, ...(signal ? { signal } : {}) });
    const warnings: string[] = [];
    let fitted: FittedPrompt = { prompt: answer.prompt, tokens: -1, cut: null };
    if (answer.source === "fallback") {
      warnings.push(`ollama: ${answer.reason}; using fallback_prompt`);
    } else {
      fitted = await fitToClip(client, answer.prompt, syntax, signal, base.model);
      if (fitted.problem)
        warnings.push(`ollama: could not fit the prompt to ${CLIP_TOKENS} tokens: ${fitted.problem}`);
      else if (!fitted.prompt) {
        warnings.push(
          `ollama: the answer has no word boundary within ${CLIP_TOKENS} tokens; using fallback_prompt`,
        );
        fitted = { ...fitted, prompt: config.fallback_prompt };
      } else if (fitted.cut) {
        warnings.push(`ollama: prompt cut to ${CLIP_TOKENS} CLIP tokens; cut off: "${fitted.cut}"`);
      }
    }
    yield {
      index,
      request: {
        ...base,
        prompt: fitted.prompt,
        ...(config.negative_prompt !== undefined ? { negative_prompt: config.negative_prompt } : {}),
        seed: imageSeed,
        batch_size: 1,
      },
      warnings,
      ollama: {
        server_url: config.server_url ?? DEFAULT_OLLAMA_URL,
        model: config.model,
        source: answer.source,
        fallback: answer.source === "fallback",
        ...(answer.reason ? { fallback_reason: answer.reason } : {}),
        ...(answer.raw !== undefined ? { answer: answer.raw } : {}),
        cut_text: fitted.cut,
      },
    };
  }
}
