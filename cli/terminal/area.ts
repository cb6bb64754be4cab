/**
 * Images and lines printed above progress bars that are redrawn in place. Everything queued is written in order
 * when the bars redraw (from the start of the first bar's line; the bars are drawn again below it). An image
 * takes a block of `rows` text rows; an image queued with `replace` is drawn over the block right above the bars
 * when there is one (a live preview, then the finished image in its place), else in a new block. A line printed
 * after a block leaves it in the scrollback.
 */

const ESC = "\x1b";

type Entry = { kind: "text"; text: string } | { kind: "image"; bytes: string; replace: boolean };

export class ImageArea {
  private queue: Entry[] = [];
  /** Whether the last block drawn is right above the bars. */
  private live = false;

  constructor(private readonly rows: number) {}

  text(text: string): void {
    this.queue.push({ kind: "text", text });
  }

  /** Queues an image; `replace`: over the block above the bars (a newer one replaces one still queued). */
  image(bytes: string, replace: boolean): void {
    const last = this.queue.at(-1);
    if (replace && last?.kind === "image") last.bytes = bytes;
    else this.queue.push({ kind: "image", bytes, replace });
  }

  /** What to write, from the start of the bars' first line, before the bars are drawn again. */
  flush(): string {
    if (this.queue.length === 0) return "";
    const up = `${ESC}[${this.rows}A`;
    const down = `${ESC}[${this.rows}B`;
    // Clear the old bars; then each image is drawn from the top of its block with the cursor saved (ESC 7) and
    // restored (ESC 8), whatever the protocol does with it, and left below the block.
    let out = `${ESC}[J`;
    for (const entry of this.queue) {
      if (entry.kind === "text") {
        out += entry.text;
        this.live = false;
      } else {
        if (!(entry.replace && this.live)) out += "\n".repeat(this.rows);
        out += `${up}${ESC}7${entry.bytes}${ESC}8${down}`;
        this.live = true;
      }
    }
    this.queue = [];
    return out;
  }
}
