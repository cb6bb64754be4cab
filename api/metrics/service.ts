/** The server's Prometheus metrics: what the HTTP layer and the model host count, rendered for GET /metrics. */
import { Counter, Gauge, Histogram, Registry } from "./registry.ts";

const SECOND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export interface QueueView {
  readonly queued: number;
  readonly running: number;
}

export class ServerMetrics {
  readonly registry = new Registry();
  readonly requests = this.registry.add(
    new Counter("sdx_http_requests_total", "HTTP requests answered, by route, method and status."),
  );
  readonly requestSeconds = this.registry.add(
    new Histogram(
      "sdx_http_request_duration_seconds",
      "Time to answer an HTTP request, by route.",
      SECOND_BUCKETS,
    ),
  );
  readonly steps = this.registry.add(new Counter("sdx_steps_total", "Denoising steps completed."));
  readonly images = this.registry.add(new Counter("sdx_images_total", "Images generated."));
  readonly cancellations = this.registry.add(
    new Counter(
      "sdx_cancellations_total",
      "Generations cancelled by their client, by where they were (queued, running).",
    ),
  );
  readonly rejections = this.registry.add(
    new Counter(
      "sdx_admission_rejections_total",
      "Generations refused at admission, by reason (queue_full, draining).",
    ),
  );
  readonly failures = this.registry.add(
    new Counter("sdx_generation_failures_total", "Generations that failed in the engine, by stage."),
  );
  readonly stepSeconds = this.registry.add(
    new Histogram("sdx_step_duration_seconds", "Time of one denoising step (a whole batch).", SECOND_BUCKETS),
  );
  modelLoadSeconds: number | null = null;

  constructor(queue: () => QueueView) {
    this.registry.add(new Gauge("sdx_queue_depth", "Generations waiting for a slot.", () => queue().queued));
    this.registry.add(new Gauge("sdx_running", "Generations holding a slot.", () => queue().running));
    this.registry.add(
      new Gauge(
        "sdx_model_load_seconds",
        "Time the served model took to load (NaN before it has loaded).",
        () => this.modelLoadSeconds ?? Number.NaN,
      ),
    );
  }

  render(): string {
    return this.registry.render();
  }
}
