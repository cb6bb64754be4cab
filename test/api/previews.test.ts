/**
 * Live previews over POST /v1/generate (tiny SD 1.x fixture, real engine worker): `preview` events arrive after
 * their step and before the images, one per image of the batch after every n-th step and the last, as valid PNGs
 * at 1/8 of the size; a preview never changes the final images; a JSON answer says it sent none; taesd is a 422
 * until its decoder is in.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Value } from "@sinclair/typebox/value";
import { createParser } from "eventsource-parser";
import { createApp } from "../../api/app.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { type GenerateEvents, type GenerateResponse, PreviewEventSchema } from "../../contract/index.ts";
import { MODELS_DIR, pixels } from "../helpers/fixtures.ts";

const host = new ModelHost({ modelsDir: MODELS_DIR, provider: "cpu" });
const app = createApp(host);
beforeAll(() => host.start());
afterAll(() => host.close());

const BODY = { prompt: "a red fox", seed: 11, width: 64, height: 64, num_steps: 5, batch_size: 2 };

const post = (body: unknown, stream: boolean) =>
  app.handle(
    new Request("http://localhost/v1/generate", {
      method: "POST",
      headers: { "content-type": "application/json", ...(stream ? { accept: "text/event-stream" } : {}) },
      body: JSON.stringify(body),
    }),
  );

async function streamed(body: unknown): Promise<{ event: string; data: unknown }[]> {
  const out: { event: string; data: unknown }[] = [];
  const parser = createParser({
    onEvent: (m) => out.push({ event: m.event ?? "message", data: JSON.parse(m.data) }),
  });
  parser.feed(await (await post(body, true)).text());
  return out;
}

const pngsOf = (events: { event: string; data: unknown }[]) =>
  events.filter((e) => e.event === "image").map((e) => (e.data as GenerateEvents["image"]).png);

describe("preview events", () => {
  let withPreviews: { event: string; data: unknown }[];
  beforeAll(async () => {
    withPreviews = await streamed({ ...BODY, preview: { every: 2 } });
  });

  test("steps 5, every 2, batch 2: two previews after steps 2, 4 and 5, each right after its step, before the images", () => {
    const order = withPreviews
      .filter((e) => ["step", "preview", "image"].includes(e.event))
      .map((e) =>
        e.event === "image"
          ? "image"
          : `${e.event} ${(e.data as { step: number }).step}${e.event === "preview" ? `/${(e.data as GenerateEvents["preview"]).image}` : ""}`,
      );
    expect(order).toEqual([
      "step 1",
      "step 2",
      "preview 2/0",
      "preview 2/1",
      "step 3",
      "step 4",
      "preview 4/0",
      "preview 4/1",
      "step 5",
      "preview 5/0",
      "preview 5/1",
      "image",
      "image",
    ]);
  });

  test("each preview is the contract's event: approx, total 5, an 8×8 PNG (1/8 of 64×64)", async () => {
    const previews = withPreviews.filter((e) => e.event === "preview").map((e) => e.data);
    for (const data of previews) {
      expect(Value.Check(PreviewEventSchema, data)).toBe(true);
      const p = data as GenerateEvents["preview"];
      expect(p).toMatchObject({ total: 5, method: "approx", width: 8, height: 8 });
      const decoded = await pixels(Buffer.from(p.png, "base64"));
      expect([decoded.width, decoded.height]).toEqual([8, 8]);
    }
    // The two images' previews differ (their own latents), and so do one image's early and last previews.
    const png = (step: number, image: number) =>
      (previews as GenerateEvents["preview"][]).find((p) => p.step === step && p.image === image)?.png;
    expect(png(5, 0)).not.toBe(png(5, 1));
    expect(png(2, 0)).not.toBe(png(5, 0));
  });

  test("a preview never changes the images: the same bytes as without `preview`, streamed or not", async () => {
    const plainStream = pngsOf(await streamed(BODY));
    const plainJson = ((await (await post(BODY, false)).json()) as GenerateResponse).images.map((i) => i.png);
    expect(pngsOf(withPreviews)).toEqual(plainStream);
    expect(plainJson).toEqual(plainStream);
  });
});

describe("preview without the event stream, and methods", () => {
  test("a JSON answer sends no previews and says so in warnings; its images are unchanged", async () => {
    const body = { ...BODY, batch_size: 1, num_steps: 2 };
    const res = (await (await post({ ...body, preview: { every: 1 } }, false)).json()) as GenerateResponse;
    expect(res.warnings.join("\n")).toContain(
      "preview was not applied: previews travel only on the event stream",
    );
    const plain = (await (await post(body, false)).json()) as GenerateResponse;
    expect(plain.warnings.join("\n")).not.toContain("preview");
    expect(res.images).toEqual(plain.images);
  });

  test("taesd is a 422 naming preview.method before anything runs (streamed or not)", async () => {
    for (const stream of [false, true]) {
      const res = await post({ ...BODY, preview: { every: 1, method: "taesd" } }, stream);
      expect(res.status).toBe(422);
      const error = (await res.json()) as {
        code: string;
        fields: { field: string; message: string; allowed: string[] }[];
      };
      expect(error.code).toBe("validation_failed");
      expect(error.fields[0]).toMatchObject({ field: "preview.method", allowed: ["approx"] });
      expect(error.fields[0]?.message).toStartWith("taesd previews need");
    }
  });

  test("every outside 1…1000 and unknown methods are refused by the schema", async () => {
    for (const preview of [{ every: 0 }, { every: 1001 }, { every: 2, method: "full" }, {}]) {
      const res = await post({ ...BODY, preview }, true);
      expect(res.status).toBe(422);
    }
  });
});
