/**
 * What `sdx gen` shows while it runs, in one of three forms:
 *   - on a terminal: a batch bar (images done of the total, ETA) and a bar for the running request (its place
 *     in the server's queue, then its denoising steps), with each saved image listed above them;
 *   - otherwise plain lines: one per image, one when a request had to wait in the queue and when it started;
 *   - with `--json`: one JSON object per image on stdout, nothing else there.
 * Views write only to the streams they are given (the command's context), never to `process`.
 */
import { readFile } from "node:fs/promises";
import type { Writable } from "node:stream";
import { Format, MultiBar, type Options, type Params, Presets, type SingleBar } from "cli-progress";
import type { RequestProgress, RunEvent } from "./generate.ts";
import { ImageArea } from "./terminal/area.ts";
import type { TerminalImages } from "./terminal/images.ts";

export interface GenerationView {
  /** A request's progress from the server's event stream. */
  progress(event: RequestProgress): void;
  /** An image saved, or one that failed; the run waits for it (an image drawn in the terminal). */
  report(event: RunEvent): void | Promise<void>;
  /** A server or client warning. */
  warn(message: string): void;
  /** The run is over (or interrupted): stop drawing; what is written afterwards goes below. */
  close(): void;
}

export interface ViewStreams {
  stdout: Writable;
  stderr: Writable;
}

/** The line of a saved or failed image, as every text view prints it. */
function imageLine(event: RunEvent): string {
  const n = `${event.index + 1}/${event.total}`;
  if (event.event === "image") return `image ${n}: ${event.image} (seed ${event.seed})`;
  return `image ${n} failed: ${event.error}\n  details: ${event.error_file}`;
}

/** `image 3` or `images 17-32`: the images of one request, counted from 1. */
export function requestLabel(index: number, count: number): string {
  return count === 1 ? `image ${index + 1}` : `images ${index + 1}-${index + count}`;
}

/** `<1s`, `42s`, `3m05s`, `1h02m`: short enough for a progress line. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return "?";
  if (ms < 1000) return ms === 0 ? "0s" : "<1s";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  const pad = (n: number) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${pad(Math.floor((s % 3600) / 60))}m`;
}

/** `--json`: one compact JSON object per image (saved or failed) on stdout; warnings on stderr. */
export class JsonView implements GenerationView {
  constructor(private readonly streams: ViewStreams) {}
  progress(): void {}
  report(event: RunEvent): void {
    this.streams.stdout.write(`${JSON.stringify(event)}\n`);
  }
  warn(message: string): void {
    this.streams.stderr.write(`warning: ${message}\n`);
  }
  close(): void {}
}

/**
 * Not a terminal (a pipe, a log file): one line per image on stdout (failures on stderr), and a line when a
 * request has to wait in the server's queue and when it then starts, or when the server loads a model;
 * never a line per step.
 */
export class LineView implements GenerationView {
  private label = "";
  private waited = false;
  constructor(private readonly streams: ViewStreams) {}

  progress(event: RequestProgress): void {
    if (event.type === "request") {
      this.label = requestLabel(event.index, event.count);
      this.waited = false;
    } else if (event.type === "queued" && event.position > 0 && !this.waited) {
      this.waited = true;
      this.streams.stdout.write(`${this.label}: queued #${event.position} on the server\n`);
    } else if (event.type === "started" && this.waited) {
      this.streams.stdout.write(`${this.label}: started\n`);
    } else if (event.type === "loading") {
      this.streams.stdout.write(`${this.label}: the server is loading model ${event.model}\n`);
    }
  }
  report(event: RunEvent): void {
    (event.event === "image" ? this.streams.stdout : this.streams.stderr).write(`${imageLine(event)}\n`);
  }
  warn(message: string): void {
    this.streams.stderr.write(`warning: ${message}\n`);
  }
  close(): void {}
}

type RequestState =
  | { phase: "sending" }
  | { phase: "queued"; position: number }
  | { phase: "loading"; model: string }
  | { phase: "running"; step: number; steps: number; etaMs: number; at: number }
  | { phase: "done" | "failed"; step: number; steps: number };

export interface BarViewOptions extends ViewStreams {
  total: number;
  /** Aborted on Ctrl-C: the bars stop at once, so the interruption message lands below them. */
  signal?: AbortSignal;
  /** Whether stderr shows on the same terminal: then failures and warnings are drawn above the bars too. */
  stderrIsTTY?: boolean;
  /** Redraws per second (default 10). */
  fps?: number;
  /** The clock, in ms (tests pass their own). */
  now?: () => number;
  /** When the terminal shows images: the running request's preview, then each finished image, above the bars. */
  images?: TerminalImages;
}

/**
 * A terminal: two bars on stdout, redrawn in place (cli-progress' MultiBar) —
 *
 *     batch       ███████░░░░░░░░░░░░░░░░░░░░░░░ 5/20 images · 1 failed · ETA 1m12s
 *     images 6-10 ████████████████░░░░░░░░░░░░░░ step 16/30 · ETA 9s
 *
 * Saved images (and, when stderr is the same terminal, failures and warnings) are printed above the bars. On a
 * terminal that shows images (`images`), the newest preview of the request's first image is drawn above the bars
 * and replaced in place, by the finished image in the end; the batch's other images follow, each above its line.
 */
export class BarView implements GenerationView {
  private multibar: MultiBar | null = null;
  private batchBar: SingleBar | null = null;
  private requestBar: SingleBar | null = null;
  private closed = false;
  private made = 0;
  private failed = 0;
  private current: { index: number; count: number; sentAt: number } | null = null;
  private state: RequestState = { phase: "sending" };
  /** Time and images of the finished requests, for the batch's ETA. */
  private spentMs = 0;
  private spentImages = 0;
  private readonly labelWidth: number;
  private readonly now: () => number;
  private readonly onAbort = () => this.close();
  /** Lines and images above the bars, when the terminal shows images. */
  private readonly area: ImageArea | null;
  /** kitty's id of the image drawn for the running request (its previews, then its first image). */
  private imageId = 0;
  /** Bumped when a request starts or its image is drawn: previews encoded for an older state are dropped. */
  private imageEpoch = 0;
  private previewSeq = 0;
  private previewShown = 0;

  constructor(private readonly options: BarViewOptions) {
    this.now = options.now ?? Date.now;
    this.area = options.images ? new ImageArea(options.images.rows) : null;
    this.labelWidth = Math.max("batch".length, requestLabel(options.total - 2, 2).length);
    options.signal?.addEventListener("abort", this.onAbort, { once: true });
  }

  /** The bars, drawn from the first event on; null once closed. */
  private bars(): MultiBar | null {
    if (this.closed) return null;
    if (this.multibar) return this.multibar;
    const options: Options = {
      stream: this.options.stdout,
      fps: this.options.fps ?? 10,
      hideCursor: true,
      // Lines are cut to the terminal's width by `formatter`, so the terminal's wrapping is left as it is.
      linewrap: true,
      clearOnComplete: false,
      barsize: 30,
    };
    this.multibar = new MultiBar(options, Presets.shades_classic);
    // Right after the cursor went back to the first bar's line, before the bars are drawn again.
    this.multibar.on("redraw-pre", () => {
      const text = this.area?.flush();
      if (text) this.options.stdout.write(text);
    });
    this.batchBar = this.multibar.create(
      this.options.total,
      0,
      {},
      { format: this.formatter(() => this.batchText()) },
    );
    this.requestBar = this.multibar.create(1, 0, {}, { format: this.formatter(() => this.requestText()) });
    return this.multibar;
  }

  /** `label bar status`, cut to the terminal's width (one column spare, so the cursor never wraps). */
  private formatter(text: () => { label: string; status: string }) {
    return (options: Options, params: Params): string => {
      const { label, status } = text();
      const line = `${label.padEnd(this.labelWidth)} ${Format.BarFormat(params.progress, options)} ${status}`;
      return line.slice(0, Math.max(10, params.maxWidth - 1));
    };
  }

  private batchText(): { label: string; status: string } {
    const done = this.made + this.failed;
    const parts = [`${done}/${this.options.total} images`];
    if (this.failed) parts.push(`${this.failed} failed`);
    const eta = done < this.options.total ? this.etaMs() : null;
    // Images still to come take some time, however small the estimate.
    if (eta !== null) parts.push(`ETA ${formatDuration(Math.max(eta, 1))}`);
    return { label: "batch", status: parts.join(" · ") };
  }

  private requestText(): { label: string; status: string } {
    const label = this.current ? requestLabel(this.current.index, this.current.count) : "";
    const s = this.state;
    switch (s.phase) {
      case "sending":
        return { label, status: this.current ? "sending" : "" };
      case "queued":
        return { label, status: s.position > 0 ? `queued #${s.position}` : "starting" };
      case "loading":
        return { label, status: `loading model ${s.model}` };
      case "running": {
        if (s.steps === 0) return { label, status: "starting" };
        const steps = `step ${s.step}/${s.steps}`;
        if (s.step >= s.steps) return { label, status: `${steps} · decoding` };
        return { label, status: `${steps} · ETA ${formatDuration(this.stepRest(s))}` };
      }
      case "done":
      case "failed":
        return { label, status: s.steps ? `step ${s.step}/${s.steps} · ${s.phase}` : s.phase };
    }
  }

  /** The running request's denoising time left, from the server's last step. */
  private stepRest(s: { etaMs: number; at: number }): number {
    return Math.max(0, s.etaMs - (this.now() - s.at));
  }

  /** The batch's time left: the running request's rest (the server's ETA), then the images after it. */
  private etaMs(): number | null {
    const current = this.current;
    const s = this.state;
    const inFlight = s.phase !== "done" && s.phase !== "failed";
    const stepRest = s.phase === "running" && s.step > 0 ? this.stepRest(s) : null;
    // Time per image: from the finished requests, else from the running one's steps so far.
    let perImage: number | null = null;
    if (this.spentImages > 0) perImage = this.spentMs / this.spentImages;
    else if (current && stepRest !== null)
      perImage = (this.now() - current.sentAt + stepRest) / current.count;
    if (perImage === null) return null;
    const inFlightCount = current && inFlight ? current.count : 0;
    const rest = stepRest ?? inFlightCount * perImage;
    const after = this.options.total - this.made - this.failed - inFlightCount;
    return rest + Math.max(0, after) * perImage;
  }

  progress(event: RequestProgress): void {
    const bars = this.bars();
    if (!bars) return;
    switch (event.type) {
      case "request":
        this.current = { index: event.index, count: event.count, sentAt: this.now() };
        this.imageEpoch++;
        if (this.options.images) this.imageId = this.options.images.newId();
        this.state = { phase: "sending" };
        this.requestBar?.setTotal(1);
        this.requestBar?.update(0);
        break;
      case "queued":
        this.state = { phase: "queued", position: event.position };
        break;
      case "started":
        this.state = { phase: "running", step: 0, steps: 0, etaMs: 0, at: this.now() };
        break;
      case "loading":
        this.state = { phase: "loading", model: event.model };
        break;
      case "step":
        this.state = {
          phase: "running",
          step: event.step,
          steps: event.total,
          etaMs: event.eta_ms,
          at: this.now(),
        };
        this.requestBar?.setTotal(event.total);
        this.requestBar?.update(event.step);
        break;
      case "preview":
        if (event.image === 0) this.preview(event.png);
        break;
      case "finished": {
        const s = this.state;
        const steps = s.phase === "running" ? { step: s.step, steps: s.steps } : { step: 0, steps: 0 };
        this.state = { phase: event.ok ? "done" : "failed", ...steps };
        if (event.ok && this.current) {
          this.spentMs += this.now() - this.current.sentAt;
          this.spentImages += this.current.count;
          this.requestBar?.setTotal(1);
          this.requestBar?.update(1);
        }
        break;
      }
    }
    // A request's changes of state are drawn at once; its steps and previews at the bars' frame rate.
    if (event.type !== "step" && event.type !== "preview") bars.update();
  }

  /** Encodes a preview and queues it over the request's block, unless something newer came first. */
  private preview(base64: string): void {
    const images = this.options.images;
    if (!images || !this.area) return;
    const epoch = this.imageEpoch;
    const seq = ++this.previewSeq;
    images
      .encode(Buffer.from(base64, "base64"), this.imageId)
      .then((bytes) => {
        if (epoch !== this.imageEpoch || seq < this.previewShown || this.closed) return;
        this.previewShown = seq;
        this.area?.image(bytes, true);
      })
      .catch(() => {
        // A preview that cannot be drawn is skipped; the next one may be.
      });
  }

  /** Draws a finished image: the request's first over its preview, the others each in a new block. */
  private async drawImage(event: Extract<RunEvent, { event: "image" }>): Promise<void> {
    const images = this.options.images;
    if (!images || !this.area || this.closed) return;
    const first = this.current?.index === event.index;
    this.imageEpoch++;
    try {
      const bytes = await images.encode(await readFile(event.image), first ? this.imageId : images.newId());
      this.area.image(bytes, first);
    } catch {
      // The image is saved all the same; its line says where.
    }
  }

  report(event: RunEvent): void | Promise<void> {
    // Drawn first, so that the image's line comes below it.
    if (event.event === "image" && this.area) return this.drawImage(event).then(() => this.reportLine(event));
    this.reportLine(event);
  }

  private reportLine(event: RunEvent): void {
    if (event.event === "image") this.made++;
    else this.failed++;
    this.above(`${imageLine(event)}\n`, event.event === "error");
    this.batchBar?.update(this.made + this.failed);
  }

  warn(message: string): void {
    this.above(`warning: ${message}\n`, true);
  }

  /** A line above the bars; one meant for stderr goes there instead when stderr is not this terminal. */
  private above(text: string, isDiagnostic: boolean): void {
    if (isDiagnostic && !this.options.stderrIsTTY) {
      this.options.stderr.write(text);
      return;
    }
    const bars = this.bars();
    if (!bars) this.options.stdout.write(text);
    else if (this.area) this.area.text(text);
    else bars.log(text);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.options.signal?.removeEventListener("abort", this.onAbort);
    if (!this.multibar) return;
    this.multibar.update(); // Prints the lines still waiting to go above the bars.
    this.multibar.stop();
  }
}
