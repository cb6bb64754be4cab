// The page's only way to the server: fetch with the API key (kept in sessionStorage, asked for on a 401
// `unauthorized`), the API's error bodies, and POST /v1/generate's event stream. Paths are relative to the
// page, so it also works where a proxy serves the server under a path.
import { createParser } from "./eventsource-parser/index.js";

const KEY_ITEM = "sdx.apiKey";

/** An answer in the API's error shape: `{ status, code, message, fields? }`. */
export class ApiProblem extends Error {
  constructor(body) {
    super(body.message);
    this.body = body;
  }
}

let askForKey = async () => null;

/** `ask(refused)` resolves to a key to try, or null to give up; `refused` says whether a key was sent. */
export function whenKeyNeeded(ask) {
  askForKey = ask;
}

export const hasKey = () => sessionStorage.getItem(KEY_ITEM) !== null;
export const forgetKey = () => sessionStorage.removeItem(KEY_ITEM);

/** The error body of a failed answer, or one made from its status when it is not JSON. */
async function problemOf(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === "string") return body;
  } catch {}
  return {
    status: response.status,
    code: "http",
    message: text || `${response.status} ${response.statusText}`,
  };
}

/** fetch with the key; asks for one (and tries again) while the server answers 401 `unauthorized`. */
export async function apiFetch(path, init = {}) {
  for (;;) {
    const key = sessionStorage.getItem(KEY_ITEM);
    const headers = new Headers(init.headers);
    if (key !== null) headers.set("authorization", `Bearer ${key}`);
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) return response;
    const problem = await problemOf(response);
    if (problem.code !== "unauthorized") throw new ApiProblem(problem);
    const next = await askForKey(key !== null);
    if (next === null) throw new ApiProblem(problem);
    sessionStorage.setItem(KEY_ITEM, next);
  }
}

/** GET a JSON document; an error answer is thrown as an ApiProblem. */
export async function getJson(path) {
  const response = await apiFetch(path);
  if (!response.ok) throw new ApiProblem(await problemOf(response));
  return response.json();
}

/**
 * POST /v1/generate as a stream: `onEvent(name, data)` for each server-sent event. Aborting `signal` closes the
 * connection, which cancels the generation on the server.
 */
export async function generateStream(request, signal, onEvent) {
  const response = await apiFetch("v1/generate", {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(request),
    signal,
  });
  if (!response.ok) throw new ApiProblem(await problemOf(response));
  const parser = createParser({ onEvent: (message) => onEvent(message.event, JSON.parse(message.data)) });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    parser.feed(value);
  }
}
