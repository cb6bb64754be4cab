/**
 * Images for a terminal that shows them (see detect.ts): any image file's bytes fitted to a number of text rows
 * (and to the terminal's width), encoded for the terminal's protocol. Pixels are never sent larger than the
 * cells show them.
 */
import sharp from "sharp";
import type { TerminalGraphics } from "./detect.ts";
import { iterm2Image, kittyImage, type Placement } from "./encode.ts";
import { encodeSixel, indexedImage } from "./sixel.ts";

/** Rows an image takes: a third of the terminal, within these bounds. */
const ROWS_MIN = 6;
const ROWS_MAX = 16;

export class TerminalImages {
  /** Text rows every image is drawn in (at most; a wide image may take fewer). */
  readonly rows: number;
  private readonly columns: number;
  private nextId: number;

  constructor(
    readonly graphics: TerminalGraphics,
    size: { rows?: number | undefined; columns?: number | undefined } = {},
  ) {
    this.rows = Math.min(ROWS_MAX, Math.max(ROWS_MIN, Math.round((size.rows ?? 24) / 3)));
    this.columns = Math.max(8, (size.columns ?? 80) - 1);
    // kitty image ids are per terminal window: start somewhere other programs are unlikely to be.
    this.nextId = 1 + Math.floor(Math.random() * 0x3fffffff);
  }

  /** A fresh kitty image id (an image sent with an id already shown replaces it). */
  newId(): number {
    return this.nextId++;
  }

  /** Cells and pixels of an image `width` × `height` drawn at most `this.rows` rows tall and the terminal wide. */
  fit(width: number, height: number): Placement & { pixelWidth: number; pixelHeight: number } {
    const { cell } = this.graphics;
    const aspect = width / height;
    let rows = this.rows;
    let columns = Math.ceil((rows * cell.height * aspect) / cell.width);
    if (columns > this.columns) {
      columns = this.columns;
      rows = Math.max(1, Math.floor((columns * cell.width) / (aspect * cell.height)));
    }
    const pixelHeight = Math.min(height, rows * cell.height);
    const pixelWidth = Math.max(1, Math.round(pixelHeight * aspect));
    return { rows, columns, pixelWidth, pixelHeight };
  }

  /** The escape sequence that draws `image` at the cursor; `id` is kitty's image id. */
  async encode(image: Uint8Array, id: number): Promise<string> {
    const meta = await sharp(image).metadata();
    const at = this.fit(meta.width ?? 1, meta.height ?? 1);
    if (this.graphics.protocol === "sixel") {
      // Sixel bands are 6 pixels tall: a partial last band would spill into the row below the image.
      const height = Math.max(6, Math.floor((at.rows * this.graphics.cell.height) / 6) * 6);
      const width = Math.max(1, Math.round((height * (meta.width ?? 1)) / (meta.height ?? 1)));
      return encodeSixel(await indexedImage(image, width, height));
    }
    const png =
      meta.format === "png" && (meta.height ?? 0) <= at.pixelHeight
        ? image
        : await sharp(image).resize(at.pixelWidth, at.pixelHeight, { fit: "fill" }).png().toBuffer();
    return this.graphics.protocol === "kitty" ? kittyImage(png, id, at) : iterm2Image(png, at);
  }
}
