/**
 * A fake Ollama server on loopback that speaks the real HTTP protocol (https://github.com/ollama/ollama/blob/main/docs/api.md):
 * `POST /api/chat` and `POST /api/generate`, streamed as NDJSON by default (`"stream": false` for one JSON
 * object), `GET /api/tags`, `GET /api/version`, a 404 `{"error":"model 'x' not found"}` for unknown models and
 * `{"error": ...}` lines inside a stream. Behaviour per model:
 *   - `answers[model]`: the text it answers, streamed a word per line; a function gets the request body;
 *   - `slow[model]`: milliseconds to wait before the first line (the "slow mode");
 *   - `failMidStream[model]`: an error line after the first chunk, as Ollama sends when a runner dies.
 */
import type { Server } from "bun";

export interface FakeOllamaOptions {
  answers: Record<string, string | ((body: FakeOllamaRequest) => string)>;
  slow?: Record<string, number>;
  failMidStream?: Record<string, string>;
}

export interface FakeOllamaRequest {
  path: string;
  model?: string;
  stream?: boolean;
  messages?: { role: string; content: string }[];
  prompt?: string;
  system?: string;
  options?: Record<string, unknown>;
}

export interface FakeOllama {
  url: string;
  requests: FakeOllamaRequest[];
  stop: () => Promise<void>;
}

const json = (value: unknown, status = 200) =>
  new Response(JSON.stringify(value), {
    status,
    headers: { "content-type": "application/json; charset=utf-8" },
  });

function chunkOf(
  kind: "chat" | "generate",
  model: string,
  text: string,
  done: boolean,
): Record<string, unknown> {
  const base = { model, created_at: new Date().toISOString() };
  const body =
    kind === "chat"
      ? { ...base, message: { role: "assistant", content: text } }
      : { ...base, response: text };
  if (!done) return { ...body, done: false };
  return {
    ...body,
    done: true,
    done_reason: "stop",
    ...(kind === "generate" ? { context: [1, 2, 3] } : {}),
    total_duration: 1_000_000,
    load_duration: 100_000,
    prompt_eval_count: 12,
    prompt_eval_duration: 200_000,
    eval_count: 34,
    eval_duration: 700_000,
  };
}

export function startFakeOllama(options: FakeOllamaOptions): FakeOllama {
  const requests: FakeOllamaRequest[] = [];
  const server: Server<undefined> = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const path = new URL(req.url).pathname;
      if (req.method === "GET" && path === "/api/tags") {
        return json({
          models: Object.keys(options.answers).map((name) => ({
            name,
            model: name,
            modified_at: "2025-01-01T00:00:00Z",
            size: 2_019_393_189,
            digest: "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
            details: {
              parent_model: "",
              format: "gguf",
              family: "llama",
              families: ["llama"],
              parameter_size: "3.2B",
              quantization_level: "Q4_K_M",
            },
          })),
        });
      }
      if (req.method === "GET" && path === "/api/version") return json({ version: "0.6.4" });
      if (req.method !== "POST" || (path !== "/api/chat" && path !== "/api/generate")) {
        return new Response("404 page not found", { status: 404, headers: { "content-type": "text/plain" } });
      }
      let body: FakeOllamaRequest;
      try {
        body = { ...((await req.json()) as Omit<FakeOllamaRequest, "path">), path };
      } catch {
        return json({ error: "invalid character in request body" }, 400);
      }
      requests.push(body);
      const model = body.model ?? "";
      if (!model) return json({ error: "model is required" }, 400);
      const answer = options.answers[model];
      if (answer === undefined) return json({ error: `model '${model}' not found` }, 404);
      const text = typeof answer === "function" ? answer(body) : answer;
      const kind = path === "/api/chat" ? "chat" : "generate";
      const delay = options.slow?.[model] ?? 0;
      const failure = options.failMidStream?.[model];
      if (body.stream === false) {
        if (delay) await Bun.sleep(delay);
        if (failure) return json({ error: failure }, 500);
        return json(chunkOf(kind, model, text, true));
      }
      const words = text.split(/(?<= )/);
      const encoder = new TextEncoder();
      const stream = new ReadableStream<Uint8Array>({
        async start(controller) {
          const line = (value: unknown) => controller.enqueue(encoder.encode(`${JSON.stringify(value)}\n`));
          try {
            if (delay) await Bun.sleep(delay);
            for (const [i, word] of words.entries()) {
              line(chunkOf(kind, model, word, false));
              if (i === 0 && failure) {
                line({ error: failure });
                controller.close();
                return;
              }
            }
            line(chunkOf(kind, model, "", true));
            controller.close();
          } catch {
            // The client went away (aborted or timed out).
          }
        },
      });
      return new Response(stream, { headers: { "content-type": "application/x-ndjson" } });
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    stop: async () => {
      await server.stop(true);
    },
  };
}
