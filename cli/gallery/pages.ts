/**
 * The gallery's HTML pages: a run's (thumbnails, prompts, seeds, changed parameters, links to each image and its
 * metadata), an `--all-models` comparison's (one row per model) and a project's (every run, newest first). Pages
 * stand alone: no scripts, no external resources, links relative to the page, so a moved folder still works.
 * Every text from prompts, metadata or names goes through `escapeHtml`.
 */
import { VERSION } from "../../lib/version.ts";
import { GENERATOR_MARK } from "./files.ts";
import { changedParameters, formatValue } from "./parameters.ts";
import { displayTime, type GalleryImage, type RunRecord, runFiles } from "./record.ts";

const ENTITIES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ENTITIES[c] as string);
}

/** A relative URL from path segments (folder and file names), each percent-encoded. */
export function href(...segments: string[]): string {
  return segments
    .flatMap((s) => s.split("/"))
    .map((s) => (s === ".." || s === "." ? s : encodeURIComponent(s)))
    .join("/");
}

const STYLE = `
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fafafa;--card:#fff;--muted:#6b6b70;--line:#dedee3;--link:#0b63c5}
@media (prefers-color-scheme:dark){:root{--fg:#ececf0;--bg:#16161a;--card:#202026;--muted:#a0a0aa;--line:#34343c;--link:#7ab4ff}}
*{box-sizing:border-box}
body{margin:0;padding:24px;font:15px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg)}
a{color:var(--link)}
header{max-width:1100px;margin-bottom:20px}
h1{font-size:22px;margin:0 0 6px}
.crumbs,.summary,footer,figcaption,.muted{color:var(--muted);font-size:13px}
.prompt{margin:12px 0;white-space:pre-wrap;overflow-wrap:anywhere}
.prompt b{color:var(--fg)}
table.params{border-collapse:collapse;font-size:13px;margin:8px 0}
table.params th,table.params td{text-align:left;padding:2px 12px 2px 0;vertical-align:top;overflow-wrap:anywhere}
table.params th{font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:14px}
figure,.run{margin:0;background:var(--card);border:1px solid var(--line);border-radius:8px;padding:8px}
figure img,.run img{display:block;width:100%;height:auto;border-radius:4px;background:var(--line)}
figcaption{margin-top:6px;overflow-wrap:anywhere}
figcaption .prompt{margin:4px 0;font-size:12px}
.errors{margin-top:24px;color:#c62828}
table.compare{border-collapse:separate;border-spacing:8px}
table.compare th{text-align:left;font-weight:600;vertical-align:middle}
table.compare td{width:200px;vertical-align:top}
table.compare img{display:block;width:200px;height:auto;border-radius:4px}
.runs{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:14px}
.run h2{font-size:15px;margin:8px 0 2px;overflow-wrap:anywhere}
footer{margin-top:32px}
`;

function page(title: string, body: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
${GENERATOR_MARK}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>${STYLE}</style>
</head>
<body>
${body}
<footer>Made by sdx ${escapeHtml(VERSION)}.</footer>
</body>
</html>
`;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
const seedText = (seed: number | null) => (seed === null ? "seed unknown" : `seed ${seed}`);

function promptBlock(prompt: string | null, negative: string | null): string {
  const parts: string[] = [];
  if (prompt !== null) parts.push(`<div class="prompt"><b>Prompt:</b> ${escapeHtml(prompt)}</div>`);
  if (negative) parts.push(`<div class="prompt"><b>Negative prompt:</b> ${escapeHtml(negative)}</div>`);
  return parts.join("\n");
}

function paramsTable(entries: [string, unknown][]): string {
  if (entries.length === 0) return "";
  const rows = entries.map(
    ([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(formatValue(v))}</td></tr>`,
  );
  return `<table class="params">\n${rows.join("\n")}\n</table>`;
}

/** The value every item shares, or undefined when they differ (or there are none). */
function shared<T>(items: T[], key: (item: T) => string | null): string | null | undefined {
  if (items.length === 0) return undefined;
  const first = key(items[0] as T);
  return items.every((i) => key(i) === first) ? first : undefined;
}

/** A run's page: `<run>/index.html`. */
export function runPage(run: RunRecord, defaults: Record<string, unknown>): string {
  const changed = new Map(run.images.map((i) => [i.stamp, changedParameters(i.parameters, defaults)]));
  const key = ([k, v]: [string, unknown]) => `${k}=${JSON.stringify(v)}`;
  // Parameters every image shares go in the header; the rest under each image.
  const lists = [...changed.values()];
  const common = (lists[0] ?? []).filter((entry) => lists.every((l) => l.some((e) => key(e) === key(entry))));
  const commonKeys = new Set(common.map(key));
  const prompt = shared(run.images, (i) => i.prompt);
  const negative = shared(run.images, (i) => i.negativePrompt);
  const figures = run.images.map((image: GalleryImage) => {
    const own = (changed.get(image.stamp) ?? []).filter((e) => !commonKeys.has(key(e)));
    return `<figure>
<a href="${href(runFiles.image(image.stamp))}"><img src="${href(runFiles.thumb(image.stamp))}" alt="${escapeHtml(seedText(image.seed))}" loading="lazy"></a>
<figcaption>${escapeHtml(seedText(image.seed))} · <a href="${href(runFiles.image(image.stamp))}">image</a> · <a href="${href(runFiles.metadata(image.stamp))}">metadata</a>
${prompt === undefined ? promptBlock(image.prompt, negative === undefined ? image.negativePrompt : null) : ""}${paramsTable(own)}</figcaption>
</figure>`;
  });
  const errors = run.errors.map(
    (e) =>
      `<li>${escapeHtml(e.seeds.length ? `seed${e.seeds.length > 1 ? "s" : ""} ${e.seeds.join(", ")}` : "request")} failed: ${escapeHtml(e.message)} (<a href="${href(runFiles.error(e.stamp))}">details</a>)</li>`,
  );
  const summary = [
    plural(run.images.length, "image"),
    ...(run.errors.length
      ? [`${run.errors.length} failed request${run.errors.length === 1 ? "" : "s"}`]
      : []),
    ...(run.images.length ? ['<a href="grid.png">contact sheet</a>'] : []),
  ];
  const body = `<header>
<div class="crumbs">${escapeHtml(run.project)} / ${escapeHtml(run.promptName)}</div>
<h1>${escapeHtml(run.model)} · ${escapeHtml(displayTime(run.stamp))}</h1>
<div class="summary">${summary.join(" · ")}</div>
${prompt !== undefined || negative ? promptBlock(prompt ?? null, negative ?? null) : ""}
${common.length ? `<div class="muted">Parameters that differ from the project's defaults:</div>\n${paramsTable(common)}` : ""}
</header>
<main class="grid">
${figures.join("\n")}
</main>
${errors.length ? `<section class="errors"><h2>Failed</h2><ul>\n${errors.join("\n")}\n</ul></section>` : ""}`;
  return page(`${run.promptName} · ${run.model} · ${displayTime(run.stamp)} — ${run.project}`, body);
}

/** An `--all-models` comparison's page, `<prompt set>/<timestamp>_all-models/index.html`: a row per model. */
export function comparisonPage(stamp: string, runs: { folder: string; run: RunRecord }[]): string {
  const first = runs.find((r) => r.run.images.length > 0)?.run;
  const cols = Math.max(0, ...runs.map((r) => r.run.images.length));
  const heads = Array.from({ length: cols }, (_, c) => {
    const seed = runs.map((r) => r.run.images[c]?.seed).find((s) => s !== undefined);
    return `<th>${escapeHtml(seedText(seed ?? null))}</th>`;
  });
  const rows = runs.map(({ folder, run }) => {
    const cells = run.images.map(
      (image) =>
        `<td><a href="${href("..", folder, runFiles.image(image.stamp))}"><img src="${href("..", folder, runFiles.thumb(image.stamp))}" alt="${escapeHtml(`${run.model}, ${seedText(image.seed)}`)}" loading="lazy"></a></td>`,
    );
    return `<tr><th><a href="${href("..", folder, "index.html")}">${escapeHtml(run.model)}</a></th>${cells.join("")}</tr>`;
  });
  const project = first?.project ?? runs[0]?.run.project ?? "";
  const promptName = first?.promptName ?? runs[0]?.run.promptName ?? "";
  const body = `<header>
<div class="crumbs">${escapeHtml(project)} / ${escapeHtml(promptName)}</div>
<h1>All models · ${escapeHtml(displayTime(stamp))}</h1>
<div class="summary">${plural(runs.length, "model")}${cols ? ' · <a href="grid.png">comparison sheet</a>' : ""}</div>
${first ? promptBlock(first.images[0]?.prompt ?? null, first.images[0]?.negativePrompt ?? null) : ""}
</header>
<main>
<table class="compare">
<thead><tr><th></th>${heads.join("")}</tr></thead>
<tbody>
${rows.join("\n")}
</tbody>
</table>
</main>`;
  return page(`${promptName} · all models · ${displayTime(stamp)} — ${project}`, body);
}

/** An entry of a project's page: a run, or a comparison of the runs of one `--all-models`. */
export type ProjectEntry =
  | { kind: "run"; path: string; run: RunRecord }
  | { kind: "comparison"; path: string; stamp: string; promptName: string; models: string[] };

/** A project's page, `<output>/<project>/index.html`: every run and comparison, in the order given. */
export function projectPage(project: string, entries: ProjectEntry[]): string {
  const cards = entries.map((entry) => {
    const link = href(entry.path, "index.html");
    if (entry.kind === "comparison") {
      return `<div class="run"><h2><a href="${link}">${escapeHtml(entry.promptName)} · all models</a></h2>
<div class="muted">${escapeHtml(displayTime(entry.stamp))} · ${escapeHtml(entry.models.join(", "))}</div></div>`;
    }
    const { run } = entry;
    const cover = run.images[0];
    const picture = cover
      ? `<a href="${link}"><img src="${href(entry.path, runFiles.thumb(cover.stamp))}" alt="${escapeHtml(`${run.promptName}, ${run.model}`)}" loading="lazy"></a>`
      : "";
    const counts = [
      plural(run.images.length, "image"),
      ...(run.errors.length ? [`${run.errors.length} failed`] : []),
    ];
    return `<div class="run">${picture}<h2><a href="${link}">${escapeHtml(run.promptName)} · ${escapeHtml(run.model)}</a></h2>
<div class="muted">${escapeHtml(displayTime(run.stamp))} · ${counts.join(" · ")}</div></div>`;
  });
  const runs = entries.filter((e) => e.kind === "run").length;
  const body = `<header>
<h1>${escapeHtml(project)}</h1>
<div class="summary">${plural(runs, "run")}, newest first</div>
</header>
<main class="runs">
${cards.join("\n")}
</main>`;
  return page(`${project} — sdx gallery`, body);
}
