/** Admission control on its own: slots, the bounded queue, positions, aborts while queued, drain and idle. */
import { expect, test } from "bun:test";
import { Admission, AdmissionRefused } from "../../api/engine/admission.ts";
import { GenerationAborted } from "../../api/engine/pipeline/errors.ts";

test("one slot, a queue of two: the fourth is refused at once with a Retry-After from the step time", async () => {
  const admission = new Admission({ concurrency: 1, maxQueue: 2, stepMs: () => 500 });
  const a = admission.enter(10);
  const b = admission.enter(10);
  const c = admission.enter(10);
  expect([a.position(), b.position(), c.position()]).toEqual([0, 1, 2]);
  let refusal: unknown;
  try {
    admission.enter(10);
  } catch (e) {
    refusal = e;
  }
  expect(refusal).toBeInstanceOf(AdmissionRefused);
  // (10 + 10 queued + 10/2 running) steps × 0.5 s.
  expect((refusal as AdmissionRefused).retryAfterS).toBe(13);
  const positions: number[] = [];
  c.onPosition = (p) => positions.push(p);
  a.release();
  await b.started;
  expect([admission.running, admission.queued, c.position()]).toEqual([1, 1, 1]);
  expect(positions).toEqual([1]);
  b.release();
  await c.started;
  c.release();
  expect([admission.running, admission.queued]).toEqual([0, 0]);
});

test("a queued request whose signal aborts leaves the queue; the next one moves up", async () => {
  let cancelled = 0;
  const admission = new Admission({ concurrency: 1, maxQueue: 4, onQueuedCancel: () => cancelled++ });
  const a = admission.enter(1);
  const controller = new AbortController();
  const b = admission.enter(1, controller.signal);
  const c = admission.enter(1);
  controller.abort();
  await expect(b.started).rejects.toBeInstanceOf(GenerationAborted);
  expect([admission.queued, c.position(), cancelled]).toEqual([1, 1, 1]);
  b.release();
  a.release();
  await c.started;
  c.release();
  expect(admission.running).toBe(0);
});

test("draining refuses new requests and idle resolves once the last one is released", async () => {
  const admission = new Admission({ concurrency: 1, maxQueue: 4 });
  const a = admission.enter(1);
  const b = admission.enter(1);
  admission.drain();
  expect(() => admission.enter(1)).toThrow(AdmissionRefused);
  let idle = false;
  const done = admission.idle().then(() => {
    idle = true;
  });
  a.release();
  await b.started;
  expect(idle).toBe(false);
  b.release();
  await done;
  expect(idle).toBe(true);
});
