/**
 * The server-sent events are the contract's schemas: every event a real stream sends, for /v1/generate and for
 * /v1/models/pull, names an event of its map (contract/events.ts) and its data validates against that event's
 * schema; the route descriptions list exactly those events.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TObject } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { createParser } from "eventsource-parser";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { GenerateEventsSchema, PullEventsSchema } from "../../contract/index.ts";
import { type FakeHub, startFakeHub } from "../helpers/fake_hub.ts";
import { MODELS_DIR, TINY_SD15 } from "../helpers/fixtures.ts";

/** The events of a streamed answer, in order. */
async function events(response: Response): Promise<{ event: string; data: unknown }[]> {
  const out: { event: string; data: unknown }[] = [];
  const parser = createParser({
    onEvent: (m) => out.push({ event: m.event ?? "message", data: JSON.parse(m.data) }),
  });
  parser.feed(await response.text());
  return out;
}

/** Each event named in `map` and its data valid against its schema; the names seen, in order. */
function checkAgainst(map: TObject, seen: { event: string; data: unknown }[]): string[] {
  for (const { event, data } of seen) {
    const schema = map.properties[event];
    expect({ event, known: schema !== undefined }).toEqual({ event, known: true });
    if (schema && !Value.Check(schema, data)) {
      throw new Error(`${event}: ${JSON.stringify([...Value.Errors(schema, data)].slice(0, 3))}`);
    }
  }
  return seen.map((e) => e.event);
}

const post = (path: string, body: unknown) =>
  new Request(`http://localhost${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(body),
  });

describe("POST /v1/generate", () => {
  const host = new ModelHost({ modelsDir: MODELS_DIR, provider: "cpu" });
  const app = createApp(host);
  beforeAll(() => host.start());
  afterAll(() => host.close());

  test("every event of a stream is one of GenerateEvents, its data valid against its schema", async () => {
    const res = await app.handle(
      post("/v1/generate", {
        prompt: "a red fox",
        seed: 3,
        width: 64,
        height: 64,
        num_steps: 2,
        batch_size: 2,
      }),
    );
    const names = checkAgainst(GenerateEventsSchema, await events(res));
    expect(names).toEqual(["queued", "started", "step", "step", "image", "image", "done"]);
  });

  test("a generation stopped mid-stream ends with an error event that is the Error schema", async () => {
    const res = await app.handle(
      post("/v1/generate", { prompt: "a red fox", seed: 3, width: 64, height: 64, num_steps: 20 }),
    );
    const seen: { event: string; data: unknown }[] = [];
    const parser = createParser({
      onEvent: (m) => {
        seen.push({ event: m.event ?? "message", data: JSON.parse(m.data) });
        if (m.event === "step") host.interrupt();
      },
    });
    const decoder = new TextDecoder();
    for await (const chunk of res.body as ReadableStream<Uint8Array>)
      parser.feed(decoder.decode(chunk, { stream: true }));
    expect(checkAgainst(GenerateEventsSchema, seen).at(-1)).toBe("error");
    expect(seen.at(-1)?.data).toMatchObject({ code: "cancelled" });
  });

  test("the route's description lists exactly the events of the map", async () => {
    const spec = (await (await app.handle(new Request("http://localhost/swagger/json"))).json()) as {
      paths: Record<string, { post: { description: string } }>;
    };
    const listed = (path: string) =>
      [...(spec.paths[path]?.post.description ?? "").matchAll(/^- `(\w+)` /gm)].map((m) => m[1]);
    expect(listed("/v1/generate")).toEqual(Object.keys(GenerateEventsSchema.properties));
    expect(listed("/v1/models/pull")).toEqual(Object.keys(PullEventsSchema.properties));
  });
});

describe("POST /v1/models/pull", () => {
  let hub: FakeHub;
  let models: string;
  beforeAll(async () => {
    hub = await startFakeHub({
      "acme/tiny": { dir: TINY_SD15 },
      "acme/corrupt": { dir: TINY_SD15, corrupt: ["unet/model.onnx"] },
    });
    models = await mkdtemp(join(tmpdir(), "sdx-events-"));
  });
  afterAll(async () => {
    await hub.stop();
    await rm(models, { recursive: true, force: true });
  });

  test("every event of a pull stream (one that succeeds, one that fails) is one of PullEvents, valid against its schema", async () => {
    const app = createApp(new ModelHost({ modelsDir: models, provider: "cpu" }), {
      hub: { endpoint: hub.url, retryDelayMs: 1 },
    });
    const ok = checkAgainst(
      PullEventsSchema,
      await events(await app.handle(post("/v1/models/pull", { name: "acme/tiny" }))),
    );
    expect(ok.at(-1)).toBe("done");
    expect(ok.filter((e) => e === "progress").length).toBeGreaterThan(0);
    const failed = checkAgainst(
      PullEventsSchema,
      await events(await app.handle(post("/v1/models/pull", { name: "acme/corrupt" }))),
    );
    expect(failed.at(-1)).toBe("error");
  });
});
