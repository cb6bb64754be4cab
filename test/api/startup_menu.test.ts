/**
 * The startup menu, driven with real keystrokes: in-process through injected streams, and end to end as a
 * newcomer sees it, `bun api/index.ts` on a terminal (a pseudo-terminal from util-linux's `script`) with an
 * empty models directory, choosing an online model that downloads from a fake hub with a progress bar.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { cp, mkdir, mkdtemp, readdir, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { ConfigError, readServerConfig } from "../../api/config.ts";
import { CATALOG, MODEL_CATALOG } from "../../api/engine/hub/catalog.ts";
import { MenuCancelled, startupMenu } from "../../api/startup/menu.ts";
import { type FakeHub, startFakeHub } from "../helpers/fake_hub.ts";
import { REPO_ROOT, TINY_SD15 } from "../helpers/fixtures.ts";

const DOWN = "\x1b[B";
const ENTER = "\r";
const CTRL_C = "\x03";

let hub: FakeHub;
beforeAll(async () => {
  // The catalog's first two entries, served from the fake hub (the second with a corrupt file).
  const [first, second] = CATALOG;
  hub = await startFakeHub({
    [first.repo]: { dir: TINY_SD15, revisions: [first.revision] },
    [second.repo]: { dir: TINY_SD15, revisions: [second.revision], corrupt: ["unet/model.onnx"] },
    "someone/tiny-sd": { dir: TINY_SD15, revisions: ["main", "v2"] },
  });
});
afterAll(() => hub.stop());

/** A terminal made of streams: what the menu wrote so far, and a way to wait for some text, then type. */
function fakeTerminal() {
  const input = new PassThrough();
  const output = Object.assign(new PassThrough(), { isTTY: true, columns: 120 });
  let text = "";
  output.on("data", (chunk: Buffer) => {
    text += chunk.toString();
  });
  const waitFor = async (needle: string | RegExp, from = 0, timeoutMs = 20_000) => {
    const deadline = Date.now() + timeoutMs;
    const seen = () =>
      typeof needle === "string" ? text.includes(needle, from) : needle.test(text.slice(from));
    while (!seen()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${needle}; screen:\n${text}`);
      await Bun.sleep(10);
    }
  };
  const type = async (...keys: string[]) => {
    for (const key of keys) {
      input.write(key);
      await Bun.sleep(30);
    }
  };
  return { input, output, text: () => text, waitFor, type };
}

/** The menu on a fake terminal over `models`, once it has drawn its question. */
async function openMenu(models: string) {
  const term = fakeTerminal();
  const choice = startupMenu({
    modelsDir: models,
    hub: { endpoint: hub.url },
    input: term.input,
    output: term.output,
    pull: { progressIntervalMs: 0 },
  });
  await term.waitFor("Which model should sdx serve?");
  return { term, choice };
}

describe("the startup menu", () => {
  test("with no local model, an online choice downloads with a progress bar and is served", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-menu-"));
    const { term, choice } = await openMenu(models);
    expect(term.text()).toContain("No local models yet");
    for (const entry of MODEL_CATALOG) expect(term.text()).toContain(entry.name);
    // The preview decoders are pulled with `sdx models pull`, not served.
    expect(term.text()).not.toContain("taesd");
    await term.type(ENTER);
    expect(await choice).toBe(CATALOG[0].name);
    expect(term.text()).toContain(`Downloading ${CATALOG[0].name} from ${CATALOG[0].repo}`);
    expect(term.text()).toMatch(/█+.* 100% \| 24\.3 MiB of 24\.3 MiB/);
    expect(term.text()).toContain(`Downloaded ${CATALOG[0].name}: 14 files`);
    expect((await readdir(models)).filter((n) => !n.startsWith("."))).toEqual([CATALOG[0].name]);
  });

  test("local models come first, ones that cannot load are disabled with why, and Enter picks the default", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-menu-"));
    await cp(TINY_SD15, join(models, "tiny"), { recursive: true });
    await mkdir(join(models, "broken"));
    await writeFile(
      join(models, "broken", "model_index.json"),
      JSON.stringify({ _class_name: "FluxPipeline" }),
    );
    const { term, choice } = await openMenu(models);
    const screen = term.text();
    expect(screen).toContain("Local models");
    expect(screen).toMatch(/broken .*cannot be loaded: pipeline class FluxPipeline/);
    expect(screen).toMatch(/❯ tiny +sd1 +onnx/);
    await term.type(ENTER);
    expect(await choice).toBe("tiny");
  });

  test("a failed download says why and the menu comes back; Continue without choosing gives null", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-menu-"));
    const { term, choice } = await openMenu(models);
    await term.type(DOWN, ENTER);
    await term.waitFor("Download failed:");
    expect(term.text()).toContain("SHA-256");
    const again = term.text().lastIndexOf("Download failed:");
    await term.waitFor("Which model should sdx serve?", again);
    // Down past the online models to the last entry.
    await term.type(...Array(CATALOG.length + 2).fill(DOWN), ENTER);
    expect(await choice).toBeNull();
    expect((await readdir(models)).filter((n) => !n.startsWith("."))).toEqual([]);
  });

  test("Another repository… takes any org/name[@revision], refusing what is not one", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-menu-"));
    const { term, choice } = await openMenu(models);
    await term.type(...Array(MODEL_CATALOG.length).fill(DOWN), ENTER);
    await term.waitFor("Repository (org/name");
    await term.type(..."../etc", ENTER);
    await term.waitFor("is not a Hugging Face repository id");
    await term.type(...Array(6).fill("\x7f"), ..."taesd", ENTER);
    await term.waitFor("taesd is a preview decoder, not a model to serve");
    await term.type(...Array(5).fill("\x7f"), ..."someone/tiny-sd@v2", ENTER);
    expect(await choice).toBe("tiny-sd-v2");
    expect(term.text()).toContain("Downloading tiny-sd-v2 from someone/tiny-sd");
    expect((await readdir(models)).filter((n) => !n.startsWith("."))).toEqual(["tiny-sd-v2"]);
  });

  test("Ctrl-C leaves the menu", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-menu-"));
    const { term, choice } = await openMenu(models);
    const outcome = choice.then(
      () => null,
      (e: unknown) => e,
    );
    await term.type(CTRL_C);
    expect(await outcome).toBeInstanceOf(MenuCancelled);
  });
});

describe("server options", () => {
  test("--no-menu / SDX_NO_MENU turn the menu off; HF_ENDPOINT and HF_TOKEN are read", () => {
    const config = (argv: string[], env: Record<string, string> = {}) => {
      const c = readServerConfig(argv, env);
      if (c === "help") throw new Error("help");
      return c;
    };
    expect(config([])).toMatchObject({
      menu: true,
      hubEndpoint: "https://huggingface.co",
      hfToken: undefined,
    });
    expect(config(["--no-menu"]).menu).toBe(false);
    expect(config([], { SDX_NO_MENU: "1" }).menu).toBe(false);
    expect(config([], { HF_ENDPOINT: "https://hf-mirror.example/", HF_TOKEN: "hf_x" })).toMatchObject({
      hubEndpoint: "https://hf-mirror.example",
      hfToken: "hf_x",
    });
    expect(() => config([], { HF_ENDPOINT: "hf-mirror.example" })).toThrow(ConfigError);
  });
});

const hasScript = Bun.which("script") !== null;

describe.skipIf(!hasScript)("bun api/index.ts on a terminal", () => {
  test("a newcomer with an empty models/ picks an online model; it downloads with a bar and is served", async () => {
    const models = await mkdtemp(join(tmpdir(), "sdx-menu-e2e-"));
    const command = `bun ${join(REPO_ROOT, "api/index.ts")} --models-dir ${models} --host 127.0.0.1 --port 0`;
    const proc = Bun.spawn(["script", "-qfec", command, "/dev/null"], {
      cwd: REPO_ROOT,
      stdin: "pipe",
      stdout: "pipe",
      stderr: "pipe",
      env: {
        ...process.env,
        HF_ENDPOINT: hub.url,
        HF_TOKEN: "",
        SDX_MODEL: "",
        SDX_MODELS_DIR: "",
        SDX_NO_MENU: "",
      },
    });
    let screen = "";
    void (async () => {
      for await (const chunk of proc.stdout) screen += new TextDecoder().decode(chunk);
    })();
    const waitFor = async (needle: string) => {
      const deadline = Date.now() + 60_000;
      while (!screen.includes(needle)) {
        if (Date.now() > deadline || proc.exitCode !== null)
          throw new Error(`no "${needle}" on the screen:\n${screen}`);
        await Bun.sleep(20);
      }
    };
    try {
      await waitFor("Which model should sdx serve?");
      proc.stdin.write(ENTER);
      proc.stdin.flush();
      await waitFor(`sdx: serving ${CATALOG[0].name}`);
      expect(screen).toContain("100%");
      expect(screen).toContain("█");
      expect(screen).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+/);
      expect((await readdir(models)).filter((n) => !n.startsWith("."))).toEqual([CATALOG[0].name]);
    } finally {
      // Ctrl-C on the terminal: the server drains and exits.
      proc.stdin.write(CTRL_C);
      proc.stdin.flush();
      const exited = await Promise.race([proc.exited, Bun.sleep(10_000).then(() => null)]);
      if (exited === null) proc.kill("SIGKILL");
    }
  });
});
