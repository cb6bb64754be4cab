/**
 * Adapters in the command line: `sdx models` lists the LoRAs, embeddings and VAEs of a real server after its
 * models (unusable ones with the reason), and projects take `loras` and `vae` in default_params and prompt
 * sets, checked against the API's own schema.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFile, cp, mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sdx } from "../helpers/cli.ts";
import { FIXTURES } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

let server: RunningServer;
let work: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sdx-cli-adapters-"));
  const models = join(work, "models");
  await mkdir(models);
  await copyFile(
    join(FIXTURES, "checkpoints", "tiny_sd15.safetensors"),
    join(models, "tiny_sd15.safetensors"),
  );
  for (const folder of ["loras", "embeddings", "vae"]) {
    await cp(join(FIXTURES, "adapters", folder), join(models, folder), { recursive: true });
  }
  await writeFile(join(models, "loras", "x.safetensors"), "not a LoRA");
  server = await startServer(["--models-dir", models, "--model", "tiny_sd15"]);
});
afterAll(() => server.stop());

describe("sdx models", () => {
  test("lists the adapters after the models, each unusable one with the reason", async () => {
    const res = await sdx(["models", "--server", server.url]);
    expect(res.stderr).toBe("");
    expect(res.code).toBe(0);
    expect(res.stdout).toContain("* tiny_sd15  sd1  safetensors");
    expect(res.stdout).toContain("LoRAs (7 in ");
    expect(res.stdout).toContain(
      "  tiny_sd15_lora_attn  sd1  kohya  rank 4  210 layers  text encoder  278.7 KiB",
    );
    expect(res.stdout).toContain("  tiny_sdxl_lora  sdxl  kohya  rank 4  278 layers");
    expect(res.stdout).toMatch(/ {2}x {2}unknown {2}\? .*not usable: unreadable/);
    expect(res.stdout).toContain("Embeddings (3 in ");
    expect(res.stdout).toContain("  tinyobject  unknown  embedding_safetensors  3 vectors");
    expect(res.stdout).toContain("VAEs (1 in ");
    expect(res.stdout).toContain("  tiny_sd15_vae_alt  any  vae_safetensors  5.4 MiB");
  });

  test("--json holds the adapter listing beside the models", async () => {
    const res = await sdx(["models", "--server", server.url, "--json"]);
    expect(res.code).toBe(0);
    const out = JSON.parse(res.stdout) as {
      models: { name: string }[];
      adapters: { loras: { name: string }[]; vaes: { name: string }[] };
    };
    expect(out.models.map((m) => m.name)).toEqual(["tiny_sd15"]);
    expect(out.adapters.loras.map((l) => l.name)).toContain("tiny_sd15_peft");
    expect(out.adapters.vaes.map((v) => v.name)).toEqual(["tiny_sd15_vae_alt"]);
  });
});

describe("projects", () => {
  async function project(name: string, defaults: string, params: string): Promise<string> {
    const root = join(work, "projects");
    await mkdir(join(root, name), { recursive: true });
    await writeFile(
      join(root, name, "config.yaml"),
      `server_url: ${server.url}\ndefault_params:\n  num_steps: 2\n${defaults}`,
    );
    await writeFile(
      join(root, name, "prompts.yaml"),
      `prompt_sets:\n  - name: one\n    prompt: a house\n    params:\n${params}`,
    );
    return root;
  }

  test("take loras and vae in default_params and prompt sets", async () => {
    const root = await project(
      "with-adapters",
      "  loras:\n    - name: tiny_sd15_lora_attn\n      weight: 0.6\n  vae: tiny_sd15_vae_alt\n",
      "      loras:\n        - name: tiny_sd15_te_only\n      vae: none\n",
    );
    const valid = await sdx(["validate", "--project", "with-adapters", "--input", root]);
    expect(valid.stderr).toBe("");
    expect(valid.code).toBe(0);
    const list = await sdx(["list", "--project", "with-adapters", "--input", root, "--json"]);
    const sets = (JSON.parse(list.stdout) as { prompt_sets: { request: Record<string, unknown> }[] })
      .prompt_sets;
    // A set's loras replace the default ones, as every parameter does.
    expect(sets[0]?.request).toMatchObject({ loras: [{ name: "tiny_sd15_te_only" }], vae: "none" });
  });

  test("a wrong lora entry is a problem naming the file and key", async () => {
    const root = await project(
      "bad-adapters",
      "  loras:\n    - name: tiny_sd15_lora_attn\n      weight: 9\n",
      "      loras:\n        - path: ../x.safetensors\n",
    );
    const res = await sdx(["validate", "--project", "bad-adapters", "--input", root]);
    expect(res.code).toBe(2);
    expect(res.stderr).toContain("config.yaml");
    expect(res.stderr).toContain("default_params.loras.0.weight");
    expect(res.stderr).toContain("prompts.yaml");
    expect(res.stderr).toContain("loras.0");
  });
});
