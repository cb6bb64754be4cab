/**
 * Swagger UI renders with no internet: headless Debian Chromium loads /swagger from a real server on loopback
 * (background networking off, so nothing outside could be reached) and the rendered page must show the
 * generate operation. The page's assets come from the installed swagger-ui-dist package.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { dumpDom } from "../helpers/chromium.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

let server: RunningServer;

beforeAll(async () => {
  server = await startServer(["--models-dir", await mkdtemp(join(tmpdir(), "sdx-none-"))]);
});
afterAll(() => server.stop());

test("the page references no host but the server itself", async () => {
  const html = await (await fetch(`${server.url}/swagger`)).text();
  expect(html).toContain("/swagger/assets/swagger-ui-bundle.js");
  expect(html).not.toMatch(/https?:\/\//);
  for (const asset of ["swagger-ui-bundle.js", "swagger-ui.css", "swagger-ui-standalone-preset.js"]) {
    const res = await fetch(`${server.url}/swagger/assets/${asset}`);
    expect(res.status).toBe(200);
    expect((await res.arrayBuffer()).byteLength).toBeGreaterThan(1000);
  }
  expect((await fetch(`${server.url}/swagger/assets/..%2Fpackage.json`)).status).toBe(404);
});

test("headless Chromium renders the /v1/generate operation", async () => {
  const dom = await dumpDom(`${server.url}/swagger`, 15_000);
  // Rendered operations: Swagger UI writes each path into an .opblock-summary-path element.
  expect(dom).toContain("opblock-summary-path");
  expect(dom).toMatch(/data-path="\/v1\/generate"/);
  expect(dom).toContain("/v1/models");
  expect(dom).toContain("/health");
}, 60_000);
