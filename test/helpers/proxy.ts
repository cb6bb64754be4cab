/**
 * A proxy on loopback in front of the real server, for what a test needs the server to do that it would not on
 * its own: see each generate request, answer one itself (hang until the client goes away, fail mid-stream), or
 * put events before the server's own on the stream (a busy queue, previews).
 */
export interface ProxyHooks {
  /** Sees each POST /v1/generate (its parsed body) first; a Response answers it instead of the server. */
  generate?: (
    body: Record<string, unknown>,
    request: Request,
  ) => Promise<Response | undefined> | Response | undefined;
  /** Server-sent events written before the server's own on a /v1/generate stream it answers. */
  prepend?: (body: Record<string, unknown>) => string;
}

export function startProxy(target: string, hooks: ProxyHooks = {}): ReturnType<typeof Bun.serve> {
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    async fetch(req) {
      const url = new URL(req.url);
      const init: RequestInit = { method: req.method, headers: req.headers };
      if (req.method === "POST") init.body = await req.text();
      if (url.pathname !== "/v1/generate") return fetch(`${target}${url.pathname}${url.search}`, init);
      const body = JSON.parse(init.body as string) as Record<string, unknown>;
      const answer = await hooks.generate?.(body, req);
      if (answer) return answer;
      const upstream = await fetch(`${target}${url.pathname}${url.search}`, init);
      const prefix = hooks.prepend?.(body) ?? "";
      if (!upstream.ok || !upstream.body || prefix === "") return upstream;
      const first = new TextEncoder().encode(prefix);
      const rest = upstream.body;
      const stream = new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(first);
          for await (const chunk of rest) controller.enqueue(chunk);
          controller.close();
        },
      });
      return new Response(stream, { headers: upstream.headers });
    },
  });
}

/** Answers when the client goes away (a cancelled request), as a server does. */
export async function untilAborted(request: Request): Promise<Response> {
  await new Promise<void>((resolve) => request.signal.addEventListener("abort", () => resolve()));
  return new Response(null, { status: 499 });
}
