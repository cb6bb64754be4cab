/**
 * `bun run check:docker [--root DIR] [DOCKERFILE...]` (default Dockerfile.cuda): lints the Dockerfile with
 * dockerfile-utils (the validator behind the VS Code Docker language server; any error or warning fails), then
 * checks what sdx needs of it, parsed with dockerfile-ast:
 *
 * - every COPY/ADD source from the build context exists in the repository and is not left out by .dockerignore;
 * - every `bun run NAME` names a package.json script;
 * - the files CMD, ENTRYPOINT and HEALTHCHECK run exist and are copied into the final image, and so is every
 *   project file they import (their import closure: contract/, lib/ and package.json for the server);
 * - base images are pinned to a tag (not `latest`) or a digest;
 * - the final stage runs as a non-root USER, has a HEALTHCHECK and EXPOSEs the server's default port.
 *
 * Exit 0 when all hold, 1 with one `file:line: problem` per line otherwise, 2 on usage errors.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { basename, dirname, join, posix, relative, resolve } from "node:path";
import { parseArgs } from "node:util";
import { DockerfileParser, type Instruction } from "dockerfile-ast";
import { validate } from "dockerfile-utils";
import { SERVER_DEFAULTS } from "../contract/index.ts";
import { importClosure } from "./module_graph.ts";

export interface DockerProblem {
  /** 1-based line of the Dockerfile; 0 for the file as a whole. */
  line: number;
  message: string;
}

/** The port the image must expose: the server's default. */
const SDX_PORT = String(SERVER_DEFAULTS.port);
const RUNNABLE_FILE = /\.(ts|tsx|js|mjs|cjs|sh)$/;

/** .dockerignore's patterns, in order, as Docker reads them (comments and blank lines dropped, paths cleaned). */
export function readDockerignore(text: string): { pattern: string; exclusion: boolean }[] {
  const patterns: { pattern: string; exclusion: boolean }[] = [];
  for (const raw of text.split(/\r?\n/)) {
    let line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const exclusion = line.startsWith("!");
    if (exclusion) line = line.slice(1).trim();
    const pattern = posix.normalize(line).replace(/^\/+/, "").replace(/\/+$/, "");
    if (pattern) patterns.push({ pattern, exclusion });
  }
  return patterns;
}

/**
 * Whether Docker leaves `path` (relative to the context, `/`-separated) out of the build context: as moby's
 * patternmatcher does, each pattern is tried against the path and each of its parents, and the last pattern
 * that matches decides (`!pattern` lets back in).
 */
export function isDockerignored(path: string, patterns: { pattern: string; exclusion: boolean }[]): boolean {
  const clean = posix
    .normalize(path)
    .replace(/^(\.\/|\/)+/, "")
    .replace(/\/+$/, "");
  if (clean === "" || clean === ".") return false;
  const parts = clean.split("/");
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
  let ignored = false;
  for (const { pattern, exclusion } of patterns) {
    // An exception matters only for a path already left out, an exclusion only for one still in.
    if (exclusion !== ignored) continue;
    const glob = new Bun.Glob(pattern);
    if (candidates.some((c) => glob.match(c))) ignored = !exclusion;
  }
  return ignored;
}

interface Stage {
  name: string | null;
  fromLine: number;
  instructions: Instruction[];
}

/** A shell-form or JSON-form command as words (shell form split on blanks: enough for the checks here). */
function commandWords(text: string): string[] {
  const trimmed = text.trim();
  if (trimmed.startsWith("[")) {
    try {
      const parsed = JSON.parse(trimmed) as unknown;
      if (Array.isArray(parsed)) return parsed.map(String);
    } catch {
      // Not valid JSON: Docker runs it through the shell, and dockerfile-utils reports it.
    }
  }
  return trimmed.split(/\s+/).filter(Boolean);
}

/** `${NAME}`, `${NAME:-default}` and `$NAME` replaced from the ARGs before the first FROM. */
function expand(text: string, args: Map<string, string>): string {
  return text.replace(/\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)/g, (whole, braced, fallback, bare) => {
    const name = (braced ?? bare) as string;
    return args.get(name) ?? (fallback as string | undefined) ?? whole;
  });
}

export async function checkDockerfile(dockerfilePath: string, root: string): Promise<DockerProblem[]> {
  const problems: DockerProblem[] = [];
  const problem = (line: number, message: string) => problems.push({ line, message });
  if (!existsSync(dockerfilePath)) return [{ line: 0, message: "the Dockerfile does not exist" }];
  const text = await Bun.file(dockerfilePath).text();

  for (const d of validate(text)) {
    const kind = d.severity === 1 ? "error" : "warning";
    problem(d.range.start.line + 1, `dockerfile-utils ${kind}: ${d.message}`);
  }

  const pkgPath = join(root, "package.json");
  const scripts = existsSync(pkgPath)
    ? ((JSON.parse(readFileSync(pkgPath, "utf8")) as { scripts?: Record<string, string> }).scripts ?? {})
    : {};
  const ignorePath = join(root, ".dockerignore");
  const ignore = existsSync(ignorePath) ? readDockerignore(readFileSync(ignorePath, "utf8")) : [];
  const inRepo = (path: string) => existsSync(join(root, path));

  const dockerfile = DockerfileParser.parse(text);
  const globalArgs = new Map<string, string>();
  for (const arg of dockerfile.getInitialARGs()) {
    const property = arg.getProperty();
    const value = property?.getValue();
    if (property && value != null) globalArgs.set(property.getName(), value);
  }

  const stages: Stage[] = [];
  for (const instruction of dockerfile.getInstructions()) {
    const line = instruction.getRange().start.line + 1;
    if (instruction.getKeyword() === "FROM") {
      const words = commandWords(instruction.getArgumentsContent() ?? "").filter((w) => !w.startsWith("--"));
      const name = words[1]?.toUpperCase() === "AS" ? (words[2]?.toLowerCase() ?? null) : null;
      const image = expand(words[0] ?? "", globalArgs);
      const earlierStage = stages.some((s) => s.name !== null && s.name === image.toLowerCase());
      if (image.includes("$")) problem(line, `base image "${image}" uses a variable with no default`);
      else if (!earlierStage && image !== "scratch" && !image.includes("@sha256:")) {
        const last = image.split("/").at(-1) ?? "";
        const tag = last.includes(":") ? last.slice(last.indexOf(":") + 1) : "";
        if (!tag || tag === "latest") {
          problem(line, `base image "${image}" is not pinned: give it a version tag or a digest`);
        }
      }
      stages.push({ name, fromLine: line, instructions: [] });
      continue;
    }
    stages.at(-1)?.instructions.push(instruction);
  }
  if (stages.length === 0) return problems; // dockerfile-utils has said there is no FROM.

  for (const [index, stage] of stages.entries()) {
    const final = index === stages.length - 1;
    let workdir = "/";
    /** Image paths this stage copies in, with the repository path each comes from (null: another stage). */
    const copied: { imagePath: string; repoPath: string | null }[] = [];
    let user: { value: string; line: number } | null = null;
    let healthcheck: { none: boolean } | null = null;
    let exposes = false;

    for (const instruction of stage.instructions) {
      const keyword = instruction.getKeyword();
      const line = instruction.getRange().start.line + 1;
      const content = instruction.getArgumentsContent() ?? "";
      switch (keyword) {
        case "WORKDIR":
          workdir = posix.resolve(workdir, content.trim());
          break;
        case "USER":
          user = { value: content.trim(), line };
          break;
        case "EXPOSE":
          if (commandWords(content).some((p) => p.split("/")[0] === SDX_PORT)) exposes = true;
          break;
        case "COPY":
        case "ADD": {
          const flags =
            "getFlags" in instruction
              ? (instruction as { getFlags(): { getName(): string }[] }).getFlags()
              : [];
          const fromStage = flags.some((f) => f.getName() === "from");
          const words = commandWords(content);
          const dest = words.at(-1);
          const sources = words.slice(0, -1);
          if (dest === undefined || sources.length === 0) break; // dockerfile-utils reports it.
          const destPath = posix.resolve(workdir, dest);
          const intoDir = dest.endsWith("/") || sources.length > 1;
          for (const source of sources) {
            if (fromStage) {
              copied.push({
                imagePath: intoDir ? posix.join(destPath, basename(source)) : destPath,
                repoPath: null,
              });
              continue;
            }
            if (keyword === "ADD" && /^(https?:\/\/|git@)/.test(source)) continue;
            const repoPath = posix.normalize(source).replace(/^(\.\/|\/)+/, "") || ".";
            if (/[*?[]/.test(repoPath)) {
              const matches = [
                ...new Bun.Glob(repoPath).scanSync({ cwd: root, onlyFiles: false, dot: true }),
              ];
              if (!matches.some((m) => !isDockerignored(m, ignore))) {
                problem(line, `${keyword} source "${source}" matches nothing in the build context`);
              }
              continue;
            }
            if (!inRepo(repoPath)) {
              problem(line, `${keyword} source "${source}" does not exist in the repository`);
              continue;
            }
            if (isDockerignored(repoPath, ignore)) {
              problem(line, `${keyword} source "${source}" is excluded by .dockerignore`);
              continue;
            }
            const isDir = statSync(join(root, repoPath)).isDirectory();
            copied.push({
              imagePath: isDir || !intoDir ? destPath : posix.join(destPath, basename(repoPath)),
              repoPath,
            });
          }
          break;
        }
        case "RUN":
        case "CMD":
        case "ENTRYPOINT":
        case "HEALTHCHECK": {
          let words = commandWords(content);
          if (keyword === "HEALTHCHECK") {
            if (words[0]?.toUpperCase() === "NONE") {
              healthcheck = { none: true };
              break;
            }
            healthcheck = { none: false };
            if (words[0]?.toUpperCase() === "CMD") words = commandWords(content.trim().slice(3));
          }
          // `bun run NAME`: a package.json script (a path after `bun run` is a file, checked below).
          for (let i = 0; i + 1 < words.length; i++) {
            if (words[i] !== "bun" || words[i + 1] !== "run") continue;
            const target = words.slice(i + 2).find((w) => !w.startsWith("-"));
            if (target && !target.includes("/") && !RUNNABLE_FILE.test(target) && !(target in scripts)) {
              problem(line, `"bun run ${target}": package.json has no script "${target}"`);
            }
          }
          if (keyword === "RUN") break;
          // The files the container runs: in the repository, and copied into this stage.
          for (const word of words) {
            if (word.startsWith("-") || !RUNNABLE_FILE.test(word) || word.includes("$")) continue;
            const imagePath = posix.resolve(workdir, word);
            const source = copied.findLast(
              (c) => imagePath === c.imagePath || imagePath.startsWith(`${c.imagePath}/`),
            );
            if (!source) {
              problem(line, `${keyword} runs "${word}" (${imagePath}), which no COPY puts in the image`);
              continue;
            }
            if (source.repoPath === null) continue; // From another stage: built there.
            const repoPath = posix.join(source.repoPath, relative(source.imagePath, imagePath));
            if (!inRepo(repoPath)) problem(line, `${keyword} runs "${word}", but ${repoPath} does not exist`);
            else if (isDockerignored(repoPath, ignore)) {
              problem(line, `${keyword} runs "${word}", but .dockerignore leaves ${repoPath} out`);
            }
            // What it imports must be in the image too.
            for (const needed of importClosure(root, repoPath)) {
              if (needed === repoPath) continue;
              const neededInImage = posix.resolve(
                posix.dirname(imagePath),
                posix.relative(posix.dirname(repoPath), needed),
              );
              const copy = copied.findLast(
                (c) => neededInImage === c.imagePath || neededInImage.startsWith(`${c.imagePath}/`),
              );
              if (!copy || (copy.repoPath !== null && isDockerignored(needed, ignore))) {
                problem(
                  line,
                  `${keyword} runs "${word}", which imports ${needed}, but no COPY puts it in the image`,
                );
              }
            }
          }
          break;
        }
      }
    }

    if (!final) continue;
    if (!user) {
      problem(stage.fromLine, "the final stage sets no USER: the server would run as root");
    } else {
      const name = user.value.split(":")[0]?.trim();
      if (name === "root" || name === "0") problem(user.line, `USER ${user.value} runs the server as root`);
    }
    if (!healthcheck || healthcheck.none) {
      problem(stage.fromLine, "the final stage has no HEALTHCHECK (bun scripts/healthcheck.ts asks /health)");
    }
    if (!exposes) problem(stage.fromLine, `the final stage does not EXPOSE ${SDX_PORT}`);
  }
  return problems.sort((a, b) => a.line - b.line);
}

if (import.meta.main) {
  let parsed: ReturnType<typeof parseArgs<{ options: { root: { type: "string" } }; allowPositionals: true }>>;
  try {
    parsed = parseArgs({ options: { root: { type: "string" } }, allowPositionals: true });
  } catch (e) {
    console.error(
      `check:docker: ${(e as Error).message}\nUsage: bun scripts/check_docker.ts [--root DIR] [DOCKERFILE...]`,
    );
    process.exit(2);
  }
  const root = resolve(parsed.values.root ?? dirname(import.meta.dir));
  const files = parsed.positionals.length > 0 ? parsed.positionals : ["Dockerfile.cuda"];
  let failed = false;
  for (const file of files) {
    const path = resolve(root, file);
    const problems = await checkDockerfile(path, root);
    const shown = relative(process.cwd(), path) || file;
    for (const p of problems) console.error(`${shown}:${p.line}: ${p.message}`);
    if (problems.length > 0) failed = true;
    else console.log(`check:docker: ${shown} OK`);
  }
  process.exit(failed ? 1 : 0);
}
