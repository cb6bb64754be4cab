/**
 * Whether the terminal shows images, asked of the terminal itself (never guessed from TERM or the environment):
 *
 *   kitty graphics  ESC _ G i=…,a=q … ESC \   a query; a terminal that implements the protocol answers `i=…;OK`
 *   XTVERSION       CSI > 0 q                 the terminal's name; iTerm2 and WezTerm, which implement iTerm2's
 *                                             inline images (OSC 1337), say theirs (`DCS > | iTerm2 3.5.0 ST`)
 *   cell size       CSI 16 t                  `CSI 6 ; height ; width t` in pixels, to size sixel images
 *   DA1             CSI c                     every terminal answers; attribute 4 means sixel graphics
 *
 * DA1 goes last: terminals answer in order, so its reply ends the wait, and whatever came before it is all
 * there is. Environment variables (TERM_PROGRAM, LC_TERMINAL) are not trusted: they survive ssh, tmux and
 * screen, which do not pass the images through. Only a terminal on both stdin and stdout is asked, in raw mode
 * for at most `timeoutMs`, and the mode is restored.
 */
import type { Readable, Writable } from "node:stream";

export type GraphicsProtocol = "kitty" | "iterm2" | "sixel";

export interface TerminalGraphics {
  protocol: GraphicsProtocol;
  /** A character cell's size in pixels (the reply to CSI 16 t, else a common 10 × 20). */
  cell: { width: number; height: number };
}

const ESC = "\x1b";
/** An id no other program is likely to use for its own query. */
const KITTY_QUERY_ID = 31;
export const GRAPHICS_QUERY = `${ESC}_Gi=${KITTY_QUERY_ID},s=1,v=1,a=q,t=d,f=24;AAAA${ESC}\\${ESC}[>0q${ESC}[16t${ESC}[c`;
const DEFAULT_CELL = { width: 10, height: 20 };
/** Terminals whose XTVERSION name means iTerm2's inline images work. */
const ITERM2_NAMES = /^(iTerm2|WezTerm)\b/;

export interface TerminalReplies {
  /** The DA1 reply arrived: nothing else will. */
  done: boolean;
  kitty: boolean;
  sixel: boolean;
  version: string | null;
  cell: { width: number; height: number } | null;
}

/** What the replies read so far say. */
export function parseReplies(text: string): TerminalReplies {
  const da1 = new RegExp(`${ESC}\\[\\?([\\d;]*)c`).exec(text);
  const version = new RegExp(`${ESC}P>\\|([^${ESC}]*)${ESC}\\\\`).exec(text);
  const cell = new RegExp(`${ESC}\\[6;(\\d+);(\\d+)t`).exec(text);
  return {
    done: da1 !== null,
    kitty: new RegExp(`${ESC}_Gi=${KITTY_QUERY_ID}(,[^;]*)?;OK${ESC}\\\\`).test(text),
    sixel: (da1?.[1] ?? "").split(";").includes("4"),
    version: version?.[1] ?? null,
    cell: cell ? { height: Number(cell[1]), width: Number(cell[2]) } : null,
  };
}

/** The protocol the replies prove, preferring kitty's (PNG, scaled by the terminal), then iTerm2's, then sixel. */
export function chooseGraphics(replies: TerminalReplies): TerminalGraphics | null {
  const cell =
    replies.cell && replies.cell.width > 0 && replies.cell.height > 0 ? replies.cell : DEFAULT_CELL;
  if (replies.kitty) return { protocol: "kitty", cell };
  if (replies.version !== null && ITERM2_NAMES.test(replies.version)) return { protocol: "iterm2", cell };
  if (replies.sixel) return { protocol: "sixel", cell };
  return null;
}

export type TerminalInput = Readable & {
  isTTY?: boolean;
  isRaw?: boolean;
  setRawMode?: (raw: boolean) => unknown;
};

/** Asks the terminal on `input`/`output`; null when it is not a terminal, shows no images or does not answer. */
export async function detectGraphics(
  input: TerminalInput,
  output: Writable & { isTTY?: boolean },
  timeoutMs = 500,
): Promise<TerminalGraphics | null> {
  const setRawMode = input.setRawMode?.bind(input);
  if (input.isTTY !== true || output.isTTY !== true || !setRawMode) return null;
  const wasRaw = input.isRaw === true;
  let text = "";
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      input.off("data", onData);
      input.pause();
      setRawMode(wasRaw);
      resolve(chooseGraphics(parseReplies(text)));
    };
    const onData = (chunk: Buffer | string) => {
      text += typeof chunk === "string" ? chunk : chunk.toString("latin1");
      if (parseReplies(text).done) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    setRawMode(true);
    input.on("data", onData);
    input.resume();
    output.write(GRAPHICS_QUERY);
  });
}
