/**
 * A project's galleries rebuilt from its outputs folder: every run's page and sheet, every `--all-models`
 * comparison's, and the project's page `<output>/<project>/index.html` linking them all, newest first.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { SAFE_NAME } from "../../contract/index.ts";
import { isDirectory } from "../../lib/fs/exists.ts";
import { comparisonRuns, rebuildComparison } from "./comparison.ts";
import { writeGalleryFile } from "./files.ts";
import { type ProjectEntry, projectPage } from "./pages.ts";
import { parseFolderName } from "./record.ts";
import { rebuildRun } from "./run_gallery.ts";

export interface ProjectGallery {
  /** The project's page. */
  index: string;
  runs: number;
  comparisons: number;
  /** Folders whose gallery could not be written, and why. */
  failures: { path: string; error: string }[];
}

async function subfolders(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const dirs = await Promise.all(names.map(async (n) => ((await isDirectory(join(dir, n))) ? n : null)));
  return dirs.filter((n): n is string => n !== null).sort();
}

/** Rebuilds every gallery under `projectDir` (`<output>/<project>`) and writes its page. */
export async function rebuildProject(
  projectDir: string,
  project: string,
  defaults: Record<string, unknown>,
): Promise<ProjectGallery> {
  const entries: (ProjectEntry & { stamp: string })[] = [];
  const failures: ProjectGallery["failures"] = [];
  const comparisons: { path: string; dir: string; stamp: string; promptName: string }[] = [];
  for (const promptName of await subfolders(projectDir)) {
    if (!SAFE_NAME.test(promptName)) continue;
    for (const folder of await subfolders(join(projectDir, promptName))) {
      const parsed = parseFolderName(folder);
      if (!parsed) continue;
      const dir = join(projectDir, promptName, folder);
      const path = `${promptName}/${folder}`;
      try {
        if ((await comparisonRuns(dir)).length > 0) {
          comparisons.push({ path, dir, stamp: parsed.stamp, promptName });
        } else if (await isDirectory(join(dir, "images"))) {
          entries.push({ kind: "run", path, run: await rebuildRun(dir, defaults), stamp: parsed.stamp });
        }
      } catch (e) {
        failures.push({ path: dir, error: e instanceof Error ? e.message : String(e) });
      }
    }
  }
  // After the runs: a comparison's sheet is made from their thumbnails.
  for (const { path, dir, stamp, promptName } of comparisons) {
    try {
      const runs = await rebuildComparison(dir);
      entries.push({ kind: "comparison", path, stamp, promptName, models: runs.map((r) => r.model) });
    } catch (e) {
      failures.push({ path: dir, error: e instanceof Error ? e.message : String(e) });
    }
  }
  entries.sort((a, b) => b.stamp.localeCompare(a.stamp) || b.path.localeCompare(a.path));
  await writeGalleryFile(projectDir, "index.html", projectPage(project, entries));
  return {
    index: join(projectDir, "index.html"),
    runs: entries.filter((e) => e.kind === "run").length,
    comparisons: comparisons.length,
    failures,
  };
}
