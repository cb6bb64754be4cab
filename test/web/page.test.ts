/**
 * The page at GET / in real headless Debian Chromium against real servers on loopback with the tiny model:
 * everything it loads comes from the server itself; it generates with a live preview drawn before the final
 * image, shows the grid with seeds and puts a result's settings back into the form; it sends the image inputs;
 * it cancels a long run (the server stops it); it shows the API's errors; and with --api-key it asks for the key,
 * keeps it for the tab and then works. Clicks and typing are real input events (test/helpers/cdp.ts).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { CONTENT_SECURITY_POLICY } from "../../api/web/index.ts";
import {
  GENERATE_DEFAULTS,
  type Health,
  type ModelList,
  PREVIEW_DEFAULTS,
  PREVIEW_METHODS,
} from "../../contract/index.ts";
import { type Browser, launchChromium, type Page } from "../helpers/cdp.ts";
import { MODELS_DIR } from "../helpers/fixtures.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const KEY = "web-page-test-key";
let server: RunningServer;
let keyed: RunningServer;
let browser: Browser;

beforeAll(async () => {
  // The keyed server's model loads while the other tests run (its test is last and waits for it).
  [server, keyed, browser] = await Promise.all([
    startServer(["--models-dir", MODELS_DIR]),
    startServer(["--models-dir", MODELS_DIR, "--api-key", KEY], { waitForReady: false }),
    launchChromium(),
  ]);
}, 60_000);
afterAll(async () => {
  await Promise.all([server?.stop(), keyed?.stop(), browser?.close()]);
});

const byId = (id: string) => `document.getElementById(${JSON.stringify(id)})`;
const FINISHED = `["done", "error", "cancelled"].includes(${byId("live")}.dataset.state)`;

/** A fresh tab on the page, once its lists have loaded. */
async function open(base: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  await page.waitFor(`${byId("model")}.options.length > 0`);
  return page;
}

/** Every request went to `base` (or was a data:/blob: URL the page made itself), none anywhere else. */
function expectOnlyOwnOrigin(page: Page, base: string) {
  const origin = new URL(base).origin;
  const elsewhere = page.requests.filter((url) => {
    const u = new URL(url);
    if (u.protocol === "data:") return false;
    if (u.protocol === "blob:") return new URL(u.pathname).origin !== origin;
    return u.origin !== origin;
  });
  expect(elsewhere).toEqual([]);
}

/** The values of the form's fields, by id. */
const values = (page: Page, ids: string[]) =>
  page.evaluate<Record<string, string>>(
    `Object.fromEntries(${JSON.stringify(ids)}.map((id) => [id, document.getElementById(id).value]))`,
  );

/** Console errors other than the 401s a keyed server answers before the key is given. */
const consoleErrors = (page: Page) =>
  page.console.filter((e) => e.level === "error" && !/status of 401/.test(e.text));

test("the page, its files and its API calls come from the server only, under a strict CSP", async () => {
  const res = await fetch(`${server.url}/`);
  expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
  expect(res.headers.get("content-security-policy")).toBe(CONTENT_SECURITY_POLICY);
  const etag = res.headers.get("etag");
  expect(etag).toBeTruthy();
  expect(res.headers.get("cache-control")).toBe("no-cache");
  const html = await res.text();
  expect(html).not.toMatch(/https?:\/\//);
  expect(html).not.toMatch(/<script>|<style|style="/);
  expect((await fetch(`${server.url}/`, { headers: { "if-none-match": etag ?? "" } })).status).toBe(304);
  const js = await fetch(`${server.url}/web/eventsource-parser/parse.js`);
  expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
  expect(await js.text()).toContain("createParser");
  expect((await fetch(`${server.url}/web/style.css`)).headers.get("content-type")).toBe(
    "text/css; charset=utf-8",
  );
  for (const path of ["/web/index.html", "/web/eventsource-parser/package.json", "/web/..%2Fapp.ts"]) {
    expect((await fetch(`${server.url}${path}`)).status).toBe(404);
  }

  const page = await open(server.url);
  expectOnlyOwnOrigin(page, server.url);
  const paths = page.requests.map((u) => new URL(u).pathname);
  for (const p of ["/", "/web/app.js", "/web/eventsource-parser/parse.js", "/swagger/json", "/v1/models"]) {
    expect(paths).toContain(p);
  }
  // Defaults come from the API: the spec's request defaults and the model's native size.
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as ModelList;
  const form = await values(page, [
    "num_steps",
    "guidance_scale",
    "scheduler_type",
    "width",
    "height",
    "batch_size",
    "model",
    "preview_method",
  ]);
  expect(form).toEqual({
    num_steps: String(GENERATE_DEFAULTS.num_steps),
    guidance_scale: String(GENERATE_DEFAULTS.guidance_scale),
    scheduler_type: GENERATE_DEFAULTS.scheduler_type,
    width: String(models.models[0]?.native_size),
    height: String(models.models[0]?.native_size),
    batch_size: String(GENERATE_DEFAULTS.batch_size),
    model: "tiny_sd15",
    preview_method: PREVIEW_DEFAULTS.method,
  });
  expect(await page.evaluate(`[...${byId("preview_method")}.options].map((o) => o.value).join(",")`)).toBe(
    PREVIEW_METHODS.join(","),
  );
  expect(await page.evaluate(`${byId("server")}.textContent`)).toContain("tiny_sd15");
  expect(consoleErrors(page)).toEqual([]);
  await page.close();
}, 30_000);

test("generating shows previews before the final image, then the grid with seeds; a result's settings go back into the form", async () => {
  const page = await open(server.url);
  await page.type("#prompt", "a red fox in the snow");
  await page.type("#negative_prompt", "blurry");
  await page.type("#num_steps", "4");
  await page.type("#width", "64");
  await page.type("#height", "64");
  await page.type("#seed", "1234");
  await page.type("#batch_size", "2");
  // What the page draws, recorded after each change: the live image's kind of URL and the cards in the grid.
  await page.evaluate(`(() => {
    window.drawn = [];
    const image = ${byId("live-image")};
    const grid = ${byId("grid")};
    new MutationObserver(() => drawn.push({ src: image.src.split(":")[0], pixelated: image.classList.contains("pixelated"), cards: grid.children.length }))
      .observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["src"] });
  })()`);
  await page.click("#generate");
  await page.waitFor(FINISHED);
  expect(await page.evaluate(`${byId("live")}.dataset.state`)).toBe("done");

  const drawn = await page.evaluate<{ src: string; pixelated: boolean; cards: number }[]>("drawn");
  const firstPreview = drawn.findIndex((d) => d.src === "data" && d.cards === 0);
  const firstCard = drawn.findIndex((d) => d.cards > 0);
  expect(firstPreview).toBeGreaterThanOrEqual(0);
  expect(firstPreview).toBeLessThan(firstCard);
  expect(drawn[firstPreview]?.pixelated).toBe(true);
  expect(drawn.at(-1)?.src).toBe("blob");
  expect(await page.evaluate(`${byId("progress")}.value === ${byId("progress")}.max`)).toBe(true);

  const cards = await page.evaluate<
    { seed: string; text: string; width: number; href: string; download: string }[]
  >(
    `[...document.querySelectorAll("#grid .card")].map((c) => ({ seed: c.dataset.seed, text: c.querySelector(".seed").textContent, width: c.querySelector("img").naturalWidth, href: c.querySelector("a").href, download: c.querySelector("a").download }))`,
  );
  expect(cards.map((c) => [c.seed, c.text, c.width])).toEqual([
    ["1234", "seed 1234", 64],
    ["1235", "seed 1235", 64],
  ]);
  for (const c of cards) {
    expect(c.href).toStartWith(`blob:${server.url}/`);
    expect(c.download).toBe(`sdx-${c.seed}.png`);
  }

  await page.type("#prompt", "something else");
  await page.type("#num_steps", "9");
  await page.type("#seed", "");
  await page.click("#grid .card:nth-child(2) button");
  const form = await values(page, [
    "prompt",
    "negative_prompt",
    "num_steps",
    "width",
    "height",
    "seed",
    "scheduler_type",
  ]);
  expect(form).toEqual({
    prompt: "a red fox in the snow",
    negative_prompt: "blurry",
    num_steps: "4",
    width: "64",
    height: "64",
    seed: "1235",
    scheduler_type: GENERATE_DEFAULTS.scheduler_type,
  });
  expectOnlyOwnOrigin(page, server.url);
  expect(consoleErrors(page)).toEqual([]);
  await page.close();
}, 30_000);

test("the image inputs: an init image with strength, and the hires fix", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sdx-web-"));
  const init = join(dir, "init.png");
  await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 60, b: 30 } } })
    .png()
    .toFile(init);
  const page = await open(server.url);
  await page.type("#prompt", "a red fox");
  await page.type("#num_steps", "4");
  await page.type("#width", "64");
  await page.type("#height", "64");
  await page.click("details:nth-of-type(1) summary");
  await page.setFiles("#init_image", [init]);
  await page.type("#strength", "0.5");
  await page.click("#generate");
  await page.waitFor(FINISHED);
  expect(await page.evaluate(`${byId("live")}.dataset.state`)).toBe("done");
  await page.type("#strength", "");
  await page.click("#grid .card:nth-child(1) button");
  // The applied parameters say the init image was used: strength comes back from the server.
  expect(await page.evaluate(`${byId("strength")}.value`)).toBe("0.5");

  await page.click("#clear-images");
  await page.click("details:nth-of-type(2) summary");
  await page.click("#hires");
  await page.type("#hires_scale", "2");
  await page.type("#hires_steps", "2");
  await page.click("#generate");
  await page.waitFor(FINISHED);
  expect(await page.evaluate(`${byId("live")}.dataset.state`)).toBe("done");
  expect(await page.evaluate(`document.querySelector("#grid .card img").naturalWidth`)).toBe(128);
  await page.type("#hires_scale", "");
  await page.click("#grid .card:nth-child(1) button");
  expect(await page.evaluate(`[${byId("hires")}.checked, ${byId("hires_scale")}.value]`)).toEqual([
    true,
    "2",
  ]);
  expect(consoleErrors(page)).toEqual([]);
  await page.close();
}, 30_000);

test("a rejected request shows the API's message and the fields it names", async () => {
  const dir = await mkdtemp(join(tmpdir(), "sdx-web-"));
  const mask = join(dir, "mask.png");
  await sharp({ create: { width: 64, height: 64, channels: 3, background: "#fff" } })
    .png()
    .toFile(mask);
  const page = await open(server.url);
  await page.type("#num_steps", "2");
  await page.setFiles("#mask_image", [mask]);
  await page.click("#generate");
  await page.waitFor(FINISHED);
  expect(await page.evaluate(`${byId("live")}.dataset.state`)).toBe("error");
  const error = await page.evaluate<string>(`${byId("error")}.hidden ? "" : ${byId("error")}.textContent`);
  expect(error).toContain("mask_image");
  expect(error).toContain("init_image");
  await page.close();
}, 30_000);

test("cancel stops a long run: the page says cancelled and the server runs nothing", async () => {
  const page = await open(server.url);
  await page.type("#prompt", "a long run");
  await page.type("#num_steps", "150");
  await page.click("#generate");
  await page.waitFor(`${byId("progress")}.value >= 1`);
  await page.click("#cancel");
  await page.waitFor(FINISHED);
  expect(await page.evaluate(`[${byId("live")}.dataset.state, ${byId("status")}.textContent]`)).toEqual([
    "cancelled",
    "Cancelled.",
  ]);
  expect(await page.evaluate(`document.querySelectorAll("#grid .card").length`)).toBe(0);
  // The server stopped it before its next steps (150 would take most of a minute).
  const deadline = Date.now() + 5_000;
  let health: Health;
  do {
    health = (await (await fetch(`${server.url}/health`)).json()) as Health;
    if (Number(health.queue.running) === 0) break;
    await Bun.sleep(50);
  } while (Date.now() < deadline);
  expect([health.queue.running, health.queue.queued]).toEqual([0, 0]);
  const metrics = await (await fetch(`${server.url}/metrics`)).text();
  expect(metrics).toMatch(/sdx_cancellations_total\{where="running"\} [1-9]/);
  expect(await page.evaluate(`${byId("generate")}.disabled`)).toBe(false);
  await page.close();
}, 30_000);

test("with --api-key the page asks for the key, keeps it for the tab, and then works", async () => {
  const page = await browser.newPage();
  await page.goto(`${keyed.url}/`);
  await page.waitFor(`${byId("key-dialog")}.open`);
  await page.type("#api-key", "not-the-key");
  await page.click("#key-form button[type=submit]");
  await page.waitFor(`${byId("key-message")}.textContent.includes("refused")`);
  await page.type("#api-key", KEY);
  await page.click("#key-form button[type=submit]");
  await page.waitFor(`${byId("model")}.options.length > 0`);
  expect(await page.evaluate(`sessionStorage.getItem("sdx.apiKey")`)).toBe(KEY);
  expect(await page.evaluate(`${byId("key-dialog")}.open`)).toBe(false);

  await page.type("#num_steps", "2");
  await page.type("#width", "64");
  await page.type("#height", "64");
  while (((await (await fetch(`${keyed.url}/health`)).json()) as Health).status === "loading")
    await Bun.sleep(50);
  await page.click("#generate");
  await page.waitFor(FINISHED);
  expect(await page.evaluate(`${byId("live")}.dataset.state`)).toBe("done");

  // A reload in the same tab needs no key again; "Forget API key" drops it.
  await page.goto(`${keyed.url}/`);
  await page.waitFor(`${byId("model")}.options.length > 0`);
  expect(await page.evaluate(`${byId("key-dialog")}.open`)).toBe(false);
  await page.click("#forget-key");
  expect(await page.evaluate(`sessionStorage.getItem("sdx.apiKey")`)).toBeNull();
  expectOnlyOwnOrigin(page, keyed.url);
  expect(consoleErrors(page)).toEqual([]);
  await page.close();
}, 30_000);
