/**
 * Labels drawn without fonts: a 5×7 bitmap font of the characters seeds and model names are written in
 * (letters, digits, '.', '-', '_', ' ', '#'; anything else is drawn as '?'). Contact sheets never depend on the
 * system's fonts: with none installed, SVG/Pango text comes out as empty boxes, and a sheet looks the same everywhere.
 */

const CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-_ #?";
/** Seven rows per glyph, top first; each row one base-32 digit whose 5 bits are the pixels, leftmost highest. */
const BITS =
  "ehjlphe4c4444eeh1248vv2421he26aiv22vgu11he68guhhev124888ehhehheehhf12cehhvhhhuhhuhhuehggghesihhhisvgguggvvggugggehgnhhfhhhvhhhe44444e72222ichikokihggggggvhrllhhhhhpljhhehhhhheuhhugggehhhliduhhukihfgge11uv444444hhhhhhehhhhha4hhhlllahha4ahhhha4444v1248gv00e1fhfggmphhu00egghe11djhhf00ehvge698s8880fhhf1eggmphhh40c444e20622icggikokic44444e00qllhh00mphhh00ehhhe00uhugg00djf1100mpggg00fge1u88s889600hhhjd00hhha400hhlla00ha4ah00hhf1e00v248v00000cc000v000000000v0000000aavavaaeh12404";

export const GLYPH_WIDTH = 5;
export const GLYPH_HEIGHT = 7;
/** Columns from one glyph's left edge to the next one's. */
const ADVANCE = GLYPH_WIDTH + 1;

function glyphRows(char: string): number[] {
  const at = CHARS.indexOf(char);
  const index = at >= 0 ? at : CHARS.length - 1;
  return Array.from({ length: GLYPH_HEIGHT }, (_, row) =>
    Number.parseInt(BITS[index * GLYPH_HEIGHT + row] as string, 32),
  );
}

/** Width in pixels of `text` drawn at `scale`. */
export function textWidth(text: string, scale: number): number {
  return text.length === 0 ? 0 : (text.length * ADVANCE - 1) * scale;
}

/**
 * `text` as an RGBA image (`width` × GLYPH_HEIGHT·scale): the glyphs in `color`, transparent elsewhere,
 * cut at `maxWidth` pixels. Null for an empty text.
 */
export function renderText(
  text: string,
  scale: number,
  color: readonly [number, number, number],
  maxWidth = Number.POSITIVE_INFINITY,
): { data: Buffer; width: number; height: number } | null {
  const width = Math.min(textWidth(text, scale), Math.floor(maxWidth));
  if (width <= 0) return null;
  const height = GLYPH_HEIGHT * scale;
  const data = Buffer.alloc(width * height * 4);
  for (const [i, char] of [...text].entries()) {
    const left = i * ADVANCE * scale;
    if (left >= width) break;
    for (const [row, bits] of glyphRows(char).entries()) {
      for (let col = 0; col < GLYPH_WIDTH; col++) {
        if (!(bits & (1 << (GLYPH_WIDTH - 1 - col)))) continue;
        for (let dy = 0; dy < scale; dy++) {
          for (let dx = 0; dx < scale; dx++) {
            const x = left + col * scale + dx;
            if (x >= width) continue;
            const o = ((row * scale + dy) * width + x) * 4;
            data[o] = color[0];
            data[o + 1] = color[1];
            data[o + 2] = color[2];
            data[o + 3] = 255;
          }
        }
      }
    }
  }
  return { data, width, height };
}
