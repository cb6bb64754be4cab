/**
 * Container health check, for images without curl: `bun scripts/healthcheck.ts [--ready] [URL]`.
 *
 * Exit 0 when /health answers 200: the server runs (also while a model loads, or with none). It answers 503
 * while it drains for shutdown or a generation is stuck, and then this exits 1. With `--ready`, exit 0 only when
 * a model is loaded and ready (`status: "ok"`): the readiness check for a load balancer.
 * URL defaults to http://127.0.0.1:$SDX_PORT/health (port 8001).
 */
export {};

const args = process.argv.slice(2);
const ready = args.includes("--ready");
const url =
  args.find((a) => !a.startsWith("--")) ?? `http://127.0.0.1:${process.env.SDX_PORT || 8001}/health`;

try {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
  const body = (await res.json().catch(() => ({}))) as { status?: string; message?: string };
  const healthy = res.ok && (!ready || body.status === "ok");
  if (!healthy) {
    console.error(`sdx health: ${res.status} ${body.status ?? ""}${body.message ? `: ${body.message}` : ""}`);
  }
  process.exit(healthy ? 0 : 1);
} catch (e) {
  console.error(`sdx health: ${url}: ${(e as Error).message}`);
  process.exit(1);
}
