/**
 * `bun scripts/web_screenshot.ts [--models-dir DIR] [--out FILE]`: a screenshot of the web page after a
 * generation, its grid filled (default docs/web-page.png, 1280×900), taken in headless Chromium from a server
 * on loopback; by default it serves the tiny test model, whose pictures are noise by design.
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import sharp from "sharp";
import { writeFileAtomic } from "../lib/fs/atomic.ts";
import { launchChromium } from "../test/helpers/cdp.ts";
import { MODELS_DIR, REPO_ROOT } from "../test/helpers/fixtures.ts";
import { startServer } from "../test/helpers/server.ts";

const { values } = parseArgs({
  options: {
    "models-dir": { type: "string", default: MODELS_DIR },
    out: { type: "string", default: join(REPO_ROOT, "docs", "web-page.png") },
  },
});

const server = await startServer(["--models-dir", values["models-dir"]]);
const browser = await launchChromium();
try {
  const page = await browser.newPage({ width: 1280, height: 900 });
  await page.goto(`${server.url}/`);
  await page.waitFor(`document.getElementById("model").options.length > 0`);
  await page.type("#prompt", "a lighthouse on a cliff at dawn, oil painting, warm light");
  await page.type("#negative_prompt", "blurry, low quality");
  await page.type("#num_steps", "12");
  await page.type("#seed", "42");
  await page.type("#batch_size", "4");
  await page.click("#generate");
  await page.waitFor(`document.getElementById("live").dataset.state === "done"`, 300_000);
  // Let the grid's images decode before the picture is taken.
  await page.waitFor(`[...document.querySelectorAll("#grid img")].every((i) => i.complete)`);
  // A 256-colour palette keeps the picture a few hundred kB (the noise of the tiny model's images compresses badly).
  const png = await sharp(await page.screenshot())
    .png({ palette: true, quality: 90, effort: 10 })
    .toBuffer();
  await writeFileAtomic(values.out, png);
  console.log(`wrote ${values.out}`);
} finally {
  await browser.close();
  await server.stop();
}
