import type { PullEvents } from "../../../contract/index.ts";
import type { PullProgress } from "./pull.ts";

/** A pull's progress as the contract's `progress` event: what the stream sends and the terminal view shows. */
export function progressEvent(p: PullProgress): PullEvents["progress"] {
  return {
    file: p.file,
    file_bytes: p.fileBytes,
    file_total: p.fileTotal,
    bytes: p.bytes,
    total: p.total,
    files_done: p.filesDone,
    files_total: p.filesTotal,
  };
}
