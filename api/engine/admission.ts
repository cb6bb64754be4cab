/**
 * Admission control: at most `concurrency` generations run at once; the rest wait, in order, in a queue of at
 * most `maxQueue`. A request that finds the queue full, or the server draining, is refused at once, never parked.
 * A waiting request whose signal aborts leaves the queue; the slot of a finished one goes to the next in line.
 */
import { GenerationAborted } from "./pipeline/errors.ts";

export type RefusalReason = "queue_full" | "draining";

export class AdmissionRefused extends Error {
  override name = "AdmissionRefused";
  constructor(
    readonly reason: RefusalReason,
    message: string,
    /** Whole seconds after which a retry is likely to find room. */
    readonly retryAfterS: number,
  ) {
    super(message);
  }
}

/** One admitted request: waiting for a slot, then holding it until released. */
export interface Ticket {
  /** Resolves when the request holds a slot; rejects with GenerationAborted when its signal aborts first. */
  readonly started: Promise<void>;
  /** Place in the queue, 1 = next; 0 once it holds a slot (or has left). */
  position(): number;
  /** Called with the new place whenever the queue moves ahead of this request. */
  onPosition: ((position: number) => void) | null;
  /** Gives the slot back (or leaves the queue); idempotent. */
  release(): void;
}

interface Entry {
  work: number;
  ticket: TicketImpl;
  grant(): void;
}

class TicketImpl implements Ticket {
  started!: Promise<void>;
  onPosition: ((position: number) => void) | null = null;
  state: "waiting" | "running" | "done" = "waiting";
  constructor(
    private readonly admission: Admission,
    readonly work: number,
  ) {}
  position(): number {
    return this.admission.positionOf(this);
  }
  release(): void {
    this.admission.release(this);
  }
}

export interface AdmissionOptions {
  concurrency: number;
  maxQueue: number;
  /** The recent time of one denoising step, ms, for Retry-After; null before any step ran. */
  stepMs?: () => number | null;
  /** Called when a waiting request leaves because its signal aborted. */
  onQueuedCancel?: () => void;
}

export class Admission {
  private readonly waiting: Entry[] = [];
  private readonly holding = new Set<TicketImpl>();
  private isDraining = false;
  private idleWaiters: (() => void)[] = [];

  constructor(readonly options: AdmissionOptions) {}

  get running(): number {
    return this.holding.size;
  }

  get queued(): number {
    return this.waiting.length;
  }

  get draining(): boolean {
    return this.isDraining;
  }

  /**
   * Admits a request of `work` denoising steps, or throws AdmissionRefused at once. The ticket's `started`
   * resolves when it may run; the caller must call `release()` when it is done, whatever happened.
   */
  enter(work: number, signal?: AbortSignal): Ticket {
    if (this.isDraining) {
      throw new AdmissionRefused("draining", "the server is shutting down and takes no new generations", 0);
    }
    const ticket = new TicketImpl(this, work);
    if (signal?.aborted) {
      ticket.state = "done";
      ticket.started = Promise.reject(new GenerationAborted("generation cancelled"));
      ticket.started.catch(() => undefined);
      return ticket;
    }
    if (this.holding.size < this.options.concurrency && this.waiting.length === 0) {
      ticket.state = "running";
      this.holding.add(ticket);
      ticket.started = Promise.resolve();
      return ticket;
    }
    if (this.waiting.length >= this.options.maxQueue) {
      const s = this.retryAfterSeconds();
      throw new AdmissionRefused(
        "queue_full",
        `the generation queue is full (${this.waiting.length} waiting, ${this.holding.size} running); retry in about ${s} s`,
        s,
      );
    }
    ticket.started = new Promise<void>((resolve, reject) => {
      const entry: Entry = { work, ticket, grant: resolve };
      this.waiting.push(entry);
      const onAbort = () => {
        const i = this.waiting.indexOf(entry);
        if (i < 0) return;
        this.waiting.splice(i, 1);
        ticket.state = "done";
        this.options.onQueuedCancel?.();
        reject(new GenerationAborted("generation cancelled while queued"));
        this.notifyPositions(i);
        this.checkIdle();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      entry.grant = () => {
        signal?.removeEventListener("abort", onAbort);
        resolve();
      };
    });
    // A caller that stops listening must not leave an unhandled rejection behind.
    ticket.started.catch(() => undefined);
    return ticket;
  }

  positionOf(ticket: TicketImpl): number {
    if (ticket.state !== "waiting") return 0;
    return this.waiting.findIndex((e) => e.ticket === ticket) + 1;
  }

  release(ticket: TicketImpl): void {
    if (ticket.state === "done") return;
    if (ticket.state === "waiting") {
      const i = this.waiting.findIndex((e) => e.ticket === ticket);
      if (i >= 0) this.waiting.splice(i, 1);
      ticket.state = "done";
      this.notifyPositions(Math.max(i, 0));
      this.checkIdle();
      return;
    }
    ticket.state = "done";
    this.holding.delete(ticket);
    this.pump();
    this.checkIdle();
  }

  private pump(): void {
    let moved = false;
    while (this.holding.size < this.options.concurrency && this.waiting.length > 0) {
      const next = this.waiting.shift() as Entry;
      next.ticket.state = "running";
      this.holding.add(next.ticket);
      next.grant();
      moved = true;
    }
    if (moved) this.notifyPositions(0);
  }

  private notifyPositions(from: number): void {
    for (let i = from; i < this.waiting.length; i++) this.waiting[i]?.ticket.onPosition?.(i + 1);
  }

  /** Seconds until the queue has likely moved: recent step time × the steps ahead, over the slots. */
  retryAfterSeconds(): number {
    const stepMs = this.options.stepMs?.() ?? null;
    if (stepMs === null) return 1;
    let work = 0;
    for (const e of this.waiting) work += e.work;
    for (const t of this.holding) work += t.work / 2;
    return Math.max(1, Math.ceil((stepMs * work) / this.options.concurrency / 1000));
  }

  /** Refuses every new request from now on; those running and waiting go on. */
  drain(): void {
    this.isDraining = true;
  }

  /** Resolves once nothing runs or waits. */
  idle(): Promise<void> {
    if (this.holding.size === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private checkIdle(): void {
    if (this.holding.size > 0 || this.waiting.length > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
