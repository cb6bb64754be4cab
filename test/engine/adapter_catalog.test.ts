/**
 * The adapter catalog on real files: the fixture LoRAs, embeddings and VAE classified as the fixture set
 * describes them (test/fixtures/cases/{lora_sd15,lora_sdxl,embeddings_sd15,vae_sd15}/adapter_files.json), and
 * junk (a checkpoint among the LoRAs, a truncated file, a text file, a symlink out of the folder, dotfiles,
 * a clashing name) listed unusable with the reason, or not at all — never an exception.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { copyFile, cp, mkdir, mkdtemp, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdapterCatalog, type AdapterEntry, adapterFolders } from "../../api/engine/adapters/catalog.ts";
import { cacheDirOf, scanModelsDir } from "../../api/engine/model_folder.ts";
import { fileSha256 } from "../../api/engine/model_hash.ts";
import { ApiError } from "../../contract/index.ts";
import { FIXTURES } from "../helpers/fixtures.ts";

/** A small safetensors file with zero-filled tensors of these shapes (F32). */
function safetensorsOf(shapes: Record<string, number[]>, metadata?: Record<string, string>): Uint8Array {
  let offset = 0;
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  for (const [name, shape] of Object.entries(shapes)) {
    const bytes = shape.reduce((n, d) => n * d, 1) * 4;
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

/** The safetensors file with every tensor name prefixed `first_stage_model.` (a VAE cut from a checkpoint). */
async function prefixed(path: string): Promise<Uint8Array> {
  const bytes = new Uint8Array(await Bun.file(path).arrayBuffer());
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + length))) as Record<
    string,
    unknown
  >;
  const renamed = Object.fromEntries(
    Object.entries(header).map(([k, v]) => [k === "__metadata__" ? k : `first_stage_model.${k}`, v]),
  );
  const json = new TextEncoder().encode(JSON.stringify(renamed));
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + length), 8 + json.length);
  return out;
}

interface FixtureLora {
  file: string;
  format: "kohya" | "peft";
  arch: "sd15" | "sdxl";
  rank: number;
  num_modules: number;
  bytes: number;
  modules?: { component: string }[];
}
interface FixtureEmbedding {
  file: string;
  n_vectors: number;
  bytes: number;
}

let models: string;
let catalog: AdapterCatalog;
let byName: Map<string, AdapterEntry>;
const loras: Record<string, FixtureLora> = {};
const embeddings: Record<string, FixtureEmbedding> = {};

beforeAll(async () => {
  models = await mkdtemp(join(tmpdir(), "sdx-adapters-"));
  await copyFile(
    join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"),
    join(models, "tiny_sd15.safetensors"),
  );
  for (const folder of ["loras", "embeddings", "vae"]) {
    await cp(join(FIXTURES, "adapters", folder), join(models, folder), { recursive: true });
  }
  for (const suite of ["lora_sd15", "lora_sdxl"]) {
    const file = join(FIXTURES, "cases", suite, "adapter_files.json");
    Object.assign(loras, ((await Bun.file(file).json()) as { loras: Record<string, FixtureLora> }).loras);
  }
  const embFile = join(FIXTURES, "cases", "embeddings_sd15", "adapter_files.json");
  Object.assign(
    embeddings,
    ((await Bun.file(embFile).json()) as { embeddings: Record<string, FixtureEmbedding> }).embeddings,
  );

  const loraDir = join(models, "loras");
  // A checkpoint among the LoRAs, a truncated LoRA, a text file, an empty file, a link out of the folder.
  await copyFile(
    join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"),
    join(loraDir, "checkpoint.safetensors"),
  );
  const lora = new Uint8Array(await Bun.file(join(loraDir, "tiny_sd15_lora_attn.safetensors")).arrayBuffer());
  await writeFile(join(loraDir, "truncated.safetensors"), lora.subarray(0, lora.length - 1000));
  await writeFile(join(loraDir, "x.safetensors"), "this is not a safetensors file\n");
  await writeFile(join(loraDir, "empty.safetensors"), "");
  const outside = await mkdtemp(join(tmpdir(), "sdx-outside-"));
  await writeFile(join(outside, "secret.safetensors"), lora);
  await symlink(join(outside, "secret.safetensors"), join(loraDir, "escape.safetensors"));
  await symlink(join(loraDir, "tiny_sd15_peft.safetensors"), join(loraDir, "inside_link.safetensors"));
  await symlink(join(outside, "missing.safetensors"), join(loraDir, "dangling.safetensors"));
  await writeFile(join(loraDir, ".hidden.safetensors"), lora);
  await writeFile(join(loraDir, "notes.txt"), "not listed");
  await mkdir(join(loraDir, "sub.safetensors"));
  await writeFile(
    join(loraDir, "loha.safetensors"),
    safetensorsOf({ "lora_unet_x.hada_w1_a": [4, 8], "lora_unet_x.hada_w1_b": [4, 8] }),
  );
  // Real-width shapes: the family from the cross-attention context and the text encoder width.
  const kohya = (context: number, te: string, teWidth: number) =>
    safetensorsOf({
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": [8, context],
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": [320, 8],
      [`${te}_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight`]: [8, teWidth],
      [`${te}_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight`]: [teWidth, 8],
    });
  await writeFile(join(loraDir, "real_sd1.safetensors"), kohya(768, "lora_te", 768));
  await writeFile(join(loraDir, "real_sd2.safetensors"), kohya(1024, "lora_te", 1024));
  await writeFile(join(loraDir, "real_sdxl.safetensors"), kohya(2048, "lora_te1", 768));
  await writeFile(
    join(loraDir, "no_up.safetensors"),
    safetensorsOf({ "lora_unet_a_attn1_to_q.lora_down.weight": [4, 32] }),
  );

  const embDir = join(models, "embeddings");
  await writeFile(join(embDir, "sd2style.safetensors"), safetensorsOf({ emb_params: [4, 1024] }));
  await writeFile(
    join(embDir, "xlstyle.safetensors"),
    safetensorsOf({ clip_l: [2, 768], clip_g: [2, 1280] }),
  );
  await writeFile(join(embDir, "legacy.pt"), "not a zip at all");
  await writeFile(
    join(embDir, "wrong.safetensors"),
    safetensorsOf({ "decoder.conv_in.weight": [64, 4, 3, 3], a: [1], b: [2] }),
  );
  // x.pt and x.safetensors: the .safetensors one is used.
  await copyFile(join(embDir, "tinyglow.pt"), join(embDir, "tinystyle.pt"));

  const vaeDir = join(models, "vae");
  await copyFile(
    join(FIXTURES, "adapters", "loras", "tiny_sd15_peft.safetensors"),
    join(vaeDir, "a_lora.safetensors"),
  );
  await writeFile(
    join(vaeDir, "flux_like.safetensors"),
    safetensorsOf({ "decoder.conv_in.weight": [8, 16, 3, 3], "decoder.conv_out.weight": [3, 8, 3, 3] }),
  );
  await writeFile(
    join(vaeDir, "prefixed.safetensors"),
    await prefixed(join(vaeDir, "tiny_sd15_vae_alt.safetensors")),
  );
  await copyFile(join(vaeDir, "tiny_sd15_vae_alt.safetensors"), join(vaeDir, "None.safetensors"));

  catalog = new AdapterCatalog({ folders: adapterFolders(models), cacheDir: cacheDirOf(models) });
  const all = await catalog.list();
  byName = new Map(
    [...all.lora, ...all.embedding, ...all.vae].map((e) => [`${e.kind}/${e.name}/${e.file}`, e] as const),
  );
});

/** The entry of that kind and name (the file decides between same-named ones). */
function entry(kind: string, name: string, file?: string): AdapterEntry {
  const found = [...byName.values()].find(
    (e) => e.kind === kind && e.name === name && (file === undefined || e.file === file),
  );
  if (!found) throw new Error(`no ${kind} ${name} listed`);
  return found;
}

describe("the fixture adapters", () => {
  test("every fixture LoRA: format, family, rank, modules, text encoder as adapter_files.json says", () => {
    expect(Object.keys(loras).length).toBe(6);
    for (const [name, want] of Object.entries(loras)) {
      const got = entry("lora", name);
      expect(got).toMatchObject({ usable: true, reason: null, format: want.format, sizeBytes: want.bytes });
      const family = want.arch === "sdxl" ? "sdxl" : "sd1";
      expect({ name, family: got.family }).toEqual({ name, family });
      expect(got.details.rank).toBe(want.rank);
      expect(got.details.modules).toBe(want.num_modules);
      const te = (want.modules ?? []).some((m) => m.component.startsWith("text_encoder"));
      if (want.modules) expect({ name, te: got.details.text_encoder }).toEqual({ name, te });
    }
    expect(entry("lora", "tiny_sd15_locon").details.text_encoder).toBe(false);
    expect(entry("lora", "tiny_sd15_te_only").details.text_encoder).toBe(true);
  });

  test("every fixture embedding: format and vectors; the .pt read from its pickle only", () => {
    for (const [name, want] of Object.entries(embeddings)) {
      const got = entry("embedding", name, want.file);
      expect(got).toMatchObject({ usable: true, sizeBytes: want.bytes, family: null });
      expect(got.format).toBe(want.file.endsWith(".pt") ? "embedding_pt" : "embedding_safetensors");
      expect(got.details.vectors).toBe(want.n_vectors);
      expect(got.embedding?.width).toBe(32);
    }
    expect(entry("embedding", "tinyglow").embedding).toEqual({
      width: 32,
      step: 103,
      sdCheckpoint: "0a1b2c3d",
      sdCheckpointName: "tiny_sd15",
    });
  });

  test("the fixture VAE is a usable VAE of no particular family", () => {
    expect(entry("vae", "tiny_sd15_vae_alt")).toMatchObject({
      usable: true,
      format: "vae_safetensors",
      family: null,
      sizeBytes: 5623404,
    });
  });

  test("families from real shapes: 768 SD 1.x, 1024 SD 2.x, a second text encoder or 2048 SDXL", () => {
    expect(entry("lora", "real_sd1").family).toBe("sd1");
    expect(entry("lora", "real_sd2").family).toBe("sd2");
    expect(entry("lora", "real_sdxl").family).toBe("sdxl");
    expect(entry("embedding", "sd2style")).toMatchObject({ family: "sd2", details: { vectors: 4 } });
    expect(entry("embedding", "xlstyle")).toMatchObject({ family: "sdxl", details: { vectors: 2 } });
    expect(entry("vae", "prefixed")).toMatchObject({ usable: true, format: "vae_safetensors" });
  });
});

describe("files that are not what their folder says", () => {
  test("each is listed unusable with the reason", () => {
    const reason = (kind: string, name: string, file?: string) => entry(kind, name, file).reason ?? "";
    expect(reason("lora", "checkpoint")).toContain("looks like a checkpoint");
    expect(reason("lora", "truncated")).toContain("truncated or corrupt");
    expect(reason("lora", "x")).toContain("unreadable");
    expect(reason("lora", "empty")).toContain("too small");
    expect(reason("lora", "escape")).toContain("outside its folder");
    expect(reason("lora", "dangling")).toContain("target is missing");
    expect(reason("lora", "loha")).toContain("LoHa");
    expect(reason("lora", "no_up")).toContain("missing the up weight");
    expect(reason("embedding", "legacy")).toContain("not a torch.save zip");
    expect(reason("embedding", "wrong")).toContain("looks like a VAE");
    expect(reason("embedding", "tinystyle", "tinystyle.pt")).toContain(
      "tinystyle.safetensors has the same name",
    );
    expect(reason("vae", "a_lora")).toContain("looks like a LoRA");
    expect(reason("vae", "flux_like")).toContain("16 latent channels");
    expect(reason("vae", "None")).toContain("reserved word");
    for (const e of byName.values()) {
      expect(e.usable).toBe(e.reason === null);
      expect(e.reason ?? "").not.toContain(models);
    }
  });

  test("a link inside the folder is followed; dotfiles, other extensions and folders are not listed", () => {
    expect(entry("lora", "inside_link")).toMatchObject({ usable: true, format: "peft" });
    expect(entry("lora", "inside_link").path).toBe(join(models, "loras", "tiny_sd15_peft.safetensors"));
    const names = [...byName.values()].map((e) => e.file);
    expect(names).not.toContain(".hidden.safetensors");
    expect(names).not.toContain("notes.txt");
    expect(names).not.toContain("sub.safetensors");
  });

  test("the model scan does not take the adapter folders' files for checkpoints", async () => {
    const scanned = await scanModelsDir(models);
    expect(scanned.map((m) => m.name)).toEqual(["tiny_sd15"]);
  });
});

describe("resolveAdapter and hashes", () => {
  test("a usable name resolves to its file", async () => {
    const found = await catalog.resolveAdapter("lora", "tiny_sd15_lora_attn");
    expect(found.name).toBe("tiny_sd15_lora_attn");
    expect(found.path).toBe(join(models, "loras", "tiny_sd15_lora_attn.safetensors"));
    expect(found.info.format).toBe("kohya");
  });

  test("an unknown name is a 422 naming the field and the usable names", async () => {
    const error = await catalog.resolveAdapter("lora", "nope").catch((e) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error.status).toBe(422);
    expect(error.fields[0].field).toBe("loras");
    expect(error.fields[0].allowed).toContain("tiny_sd15_peft");
    expect(error.fields[0].allowed).not.toContain("checkpoint");
  });

  test("an unusable one is a 422 saying why", async () => {
    const error = await catalog.resolveAdapter("vae", "flux_like", "vae").catch((e) => e);
    expect(error.status).toBe(422);
    expect(error.message).toContain("16 latent channels");
    const outside = await catalog.resolveAdapter("lora", "escape").catch((e) => e);
    expect(outside.message).toContain("outside its folder");
  });

  test("a file added later is found without waiting for the next scan", async () => {
    await copyFile(
      join(models, "loras", "tiny_sd15_te_only.safetensors"),
      join(models, "loras", "added_later.safetensors"),
    );
    expect((await catalog.resolveAdapter("lora", "added_later")).info.details.modules).toBe(18);
  });

  test("the hash is null until computed, then cached with the model hashes", async () => {
    const e = entry("embedding", "tinystyle", "tinystyle.safetensors");
    expect(await catalog.cachedHash(e)).toBeNull();
    const sha = await catalog.hash(e);
    expect(sha).toBe(await fileSha256(e.path));
    expect(await catalog.cachedHash(e)).toBe(sha);
    const listing = await catalog.listing();
    expect(listing.embeddings.find((x) => x.file === "tinystyle.safetensors")?.sha256).toBe(sha);
    // A changed file is read again.
    await utimes(e.path, new Date(), new Date(Date.now() + 5000));
    expect(await catalog.cachedHash(e)).toBeNull();
  });

  test("missing folders hold nothing; the folders default under the models directory", async () => {
    const empty = new AdapterCatalog({
      folders: adapterFolders(join(models, "nowhere")),
      cacheDir: cacheDirOf(models),
    });
    expect(await empty.listing()).toMatchObject({ loras: [], embeddings: [], vaes: [] });
    expect(adapterFolders("/m")).toEqual({
      lora: "/m/loras",
      embedding: "/m/embeddings",
      vae: "/m/vae",
      vae_approx: "/m/vae_approx",
    });
    expect(adapterFolders("/m", { vae: "/v" }).vae).toBe("/v");
  });
});
