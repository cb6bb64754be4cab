/** A1111's progress, interrupt and skip, over the A1111 jobs in flight and sdx's own running generations. */
import type { A1111Progress } from "../../contract/index.ts";
import type { ModelHost } from "../engine/model_host.ts";
import type { A1111Session } from "./session.ts";

const IDLE_STATE: A1111Progress["state"] = {
  skipped: false,
  interrupted: false,
  stopping_generation: false,
  job: "",
  job_count: 0,
  job_timestamp: "0",
  job_no: 0,
  sampling_step: 0,
  sampling_steps: 0,
};

/** A1111's progress formula: 0.01 + finished iterations + the running one's share, and the rest's seconds. */
function estimate(jobNo: number, jobCount: number, step: number, steps: number, elapsedS: number) {
  let progress = 0.01 + jobNo / jobCount;
  if (steps > 0) progress += (1 / jobCount) * (step / steps);
  return { progress: Math.min(progress, 1), eta_relative: elapsedS / progress - elapsedS };
}

/**
 * GET /sdapi/v1/progress: the oldest running A1111 txt2img or img2img (else the oldest waiting one), else a running /v1
 * generation, else idle. current_image is the latest live preview of the batch's first image (A1111 jobs make them
 * as the live-preview settings say, /v1 generations when they ask for them), null when there is none or the
 * client skips it.
 */
export function progressOf(
  host: ModelHost,
  session: A1111Session,
  skipCurrentImage = false,
  now = performance.now(),
): A1111Progress {
  const jobs = [...session.jobs];
  const job = jobs.find((j) => j.running) ?? jobs[0];
  if (job) {
    const elapsedS = (now - job.startedAt) / 1000;
    return {
      ...estimate(job.iteration, job.nIter, job.step, job.steps, elapsedS),
      state: {
        skipped: job.skipped,
        interrupted: job.interrupted,
        stopping_generation: false,
        job: job.nIter > 1 ? `Batch ${job.iteration + 1} out of ${job.nIter}` : `scripts_${job.route}`,
        job_count: job.nIter,
        job_timestamp: job.timestamp,
        job_no: job.iteration,
        sampling_step: job.step,
        sampling_steps: job.steps,
      },
      current_image: skipCurrentImage ? null : job.currentImage,
      textinfo: job.running
        ? null
        : job.queuePosition > 0
          ? `Waiting in sdx's queue (position ${job.queuePosition})`
          : "Starting",
    };
  }
  const running = host.progress(now)[0];
  if (running) {
    return {
      ...estimate(0, 1, running.step, running.total, running.elapsedMs / 1000),
      state: {
        ...IDLE_STATE,
        job: "sdx generate",
        job_count: 1,
        sampling_step: running.step,
        sampling_steps: running.total,
      },
      current_image:
        skipCurrentImage || !running.preview ? null : Buffer.from(running.preview.png).toString("base64"),
      textinfo: `sdx /v1/generate on ${running.model}`,
    };
  }
  const busy = host.admission.running + host.admission.queued;
  if (busy > 0) {
    return {
      progress: 0.01,
      eta_relative: 0,
      state: { ...IDLE_STATE, job: "sdx generate", job_count: busy },
      current_image: null,
      textinfo: `${busy} sdx generation${busy === 1 ? "" : "s"} starting or queued`,
    };
  }
  return { progress: 0, eta_relative: 0, state: { ...IDLE_STATE }, current_image: null, textinfo: null };
}

/**
 * POST /sdapi/v1/interrupt: like A1111's, stops whatever runs: every running generation (/v1 ones too) stops
 * before its next step, and A1111 txt2img and img2img calls run no further iterations.
 */
export function interrupt(host: ModelHost, session: A1111Session): void {
  for (const job of session.jobs) {
    job.interrupted = true;
    job.controller.abort();
  }
  host.interrupt();
}

/** POST /sdapi/v1/skip: A1111 txt2img and img2img calls drop their running iteration and go on with the next. */
export function skip(session: A1111Session): void {
  for (const job of session.jobs) {
    job.skipped = true;
    job.controller.abort();
  }
}
