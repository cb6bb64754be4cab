/** The server's Prometheus metrics (prom-client): what the HTTP layer and the model host count, for GET /metrics. */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { HostObserver } from "../engine/model_host.ts";

const SECOND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface QueueView {
  readonly queued: number;
  readonly running: number;
}

export class ServerMetrics {
  /** One registry per server, so tests and several apps in one process never share counts. */
  readonly registry = new Registry();
  private readonly registers = [this.registry];
  readonly requests = new Counter({
    name: "sdx_http_requests_total",
    help: "HTTP requests answered, by route, method and status.",
    labelNames: ["route", "method", "status"] as const,
    registers: this.registers,
  });
  readonly requestSeconds = new Histogram({
    name: "sdx_http_request_duration_seconds",
    help: "Time to answer an HTTP request, by route (a streamed answer: until its stream ends).",
    labelNames: ["route"] as const,
    buckets: SECOND_BUCKETS,
    registers: this.registers,
  });
  readonly steps = new Counter({
    name: "sdx_steps_total",
    help: "Denoising steps completed.",
    registers: this.registers,
  });
  readonly images = new Counter({
    name: "sdx_images_total",
    help: "Images generated.",
    registers: this.registers,
  });
  readonly cancellations = new Counter({
    name: "sdx_cancellations_total",
    help: "Generations cancelled by their client or interrupted, by where they were (queued, running).",
    labelNames: ["where"] as const,
    registers: this.registers,
  });
  readonly rejections = new Counter({
    name: "sdx_admission_rejections_total",
    help: "Generations refused at admission, by reason (queue_full, draining).",
    labelNames: ["reason"] as const,
    registers: this.registers,
  });
  readonly failures = new Counter({
    name: "sdx_generation_failures_total",
    help: "Generations that failed in the engine, by stage.",
    labelNames: ["stage"] as const,
    registers: this.registers,
  });
  readonly stepSeconds = new Histogram({
    name: "sdx_step_duration_seconds",
    help: "Time of one denoising step (a whole batch).",
    buckets: SECOND_BUCKETS,
    registers: this.registers,
  });
  readonly modelLoads = new Counter({
    name: "sdx_model_loads_total",
    help: "Models loaded into the engine, by model.",
    labelNames: ["model"] as const,
    registers: this.registers,
  });
  modelLoadSeconds: number | null = null;

  constructor(queue: () => QueueView) {
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: this.registers,
        collect() {
          this.set(read());
        },
      });
    gauge("sdx_queue_depth", "Generations waiting for a slot.", () => queue().queued);
    gauge("sdx_running", "Generations holding a slot.", () => queue().running);
    gauge(
      "sdx_model_load_seconds",
      "Time the last model load took (NaN before any has loaded).",
      () => this.modelLoadSeconds ?? Number.NaN,
    );
    // prom-client's default process metrics rely on Node's event-loop monitor, which Bun does not fill in;
    // resident memory is the one that matters here (onnxruntime's sessions live in this process).
    gauge("sdx_process_resident_memory_bytes", "Resident memory of the server process, bytes.", () =>
      process.memoryUsage.rss(),
    );
    for (const counter of [this.steps, this.images]) counter.inc(0);
  }

  /** What the model host reports, counted (see ModelHost.observe). */
  readonly hostObserver: HostObserver = {
    queuedCancelled: () => this.cancellations.inc({ where: "queued" }),
    refused: (reason) => this.rejections.inc({ reason }),
    stepDone: (seconds) => {
      this.steps.inc();
      this.stepSeconds.observe(seconds);
    },
    imagesMade: (count) => this.images.inc({}, count),
    runningCancelled: () => this.cancellations.inc({ where: "running" }),
    failed: (stage) => this.failures.inc({ stage }),
    modelLoaded: (model, seconds) => {
      this.modelLoadSeconds = seconds;
      this.modelLoads.inc({ model });
    },
  };

  /** The text exposition format, and its content type. */
  async render(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
