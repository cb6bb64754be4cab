/**
 * Contact sheets (`grid.png`): images in rows, each with its label (the seed) in a band beneath it, an optional
 * label column on the left (the model names of an `--all-models` comparison), on black like AUTOMATIC1111's grids.
 * Composited with sharp; labels come from the bitmap font in glyphs.ts, so no system font is needed.
 */
import sharp, { type OverlayOptions } from "sharp";
import { GLYPH_HEIGHT, renderText, textWidth } from "./glyphs.ts";

/** The images' part of a sheet is at most this many pixels on its longer side; cells shrink to fit. */
export const SHEET_MAX_SIDE = 4096;
/** Row labels are cut to this many characters. */
const ROW_LABEL_MAX_CHARS = 32;
const BACKGROUND = { r: 0, g: 0, b: 0 };
const TEXT: readonly [number, number, number] = [235, 235, 235];

/**
 * Rows and columns of a run's sheet as AUTOMATIC1111's `image_grid` picks them with its defaults (n_rows = -1,
 * no "prevent empty spots"): rows = round(√n), at most n; columns = ⌈n / rows⌉; filled row by row.
 */
export function gridShape(count: number): { rows: number; cols: number } {
  if (count <= 0) return { rows: 0, cols: 0 };
  const rows = Math.min(count, Math.max(1, Math.round(Math.sqrt(count))));
  return { rows, cols: Math.ceil(count / rows) };
}

export interface SheetCell {
  /** The full image. */
  image: string;
  /** A smaller copy, read instead of the image when it is smaller and still at least as large as the cell. */
  thumb?: { file: string; maxSide: number };
  label: string;
}

interface Layout {
  cellW: number;
  cellH: number;
  scale: number;
  band: number;
  left: number;
  width: number;
  height: number;
}

function layout(rows: number, cols: number, maxW: number, maxH: number, rowLabels: string[]): Layout {
  const fit = Math.min(1, SHEET_MAX_SIDE / Math.max(cols * maxW, rows * maxH));
  const cellW = Math.max(1, Math.floor(maxW * fit));
  const cellH = Math.max(1, Math.floor(maxH * fit));
  // Glyphs 7 px tall up to 160-px cells, then one more pixel of scale per 160 px.
  const scale = Math.max(1, Math.floor(cellW / 160));
  const pad = 2 * scale;
  const band = GLYPH_HEIGHT * scale + 2 * pad;
  const widest = Math.max(0, ...rowLabels.map((l) => textWidth(l.slice(0, ROW_LABEL_MAX_CHARS), scale)));
  const left = widest > 0 ? widest + 2 * pad : 0;
  return { cellW, cellH, scale, band, left, width: left + cols * cellW, height: rows * (cellH + band) };
}

/** The cell's picture fitted inside the cell (aspect kept), as raw RGB pixels. */
async function fitted(cell: SheetCell, imageSide: number, w: number, h: number): Promise<Pixels> {
  const thumb = cell.thumb;
  const source =
    thumb && thumb.maxSide >= Math.max(w, h) && thumb.maxSide < imageSide ? thumb.file : cell.image;
  const { data, info } = await sharp(source)
    .resize(w, h, { fit: "inside" })
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: 3 };
}

interface Pixels {
  data: Buffer;
  width: number;
  height: number;
  channels: 3 | 4;
}

const overlay = (p: Pixels, left: number, top: number): OverlayOptions => ({
  input: p.data,
  raw: { width: p.width, height: p.height, channels: p.channels },
  left,
  top,
});

/**
 * A sheet of `rows` (each a list of cells; rows may be shorter than the longest), with `rowLabels` on the left
 * when given. Cells are as large as the largest image, shrunk so the images fit SHEET_MAX_SIDE. A PNG.
 */
export async function renderSheet(rows: SheetCell[][], rowLabels: string[] = []): Promise<Buffer> {
  const cells = rows.flat();
  if (cells.length === 0) throw new Error("a contact sheet needs at least one image");
  const sizes = await Promise.all(cells.map((c) => sharp(c.image).metadata()));
  const maxW = Math.max(...sizes.map((s) => s.width ?? 1));
  const maxH = Math.max(...sizes.map((s) => s.height ?? 1));
  const side = new Map(cells.map((c, i) => [c, Math.max(sizes[i]?.width ?? 1, sizes[i]?.height ?? 1)]));
  const cols = Math.max(...rows.map((r) => r.length));
  const l = layout(rows.length, cols, maxW, maxH, rowLabels);
  const layers: OverlayOptions[] = [];
  const pad = 2 * l.scale;
  for (const [r, row] of rows.entries()) {
    const top = r * (l.cellH + l.band);
    const rowLabel = rowLabels[r];
    const labelImage = rowLabel
      ? renderText(rowLabel.slice(0, ROW_LABEL_MAX_CHARS), l.scale, TEXT, l.left - 2 * pad)
      : null;
    if (labelImage) {
      const y = top + Math.max(0, Math.floor((l.cellH - labelImage.height) / 2));
      layers.push(overlay({ ...labelImage, channels: 4 }, pad, y));
    }
    const pictures = await Promise.all(
      row.map((cell) => fitted(cell, side.get(cell) ?? 1, l.cellW, l.cellH)),
    );
    for (const [c, cell] of row.entries()) {
      const x = l.left + c * l.cellW;
      const picture = pictures[c] as Pixels;
      const pictureLeft = x + Math.floor((l.cellW - picture.width) / 2);
      layers.push(overlay(picture, pictureLeft, top + Math.floor((l.cellH - picture.height) / 2)));
      const label = renderText(cell.label, l.scale, TEXT, l.cellW - 2 * pad);
      if (label) {
        layers.push(
          overlay(
            { ...label, channels: 4 },
            x + Math.floor((l.cellW - label.width) / 2),
            top + l.cellH + pad,
          ),
        );
      }
    }
  }
  return sharp({ create: { width: l.width, height: l.height, channels: 3, background: BACKGROUND } })
    .composite(layers)
    .png()
    .toBuffer();
}
