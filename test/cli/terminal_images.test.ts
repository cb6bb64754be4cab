/**
 * Inline images in the terminal: detection against fake terminals that answer the queries as kitty, a sixel
 * xterm, iTerm2, WezTerm, tmux, a plain xterm or nothing would (and raw mode restored after); the encoders'
 * output read back (kitty's chunks, iTerm2's payload, sixel decoded pixel by pixel); the block above the bars;
 * and the real `sdx gen` in a real pseudo-terminal answering like kitty or a plain terminal, against a real
 * server behind a proxy that records the requests (whether they ask for previews).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import sharp from "sharp";
import { ImageArea } from "../../cli/terminal/area.ts";
import { detectGraphics, GRAPHICS_QUERY, type TerminalInput } from "../../cli/terminal/detect.ts";
import { iterm2Image, KITTY_CHUNK, kittyImage } from "../../cli/terminal/encode.ts";
import { TerminalImages } from "../../cli/terminal/images.ts";
import { encodeSixel, type IndexedImage, indexedImage } from "../../cli/terminal/sixel.ts";
import { MODELS_DIR, REPO_ROOT } from "../helpers/fixtures.ts";
import { startProxy } from "../helpers/proxy.ts";
import { type RunningServer, startServer } from "../helpers/server.ts";

const ESC = "\x1b";
const ST = `${ESC}\\`;
const DCS = `${ESC}P`;

/** Replies of real terminals to GRAPHICS_QUERY (kitty query, XTVERSION, cell size, DA1), in their order. */
const TERMINALS: Record<string, string> = {
  kitty: `${ESC}_Gi=31;OK${ST}${DCS}>|kitty(0.35.2)${ST}${ESC}[6;20;10t${ESC}[?62;c`,
  "xterm -ti vt340": `${DCS}>|XTerm(390)${ST}${ESC}[6;17;9t${ESC}[?63;1;2;4;6;9;15;22c`,
  iTerm2: `${DCS}>|iTerm2 3.5.0${ST}${ESC}[6;32;16t${ESC}[?62;4c`,
  WezTerm: `${DCS}>|WezTerm 20240203-110809-5046fc22${ST}${ESC}[6;19;9t${ESC}[?65;4;6;18;22c`,
  "tmux in iTerm2": `${DCS}>|tmux 3.4${ST}${ESC}[?1;2c`,
  xterm: `${DCS}>|XTerm(390)${ST}${ESC}[?1;2c`,
};

/** A terminal at the protocol level: what is written to `output` is answered on `input` by `reply`. */
function fakeTerminal(
  reply: string | null,
  options: { tty?: boolean; raw?: boolean; bytewise?: boolean } = {},
) {
  const modes: boolean[] = [];
  const input = new PassThrough() as PassThrough & TerminalInput;
  input.isTTY = options.tty ?? true;
  input.isRaw = options.raw ?? false;
  input.setRawMode = (raw: boolean) => {
    modes.push(raw);
    input.isRaw = raw;
    return input;
  };
  let written = "";
  const output = new Writable({
    write(chunk, _encoding, done) {
      written += chunk.toString();
      if (reply !== null && written.endsWith(`${ESC}[c`)) {
        setTimeout(() => {
          if (options.bytewise) for (const byte of reply) input.write(byte);
          else input.write(reply);
        }, 5);
      }
      done();
    },
  }) as Writable & { isTTY?: boolean };
  output.isTTY = options.tty ?? true;
  return { input, output, modes, written: () => written };
}

describe("asking the terminal", () => {
  const cases: [string, string | null, number, number][] = [
    ["kitty", "kitty", 10, 20],
    ["xterm -ti vt340", "sixel", 9, 17],
    ["iTerm2", "iterm2", 16, 32],
    ["WezTerm", "iterm2", 9, 19],
    ["tmux in iTerm2", null, 0, 0],
    ["xterm", null, 0, 0],
  ];
  for (const [name, protocol, width, height] of cases) {
    test(`${name}: ${protocol ?? "no images"}`, async () => {
      for (const bytewise of [false, true]) {
        const term = fakeTerminal(TERMINALS[name] as string, { bytewise });
        const graphics = await detectGraphics(term.input, term.output, 2000);
        expect(term.written()).toBe(GRAPHICS_QUERY);
        expect(graphics).toEqual(
          protocol ? { protocol: protocol as "kitty", cell: { width, height } } : null,
        );
        expect(term.modes).toEqual([true, false]);
      }
    });
  }

  test("no answer: nothing, after the timeout; a raw terminal stays raw", async () => {
    const term = fakeTerminal(null, { raw: true });
    const started = performance.now();
    expect(await detectGraphics(term.input, term.output, 150)).toBeNull();
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
    expect(term.modes).toEqual([true, true]);
  });

  test("not a terminal: nothing is asked", async () => {
    const term = fakeTerminal(TERMINALS.kitty as string, { tty: false });
    expect(await detectGraphics(term.input, term.output)).toBeNull();
    expect(term.written()).toBe("");
    expect(term.modes).toEqual([]);
  });
});

/** The payloads and keys of kitty's escape sequences. */
function kittyChunks(text: string): { keys: string; payload: string }[] {
  return text
    .split(ST)
    .filter((s) => s !== "")
    .map((s) => {
      expect(s.startsWith(`${ESC}_G`)).toBe(true);
      const [keys, payload] = s.slice(3).split(";") as [string, string];
      return { keys, payload };
    });
}

/**
 * A sixel decoder for the subset encodeSixel writes: raster attributes, colour definitions and selections,
 * repeats, '$' and '-'. Answers the declared size and each pixel's colour index (-1: never painted), throwing
 * when a pixel is painted twice.
 */
function decodeSixel(text: string): {
  width: number;
  height: number;
  pixels: Int32Array;
  palette: number[][];
} {
  const body = new RegExp(`^${ESC}P0;1;0q(.*)${ESC}\\\\$`, "s").exec(text)?.[1];
  if (body === undefined) throw new Error("not a sixel image");
  const raster = /^"1;1;(\d+);(\d+)/.exec(body);
  if (!raster) throw new Error("no raster attributes");
  const width = Number(raster[1]);
  const height = Number(raster[2]);
  const pixels = new Int32Array(width * height).fill(-1);
  const palette: number[][] = [];
  let colour = 0;
  let x = 0;
  let top = 0;
  const paint = (bits: number, count: number) => {
    for (let n = 0; n < count; n++, x++) {
      for (let dy = 0; dy < 6; dy++) {
        if (!(bits & (1 << dy))) continue;
        const p = (top + dy) * width + x;
        if (pixels[p] !== -1) throw new Error(`pixel ${x},${top + dy} painted twice`);
        pixels[p] = colour;
      }
    }
  };
  for (let i = raster[0].length; i < body.length; ) {
    const c = body[i] as string;
    if (c === "#") {
      const m = /^#(\d+)(?:;2;(\d+);(\d+);(\d+))?/.exec(body.slice(i)) as RegExpExecArray;
      colour = Number(m[1]);
      if (m[2] !== undefined) palette[colour] = [Number(m[2]), Number(m[3]), Number(m[4])];
      i += m[0].length;
    } else if (c === "!") {
      const m = /^!(\d+)(.)/s.exec(body.slice(i)) as RegExpExecArray;
      paint((m[2] as string).charCodeAt(0) - 63, Number(m[1]));
      i += m[0].length;
    } else if (c === "$") {
      x = 0;
      i++;
    } else if (c === "-") {
      x = 0;
      top += 6;
      i++;
    } else {
      paint(c.charCodeAt(0) - 63, 1);
      i++;
    }
  }
  return { width, height, pixels, palette };
}

describe("encoders", () => {
  test("kitty: PNG (f=100) in chunks of at most 4096 base64 characters, m=1 on all but the last", () => {
    const bytes = new Uint8Array(10_000).map((_, i) => (i * 7919) % 251);
    const chunks = kittyChunks(kittyImage(bytes, 77, { columns: 20, rows: 10 }));
    expect(chunks).toHaveLength(4);
    expect(chunks[0]?.keys).toBe("a=T,f=100,t=d,i=77,p=1,q=2,C=1,c=20,r=10,m=1");
    expect(chunks.slice(1).map((c) => c.keys)).toEqual(["m=1", "m=1", "m=0"]);
    for (const c of chunks) expect(c.payload.length).toBeLessThanOrEqual(KITTY_CHUNK);
    for (const c of chunks.slice(0, -1)) expect(c.payload.length % 4).toBe(0);
    expect(Buffer.from(chunks.map((c) => c.payload).join(""), "base64")).toEqual(Buffer.from(bytes));
    const small = kittyChunks(kittyImage(new Uint8Array(30), 1, { columns: 2, rows: 1 }));
    expect(small).toHaveLength(1);
    expect(small[0]?.keys).toEndWith(",m=0");
  });

  test("iTerm2: OSC 1337 File=inline=1 with the file's size and cells", () => {
    const bytes = new Uint8Array(500).map((_, i) => i % 256);
    const m = new RegExp(
      `^${ESC}\\]1337;File=inline=1;size=(\\d+);width=(\\d+);height=(\\d+);preserveAspectRatio=1:([A-Za-z0-9+/=]+)\\x07$`,
    ).exec(iterm2Image(bytes, { columns: 12, rows: 6 }));
    expect(m?.slice(1, 4)).toEqual(["500", "12", "6"]);
    expect(Buffer.from(m?.[4] as string, "base64")).toEqual(Buffer.from(bytes));
  });

  test("sixel: header, palette and bands decode back to every pixel once, in its colour", () => {
    const width = 7;
    const height = 13; // two full bands and a partial one
    const image: IndexedImage = {
      width,
      height,
      pixels: Uint8Array.from(
        { length: width * height },
        (_, p) => ((p % width) + 2 * Math.floor(p / width)) % 3,
      ),
      palette: [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
      ],
    };
    const decoded = decodeSixel(encodeSixel(image));
    expect([decoded.width, decoded.height]).toEqual([width, height]);
    expect(decoded.palette).toEqual([
      [100, 0, 0],
      [0, 100, 0],
      [0, 0, 100],
    ]);
    expect([...decoded.pixels]).toEqual([...image.pixels]);
  });

  test("sixel from an image file: at most 256 colours, every pixel painted", async () => {
    const raw = Buffer.alloc(40 * 30 * 3).map((_, i) => (i * 37) % 256);
    const png = await sharp(raw, { raw: { width: 40, height: 30, channels: 3 } })
      .png()
      .toBuffer();
    const indexed = await indexedImage(png, 20, 18);
    expect(indexed.palette.length).toBeLessThanOrEqual(256);
    const decoded = decodeSixel(encodeSixel(indexed));
    expect([decoded.width, decoded.height]).toEqual([20, 18]);
    expect(decoded.pixels.every((p) => p >= 0 && p < indexed.palette.length)).toBe(true);
  });

  test("images fit the rows given and the terminal's width; sixel bands never spill below", async () => {
    const images = new TerminalImages(
      { protocol: "sixel", cell: { width: 10, height: 20 } },
      { rows: 30, columns: 40 },
    );
    expect(images.rows).toBe(10);
    expect(images.fit(512, 512)).toEqual({ rows: 10, columns: 20, pixelWidth: 200, pixelHeight: 200 });
    // Four times as wide as tall: 39 columns at most, so fewer rows.
    expect(images.fit(1024, 256)).toMatchObject({ columns: 39, rows: 4 });
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: "#3366cc" } })
      .png()
      .toBuffer();
    const decoded = decodeSixel(await images.encode(png, 1));
    expect(decoded.height).toBe(198); // 10 rows of 20 px, down to a multiple of 6
    expect(decoded.width).toBe(198);
  });
});

describe("the block above the bars", () => {
  test("a preview is drawn in a new block, replaced in place, then left above the next line", () => {
    const area = new ImageArea(3);
    expect(area.flush()).toBe("");
    area.image("P1", true);
    const open = `${ESC}[J\n\n\n${ESC}[3A${ESC}7P1${ESC}8${ESC}[3B`;
    expect(area.flush()).toBe(open);
    area.image("P2", true);
    area.image("P3", true); // the newest replaces one still queued
    area.image("FINAL", true);
    area.text("image 1/2: a.png\n");
    area.image("SECOND", false);
    expect(area.flush()).toBe(
      `${ESC}[J${ESC}[3A${ESC}7FINAL${ESC}8${ESC}[3Bimage 1/2: a.png\n\n\n\n${ESC}[3A${ESC}7SECOND${ESC}8${ESC}[3B`,
    );
    // After a line, a preview cannot replace the block scrolled away: it opens a new one.
    area.text("warning: x\n");
    area.image("P4", true);
    expect(area.flush()).toBe(`${ESC}[Jwarning: x\n\n\n\n${ESC}[3A${ESC}7P4${ESC}8${ESC}[3B`);
  });
});

describe("sdx gen in a pseudo-terminal", () => {
  let server: RunningServer;
  let proxy: ReturnType<typeof Bun.serve>;
  let work: string;
  const bodies: Record<string, unknown>[] = [];

  beforeAll(async () => {
    server = await startServer(["--models-dir", MODELS_DIR]);
    proxy = startProxy(server.url, {
      generate(body) {
        bodies.push(body);
        return undefined;
      },
    });
    work = await mkdtemp(join(tmpdir(), "sdx-pty-"));
    await mkdir(join(work, "projects", "tty"), { recursive: true });
    await writeFile(
      join(work, "projects", "tty", "config.yaml"),
      `server_url: http://127.0.0.1:${proxy.port}\ndefault_params: {width: 64, height: 64, num_steps: 2}\n`,
    );
    await writeFile(
      join(work, "projects", "tty", "prompts.yaml"),
      "prompt_sets:\n  - name: dots\n    prompt: dots\n",
    );
  });
  afterAll(async () => {
    await proxy.stop(true);
    await server.stop();
    await rm(work, { recursive: true, force: true });
  });

  /** Runs `sdx gen --batch 2` in a pseudo-terminal that answers the graphics query with `reply`. */
  async function genInTerminal(reply: string): Promise<{ code: number; screen: string; cooked: boolean }> {
    let screen = "";
    let answered = false;
    /** The line discipline's local flags once the first image is out, the question long answered. */
    let flags: number | null = null;
    const args = ["gen", "--project", "tty", "--prompt", "dots", "--batch", "2", "--seed", "4"];
    const proc = Bun.spawn(
      ["bun", join(REPO_ROOT, "cli/index.ts"), ...args, "--input", join(work, "projects")],
      {
        cwd: work,
        env: { ...process.env, TERM: "xterm-256color", SDX_API_KEY: "" },
        terminal: {
          cols: 100,
          rows: 30,
          data(terminal, data) {
            screen += Buffer.from(data).toString("latin1");
            if (!answered && screen.includes(GRAPHICS_QUERY)) {
              answered = true;
              terminal.write(reply);
            }
            if (flags === null && screen.includes("image 1/2:")) flags = terminal.localFlags;
          },
        },
      },
    );
    const code = await proc.exited;
    proc.terminal?.close();
    // ICANON and ECHO (Linux's c_lflag bits 2 and 8): raw mode was left for the cooked mode it started in.
    return { code, screen, cooked: flags !== null && (flags & 2) !== 0 && (flags & 8) !== 0 };
  }

  test("a kitty terminal gets the preview, then each finished image, drawn above the bars", async () => {
    bodies.length = 0;
    const { code, screen, cooked } = await genInTerminal(TERMINALS.kitty as string);
    expect(code).toBe(0);
    expect(cooked).toBe(true);
    expect(bodies).toHaveLength(1);
    expect(bodies[0]?.preview).toEqual({ every: 1, method: "approx" });
    const kitty = new RegExp(`${ESC}_Ga=T,f=100,t=d,i=(\\d+),p=1,q=2,C=1,`, "g");
    const ids = [...screen.matchAll(kitty)].map((m) => m[1]);
    // The server's previews of the first image (steps 1 and 2; the view draws the newest one, so one or both), the
    // first image over them (the same id, drawn in place), the second image (a new one).
    expect(ids.length).toBeGreaterThanOrEqual(3);
    expect(ids.length).toBeLessThanOrEqual(4);
    const last = ids.length - 1;
    expect(ids.slice(0, last)).toEqual(ids.slice(0, last).map(() => ids[0]));
    expect(ids[last]).not.toBe(ids[0]);
    const plain = Bun.stripANSI(screen);
    expect(plain).toMatch(/image 1\/2: \S+\.png \(seed 4\)/);
    expect(plain).toMatch(/image 2\/2: \S+\.png \(seed 5\)/);
    expect(plain).toMatch(/2 of 2 images made/);
  });

  test("a terminal without images: no previews asked for, nothing drawn", async () => {
    bodies.length = 0;
    const { code, screen, cooked } = await genInTerminal(TERMINALS.xterm as string);
    expect(code).toBe(0);
    expect(cooked).toBe(true);
    expect(bodies).toHaveLength(1);
    expect(bodies[0]).not.toHaveProperty("preview");
    expect(screen).not.toContain(`${ESC}_Ga=`);
    expect(screen).not.toContain(`${ESC}P0;1;0q`);
    expect(Bun.stripANSI(screen)).toMatch(/2 of 2 images made/);
  });
});
