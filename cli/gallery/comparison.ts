/**
 * The comparison of an `--all-models` run: `<prompt set>/<timestamp>_all-models/` beside the run folders it
 * compares, holding `runs.yaml` (those folders, one per model, in order), `index.html` and `grid.png`: one row
 * per model, labelled with its name, one column per image (the same seeds on every model).
 */
import { readdir } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import YAML from "yaml";
import { createComparisonFolder } from "../outputs.ts";
import { attempts, Rerun } from "./background.ts";
import { RUNS_MARK, writeGalleryFile } from "./files.ts";
import { comparisonPage } from "./pages.ts";
import { parseFolderName, type RunRecord, readRun } from "./record.ts";
import { type RunGallery, runSheetCells } from "./run_gallery.ts";
import { renderSheet } from "./sheet.ts";

async function writeComparison(dir: string, runs: RunRecord[]): Promise<void> {
  const stamp = parseFolderName(basename(dir))?.stamp ?? "";
  const entries = runs.map((run) => ({ folder: basename(run.dir), run }));
  await writeGalleryFile(dir, "index.html", comparisonPage(stamp, entries));
  if (runs.some((r) => r.images.length > 0)) {
    const sheet = await renderSheet(
      runs.map(runSheetCells),
      runs.map((r) => r.model),
    );
    await writeGalleryFile(dir, "grid.png", sheet);
  }
}

/** The run folders a comparison lists, checked to be run folders beside it; [] when it lists none. */
export async function comparisonRuns(dir: string): Promise<string[]> {
  const text = await Bun.file(join(dir, "runs.yaml"))
    .text()
    .catch(() => "");
  if (!text.startsWith(RUNS_MARK)) return [];
  const listed = (YAML.parse(text, { schema: "core" }) as { runs?: unknown } | null)?.runs;
  const siblings = new Set(await readdir(dirname(dir)));
  return (Array.isArray(listed) ? listed : []).filter(
    (name): name is string =>
      typeof name === "string" && parseFolderName(name) !== null && siblings.has(name) && !name.includes("/"),
  );
}

/** Writes a comparison's page and sheet from its runs on disk (their thumbnails made already). */
export async function rebuildComparison(dir: string): Promise<RunRecord[]> {
  const runs = await Promise.all(
    (await comparisonRuns(dir)).map((name) => readRun(join(dirname(dir), name))),
  );
  await writeComparison(dir, runs);
  return runs;
}

/**
 * The comparison of the runs of one `sdx gen --all-models`, made when the first run starts and redrawn in the
 * background whenever one of its runs changes. Failures are told to `warn` once and never stop the runs.
 */
export class Comparison {
  private dir: string | null = null;
  private readonly galleries: RunGallery[] = [];
  private readonly attempt: ReturnType<typeof attempts>;
  private readonly redraw = new Rerun(() => this.attempt(() => this.write()));

  constructor(warn: (message: string) => void) {
    this.attempt = attempts(warn, "comparison gallery");
  }

  async add(gallery: RunGallery): Promise<void> {
    this.galleries.push(gallery);
    gallery.onChange(() => this.redraw.request());
    await this.attempt(async () => {
      this.dir ??= await createComparisonFolder(gallery.run.dir);
      const runs = this.galleries.map((g) => basename(g.run.dir));
      const text = `${RUNS_MARK} the run folders of one \`sdx gen --all-models\`, one per model\n${YAML.stringify({ runs })}`;
      await writeGalleryFile(this.dir, "runs.yaml", text);
    });
  }

  async close(): Promise<void> {
    this.redraw.request();
    await this.redraw.idle();
  }

  private async write(): Promise<void> {
    if (!this.dir) return;
    await writeComparison(
      this.dir,
      this.galleries.map((g) => g.run),
    );
  }
}
