/**
 * Property-based robustness: random and malformed requests at every route must be answered with 2xx, 4xx
 * or 503 (never another 5xx), and every non-2xx body must be the API's error shape. In process
 * (`app.handle`); generate runs against an app with no model (valid bodies get a fast 503), plus a few
 * runs with the tiny model and tiny sizes.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";

const RUNS = 200;

async function checkAnswer(res: Response): Promise<void> {
  const status = res.status;
  const ok = (status >= 200 && status < 300) || (status >= 400 && status < 500) || status === 503;
  if (!ok) throw new Error(`status ${status}: ${await res.text()}`);
  if (status >= 200 && status < 300) return;
  const body = (await res.json()) as { status?: unknown; code?: unknown; message?: unknown };
  if (body.status !== status || typeof body.code !== "string" || typeof body.message !== "string") {
    throw new Error(`not the error shape: ${JSON.stringify(body)}`);
  }
}

const FIELDS = [
  "prompt",
  "negative_prompt",
  "prompt_2",
  "width",
  "height",
  "num_steps",
  "batch_size",
  "seed",
  "guidance_scale",
  "scheduler_type",
  "prompt_syntax",
  "eta",
  "clip_skip",
  "original_size",
  "karras_sigmas",
  "timestep_spacing",
];

/** Values that break types and bounds: huge numbers, NaN-like strings, unicode, nesting. */
const nasty = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(
    "NaN",
    "Infinity",
    "-Infinity",
    "1e309",
    "",
    "0x10",
    "null",
    "true",
    1e308,
    -1e308,
    2 ** 53,
    -(2 ** 53),
    -0,
    0.5,
    64.5,
    4_294_967_296,
    "\u0000",
    "\ud800",
    "(((((((((",
    "a:1.5)",
    "BREAK BREAK",
  ),
  fc.integer({ min: -10_000, max: 10_000 }),
  fc.string({ unit: "grapheme", maxLength: 50 }),
  fc.string({ unit: "binary", maxLength: 50 }),
);

/** Objects mixing known fields (random values) and random extra keys. */
const objectBody = fc.dictionary(fc.oneof(fc.constantFrom(...FIELDS), fc.string({ maxLength: 12 })), nasty, {
  maxKeys: 8,
});

const deepNesting = fc
  .tuple(fc.integer({ min: 1, max: 5000 }), fc.constantFrom("[", '{"a":'))
  .map(([depth, open]) => open.repeat(depth) + (open === "[" ? "]" : "1}").repeat(depth));

/** Raw body text: JSON of any shape, invalid JSON, deep nesting. */
const bodyText = fc.oneof(
  objectBody.map((o) => JSON.stringify(o)),
  fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
  fc.array(objectBody, { maxLength: 3 }).map((a) => JSON.stringify(a)),
  fc.string({ maxLength: 100 }),
  fc.string({ unit: "grapheme", maxLength: 100 }),
  deepNesting,
  fc.constantFrom("{", '{"prompt":', '{"prompt":"a",}', "[1,2", "\u0000", "{}{}", "NaN", "undefined", ""),
);

const contentType = fc.constantFrom(
  "application/json",
  "application/json; charset=utf-8",
  "text/plain",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "application/octet-stream",
  "application/xml",
  "",
);

const query = fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 16 }), { maxKeys: 3 });

function urlWith(path: string, q: Record<string, string>): string {
  const search = new URLSearchParams(q).toString();
  return `http://localhost${path}${search ? `?${search}` : ""}`;
}

describe("with no model", () => {
  const app = createApp(new ModelHost({ modelsDir: "/nonexistent", provider: "cpu" }));

  for (const path of ["/health", "/v1/models", "/v1/schedulers"]) {
    test(`GET ${path}: random query strings and headers`, async () => {
      await fc.assert(
        fc.asyncProperty(
          query,
          contentType,
          fc.constantFrom("GET", "HEAD", "DELETE", "PUT"),
          async (q, type, method) => {
            const headers: Record<string, string> = type ? { "content-type": type } : {};
            await checkAnswer(await app.handle(new Request(urlWith(path, q), { method, headers })));
          },
        ),
        { numRuns: RUNS },
      );
    });
  }

  for (const path of ["/v1/tokenize", "/v1/generate"]) {
    test(`POST ${path}: random and malformed bodies, wrong content types`, async () => {
      await fc.assert(
        fc.asyncProperty(bodyText, contentType, query, async (text, type, q) => {
          const headers: Record<string, string> = type ? { "content-type": type } : {};
          const req = new Request(urlWith(path, q), { method: "POST", headers, body: text });
          await checkAnswer(await app.handle(req));
        }),
        { numRuns: RUNS },
      );
    });

    test(`POST ${path}: valid-looking objects with one field broken`, async () => {
      const base = fc.record({
        prompt: fc.string({ maxLength: 30 }),
        width: fc.constantFrom(64, 128),
        height: fc.constantFrom(64, 128),
        num_steps: fc.integer({ min: 1, max: 3 }),
      });
      await fc.assert(
        fc.asyncProperty(base, fc.constantFrom(...FIELDS), nasty, async (body, field, value) => {
          const json = JSON.stringify({ ...body, [field]: value });
          const req = new Request(`http://localhost${path}`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: json,
          });
          const res = await app.handle(req);
          await checkAnswer(res);
          // With no model, a body that passes validation gets 503, never 200.
          expect(res.status).not.toBe(200);
        }),
        { numRuns: RUNS },
      );
    });
  }
});

describe("every route of the spec", () => {
  // The hub is a closed local port, so a body that happens to name a repository fails fast, offline.
  const app = createApp(new ModelHost({ modelsDir: "/nonexistent", provider: "cpu" }), {
    hub: { endpoint: "http://127.0.0.1:9", retryDelayMs: 1 },
  });
  type Schema = { properties?: object; $ref?: string };
  type Operation = { requestBody?: { content?: Record<string, { schema?: Schema }> } };
  let operations: { method: string; path: string; fields: string[] }[] = [];

  beforeAll(async () => {
    const spec = (await (await app.handle(new Request("http://localhost/swagger/json"))).json()) as {
      paths: Record<string, Record<string, Operation>>;
      components: { schemas: Record<string, Schema> };
    };
    const resolve = (schema: Schema | undefined): Schema | undefined =>
      schema?.$ref ? spec.components.schemas[schema.$ref.split("/").at(-1) as string] : schema;
    operations = Object.entries(spec.paths).flatMap(([path, methods]) =>
      Object.entries(methods).map(([method, op]) => ({
        method: method.toUpperCase(),
        path,
        fields: Object.keys(resolve(op.requestBody?.content?.["application/json"]?.schema)?.properties ?? {}),
      })),
    );
  });

  test("the spec lists the routes of every feature, with their body fields", () => {
    const paths = new Set(operations.map((o) => o.path));
    const fieldsOf = (path: string) => operations.find((o) => o.path === path)?.fields ?? [];
    expect(fieldsOf("/v1/generate")).toContain("prompt");
    expect(fieldsOf("/sdapi/v1/txt2img")).toContain("sampler_name");
    expect(fieldsOf("/v1/models/pull")).toContain("name");
    for (const path of [
      "/v1/generate",
      "/v1/models/pull",
      "/sdapi/v1/txt2img",
      "/sdapi/v1/options",
      "/metrics",
    ])
      expect(paths).toContain(path);
  });

  test("random bodies, queries and content types at every operation: 2xx, 4xx or 503, in the error shape", async () => {
    const operation = fc.integer({ min: 0, max: 10_000 }).map((i) => operations[i % operations.length]);
    await fc.assert(
      fc.asyncProperty(operation, bodyText, contentType, query, async (op, text, type, q) => {
        if (!op) return;
        const headers: Record<string, string> = type ? { "content-type": type } : {};
        const hasBody = op.method !== "GET" && op.method !== "HEAD";
        const req = new Request(urlWith(op.path, q), {
          method: op.method,
          headers,
          ...(hasBody ? { body: text } : {}),
        });
        await checkAnswer(await app.handle(req));
      }),
      { numRuns: RUNS * 2 },
    );
  });

  test("objects of each operation's own fields with random values", async () => {
    const withBody = () => operations.filter((o) => o.fields.length > 0);
    const pick = fc.integer({ min: 0, max: 10_000 });
    await fc.assert(
      fc.asyncProperty(pick, fc.array(fc.tuple(pick, nasty), { maxLength: 6 }), async (i, values) => {
        const ops = withBody();
        const op = ops[i % ops.length];
        if (!op) return;
        const body = Object.fromEntries(values.map(([k, v]) => [op.fields[k % op.fields.length], v]));
        const req = new Request(`http://localhost${op.path}`, {
          method: op.method,
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
        await checkAnswer(await app.handle(req));
      }),
      { numRuns: RUNS * 2 },
    );
  });

  test("a key that reaches a prototype is a 422 naming it, at any depth, on every operation with a body", async () => {
    const posts = () => operations.filter((o) => o.method === "POST");
    const forbidden = fc.constantFrom(
      { key: "__proto__", json: '"__proto__":{"width":4096,"batch_size":16}', field: "__proto__" },
      { key: "constructor", json: '"constructor":{"prototype":{"seed":1}}', field: "constructor.prototype" },
      { key: "toString", json: '"toString":1', field: "toString" },
      { key: "valueOf", json: '"valueOf":{"x":1}', field: "valueOf" },
    );
    const pick = fc.integer({ min: 0, max: 10_000 });
    await fc.assert(
      fc.asyncProperty(
        pick,
        fc.array(fc.tuple(pick, nasty), { maxLength: 4 }),
        forbidden,
        fc.array(
          fc.string({ minLength: 1, maxLength: 6 }).filter((k) => /^[a-z_]+$/.test(k)),
          {
            maxLength: 2,
          },
        ),
        async (i, values, bad, nesting) => {
          const ops = posts();
          const op = ops[i % ops.length];
          if (!op) return;
          const own = Object.fromEntries(
            values.map(([k, v]) => [op.fields[k % Math.max(op.fields.length, 1)] ?? "prompt", v]),
          );
          // The forbidden key inside `nesting` objects, after the operation's own fields (a repeated key: last wins).
          const inner = nesting.reduceRight((json, key) => `"${key}":{${json}}`, bad.json);
          const rest = JSON.stringify(own).slice(1, -1);
          const text = `{${rest ? `${rest},` : ""}${inner}}`;
          const res = await app.handle(
            new Request(`http://localhost${op.path}`, {
              method: op.method,
              headers: { "content-type": "application/json" },
              body: text,
            }),
          );
          const body = (await res.json()) as { fields?: { field: string }[] };
          expect({ path: op.path, status: res.status }).toEqual({ path: op.path, status: 422 });
          const field = body.fields?.[0]?.field ?? "";
          expect(field).toMatch(/(^|\.)(__proto__|constructor\.prototype|toString|valueOf)$/);
          // Random values may hold such keys themselves (fast-check tries them); else it is ours that is named.
          if (!/__proto__|constructor|toString|valueOf/.test(rest)) {
            expect(field).toBe([...nesting, bad.field].join("."));
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('the issue\'s own example, {"__proto__": {"width": 4096}, "prompt": "x"}, is refused before anything reads it', async () => {
    const res = await app.handle(
      new Request("http://localhost/v1/generate", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"__proto__": {"width": 4096}, "prompt": "x"}',
      }),
    );
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({ code: "validation_failed", fields: [{ field: "__proto__" }] });
  });
});

describe("with the tiny model", () => {
  const host = new ModelHost({ modelsDir: MODELS_DIR, provider: "cpu" });
  const app = createApp(host);
  beforeAll(() => host.start());

  test("tokenize answers any prompt text with 200 or 422", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: "grapheme", maxLength: 200 })),
        fc.constantFrom("a1111", "diffusers"),
        async (prompt, syntax) => {
          const res = await app.handle(
            new Request("http://localhost/v1/tokenize", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ prompt, prompt_syntax: syntax }),
            }),
          );
          await checkAnswer(res);
          expect([200, 422]).toContain(res.status);
        },
      ),
      { numRuns: RUNS },
    );
  });

  test("generate at tiny sizes with random prompts and options", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          {
            prompt: fc.string({ unit: "grapheme", maxLength: 40 }),
            negative_prompt: fc.string({ maxLength: 20 }),
            seed: fc.integer({ min: -1, max: 4_294_967_295 }),
            guidance_scale: fc.double({ min: 0, max: 50, noNaN: true }),
            prompt_syntax: fc.constantFrom("a1111", "diffusers"),
            scheduler_type: fc.constantFrom("dpmsolver++", "euler", "ddim", "Euler a", "bogus"),
          },
          { requiredKeys: ["prompt"] },
        ),
        async (params) => {
          const res = await app.handle(
            new Request("http://localhost/v1/generate", {
              method: "POST",
              headers: { "content-type": "application/json" },
              body: JSON.stringify({ ...params, width: 64, height: 64, num_steps: 1 }),
            }),
          );
          await checkAnswer(res);
        },
      ),
      { numRuns: 15 },
    );
  });
});
