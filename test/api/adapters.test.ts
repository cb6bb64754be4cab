/**
 * The adapter folders on a real server: GET /v1/adapters through the SDK (the fixture files classified, junk
 * listed unusable while the server goes on serving), POST /v1/adapters/refresh, A1111's /sdapi/v1/loras,
 * embeddings, sd-vae and refresh-loras in A1111's shapes, sd_vae in override_settings and options, and the
 * --loras-dir / --embeddings-dir / --vae-dir options.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFile, cp, mkdir, mkdtemp, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readServerConfig, SERVER_USAGE } from "../../api/config.ts";
import { type AdapterInfo, createSdxClient } from "../../sdk/index.ts";
import { FIXTURES } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";
import { writeRandomTaesd } from "../helpers/taesd.ts";

let dir: string;
let server: RunningServer;
let client: ReturnType<typeof createSdxClient>;

async function get<T>(path: string): Promise<T> {
  const res = await fetch(`${server.url}${path}`);
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

async function post(path: string, body?: unknown): Promise<Response> {
  return fetch(`${server.url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
}

const SMALL = { prompt: "a house", steps: 2, width: 64, height: 64, seed: 1 };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sdx-adapter-server-"));
  await copyFile(join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"), join(dir, "tiny_sd15.safetensors"));
  for (const folder of ["loras", "embeddings", "vae"]) {
    await cp(join(FIXTURES, "adapters", folder), join(dir, folder), { recursive: true });
  }
  const lora = new Uint8Array(
    await Bun.file(join(dir, "loras", "tiny_sd15_lora_attn.safetensors")).arrayBuffer(),
  );
  await writeFile(join(dir, "loras", "truncated.safetensors"), lora.subarray(0, 5000));
  await writeFile(join(dir, "loras", "x.safetensors"), "just text\n");
  await copyFile(join(dir, "vae", "tiny_sd15_vae_alt.safetensors"), join(dir, "loras", "a_vae.safetensors"));
  const outside = await mkdtemp(join(tmpdir(), "sdx-outside-"));
  await writeFile(join(outside, "secret.safetensors"), lora);
  await symlink(join(outside, "secret.safetensors"), join(dir, "loras", "escape.safetensors"));
  await writeFile(join(dir, "embeddings", "broken.pt"), "PK\x03\x04 but nothing else");
  // The model's sidecar names a default VAE (what "automatic" uses and "none" does not).
  await writeFile(join(dir, "tiny_sd15.json"), JSON.stringify({ vae: "tiny_sd15_vae_alt" }));
  server = await startServer(["--models-dir", dir, "--model", "tiny_sd15"]);
  client = createSdxClient({ baseUrl: server.url });
});
afterAll(() => server.stop());

describe("GET /v1/adapters", () => {
  test("lists the fixture files classified, and the junk unusable with reasons", async () => {
    const list = await client.adapters();
    expect(list.folders).toEqual({
      loras: join(dir, "loras"),
      embeddings: join(dir, "embeddings"),
      vae: join(dir, "vae"),
      vae_approx: join(dir, "vae_approx"),
    });
    const lora = (name: string) => list.loras.find((l) => l.name === name) as AdapterInfo;
    expect(lora("tiny_sd15_lora_attn")).toMatchObject({
      kind: "lora",
      file: "tiny_sd15_lora_attn.safetensors",
      format: "kohya",
      family: "sd1",
      size_bytes: 285380,
      usable: true,
      reason: null,
      details: { rank: 4, modules: 210, text_encoder: true },
    });
    expect(lora("tiny_sd15_peft")).toMatchObject({ format: "peft", details: { modules: 172 } });
    expect(lora("tiny_sdxl_lora")).toMatchObject({ family: "sdxl", details: { modules: 278 } });
    expect(lora("truncated")).toMatchObject({ usable: false, format: null });
    expect(lora("truncated").reason).toContain("does not fit a 5000-byte file");
    expect(lora("x").reason).toContain("unreadable");
    expect(lora("a_vae").reason).toContain("looks like a VAE");
    expect(lora("escape").reason).toContain("outside its folder");
    expect(list.embeddings.map((e) => [e.name, e.format, e.details.vectors])).toEqual([
      ["broken", null, undefined],
      ["tinyglow", "embedding_pt", 2],
      ["tinyobject", "embedding_safetensors", 3],
      ["tinystyle", "embedding_safetensors", 1],
    ]);
    expect(list.vaes).toHaveLength(1);
    expect(list.vaes[0]).toMatchObject({
      name: "tiny_sd15_vae_alt",
      format: "vae_safetensors",
      usable: true,
    });
    // No server path in any reason.
    expect(JSON.stringify([...list.loras, ...list.embeddings].map((a) => a.reason))).not.toContain(dir);
  });

  test("the junk never stops the server: the model is listed and served", async () => {
    expect((await client.health()).status).toBe("ok");
    const { models } = await client.models.list();
    expect(models.map((m) => m.name)).toEqual(["tiny_sd15"]);
  });

  test("refresh reads the folders again at once", async () => {
    await copyFile(
      join(dir, "loras", "tiny_sd15_te_only.safetensors"),
      join(dir, "loras", "fresh.safetensors"),
    );
    const list = await client.adapters({ refresh: true });
    expect(list.loras.find((l) => l.name === "fresh")).toMatchObject({
      usable: true,
      details: { modules: 18 },
    });
  });
});

describe("A1111 adapter routes", () => {
  test("/sdapi/v1/loras: A1111's {name, alias, path, metadata} of the usable LoRAs, no server path", async () => {
    const loras =
      await get<{ name: string; alias: string; path: string; metadata: Record<string, unknown> }[]>(
        "/sdapi/v1/loras",
      );
    const attn = loras.find((l) => l.name === "tiny_sd15_lora_attn");
    expect(attn).toEqual({
      name: "tiny_sd15_lora_attn",
      alias: "tiny_sd15_lora_attn",
      path: "tiny_sd15_lora_attn.safetensors",
      metadata: expect.objectContaining({ ss_base_model_version: "sd_v1", ss_network_dim: "4" }),
    });
    // JSON-object metadata values parsed, as A1111 does.
    const locon = loras.find((l) => l.name === "tiny_sd15_locon");
    expect(locon?.metadata.ss_network_args).toEqual({ conv_dim: "4", conv_alpha: "1.0" });
    expect(loras.map((l) => l.name)).not.toContain("truncated");
    expect(loras.map((l) => l.name)).not.toContain("escape");
    expect(JSON.stringify(loras)).not.toContain(dir);
  });

  test("/sdapi/v1/refresh-loras answers null, as A1111", async () => {
    const res = await post("/sdapi/v1/refresh-loras");
    expect(res.status).toBe(200);
    expect(await res.json()).toBeNull();
  });

  test("/sdapi/v1/embeddings: A1111's loaded/skipped with step, checkpoint, shape and vectors", async () => {
    const body = await get<{ loaded: Record<string, unknown>; skipped: Record<string, unknown> }>(
      "/sdapi/v1/embeddings",
    );
    expect(body.loaded).toEqual({
      tinyglow: {
        step: 103,
        sd_checkpoint: "0a1b2c3d",
        sd_checkpoint_name: "tiny_sd15",
        shape: 32,
        vectors: 2,
      },
      tinyobject: { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 32, vectors: 3 },
      tinystyle: { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 32, vectors: 1 },
    });
    expect(body.skipped).toEqual({});
  });

  test("/sdapi/v1/sd-vae: A1111's SDVaeItem list, keyed by file name", async () => {
    expect(await get("/sdapi/v1/sd-vae")).toEqual([
      { model_name: "tiny_sd15_vae_alt.safetensors", filename: "tiny_sd15_vae_alt.safetensors" },
    ]);
  });

  test("sd_vae in options: reported, settable to a file, Automatic or None; an unknown one is a 422", async () => {
    expect((await get<{ sd_vae: string }>("/sdapi/v1/options")).sd_vae).toBe("Automatic");
    expect((await post("/sdapi/v1/options", { sd_vae: "tiny_sd15_vae_alt.safetensors" })).status).toBe(200);
    expect((await get<{ sd_vae: string }>("/sdapi/v1/options")).sd_vae).toBe("tiny_sd15_vae_alt.safetensors");
    const bad = await post("/sdapi/v1/options", { sd_vae: "missing.safetensors" });
    expect(bad.status).toBe(422);
    const error = (await bad.json()) as { fields: { field: string; allowed: string[] }[] };
    expect(error.fields[0]).toMatchObject({
      field: "sd_vae",
      allowed: ["Automatic", "None", "tiny_sd15_vae_alt.safetensors"],
    });
    expect((await post("/sdapi/v1/options", { sd_vae: "Automatic" })).status).toBe(200);
  });

  test("override_settings.sd_vae: a file, Automatic and None generate; an unknown one is a 422 naming the field", async () => {
    for (const sd_vae of ["tiny_sd15_vae_alt.safetensors", "tiny_sd15_vae_alt", "Automatic", "None"]) {
      const res = await post("/sdapi/v1/txt2img", { ...SMALL, override_settings: { sd_vae } });
      expect({ sd_vae, status: res.status }).toEqual({ sd_vae, status: 200 });
      const info = JSON.parse(((await res.json()) as { info: string }).info) as { sdx_warnings: string[] };
      expect(info.sdx_warnings.join(" ")).not.toContain("sd_vae was not applied");
    }
    // The VAE used is reported as A1111 reports it.
    const used = await post("/sdapi/v1/txt2img", {
      ...SMALL,
      override_settings: { sd_vae: "tiny_sd15_vae_alt.safetensors" },
    });
    const usedInfo = JSON.parse(((await used.json()) as { info: string }).info) as Record<string, unknown>;
    expect(usedInfo.sd_vae_name).toBe("tiny_sd15_vae_alt.safetensors");
    expect(usedInfo.sd_vae_hash).toMatch(/^[0-9a-f]{10}$/);
    const res = await post("/sdapi/v1/txt2img", { ...SMALL, override_settings: { sd_vae: "../vae/x.pt" } });
    expect(res.status).toBe(422);
    const error = (await res.json()) as { fields: { field: string }[] };
    expect(error.fields[0]?.field).toBe("override_settings.sd_vae");
  });
});

describe("a sidecar's default VAE", () => {
  test('"automatic" (A1111 "Automatic") uses it, "none" (A1111 "None") the model\'s own VAE', async () => {
    const generate = (vae?: string) =>
      client.generate({
        prompt: "a house",
        num_steps: 2,
        width: 64,
        height: 64,
        seed: 1,
        ...(vae ? { vae } : {}),
      });
    expect((await generate()).metadata.adapters.vae).toMatchObject({
      name: "tiny_sd15_vae_alt",
      default: true,
    });
    expect((await generate("automatic")).metadata.adapters.vae?.name).toBe("tiny_sd15_vae_alt");
    expect((await generate("none")).metadata.adapters.vae).toBeNull();
    const a1111 = async (sd_vae: string) => {
      const res = await post("/sdapi/v1/txt2img", { ...SMALL, override_settings: { sd_vae } });
      expect(res.status).toBe(200);
      return JSON.parse(((await res.json()) as { info: string }).info).sd_vae_name as string | null;
    };
    expect(await a1111("Automatic")).toBe("tiny_sd15_vae_alt.safetensors");
    expect(await a1111("None")).toBeNull();
  });
});

describe("the folder options", () => {
  test("flags, variables and defaults", () => {
    expect(readServerConfig([], {})).toMatchObject({ adapterFolders: {} });
    expect(
      readServerConfig(["--loras-dir", "/l", "--vae-dir", "/v"], {
        SDX_EMBEDDINGS_DIR: "/e",
        SDX_VAE_DIR: "/x",
        SDX_VAE_APPROX_DIR: "/a",
      }),
    ).toMatchObject({ adapterFolders: { lora: "/l", embedding: "/e", vae: "/v", vae_approx: "/a" } });
    expect(readServerConfig(["--vae-approx-dir", "/b"], { SDX_VAE_APPROX_DIR: "/a" })).toMatchObject({
      adapterFolders: { vae_approx: "/b" },
    });
    for (const flag of ["--loras-dir", "--embeddings-dir", "--vae-dir", "--vae-approx-dir"])
      expect(SERVER_USAGE).toContain(flag);
  });

  test("a server given other folders lists those", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-no-models-"));
    const loras = join(models, "elsewhere");
    await mkdir(loras);
    await copyFile(
      join(FIXTURES, "adapters", "loras", "tiny_sdxl_lora.safetensors"),
      join(loras, "xl.safetensors"),
    );
    const approx = join(models, "previews");
    await mkdir(approx);
    await writeRandomTaesd(join(approx, "taesdxl_decoder.safetensors"));
    const other = await startServer(
      ["--models-dir", models, "--loras-dir", loras, "--vae-approx-dir", approx],
      { waitForReady: false },
    );
    try {
      const list = await createSdxClient({ baseUrl: other.url }).adapters();
      expect(list.folders.loras).toBe(loras);
      expect(list.folders.vae).toBe(join(models, "vae"));
      expect(list.folders.vae_approx).toBe(approx);
      expect(list.loras.map((l) => [l.name, l.family])).toEqual([["xl", "sdxl"]]);
      expect(list.vaes).toEqual([]);
      expect(list.vae_approx).toMatchObject([
        {
          name: "taesdxl_decoder",
          kind: "vae_approx",
          format: "taesd_safetensors",
          family: "sdxl",
          usable: true,
        },
      ]);
    } finally {
      await other.stop();
    }
  });
});
