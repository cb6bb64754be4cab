/**
 * The layers point one way (scripts/layers.ts): the real tree has no import against the arrows and no cycle,
 * and the checker does catch each kind of wrong import, shown here on small made-up trees.
 */
import { describe, expect, test } from "bun:test";
import { directionViolations, importCycles, layerProblems } from "../../scripts/layers.ts";
import { graphOf, readSources } from "../../scripts/module_graph.ts";
import { REPO_ROOT } from "../helpers/fixtures.ts";

/** A tiny tree: path → source. */
const tree = (files: Record<string, string>) => new Map(Object.entries(files));
const rulesBroken = (files: Record<string, string>) =>
  directionViolations(graphOf(tree(files))).map((v) => `${v.file} → ${v.specifier}`);

describe("the repository", () => {
  test("every import points the right way and there is no import cycle", async () => {
    expect(layerProblems(await readSources(REPO_ROOT))).toEqual([]);
  });

  test("no file under cli/ imports from api/, and the engine imports no server feature", async () => {
    const graph = graphOf(await readSources(REPO_ROOT));
    const targets = (prefix: string) =>
      [...graph]
        .filter(([file]) => file.startsWith(prefix))
        .flatMap(([, edges]) => edges.map((e) => e.target));
    expect(targets("cli/").filter((t) => t?.startsWith("api/"))).toEqual([]);
    expect(
      targets("api/engine/").filter((t) => t?.startsWith("api/") && !t.startsWith("api/engine/")),
    ).toEqual([]);
  });
});

describe("the checker catches a wrong import", () => {
  test("the CLI reaching into the server", () => {
    expect(
      rulesBroken({
        "cli/project.ts": 'import { GenerateParamsSchema } from "../api/generate/model.ts";',
        "api/generate/model.ts": "export const GenerateParamsSchema = 1;",
      }),
    ).toEqual(["cli/project.ts → ../api/generate/model.ts"]);
  });

  test("the engine importing a server feature", () => {
    expect(
      rulesBroken({
        "api/engine/model_host.ts": 'import { ServerMetrics } from "../metrics/service.ts";',
        "api/metrics/service.ts": "export class ServerMetrics {}",
      }),
    ).toEqual(["api/engine/model_host.ts → ../metrics/service.ts"]);
  });

  test("one feature calling another's service, while the root may wire them", () => {
    expect(
      rulesBroken({
        "api/a1111/txt2img.ts": 'import { generateImages } from "../generate/service.ts";',
        "api/generate/service.ts": "export const generateImages = 1;",
        "api/app.ts": 'import { generateImages } from "./generate/service.ts";',
      }),
    ).toEqual(["api/a1111/txt2img.ts → ../generate/service.ts"]);
  });

  test("the contract importing anything but TypeBox, and product code importing tests", () => {
    expect(
      rulesBroken({
        "contract/generate.ts": 'import { t } from "elysia";\nimport { Type } from "@sinclair/typebox";',
        "lib/fs/atomic.ts": 'import { TINY } from "../../test/helpers/fixtures.ts";',
        "test/helpers/fixtures.ts": "export const TINY = 1;",
      }),
    ).toEqual(["contract/generate.ts → elysia", "lib/fs/atomic.ts → ../../test/helpers/fixtures.ts"]);
  });

  test("onnxruntime outside its one module, and Elysia in a service", () => {
    expect(
      rulesBroken({
        "api/engine/pipeline/load.ts": 'import * as ort from "onnxruntime-node";',
        "api/engine/onnx/runtime.ts": 'import * as ort from "onnxruntime-node";',
        "api/hub/service.ts": 'import { t } from "elysia";',
        "api/hub/index.ts": 'import { Elysia } from "elysia";',
      }),
    ).toEqual(["api/engine/pipeline/load.ts → onnxruntime-node", "api/hub/service.ts → elysia"]);
  });

  test("type-only imports count", () => {
    expect(
      rulesBroken({
        "sdk/index.ts": 'import type { App } from "../api/app.ts";',
        "api/app.ts": "export type App = 1;",
      }),
    ).toEqual(["sdk/index.ts → ../api/app.ts"]);
  });
});

describe("the checker catches an import cycle", () => {
  test("two modules importing each other, types included; a chain is no cycle", () => {
    const graph = graphOf(
      tree({
        "api/engine/pipeline/stable_diffusion.ts": 'import { encodeXl } from "./stable_diffusion_xl.ts";',
        "api/engine/pipeline/stable_diffusion_xl.ts": 'import type { Input } from "./stable_diffusion.ts";',
        "api/engine/schedulers/a.ts": 'import { b } from "./b.ts";',
        "api/engine/schedulers/b.ts": "export const b = 1;",
      }),
    );
    expect(importCycles(graph)).toEqual([
      ["api/engine/pipeline/stable_diffusion.ts", "api/engine/pipeline/stable_diffusion_xl.ts"],
    ]);
  });
});
