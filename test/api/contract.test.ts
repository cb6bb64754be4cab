/**
 * Contract tests: the generated SDK drives the app in-process (`app.handle`, no network) and every answer
 * must match the spec's shapes; errors come back as one SdxError naming the field and the allowed values.
 */

import { beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createApp } from "../../api/app.ts";
import { resolveParams } from "../../api/engine/generation/params.ts";
import { ModelHost } from "../../api/engine/model_host.ts";
import { ApiError, SCHEDULER_CHOICES } from "../../contract/index.ts";
import { createSdxClient, SdxError } from "../../sdk/index.ts";
import { MODELS_DIR, TINY_SD15 } from "../helpers/fixtures.ts";

function inProcessClient(host: ModelHost) {
  const app = createApp(host);
  return { app, client: createSdxClient({ baseUrl: "http://localhost", fetch: (req) => app.handle(req) }) };
}

async function sdxError(promise: Promise<unknown>): Promise<SdxError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof SdxError) return e;
    throw e;
  }
  throw new Error("expected an SdxError");
}

describe("with the tiny model", () => {
  const host = new ModelHost({ modelsDir: MODELS_DIR, provider: "cpu" });
  const { app, client } = inProcessClient(host);
  beforeAll(() => host.start());

  test("health reports the served model", async () => {
    const health = await client.health();
    expect(health.status).toBe("ok");
    expect(health.model).toEqual({ name: "tiny_sd15", kind: "sd1" });
    expect(health.execution_provider).toBe("cpu");
  });

  test("models lists the ONNX folder with its kind", async () => {
    const { models } = await client.models.list();
    expect(models).toHaveLength(1);
    expect(models[0]).toMatchObject({
      name: "tiny_sd15",
      kind: "sd1",
      format: "onnx",
      loadable: true,
      loaded: true,
      native_size: 256,
    });
  });

  test("generate returns PNGs, seeds, applied parameters and timings", async () => {
    const res = await client.generate({
      prompt: "a cat",
      seed: 5,
      batch_size: 2,
      width: 64,
      height: 64,
      num_steps: 3,
    });
    expect(res.images.map((i) => i.seed)).toEqual([5, 6]);
    const png = Buffer.from(res.images[0]?.png ?? "", "base64");
    expect([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join("")).toBe("PNG");
    expect(res.metadata.parameters).toMatchObject({
      seed: 5,
      batch_size: 2,
      num_steps: 3,
      scheduler_type: "dpmsolver++",
    });
    expect(res.metadata.model).toEqual({
      name: "tiny_sd15",
      kind: "sd1",
      hash: expect.stringMatching(/^[0-9a-f]{64}$/),
    });
    expect(res.metadata.timesteps).toHaveLength(3);
    expect(res.warnings).toEqual([]);
  });

  test("a missing seed is drawn and returned; the default size is the model's", async () => {
    const res = await client.generate({ prompt: "", num_steps: 1 });
    expect(res.metadata.parameters.width).toBe(256);
    expect(Number.isInteger(res.images[0]?.seed)).toBe(true);
  });

  test("parameters that change nothing are named in warnings", async () => {
    const res = await client.generate({
      prompt: "a cat",
      negative_prompt: "dog",
      guidance_scale: 1,
      width: 64,
      height: 64,
      num_steps: 1,
      scheduler_scale: 2,
      enable_attention_slicing: true,
      enable_sequential_cpu_offload: true,
    });
    const text = res.warnings.join("\n");
    expect(text).toContain("negative_prompt");
    expect(text).toContain("scheduler_scale");
    expect(text).toContain("enable_attention_slicing");
    expect(text).toContain("offload");
  });

  test("AUTOMATIC1111 extra-network tags: read as text with diffusers syntax (a warning), LoRAs of an ONNX folder a 422", async () => {
    const prompt = "a cat <lora:fluffy:0.8>, <hypernet:style:1>";
    const literal = await client.generate({
      prompt,
      prompt_syntax: "diffusers",
      negative_prompt: "dog",
      width: 64,
      height: 64,
      num_steps: 1,
    });
    expect(literal.warnings.join("\n")).toContain(
      'prompt: <lora:fluffy:0.8> <hypernet:style:1> were read as text: with prompt_syntax "diffusers" prompts are literal',
    );
    const a1111 = await client
      .generate({ prompt, width: 64, height: 64, num_steps: 1 })
      .catch((e: unknown) => e);
    expect(a1111).toBeInstanceOf(SdxError);
    expect((a1111 as SdxError).fields[0]).toMatchObject({ field: "prompt" });
    expect((a1111 as SdxError).message).toContain("needs a single-file checkpoint");
    const hypernet = await client.generate({
      prompt: "a cat <hypernet:style:1>",
      width: 64,
      height: 64,
      num_steps: 1,
    });
    expect(hypernet.warnings.join("\n")).toContain("<hypernet:style:1> was removed and not applied");
    const plain = await client.generate({ prompt: "a cat", width: 64, height: 64, num_steps: 1 });
    expect(plain.warnings.join("\n")).not.toContain("read as text");
  });

  test("a default size beyond the server's size limit is a 422 naming the field, not a silent resize", async () => {
    const limited = createApp(host, { limits: { sizeMax: 128 } });
    const res = await limited.handle(
      new Request("http://localhost/v1/generate", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ prompt: "x", num_steps: 1 }),
      }),
    );
    expect(res.status).toBe(422);
    const body = (await res.json()) as { fields: { field: string; message: string }[] };
    expect(body.fields.map((f) => f.field)).toEqual(["width", "height"]);
    expect(body.fields[0]?.message).toContain("native size 256");
  });

  test("a size the UNet cannot take is a 422 naming the field", async () => {
    const e = await sdxError(client.generate({ prompt: "x", width: 72, height: 64, num_steps: 1 }));
    expect(e.status).toBe(422);
    expect(e.code).toBe("validation_failed");
    expect(e.fields.map((f) => f.field)).toEqual(["width"]);
    const notEight = await sdxError(client.generate({ prompt: "x", width: 100, num_steps: 1 }));
    expect(notEight.fields[0]).toMatchObject({
      field: "width",
      message: "must be an integer from 64 to 2048, a multiple of 8; got 100",
    });
  });

  test("an unknown scheduler is a 422 listing the allowed values", async () => {
    const e = await sdxError(client.generate({ prompt: "x", scheduler_type: "euler_x" as never }));
    expect(e.status).toBe(422);
    const field = e.fields.find((f) => f.field === "scheduler_type");
    expect(field?.allowed).toEqual([...SCHEDULER_CHOICES]);
    expect(field?.message).toBe(`must be one of: ${SCHEDULER_CHOICES.join(", ")}; got "euler_x"`);
  });

  test("unknown fields, wrong types and out-of-range values are rejected, not fixed", async () => {
    for (const [body, field] of [
      [{ prompt: "x", steps: 20 }, "steps"],
      [{ prompt: "x", num_steps: "20" }, "num_steps"],
      [{ prompt: "x", num_steps: 151 }, "num_steps"],
      [{ prompt: "x", width: 4096 }, "width"],
      [{ prompt: "x", seed: 1.5 }, "seed"],
      [{ negative_prompt: "x" }, "prompt"],
    ] as const) {
      const e = await sdxError(client.generate(body as never));
      expect(e.status).toBe(422);
      expect(e.fields.map((f) => f.field)).toContain(field);
    }
  });

  test("malformed JSON is a 400 and an unknown route a 404, both in the error shape", async () => {
    const bad = await app.handle(
      new Request("http://localhost/v1/generate", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{",
      }),
    );
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ status: 400, code: "bad_request" });
    const missing = await app.handle(new Request("http://localhost/v2/nothing"));
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ status: 404, code: "not_found" });
  });
});

describe("model-dependent checks", () => {
  test("clip_skip on a text encoder without hidden states is a 422 naming the model and why", () => {
    const capabilities = {
      clipSkipMax: 1,
      clipSkipUnavailable:
        "its ONNX text encoder exports no hidden_states.* outputs (re-export with output_hidden_states)",
      longPrompts: true,
      unetBatch: null,
      unetInChannels: 4,
      vaeEncoder: true,
    };
    const model = { name: "plain_export", nativeSize: 512, sizeMultiple: 64, capabilities };
    let error: unknown;
    try {
      resolveParams({ prompt: "x", clip_skip: 2 }, model);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(422);
    expect((error as ApiError).fields?.[0]).toMatchObject({ field: "clip_skip", allowed: [1] });
    expect((error as ApiError).message).toContain("plain_export cannot skip text-encoder layers");
  });
});

describe("models directory", () => {
  test("a models directory that is itself a model folder holds that model", async () => {
    const host = new ModelHost({ modelsDir: TINY_SD15, provider: "cpu" });
    const { client } = inProcessClient(host);
    const { models } = await client.models.list();
    expect(models.map((m) => [m.name, m.loadable])).toEqual([["tiny_sd15", true]]);
  });

  test("an incomplete export is listed with what is missing, and not loaded", async () => {
    const dir = await mkdtemp(join(tmpdir(), "sdx-models-"));
    await mkdir(join(dir, "half", "unet"), { recursive: true });
    await writeFile(
      join(dir, "half", "model_index.json"),
      JSON.stringify({ _class_name: "StableDiffusionPipeline" }),
    );
    await writeFile(join(dir, "notes.txt"), "not a model");
    const host = new ModelHost({ modelsDir: dir, provider: "cpu" });
    await host.start();
    const { client } = inProcessClient(host);
    const { models } = await client.models.list();
    expect(models).toHaveLength(1);
    expect(models[0]).toMatchObject({ name: "half", loadable: false, loaded: false });
    expect(models[0]?.problem).toContain("unet/model.onnx");
    expect((await client.health()).status).toBe("no_model");
  });
});

describe("without a model", () => {
  test("health says no_model with what to do, and generation is a 503 with the same sentence", async () => {
    const empty = await mkdtemp(join(tmpdir(), "sdx-empty-"));
    const host = new ModelHost({ modelsDir: empty, provider: "cpu" });
    await host.start();
    const { client } = inProcessClient(host);
    const health = await client.health();
    expect(health.status).toBe("no_model");
    expect(health.message).toContain("--models-dir");
    const e = await sdxError(client.generate({ prompt: "x" }));
    expect(e.status).toBe(503);
    expect(e.code).toBe("no_model");
    expect(e.message).toBe(health.message);
  });

  test("an unreachable server is an SdxError with status 0", async () => {
    const client = createSdxClient({ baseUrl: "http://127.0.0.1:9" });
    const e = await sdxError(client.health());
    expect(e.status).toBe(0);
    expect(e.code).toBe("unreachable");
  });
});
