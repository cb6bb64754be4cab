/**
 * The project's import graph, read with TypeScript's own pre-processor (`ts.preProcessFile`: static imports,
 * type-only imports, re-exports and dynamic `import()`), with relative specifiers resolved to files the way
 * Bun resolves them. The layer rules (scripts/layers.ts) and the Docker check (what the image must copy) read it.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { Glob } from "bun";
import ts from "typescript";

/** The folders whose TypeScript makes up the project. */
export const SOURCE_ROOTS = ["api", "cli", "contract", "lib", "sdk", "scripts", "bench", "test"] as const;

export interface ImportEdge {
  /** The specifier as written. */
  specifier: string;
  /** The project file it resolves to (repository-relative), or null for a package or a missing file. */
  target: string | null;
}

/** Every project file (repository-relative, `/`-separated) and its imports. */
export type ModuleGraph = Map<string, ImportEdge[]>;

const EXTENSIONS = ["", ".ts", ".d.ts", "/index.ts"];

/** A relative specifier of `from` as a repository-relative file, if one exists in `files` (or on disk). */
export function resolveSpecifier(
  from: string,
  specifier: string,
  exists: (path: string) => boolean,
): string | null {
  if (!specifier.startsWith(".")) return null;
  const base = normalize(join(dirname(from), specifier));
  for (const ext of EXTENSIONS) {
    const candidate = `${base}${ext}`;
    if (exists(candidate)) return candidate.split("\\").join("/");
  }
  return null;
}

/** The import specifiers of one source text. */
export function importSpecifiers(source: string): string[] {
  return ts.preProcessFile(source, true, true).importedFiles.map((f) => f.fileName);
}

/** The graph of `sources` (path → text), resolving only among those paths. */
export function graphOf(sources: ReadonlyMap<string, string>): ModuleGraph {
  const graph: ModuleGraph = new Map();
  const exists = (path: string) => sources.has(path);
  for (const [path, source] of sources) {
    graph.set(
      path,
      importSpecifiers(source).map((specifier) => ({
        specifier,
        target: resolveSpecifier(path, specifier, exists),
      })),
    );
  }
  return graph;
}

/** The project's TypeScript sources under `root` (node_modules and fixtures left out). */
export async function readSources(root: string): Promise<Map<string, string>> {
  const sources = new Map<string, string>();
  for (const dir of SOURCE_ROOTS) {
    for await (const file of new Glob(`${dir}/**/*.ts`).scan({ cwd: root })) {
      const path = file.split("\\").join("/");
      if (path.includes("/fixtures/") || path.includes("node_modules/")) continue;
      sources.set(path, await Bun.file(join(root, path)).text());
    }
  }
  return sources;
}

/**
 * The project files `entry` (repository-relative) needs, itself included, read from disk under `root`: the
 * closure of its relative imports, non-code files such as package.json too. A missing entry gives [].
 */
export function importClosure(root: string, entry: string): string[] {
  const seen = new Set<string>();
  const exists = (path: string) => existsSync(join(root, path)) && statSync(join(root, path)).isFile();
  const visit = (path: string) => {
    if (seen.has(path) || !exists(path)) return;
    seen.add(path);
    if (!path.endsWith(".ts")) return;
    const source = readFileSync(join(root, path), "utf8");
    for (const specifier of importSpecifiers(source)) {
      const target = resolveSpecifier(path, specifier, exists);
      if (target) visit(target);
    }
  };
  visit(normalize(entry).split("\\").join("/"));
  return [...seen].sort();
}
