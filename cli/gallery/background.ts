/**
 * How galleries are written while a run goes on: a failed write never stops the run (`attempts`), and a task
 * asked for again while it runs is run once more rather than piling up (`Rerun`).
 */

/**
 * A runner of writes whose failures are told to `warn` (after `what`) the first time only, and never thrown:
 * a full disk must not stop the images, nor fill the screen.
 */
export function attempts(
  warn: (message: string) => void,
  what: string,
): (write: () => Promise<void>) => Promise<void> {
  let warned = false;
  return async (write) => {
    try {
      await write();
    } catch (e) {
      if (warned) return;
      warned = true;
      warn(`${what}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
}

/**
 * A task run again on request, one run at a time: requests made while it runs fold into a single further run,
 * so the result always catches up with the latest request (a contact sheet rewritten while images arrive).
 */
export class Rerun {
  private running: Promise<void> | null = null;
  private again = false;

  constructor(private readonly task: () => Promise<void>) {}

  request(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop();
  }

  private async loop(): Promise<void> {
    try {
      do {
        this.again = false;
        await this.task();
      } while (this.again);
    } finally {
      this.running = null;
    }
  }

  /** Resolves once every request so far has been served. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }
}
