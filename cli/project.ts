/**
 * Projects: `<input>/<project>/config.yaml` and `prompts.yaml`, as the seed describes them. Both are parsed
 * safely (no custom tags, aliases capped) and validated against TypeBox schemas built from the API's own
 * parameter schema, before anything runs; every problem names the file, the line, the column and the key.
 * Where the API takes an image (`init_image`, `mask_image`), a project names a file in its folder instead.
 */
import { join, relative } from "node:path";
import { FormatRegistry, type TSchema, Type } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { type Document, isMap, isScalar, LineCounter, parseDocument } from "yaml";
import { constraintMessage, GenerateParamsSchema, SAFE_NAME, SAFE_NAME_RULE } from "../contract/index.ts";
import type { GenerateRequest } from "../sdk/index.ts";
import { IMAGE_FIELDS, ImageInputError, projectImagePath } from "./images.ts";

/** JSON Schema's "uri" format, which TypeBox leaves to its user: what the WHATWG URL parser accepts. */
if (!FormatRegistry.Has("uri")) FormatRegistry.Set("uri", (value) => URL.canParse(value));

const safeName = (description: string) => Type.String({ pattern: SAFE_NAME.source, description });

const imagePath = (description: string) =>
  Type.String({
    minLength: 1,
    maxLength: 4096,
    description: `${description} A PNG, JPEG or WebP file, relative to the project folder (never outside it).`,
  });

/** The API's parameters, with image files named by path instead of sent as base64. */
export const ProjectParamsSchema = Type.Object(
  {
    ...GenerateParamsSchema.properties,
    init_image: Type.Optional(imagePath("Image-to-image: the picture to start from.")),
    mask_image: Type.Optional(imagePath("Inpainting: white is repainted, black kept; needs init_image.")),
  },
  { additionalProperties: false },
);

export const ProjectConfigSchema = Type.Object(
  {
    server_url: Type.String({ format: "uri", pattern: "^https?://", description: "The sdx server." }),
    name: Type.Optional(safeName("Output folder name of the project; default: the project's folder name.")),
    model: Type.Optional(
      Type.String({
        minLength: 1,
        maxLength: 255,
        description: "A model of the server (`sdx models`); default: the server's default model.",
      }),
    ),
    default_params: Type.Optional(ProjectParamsSchema),
    ollama: Type.Optional(
      Type.Object(
        {
          server_url: Type.Optional(
            Type.String({
              pattern: "^https?://",
              description: "The Ollama server; default http://127.0.0.1:11434.",
            }),
          ),
          model: Type.String({
            minLength: 1,
            description: "Ollama model that writes the prompts, e.g. llama3.2.",
          }),
          system_message: Type.Optional(Type.String({ description: "System message of the chat." })),
          prompt: Type.String({ minLength: 1, description: "What the model is asked, once per image." }),
          negative_prompt: Type.Optional(
            Type.String({ description: "Negative prompt of every --ollama image." }),
          ),
          fallback_prompt: Type.String({
            minLength: 1,
            description: "Used, with a warning, when Ollama fails (timeout, unknown model, unreachable).",
          }),
          temperature: Type.Optional(Type.Number({ minimum: 0, maximum: 2 })),
          timeout_seconds: Type.Optional(
            Type.Number({ exclusiveMinimum: 0, maximum: 3600, description: "Per prompt; default 60." }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

export const PromptSetSchema = Type.Object(
  {
    name: safeName("Prompt-set name; also its output folder name."),
    prompt: Type.String(),
    negative_prompt: Type.Optional(Type.String()),
    params: Type.Optional(ProjectParamsSchema),
  },
  { additionalProperties: false },
);

export const PromptsFileSchema = Type.Object(
  { prompt_sets: Type.Array(PromptSetSchema, { minItems: 1 }) },
  { additionalProperties: false },
);

export type ProjectConfig = typeof ProjectConfigSchema.static;
export type PromptSet = typeof PromptSetSchema.static;
export type OllamaConfig = NonNullable<ProjectConfig["ollama"]>;
/** Parameters as a project writes them: `init_image` and `mask_image` are file paths. */
export type ProjectParams = typeof ProjectParamsSchema.static;
/** A request as a project writes it; `withImageFiles` (gen) reads the files it names. */
export type ProjectRequest = Omit<GenerateRequest, "init_image" | "mask_image"> & ProjectParams;

export interface Project {
  /** Folder name under the input directory. */
  folder: string;
  /** Output folder name: config `name`, else the folder name. */
  name: string;
  dir: string;
  config: ProjectConfig;
  promptSets: PromptSet[];
}

export interface ProjectProblem {
  file: string;
  line: number;
  column: number;
  key: string;
  message: string;
}

export class ProjectError extends Error {
  override name = "ProjectError";
  constructor(readonly problems: ProjectProblem[]) {
    super(
      problems
        .map((p) => `${p.file}:${p.line}:${p.column}: ${p.key ? `${p.key}: ` : ""}${p.message}`)
        .join("\n"),
    );
  }
}

interface ParsedFile {
  file: string;
  doc: Document;
  lines: LineCounter;
}

function position(parsed: ParsedFile, path: (string | number)[]): { line: number; col: number } {
  // Walk down to the deepest node that exists, so a missing key points at its parent map.
  for (let depth = path.length; depth >= 0; depth--) {
    const node = parsed.doc.getIn(path.slice(0, depth), true) as
      | { range?: [number, number, number] }
      | undefined;
    const range = node && typeof node === "object" && "range" in node ? node.range : undefined;
    if (range) {
      // For a map entry, point at the key rather than the value.
      const parent = depth > 0 ? parsed.doc.getIn(path.slice(0, depth - 1), true) : undefined;
      if (isMap(parent)) {
        const pair = parent.items.find((p) => isScalar(p.key) && p.key.value === path[depth - 1]);
        const keyRange = pair && isScalar(pair.key) ? pair.key.range : undefined;
        if (keyRange) return parsed.lines.linePos(keyRange[0]);
      }
      return parsed.lines.linePos(range[0]);
    }
  }
  return { line: 1, col: 1 };
}

function parseYamlFile(
  file: string,
  text: string,
): { parsed: ParsedFile; value: unknown; problems: ProjectProblem[] } {
  const lines = new LineCounter();
  // Plain YAML 1.2 core schema: no custom tags, and alias expansion capped against "billion laughs".
  const doc = parseDocument(text, {
    lineCounter: lines,
    schema: "core",
    customTags: [],
    uniqueKeys: true,
    prettyErrors: false,
  });
  const parsed = { file, doc, lines };
  const problems: ProjectProblem[] = doc.errors.map((e) => {
    const pos = lines.linePos(e.pos[0]);
    return { file, line: pos.line, column: pos.col, key: "", message: e.message.split("\n")[0] ?? e.message };
  });
  if (problems.length > 0) return { parsed, value: undefined, problems };
  try {
    return { parsed, value: doc.toJS({ maxAliasCount: 100 }), problems };
  } catch (e) {
    return {
      parsed,
      value: undefined,
      problems: [{ file, line: 1, column: 1, key: "", message: (e as Error).message }],
    };
  }
}

function closest(word: string, candidates: string[]): string | null {
  const distance = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
    for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
    for (let i = 1; i <= a.length; i++) {
      for (let j = 1; j <= b.length; j++) {
        const row = d[i] as number[];
        const prev = d[i - 1] as number[];
        row[j] = Math.min(
          (prev[j] as number) + 1,
          (row[j - 1] as number) + 1,
          (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1),
        );
      }
    }
    return (d[a.length] as number[])[b.length] as number;
  };
  let best: string | null = null;
  let bestDistance = Math.max(2, Math.floor(word.length / 3)) + 1;
  for (const c of candidates) {
    const dist = distance(word, c);
    if (dist < bestDistance) {
      best = c;
      bestDistance = dist;
    }
  }
  return best;
}

function schemaProblems(parsed: ParsedFile, schema: TSchema, value: unknown): ProjectProblem[] {
  const problems: ProjectProblem[] = [];
  const seen = new Set<string>();
  for (const error of Value.Errors(schema, value)) {
    const path = error.path
      .split("/")
      .slice(1)
      .map((p) => (/^\d+$/.test(p) ? Number(p) : p));
    const key = path.join(".");
    if (seen.has(key)) continue;
    seen.add(key);
    let message = error.message;
    if (message === "Unexpected property") {
      const parentSchema = path.slice(0, -1).reduce<TSchema | undefined>((s, p) => {
        if (!s) return undefined;
        if (typeof p === "number") return s.items as TSchema | undefined;
        return (s.properties as Record<string, TSchema> | undefined)?.[p];
      }, schema);
      const known = Object.keys((parentSchema?.properties as Record<string, unknown> | undefined) ?? {});
      const suggestion = closest(String(path.at(-1)), known);
      const nested = ["params", "default_params"].find(
        (k) => known.includes(k) && Object.hasOwn(ProjectParamsSchema.properties, String(path.at(-1))),
      );
      message = nested
        ? `unknown key here; generation parameters such as "${String(path.at(-1))}" go under ${nested}:`
        : `unknown key${suggestion ? `; did you mean "${suggestion}"?` : ""} (known keys: ${known.join(", ")})`;
    } else if (error.schema.pattern === SAFE_NAME.source) {
      message = `must be a safe folder name: ${SAFE_NAME_RULE}`;
    } else {
      message = constraintMessage(error.schema, error.value) ?? message;
    }
    const pos = position(parsed, path);
    problems.push({ file: parsed.file, line: pos.line, column: pos.col, key, message });
  }
  return problems;
}

async function readProjectFile(path: string, display: string): Promise<string> {
  const file = Bun.file(path);
  if (!(await file.exists())) {
    throw new ProjectError([{ file: display, line: 0, column: 0, key: "", message: "file not found" }]);
  }
  return file.text();
}

/** Loads and validates a project; throws ProjectError listing every problem found. */
export async function loadProject(inputDir: string, folder: string): Promise<Project> {
  if (!SAFE_NAME.test(folder)) {
    throw new ProjectError([
      {
        file: folder,
        line: 0,
        column: 0,
        key: "",
        message: "project names are letters, digits, '.', '-' and '_' (no path)",
      },
    ]);
  }
  const dir = join(inputDir, folder);
  const display = (name: string) => relative(process.cwd(), join(dir, name)) || join(dir, name);
  const configFile = display("config.yaml");
  const promptsFile = display("prompts.yaml");
  const config = parseYamlFile(configFile, await readProjectFile(join(dir, "config.yaml"), configFile));
  const prompts = parseYamlFile(promptsFile, await readProjectFile(join(dir, "prompts.yaml"), promptsFile));
  const problems = [...config.problems, ...prompts.problems];
  if (config.problems.length === 0)
    problems.push(...schemaProblems(config.parsed, ProjectConfigSchema, config.value));
  if (prompts.problems.length === 0) {
    problems.push(...schemaProblems(prompts.parsed, PromptsFileSchema, prompts.value));
    const sets = (prompts.value as { prompt_sets?: { name?: unknown }[] } | undefined)?.prompt_sets;
    const firstIndex = new Map<unknown, number>();
    sets?.forEach((set, i) => {
      if (set?.name === undefined) return;
      const first = firstIndex.get(set.name);
      if (first === undefined) firstIndex.set(set.name, i);
      else {
        const pos = position(prompts.parsed, ["prompt_sets", i, "name"]);
        problems.push({
          file: promptsFile,
          line: pos.line,
          column: pos.col,
          key: `prompt_sets.${i}.name`,
          message: `duplicate prompt-set name "${String(set.name)}" (first used by prompt_sets.${first})`,
        });
      }
    });
  }
  // Image files are checked even when other keys are wrong, so that one run lists every problem.
  if (config.problems.length === 0 && prompts.problems.length === 0) {
    problems.push(...(await imageProblems(dir, config.parsed, config.value, prompts.parsed, prompts.value)));
  }
  if (problems.length > 0) {
    const order = (p: ProjectProblem) => (p.file === configFile ? 0 : 1);
    problems.sort((a, b) => order(a) - order(b) || a.line - b.line || a.column - b.column);
    throw new ProjectError(problems);
  }
  const projectConfig = config.value as ProjectConfig;
  return {
    folder,
    name: projectConfig.name ?? folder,
    dir,
    config: projectConfig,
    promptSets: (prompts.value as { prompt_sets: PromptSet[] }).prompt_sets,
  };
}

/**
 * The image files of default_params and of each prompt set: inside the project folder (symbolic links
 * followed), readable images; a mask only with an init image. Each problem names the prompt set and the field.
 */
async function imageProblems(
  dir: string,
  configFile: ParsedFile,
  config: unknown,
  promptsFile: ParsedFile,
  prompts: unknown,
): Promise<ProjectProblem[]> {
  const problems: ProjectProblem[] = [];
  const problem = (parsed: ParsedFile, path: (string | number)[], message: string) => {
    const pos = position(parsed, path);
    problems.push({ file: parsed.file, line: pos.line, column: pos.col, key: path.join("."), message });
  };
  // The files may not have passed the schema: read them as loosely typed maps.
  const record = (value: unknown): Record<string, unknown> =>
    typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : {};
  const check = async (parsed: ParsedFile, where: (string | number)[], owner: string, params: unknown) => {
    for (const field of IMAGE_FIELDS) {
      const path = record(params)[field];
      if (typeof path !== "string" || path === "") continue;
      try {
        await projectImagePath(dir, path);
      } catch (e) {
        if (!(e instanceof ImageInputError)) throw e;
        problem(parsed, [...where, field], `${owner}: ${field} "${path}": ${e.message}`);
      }
    }
  };
  const defaults = record(record(config).default_params);
  await check(configFile, ["default_params"], "default_params", defaults);
  const sets = record(prompts).prompt_sets;
  for (const [i, set] of (Array.isArray(sets) ? sets : []).entries()) {
    const { name, params } = record(set);
    const owner = `prompt set "${String(name)}"`;
    await check(promptsFile, ["prompt_sets", i, "params"], owner, params);
    const merged = { ...defaults, ...record(params) };
    if (merged.mask_image !== undefined && merged.init_image === undefined) {
      problem(
        promptsFile,
        ["prompt_sets", i, "params", "mask_image"],
        `${owner}: mask_image needs an init_image (the picture the mask repaints)`,
      );
    }
  }
  return problems;
}

/** The request for one prompt set: default_params, then the set's params, then command-line overrides. */
export function effectiveRequest(
  project: Project,
  set: PromptSet,
  overrides: ProjectParams = {},
): ProjectRequest {
  const request: ProjectRequest = {
    ...project.config.default_params,
    ...(set.negative_prompt !== undefined ? { negative_prompt: set.negative_prompt } : {}),
    ...set.params,
    ...overrides,
    prompt: set.prompt,
  };
  // A set's hires block replaces the default one, as every parameter does; an option changes one knob of it.
  if (overrides.hires) {
    request.hires = { ...(set.params?.hires ?? project.config.default_params?.hires), ...overrides.hires };
  }
  return request;
}

/** What is wrong with parameters given outside the project files (command-line options), by key path. */
export function checkParams(params: ProjectParams): { key: string; message: string }[] {
  const problems: { key: string; message: string }[] = [];
  const seen = new Set<string>();
  for (const error of Value.Errors(ProjectParamsSchema, params)) {
    const key = error.path.split("/").slice(1).join(".");
    if (seen.has(key)) continue;
    seen.add(key);
    problems.push({ key, message: constraintMessage(error.schema, error.value) ?? error.message });
  }
  return problems;
}
