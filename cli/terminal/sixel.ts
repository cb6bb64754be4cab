/**
 * Sixel images (DEC's VT340 graphics, as xterm, foot, mlterm, WezTerm and others draw them): the picture is cut
 * into bands six pixels tall; within a band, each palette colour is one line of characters 63 + b, where bit i
 * of b paints the band's row i at that column ('!' n c repeats c n times, '$' returns to the band's start for
 * the next colour, '-' moves to the next band). Palette entries are `#i;2;r;g;b` in percent. The raster
 * attributes `"1;1;w;h` declare square pixels and the size. Colours are reduced to 256 by sharp (libimagequant,
 * dithered) first.
 */
import sharp from "sharp";

const ESC = "\x1b";
export const SIXEL_COLOURS = 256;

export interface IndexedImage {
  width: number;
  height: number;
  /** Palette index of each pixel, row by row. */
  pixels: Uint8Array;
  /** RGB, 0-255. */
  palette: [number, number, number][];
}

const percent = (v: number) => Math.round((v * 100) / 255);

/** One colour's line within a band, run-length encoded, trailing empty columns left out. */
function bandLine(bits: Uint8Array): string {
  let end = bits.length;
  while (end > 0 && bits[end - 1] === 0) end--;
  let line = "";
  for (let x = 0; x < end; ) {
    const value = bits[x] as number;
    let n = 1;
    while (x + n < end && bits[x + n] === value) n++;
    const char = String.fromCharCode(63 + value);
    line += n > 3 ? `!${n}${char}` : char.repeat(n);
    x += n;
  }
  return line;
}

export function encodeSixel(image: IndexedImage): string {
  const { width, height, pixels, palette } = image;
  const out = [`${ESC}P0;1;0q"1;1;${width};${height}`];
  for (const [i, [r, g, b]] of palette.entries())
    out.push(`#${i};2;${percent(r)};${percent(g)};${percent(b)}`);
  for (let top = 0; top < height; top += 6) {
    const bits = new Map<number, Uint8Array>();
    for (let dy = 0; dy < 6 && top + dy < height; dy++) {
      for (let x = 0; x < width; x++) {
        const colour = pixels[(top + dy) * width + x] as number;
        let line = bits.get(colour);
        if (!line) {
          line = new Uint8Array(width);
          bits.set(colour, line);
        }
        line[x] = (line[x] as number) | (1 << dy);
      }
    }
    out.push([...bits].map(([colour, line]) => `#${colour}${bandLine(line)}`).join("$"));
    if (top + 6 < height) out.push("-");
  }
  out.push(`${ESC}\\`);
  return out.join("");
}

/** An image file's bytes resized to `width` × `height` and reduced to at most SIXEL_COLOURS colours. */
export async function indexedImage(input: Uint8Array, width: number, height: number): Promise<IndexedImage> {
  const quantized = await sharp(input)
    .resize(width, height, { fit: "fill" })
    .removeAlpha()
    .png({ palette: true, colours: SIXEL_COLOURS, dither: 1 })
    .toBuffer();
  const { data, info } = await sharp(quantized).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  const index = new Map<number, number>();
  const palette: [number, number, number][] = [];
  const pixels = new Uint8Array(info.width * info.height);
  for (let p = 0; p < pixels.length; p++) {
    const o = p * info.channels;
    const rgb = ((data[o] as number) << 16) | ((data[o + 1] as number) << 8) | (data[o + 2] as number);
    let i = index.get(rgb);
    if (i === undefined) {
      if (palette.length === SIXEL_COLOURS)
        throw new Error(`more than ${SIXEL_COLOURS} colours after quantizing`);
      i = palette.length;
      index.set(rgb, i);
      palette.push([data[o] as number, data[o + 1] as number, data[o + 2] as number]);
    }
    pixels[p] = i;
  }
  return { width: info.width, height: info.height, pixels, palette };
}
