// The settings form: limits and defaults from the published spec (/swagger/json) and the server's lists, the
// request it makes, and filling it back from a result's applied parameters.

const $ = (id) => document.getElementById(id);

/** Number inputs named as the request's fields. */
const NUMBER_FIELDS = ["num_steps", "guidance_scale", "width", "height", "seed", "batch_size"];

let models = [];
let schedulers = [];

/** An input's bounds, step, default and length from the field's JSON schema. */
function constrain(input, schema, withDefault = true) {
  if (!schema) return;
  const min = schema.minimum ?? schema.exclusiveMinimum;
  if (min !== undefined) input.min = String(min);
  if (schema.maximum !== undefined) input.max = String(schema.maximum);
  if (schema.multipleOf !== undefined) input.step = String(schema.multipleOf);
  if (schema.maxLength !== undefined && input instanceof HTMLTextAreaElement)
    input.maxLength = schema.maxLength;
  if (withDefault && schema.default !== undefined && input.value === "") input.value = String(schema.default);
}

function fillSelect(select, options, selected) {
  select.replaceChildren(
    ...options.map(({ value, label, disabled = false, title = "" }) => {
      const option = new Option(label, value, false, value === selected);
      option.disabled = disabled;
      option.title = title;
      return option;
    }),
  );
}

/** The request schema's limits and defaults onto the inputs; returns the default sampler. */
export function applySpec(spec) {
  const fields = spec?.components?.schemas?.GenerateRequest?.properties ?? {};
  for (const id of ["prompt", "negative_prompt", ...NUMBER_FIELDS, "strength"]) constrain($(id), fields[id]);
  // The hires fields' defaults depend on the first pass (steps 0 = num_steps): left empty, the server's apply.
  const hires = fields.hires?.properties ?? {};
  for (const name of ["scale", "strength", "steps"]) constrain($(`hires_${name}`), hires[name], false);
  const upscalers = hires.upscaler?.enum ?? [];
  fillSelect(
    $("hires_upscaler"),
    upscalers.map((u) => ({ value: u, label: u })),
    hires.upscaler?.default,
  );
  const method = fields.preview?.properties?.method ?? {};
  fillSelect(
    $("preview_method"),
    (method.enum ?? []).map((m) => ({ value: m, label: m })),
    method.default,
  );
  return { scheduler: fields.scheduler_type?.default };
}

/** The model's native size and size multiple into width and height. */
function useNativeSize() {
  const model = models.find((m) => m.name === $("model").value);
  if (!model) return;
  for (const id of ["width", "height"]) {
    $(id).step = String(model.size_multiple);
    $(id).value = String(model.native_size);
  }
}

/** GET /v1/models into the model list, the default model chosen and its size filled in. */
export function applyModels(list) {
  models = list.models;
  const chosen = list.default_model ?? models.find((m) => m.loadable)?.name;
  fillSelect(
    $("model"),
    models.map((m) => ({
      value: m.name,
      label: m.kind ? `${m.name} (${m.kind})` : m.name,
      disabled: !m.loadable,
      title: m.problem ?? "",
    })),
    chosen,
  );
  useNativeSize();
}

function updateKarras() {
  const scheduler = schedulers.find((s) => s.name === $("scheduler_type").value);
  const box = $("karras_sigmas");
  box.disabled = !scheduler?.karras;
  if (box.disabled) box.checked = false;
}

/** GET /v1/schedulers into the sampler list; Karras sigmas only where the sampler takes them. */
export function applySchedulers(list, selected) {
  schedulers = list.schedulers;
  fillSelect(
    $("scheduler_type"),
    schedulers.map((s) => ({ value: s.name, label: s.display_name, title: `${s.name}: ${s.diffusers}` })),
    selected,
  );
  updateKarras();
}

export function wireForm() {
  $("model").addEventListener("change", useNativeSize);
  $("scheduler_type").addEventListener("change", updateKarras);
  $("clear-images").addEventListener("click", () => {
    $("init_image").value = "";
    $("mask_image").value = "";
  });
}

const dataUrl = (file) =>
  new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });

/** The POST /v1/generate body: what the form holds; empty fields are left to the server's defaults. */
export async function readRequest() {
  const request = { prompt: $("prompt").value };
  const text = (id) => {
    if ($(id).value !== "") request[id] = $(id).value;
  };
  const number = (id, into = request, key = id) => {
    const value = $(id).valueAsNumber;
    if (!Number.isNaN(value)) into[key] = value;
  };
  text("negative_prompt");
  text("model");
  text("scheduler_type");
  if ($("karras_sigmas").checked) request.karras_sigmas = true;
  for (const id of NUMBER_FIELDS) number(id);
  const [init] = $("init_image").files;
  const [mask] = $("mask_image").files;
  if (init) {
    request.init_image = await dataUrl(init);
    number("strength");
  }
  if (mask) request.mask_image = await dataUrl(mask);
  if ($("hires").checked) {
    const hires = { upscaler: $("hires_upscaler").value };
    for (const name of ["scale", "strength", "steps"]) number(`hires_${name}`, hires, name);
    request.hires = hires;
  }
  if ($("preview").checked) request.preview = { every: 1, method: $("preview_method").value };
  return request;
}

/** A result's applied parameters (done.metadata.parameters) back into the form, with that image's seed. */
export function fillFrom(parameters, modelName, seed) {
  $("prompt").value = parameters.prompt;
  $("negative_prompt").value = parameters.negative_prompt ?? "";
  if (models.some((m) => m.name === modelName)) $("model").value = modelName;
  $("scheduler_type").value = parameters.scheduler_type;
  updateKarras();
  $("karras_sigmas").checked = parameters.karras_sigmas && !$("karras_sigmas").disabled;
  for (const id of ["num_steps", "guidance_scale", "width", "height"]) $(id).value = String(parameters[id]);
  $("seed").value = String(seed);
  $("strength").value = parameters.strength === null ? "" : String(parameters.strength);
  const hires = parameters.hires;
  $("hires").checked = hires !== null;
  if (hires) {
    $("hires_upscaler").value = hires.upscaler;
    $("hires_scale").value = String(hires.scale ?? hires.width / parameters.width);
    $("hires_strength").value = String(hires.strength);
    $("hires_steps").value = String(hires.steps);
  }
}
