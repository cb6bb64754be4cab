/**
 * The vae_approx folder in the adapter catalog: every file listed, usable or not with the reason, the families a
 * decoder serves told by its name; and the resolver the preview code asks for a model family's decoder.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { copyFile, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AdapterCatalog, type AdapterEntry, adapterFolders } from "../../api/engine/adapters/catalog.ts";
import { cacheDirOf } from "../../api/engine/model_folder.ts";
import { taesdVariantOf } from "../../api/engine/previews/taesd_files.ts";
import { ApiError } from "../../contract/index.ts";
import { FIXTURES } from "../helpers/fixtures.ts";
import { safetensorsToPth, writeRandomTaesd } from "../helpers/taesd.ts";

let models: string;
let folder: string;
let catalog: AdapterCatalog;

beforeAll(async () => {
  models = await mkdtemp(join(tmpdir(), "sdx-vae-approx-"));
  folder = join(models, "vae_approx");
  await mkdir(folder);
  await writeRandomTaesd(join(folder, "taesd_decoder.safetensors"));
  await writeRandomTaesd(join(folder, "my_taesd_finetune.safetensors"), { seed: 3 });
  await writeRandomTaesd(join(models, "xl.safetensors"), { seed: 4 });
  await safetensorsToPth(join(models, "xl.safetensors"), join(folder, "taesdxl_decoder.pth"));
  await writeRandomTaesd(join(folder, "diffusion_pytorch_model.safetensors"), { keys: "diffusers" });
  await writeRandomTaesd(join(folder, "taesd3_decoder.safetensors"), { latentChannels: 16 });
  await copyFile(
    join(FIXTURES, "adapters", "vae", "tiny_sd15_vae_alt.safetensors"),
    join(folder, "a_vae.safetensors"),
  );
  await writeFile(join(folder, "notes.txt"), "not listed\n");
  catalog = new AdapterCatalog({ folders: adapterFolders(models), cacheDir: cacheDirOf(models) });
});

const entry = async (name: string) =>
  (await catalog.list()).vae_approx.find((e) => e.name === name) as AdapterEntry;

describe("the vae_approx folder", () => {
  test("decoders of every layout, with the families their names give", async () => {
    expect((await catalog.list()).vae_approx.map((e) => e.file)).toEqual([
      "a_vae.safetensors",
      "diffusion_pytorch_model.safetensors",
      "my_taesd_finetune.safetensors",
      "taesd3_decoder.safetensors",
      "taesd_decoder.safetensors",
      "taesdxl_decoder.pth",
    ]);
    expect(await entry("taesd_decoder")).toMatchObject({
      kind: "vae_approx",
      format: "taesd_safetensors",
      family: null,
      details: { families: ["sd1", "sd2"] },
      usable: true,
      reason: null,
    });
    expect(await entry("taesdxl_decoder")).toMatchObject({
      format: "taesd_pth",
      family: "sdxl",
      details: { families: ["sdxl"] },
      usable: true,
    });
    expect((await entry("my_taesd_finetune")).usable).toBe(true);
  });

  test("what cannot be used says why", async () => {
    const diffusers = await entry("diffusion_pytorch_model");
    expect(diffusers.usable).toBe(false);
    expect(diffusers.reason).toMatch(
      /its name does not say whose.*rename it taesd_decoder\.safetensors or taesdxl_decoder\.safetensors/,
    );
    expect((await entry("taesd3_decoder")).reason).toMatch(/16-channel latents/);
    expect((await entry("a_vae")).reason).toMatch(/it looks like a VAE \(it belongs in the vae folder\)/);
  });

  test("a TAESD decoder in the VAE folder is pointed to vae_approx", async () => {
    const other = await mkdtemp(join(tmpdir(), "sdx-vae-misplaced-"));
    await mkdir(join(other, "vae"));
    await writeRandomTaesd(join(other, "vae", "taesd_decoder.safetensors"));
    const list = await new AdapterCatalog({
      folders: adapterFolders(other),
      cacheDir: cacheDirOf(other),
    }).list();
    expect(list.vae[0]?.reason).toMatch(/TAESD preview decoder \(it belongs in the vae_approx folder\)/);
  });

  test("names: taesdxl before taesd; SD3's taesd3 is neither", () => {
    expect(taesdVariantOf("taesdxl_decoder")).toBe("taesdxl");
    expect(taesdVariantOf("TAESD_decoder")).toBe("taesd");
    expect(taesdVariantOf("taesd3_decoder")).toBeNull();
    expect(taesdVariantOf("decoder")).toBeNull();
  });
});

describe("resolvePreviewDecoder", () => {
  test("taesd for SD 1.x and 2.x, taesdxl for SDXL; the hub pull's name first", async () => {
    for (const family of ["sd1", "sd2"] as const)
      expect((await catalog.resolvePreviewDecoder(family)).path).toBe(
        join(folder, "taesd_decoder.safetensors"),
      );
    const xl = await catalog.resolvePreviewDecoder("sdxl");
    expect(xl).toMatchObject({ name: "taesdxl_decoder", path: join(folder, "taesdxl_decoder.pth") });
  });

  test("another usable file of the variant when the usual one is absent", async () => {
    const other = await mkdtemp(join(tmpdir(), "sdx-vae-approx-other-"));
    await mkdir(join(other, "vae_approx"));
    await writeRandomTaesd(join(other, "vae_approx", "my_taesd_finetune.safetensors"));
    const c = new AdapterCatalog({ folders: adapterFolders(other), cacheDir: cacheDirOf(other) });
    expect((await c.resolvePreviewDecoder("sd1")).name).toBe("my_taesd_finetune");
  });

  test("none: a 422 on preview.method naming the file and how to pull it; a new file is found at once", async () => {
    const empty = await mkdtemp(join(tmpdir(), "sdx-vae-approx-empty-"));
    const c = new AdapterCatalog({ folders: adapterFolders(empty), cacheDir: cacheDirOf(empty) });
    const e = (await c.resolvePreviewDecoder("sdxl").catch((x: unknown) => x)) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect(e.status).toBe(422);
    expect(e.fields?.[0]?.field).toBe("preview.method");
    expect(e.message).toContain("taesdxl_decoder.safetensors");
    expect(e.message).toContain("`sdx models pull taesdxl`");
    expect(e.message).toContain('POST /v1/models/pull {"name":"taesdxl"}');
    // A broken decoder of the variant is named with why.
    await mkdir(join(empty, "vae_approx"));
    await writeFile(join(empty, "vae_approx", "taesdxl_decoder.safetensors"), "truncated");
    const broken = (await c.resolvePreviewDecoder("sdxl").catch((x: unknown) => x)) as ApiError;
    expect(broken.message).toMatch(
      /taesdxl_decoder\.safetensors there cannot be used: unreadable: header length/,
    );
    // The folder is read again before a decoder is declared missing.
    await writeRandomTaesd(join(empty, "vae_approx", "taesdxl_mine.safetensors"));
    expect((await c.resolvePreviewDecoder("sdxl")).name).toBe("taesdxl_mine");
  });
});
