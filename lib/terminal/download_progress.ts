/**
 * A download's progress for people: a bar (cli-progress) on a terminal, one line per finished file elsewhere.
 * The server's startup menu and `sdx models pull` share it; both hand it the pull's `progress` events.
 */
import { SingleBar } from "cli-progress";
import type { PullEvents } from "../../contract/index.ts";

type PullProgress = PullEvents["progress"];

/** 1.5 GiB, 12.0 MiB, 512 B. */
export function formatBytes(bytes: number): string {
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes >= 2 ** 10) return `${(bytes / 2 ** 10).toFixed(1)} KiB`;
  return `${bytes} B`;
}

export interface ProgressView {
  update(progress: PullProgress): void;
  /** Ends the bar (or the lines); call it whatever the outcome. */
  stop(): void;
}

export type ProgressStream = NodeJS.WritableStream & { isTTY?: boolean; columns?: number };

/** A bar on `stream` when `tty` (default: the stream's own isTTY), else a line per finished file. */
export function progressView(stream: ProgressStream, tty = stream.isTTY === true): ProgressView {
  if (!tty) {
    let filesDone = 0;
    return {
      update(p) {
        while (filesDone < p.files_done) {
          filesDone++;
          const file = filesDone === p.files_done ? ` ${p.file} (${formatBytes(p.file_total)})` : "";
          stream.write(
            `  [${filesDone}/${p.files_total}]${file}, ${formatBytes(p.bytes)} of ${formatBytes(p.total)}\n`,
          );
        }
      },
      stop() {},
    };
  }
  const bar = new SingleBar({
    stream,
    format: "  {bar} {percentage}% | {done} of {size} | {speed} | {files} | {file}",
    barCompleteChar: "█",
    barIncompleteChar: "░",
    barsize: 30,
    hideCursor: true,
    clearOnComplete: false,
    fps: 10,
    etaBuffer: 50,
  });
  let started = false;
  let last = { at: performance.now(), bytes: 0 };
  let speed = 0;
  return {
    update(p) {
      const now = performance.now();
      if (!started) {
        started = true;
        last = { at: now, bytes: p.bytes };
        bar.start(Math.max(p.total, 1), p.bytes, {});
      }
      if (now - last.at >= 500) {
        const current = ((p.bytes - last.bytes) * 1000) / (now - last.at);
        speed = speed === 0 ? current : 0.7 * speed + 0.3 * current;
        last = { at: now, bytes: p.bytes };
      }
      bar.update(p.bytes, {
        done: formatBytes(p.bytes),
        size: formatBytes(p.total),
        speed: speed > 0 ? `${formatBytes(speed)}/s` : "…",
        files: `${p.files_done}/${p.files_total} files`,
        file: p.file,
      });
    },
    stop() {
      if (started) bar.stop();
    },
  };
}
