// The page: connects to the server (its state, the spec's limits, models and samplers), asks for the API key
// when the server needs one, and runs generations with a live preview, progress, cancel and a results grid.
import { ApiProblem, apiFetch, forgetKey, generateStream, getJson, hasKey, whenKeyNeeded } from "./api.js";
import { applyModels, applySchedulers, applySpec, fillFrom, readRequest, wireForm } from "./form.js";
import { addCard, pngUrl } from "./results.js";

const $ = (id) => document.getElementById(id);
const live = $("live");
const progress = $("progress");
const liveImage = $("live-image");

function setState(state, text) {
  live.dataset.state = state;
  $("status").textContent = text;
}

/** An error in the API's shape (message, and each rejected field with its allowed values), or any other. */
function showError(error) {
  const body = error instanceof ApiProblem ? error.body : { message: String(error?.message ?? error) };
  const box = $("error");
  const fields = (body.fields ?? []).map((f) => {
    const allowed = f.allowed ? ` (allowed: ${f.allowed.join(", ")})` : "";
    return Object.assign(document.createElement("li"), { textContent: `${f.field} ${f.message}${allowed}` });
  });
  const list = document.createElement("ul");
  list.append(...fields);
  box.replaceChildren(Object.assign(document.createElement("p"), { textContent: body.message }));
  if (fields.length > 0) box.append(list);
  box.hidden = false;
}

function showWarnings(warnings) {
  const list = $("warnings");
  list.replaceChildren(
    ...warnings.map((w) => Object.assign(document.createElement("li"), { textContent: w })),
  );
  list.hidden = warnings.length === 0;
}

// The key dialog: one prompt at a time, however many requests were refused together.
let keyPrompt = null;
whenKeyNeeded((refused) => {
  keyPrompt ??= new Promise((resolve) => {
    const dialog = $("key-dialog");
    const input = $("api-key");
    $("key-message").textContent = refused
      ? "The server refused that key. Enter its API key (--api-key / SDX_API_KEY)."
      : "This server needs an API key. It is kept in this browser tab only.";
    input.value = "";
    const finish = (key) => {
      keyPrompt = null;
      dialog.close();
      resolve(key);
    };
    $("key-form").onsubmit = (event) => {
      event.preventDefault();
      finish(input.value.trim() || null);
    };
    $("key-cancel").onclick = () => finish(null);
    dialog.oncancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    dialog.showModal();
    input.focus();
  });
  return keyPrompt;
});

const keyButton = $("forget-key");
keyButton.addEventListener("click", () => {
  if (hasKey()) {
    forgetKey();
    keyButton.hidden = true;
  } else connect();
});

async function showHealth() {
  const health = await (await apiFetch("health")).json();
  $("server").textContent = health.message;
  $("server").dataset.status = health.status;
  if (health.status === "loading") setTimeout(showHealth, 1000);
}

/** The server's state, the spec's limits and defaults, its samplers and models; the form works after this. */
async function connect() {
  $("generate").disabled = true;
  try {
    const [spec] = await Promise.all([getJson("swagger/json"), showHealth()]);
    const defaults = applySpec(spec);
    const [models, schedulers] = await Promise.all([getJson("v1/models"), getJson("v1/schedulers")]);
    applySchedulers(schedulers, defaults.scheduler);
    applyModels(models);
    $("error").hidden = true;
    $("generate").disabled = false;
    keyButton.textContent = "Forget API key";
    keyButton.hidden = !hasKey();
  } catch (error) {
    showError(error);
    if (error instanceof ApiProblem && error.body.code === "unauthorized") {
      keyButton.textContent = "Enter API key";
      keyButton.hidden = false;
    }
  }
}

let running = null;

/** One generation: its events drive the progress bar, the live preview and the grid. */
async function generate() {
  const controller = new AbortController();
  running = controller;
  $("generate").disabled = true;
  $("cancel").disabled = false;
  $("error").hidden = true;
  showWarnings([]);
  progress.removeAttribute("value");
  setState("sending", "Sending…");
  const run = { metadata: null, cards: [], last: null };
  const use = (seed) => () => {
    fillFrom(run.metadata.parameters, run.metadata.model.name, seed);
    setState(live.dataset.state, `Settings of seed ${seed} are in the form.`);
    $("prompt").focus();
  };
  const on = {
    queued: ({ position }) =>
      setState("queued", position === 0 ? "Starting…" : `Waiting in the queue (position ${position}).`),
    started: () => setState("running", "Started."),
    loading: ({ model }) => setState("loading", `Loading ${model}…`),
    step: ({ step, total, eta_ms }) => {
      progress.max = total;
      progress.value = step;
      setState("running", `Step ${step} of ${total} · about ${Math.ceil(eta_ms / 1000)} s left`);
    },
    preview: ({ image, step, total, method, png }) => {
      liveImage.src = `data:image/png;base64,${png}`;
      liveImage.dataset.kind = "preview";
      liveImage.classList.toggle("pixelated", method === "approx");
      liveImage.alt = `Preview of image ${image + 1} after step ${step} of ${total}`;
      liveImage.hidden = false;
    },
    image: ({ index, seed, png }) => {
      const url = pngUrl(png);
      const card = addCard($("grid"), run.last, { index, seed, url }, use(seed));
      run.last = card.card;
      run.cards.push(card);
      if (run.cards.length === 1) {
        liveImage.src = url;
        liveImage.dataset.kind = "result";
        liveImage.classList.remove("pixelated");
        liveImage.alt = `Image ${index + 1}, seed ${seed}`;
        liveImage.hidden = false;
      }
    },
    done: ({ metadata, warnings }) => {
      run.metadata = metadata;
      for (const card of run.cards) card.enable();
      showWarnings(warnings);
      progress.value = progress.max;
      setState("done", `Done in ${(metadata.timings.total_ms / 1000).toFixed(1)} s.`);
    },
    error: (body) => {
      if (body.code === "cancelled") setState("cancelled", "Cancelled.");
      else {
        setState("error", "Failed.");
        showError(new ApiProblem(body));
      }
    },
  };
  try {
    await generateStream(await readRequest(), controller.signal, (event, data) => on[event]?.(data));
    if (!["done", "error", "cancelled"].includes(live.dataset.state)) {
      throw new Error("The server closed the stream before the generation finished.");
    }
  } catch (error) {
    if (controller.signal.aborted) setState("cancelled", "Cancelled.");
    else {
      setState("error", "Failed.");
      showError(error);
    }
  } finally {
    if (!progress.hasAttribute("value")) progress.value = 0;
    running = null;
    $("generate").disabled = false;
    $("cancel").disabled = true;
    showHealth().catch(() => {});
  }
}

$("form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (!running) generate();
});
$("cancel").addEventListener("click", () => running?.abort());
wireForm();
connect();
