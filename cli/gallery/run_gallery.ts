/**
 * A run folder's gallery: `index.html` (see pages.ts), `grid.png` (see sheet.ts) and `thumbs/`. While `sdx gen`
 * runs, the page is rewritten after each image or failure (so an interrupted run still has one) and the sheet is
 * rewritten in the background, catching up with the latest image; `rebuildRun` makes both from the files on disk.
 */
import { join } from "node:path";
import { attempts, Rerun } from "./background.ts";
import { THUMB_MAX_SIDE, writeGalleryFile, writeThumb } from "./files.ts";
import { runPage } from "./pages.ts";
import {
  emptyRun,
  type GalleryError,
  type GalleryImage,
  type RunRecord,
  readRun,
  runFiles,
} from "./record.ts";
import { gridShape, renderSheet, type SheetCell } from "./sheet.ts";

/** A run's sheet: its images in AUTOMATIC1111's grid shape, each labelled with its seed. */
export function runSheetCells(run: RunRecord): SheetCell[] {
  return run.images.map((image) => ({
    image: join(run.dir, runFiles.image(image.stamp)),
    thumb: { file: join(run.dir, runFiles.thumb(image.stamp)), maxSide: THUMB_MAX_SIDE },
    label: image.seed === null ? "?" : String(image.seed),
  }));
}

async function writeSheet(run: RunRecord): Promise<void> {
  if (run.images.length === 0) return;
  const cells = runSheetCells(run);
  const { cols } = gridShape(cells.length);
  const rows: SheetCell[][] = [];
  for (let i = 0; i < cells.length; i += cols) rows.push(cells.slice(i, i + cols));
  await writeGalleryFile(run.dir, "grid.png", await renderSheet(rows));
}

/** Writes a run's thumbnails, page and sheet from the files on disk; answers what it read. */
export async function rebuildRun(dir: string, defaults: Record<string, unknown>): Promise<RunRecord> {
  const run = await readRun(dir);
  for (const image of run.images) await writeThumb(dir, image.stamp);
  await writeGalleryFile(dir, "index.html", runPage(run, defaults));
  await writeSheet(run);
  return run;
}

/**
 * The gallery of a run being made. A gallery that cannot be written never stops the run: `warn` hears why,
 * once, and the gallery tries again with the next image.
 */
export class RunGallery {
  readonly run: RunRecord;
  private readonly listeners: (() => void)[] = [];
  private readonly sheet: Rerun;
  private readonly attempt: ReturnType<typeof attempts>;

  constructor(
    dir: string,
    private readonly defaults: Record<string, unknown>,
    warn: (message: string) => void,
  ) {
    this.run = emptyRun(dir);
    this.attempt = attempts(warn, `gallery of ${dir}`);
    this.sheet = new Rerun(() => this.attempt(() => writeSheet(this.run)));
  }

  /** Called after each change (a comparison of several runs redraws itself then). */
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  async addImage(image: GalleryImage): Promise<void> {
    await this.attempt(() => writeThumb(this.run.dir, image.stamp));
    this.run.images.push(image);
    await this.changed();
    this.sheet.request();
  }

  async addError(error: GalleryError): Promise<void> {
    this.run.errors.push(error);
    await this.changed();
  }

  /** Writes the page once more and waits for the sheet to catch up. */
  async close(): Promise<void> {
    await this.writePage();
    await this.sheet.idle();
  }

  private async changed(): Promise<void> {
    await this.writePage();
    for (const listener of this.listeners) listener();
  }

  private writePage(): Promise<void> {
    return this.attempt(() => writeGalleryFile(this.run.dir, "index.html", runPage(this.run, this.defaults)));
  }
}
