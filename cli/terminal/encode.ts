/**
 * Inline images as the terminal protocols want them, from a PNG file's bytes:
 *
 *   kitty   ESC _ G a=T,f=100,… ; <base64 PNG> ESC \   (kitty's graphics protocol: transmit and display; the
 *           payload in chunks of at most 4096 base64 characters, every one but the last with m=1)
 *   iTerm2  ESC ] 1337 ; File=inline=1;… : <base64 PNG> BEL   (iTerm2's inline images protocol)
 *
 * Both scale the image to the cells given; sixel (sixel.ts) needs its pixels at the final size instead.
 */

const ESC = "\x1b";
/** kitty's largest chunk of base64 payload per escape sequence. */
export const KITTY_CHUNK = 4096;

export interface Placement {
  /** Columns and rows of character cells the image covers. */
  columns: number;
  rows: number;
}

/**
 * kitty: transmit and display `png` over the cells, leaving the cursor where it is (C=1) and answering nothing
 * (q=2). Sending another image with the same `id` replaces this one where it is shown.
 */
export function kittyImage(png: Uint8Array, id: number, at: Placement): string {
  const data = Buffer.from(png).toString("base64");
  const keys = `a=T,f=100,t=d,i=${id},p=1,q=2,C=1,c=${at.columns},r=${at.rows}`;
  const chunks: string[] = [];
  for (let offset = 0; offset < data.length || offset === 0; offset += KITTY_CHUNK) {
    const chunk = data.slice(offset, offset + KITTY_CHUNK);
    const more = offset + KITTY_CHUNK < data.length ? 1 : 0;
    chunks.push(`${ESC}_G${offset === 0 ? `${keys},` : ""}m=${more};${chunk}${ESC}\\`);
  }
  return chunks.join("");
}

/** iTerm2: the file inline over the cells, its aspect ratio kept. */
export function iterm2Image(png: Uint8Array, at: Placement): string {
  const data = Buffer.from(png).toString("base64");
  return `${ESC}]1337;File=inline=1;size=${png.byteLength};width=${at.columns};height=${at.rows};preserveAspectRatio=1:${data}\x07`;
}
