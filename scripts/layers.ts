/**
 * The layers of sdx and the one direction their imports may point:
 *
 *   cli → sdk (+ contract, lib)        the command line is a client of the SDK like any third party
 *   api features → engine → contract   a feature (api/<name>/) uses api/http, the engine, the contract and lib;
 *                                      never another feature; only the composition root wires features together
 *   contract                           imports TypeBox only
 *
 * plus: no import cycles anywhere; onnxruntime behind api/engine/onnx/runtime.ts; Elysia in the HTTP layer only;
 * product code never imports scripts, benches or tests. `bun scripts/layers.ts` prints the violations;
 * test/architecture/layers.test.ts keeps the tree free of them.
 */
import { graphOf, type ModuleGraph, readSources } from "./module_graph.ts";

/** The layer a repository-relative path belongs to, and for a feature its name. */
export interface Place {
  layer: "contract" | "lib" | "sdk" | "cli" | "engine" | "http" | "feature" | "root" | "tools";
  feature?: string;
}

/** The composition root: the entry, the app that wires the features, and the server options. */
const ROOT_FILES = new Set(["api/index.ts", "api/app.ts", "api/config.ts"]);

export function placeOf(path: string): Place {
  const [top, second] = path.split("/");
  switch (top) {
    case "contract":
    case "lib":
    case "sdk":
    case "cli":
      return { layer: top };
    case "api":
      if (ROOT_FILES.has(path)) return { layer: "root" };
      if (second === "engine") return { layer: "engine" };
      if (second === "http") return { layer: "http" };
      return { layer: "feature", feature: second ?? "" };
    default:
      return { layer: "tools" };
  }
}

/** Which layers each layer may import (a feature: the same feature only, besides these). */
const MAY_IMPORT: Record<Place["layer"], readonly Place["layer"][]> = {
  contract: ["contract"],
  lib: ["lib", "contract"],
  sdk: ["sdk"],
  cli: ["cli", "sdk", "contract", "lib"],
  engine: ["engine", "contract", "lib"],
  http: ["http", "contract", "lib"],
  feature: ["http", "engine", "contract", "lib"],
  root: ["feature", "http", "engine", "contract", "lib", "root"],
  tools: ["contract", "lib", "sdk", "cli", "engine", "http", "feature", "root", "tools"],
};

/** Packages only some places may import: the place test for each. */
const PACKAGE_RULES: { package: RegExp; allowed: (path: string, place: Place) => boolean; why: string }[] = [
  {
    package: /^onnxruntime-node$/,
    allowed: (path, place) => path === "api/engine/onnx/runtime.ts" || place.layer === "tools",
    why: "onnxruntime sits behind api/engine/onnx/runtime.ts",
  },
  {
    package: /^(elysia|@elysiajs\/)/,
    allowed: (path, place) =>
      ["http", "feature", "root", "tools"].includes(place.layer) && !path.endsWith("/service.ts"),
    why: "Elysia is the HTTP layer's: routes (index.ts), api/http and the root; a service never sees HTTP",
  },
];

/** What the contract may import besides itself. */
const CONTRACT_PACKAGES = /^@sinclair\/typebox(\/|$)/;
/** What the SDK may import besides itself: its HTTP client and event-stream parser. */
const SDK_PACKAGES = /^(openapi-fetch|eventsource-parser)$/;
/** The SDK's one file for Bun and Node (the rest runs in browsers): it may read files. */
const SDK_FILES_MODULE = "sdk/files.ts";
const SDK_FILES_PACKAGES = /^node:fs\/promises$/;

export interface Violation {
  file: string;
  specifier: string;
  rule: string;
}

/** The imports that point the wrong way. */
export function directionViolations(graph: ModuleGraph): Violation[] {
  const out: Violation[] = [];
  for (const [file, edges] of graph) {
    const from = placeOf(file);
    for (const { specifier, target } of edges) {
      const add = (rule: string) => out.push({ file, specifier, rule });
      if (target === null) {
        if (specifier.startsWith(".")) continue; // a non-code file (package.json) or a missing one (tsc says)
        if (from.layer === "contract") {
          if (!CONTRACT_PACKAGES.test(specifier)) add("the contract imports TypeBox only");
          continue;
        }
        if (from.layer === "sdk") {
          if (file === SDK_FILES_MODULE && SDK_FILES_PACKAGES.test(specifier)) continue;
          if (!SDK_PACKAGES.test(specifier))
            add(
              `the SDK imports openapi-fetch and eventsource-parser only (and ${SDK_FILES_MODULE} node:fs/promises)`,
            );
          continue;
        }
        for (const rule of PACKAGE_RULES) {
          if (rule.package.test(specifier) && !rule.allowed(file, from)) add(rule.why);
        }
        continue;
      }
      const to = placeOf(target);
      if (
        !MAY_IMPORT[from.layer].includes(to.layer) &&
        !(from.layer === "feature" && to.layer === "feature")
      ) {
        add(`${from.layer} may import ${MAY_IMPORT[from.layer].join(", ")}; not ${to.layer} (${target})`);
      } else if (from.layer === "feature" && to.layer === "feature" && from.feature !== to.feature) {
        add(
          `feature ${from.feature} imports feature ${to.feature} (${target}): shared logic goes one layer down`,
        );
      }
    }
  }
  return out;
}

/** The import cycles: each strongly connected component of more than one file (or a file importing itself). */
export function importCycles(graph: ModuleGraph): string[][] {
  // Tarjan's strongly connected components.
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const { target: w } of graph.get(v) ?? []) {
      if (w === null || !graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) as number, index.get(w) as number));
      }
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      const selfLoop = (graph.get(v) ?? []).some((e) => e.target === v);
      if (component.length > 1 || selfLoop) cycles.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

/** Every problem of a tree, as lines. */
export function layerProblems(sources: ReadonlyMap<string, string>): string[] {
  const graph = graphOf(sources);
  return [
    ...directionViolations(graph).map((v) => `${v.file}: import "${v.specifier}": ${v.rule}`),
    ...importCycles(graph).map((c) => `import cycle: ${c.join(" → ")}`),
  ];
}

if (import.meta.main) {
  const problems = layerProblems(await readSources(process.cwd()));
  for (const line of problems) console.error(line);
  console.log(problems.length === 0 ? "layers: every import points the right way, no cycles" : "");
  process.exitCode = problems.length === 0 ? 0 : 1;
}
