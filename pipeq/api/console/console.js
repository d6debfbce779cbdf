// The pipeq job console: pick a model, give it input and parameters, follow the job, see its result drawn.
//
// Results are untrusted data: the DOM is built with createElement and textContent only, never from HTML strings.
// The page's Content-Security-Policy allows no inline script or style attribute; styles set here go through
// element.style, which it allows.

const FINAL = new Set(["succeeded", "failed", "canceled", "expired"]);
const TOKEN_KEY = "pipeq.console.token";
const CLASSIFICATION = new Set([
  "text-classification",
  "image-classification",
  "audio-classification",
  "zero-shot-classification",
  "zero-shot-image-classification",
  "zero-shot-audio-classification",
]);
const DETECTION = new Set(["object-detection", "zero-shot-object-detection"]);
const PALETTE = [
  [47, 95, 208],
  [214, 69, 65],
  [46, 158, 84],
  [230, 145, 30],
  [142, 68, 173],
  [23, 160, 170],
  [200, 80, 150],
  [128, 128, 40],
];
const TYPES = {
  wav: "audio/wav", mp3: "audio/mpeg", flac: "audio/flac", ogg: "audio/ogg", m4a: "audio/mp4", opus: "audio/ogg",
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", webp: "image/webp", gif: "image/gif", bmp: "image/bmp",
  tif: "image/tiff", tiff: "image/tiff", mp4: "video/mp4", webm: "video/webm", mov: "video/quicktime",
  mkv: "video/x-matroska", avi: "video/x-msvideo", pdf: "application/pdf", txt: "text/plain",
};

const state = {
  models: [],
  model: null,
  fields: [],
  busy: false,
  controller: null,
  jobIds: [],
  urls: [],
  loads: 0,
};

const $ = (id) => document.getElementById(id);

/** An element: ``options`` sets className, text (as textContent), dataset, attrs and plain properties; children
 * are nodes or strings (strings become text nodes). */
function el(tag, options = {}, ...children) {
  const node = document.createElement(tag);
  const { className, text, dataset, attrs, ...properties } = options;
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [key, value] of Object.entries(dataset || {})) node.dataset[key] = String(value);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
  Object.assign(node, properties);
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

const isNumber = (value) => typeof value === "number" && Number.isFinite(value);
const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

function formatBytes(bytes) {
  if (!isNumber(bytes)) return "";
  const units = ["bytes", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function formatTime(seconds) {
  const minutes = Math.floor(seconds / 60);
  const rest = seconds - minutes * 60;
  return `${minutes}:${rest.toFixed(2).padStart(5, "0")}`;
}

function percent(score) {
  return isNumber(score) ? `${(score * 100).toFixed(1)}%` : "";
}

function colourOf(index) {
  return PALETTE[((index % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

function css([red, green, blue], alpha = 1) {
  return `rgba(${red}, ${green}, ${blue}, ${alpha})`;
}

function labelIndex(label) {
  let hash = 0;
  for (const char of String(label)) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash;
}

// --- the token -----------------------------------------------------------------------------------------------

function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

function saveToken(value) {
  try {
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage off: the token lasts as long as the page
  }
  state.token = value;
}

// --- the API ---------------------------------------------------------------------------------------------------

class ProblemError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || "error");
    this.problem = problem;
  }
}

function problem(title, detail, errors = []) {
  return new ProblemError({ title, detail, errors });
}

async function problemOf(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    body = {};
  }
  if (!isObject(body)) body = {};
  return {
    status: response.status,
    title: typeof body.title === "string" ? body.title : `HTTP ${response.status}`,
    detail:
      typeof body.detail === "string"
        ? body.detail
        : `the API answered ${response.status} ${response.statusText}`.trim(),
    errors: Array.isArray(body.errors) ? body.errors : [],
  };
}

/** A request to the API with the token; a ProblemError for an error answer or none at all. */
async function request(path, { method = "GET", json, headers = {}, signal } = {}) {
  const sent = { Accept: "application/json", ...headers };
  const secret = state.token ?? token();
  if (secret) sent.Authorization = `Bearer ${secret}`;
  let body;
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers: sent, body, signal, cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw problem("The API did not answer", `${method} ${path}: ${error.message}`);
  }
  if (!response.ok) throw new ProblemError(await problemOf(response));
  return response;
}

async function requestJson(path, options) {
  return (await request(path, options)).json();
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      },
      { once: true },
    );
  });
}

/** The server-sent events of a fetch response, as {type, data}, parsed by hand: EventSource sends no
 * Authorization header. */
async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let type = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        let line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length) yield { type: type || "message", data: data.join("\n") };
          type = "";
          data = [];
        } else if (!line.startsWith(":")) {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          let text = colon < 0 ? "" : line.slice(colon + 1);
          if (text.startsWith(" ")) text = text.slice(1);
          if (field === "event") type = text;
          else if (field === "data") data.push(text);
        }
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// --- errors, state and summary ---------------------------------------------------------------------------------

function showError(details) {
  const box = $("error");
  box.replaceChildren(el("p", { className: "error-title", text: details.title || "Error" }));
  if (details.detail) box.append(el("p", { className: "error-detail", text: details.detail }));
  const errors = (details.errors || []).filter(isObject);
  if (errors.length) {
    box.append(
      el("ul", {}, ...errors.map((entry) => el("li", { text: `${entry.field ?? "?"}: ${entry.detail ?? ""}` }))),
    );
  }
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function report(error) {
  if (error?.name === "AbortError") return;
  if (error instanceof ProblemError) {
    showError(error.problem);
  } else {
    showError({ title: "The console failed", detail: String(error?.message || error) });
    console.error(error);
  }
}

function setState(name) {
  $("state").textContent = name;
  $("state").dataset.state = name;
}

function showProgress(progress, jobState) {
  const bar = $("progress");
  if (isObject(progress) && isNumber(progress.fraction)) {
    bar.value = Math.min(1, Math.max(0, progress.fraction));
  } else if (jobState === "succeeded") {
    bar.value = 1;
  } else if (!FINAL.has(jobState)) {
    bar.removeAttribute("value"); // indeterminate
  }
  $("progress-detail").textContent = isObject(progress) && typeof progress.detail === "string" ? progress.detail : "";
}

function showJob(view) {
  setState(view.state);
  showProgress(view.progress, view.state);
}

function addSummary(term, value) {
  $("summary").append(el("dt", { text: term }), el("dd", { text: value }));
}

function clip(text, length = 400) {
  return text.length > length ? `${text.slice(0, length)}… (${text.length} characters)` : text;
}

function resetResult() {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  state.jobIds = [];
  $("result").replaceChildren();
  delete $("result").dataset.rendered;
  delete $("result").dataset.jobs;
  $("summary").replaceChildren();
  $("progress").value = 0;
  $("progress-detail").textContent = "";
}

function objectUrl(blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  return url;
}

function setBusy(busy) {
  state.busy = busy;
  $("submit").disabled = busy || !state.model;
  $("cancel").hidden = !busy;
  $("cancel").disabled = false;
}

// --- models and the form ----------------------------------------------------------------------------------------

async function loadModels() {
  const load = ++state.loads;
  const select = $("model");
  select.disabled = true;
  select.dataset.state = "loading";
  $("submit").disabled = true;
  clearError();
  let models;
  try {
    const data = await requestJson("/v1/models");
    models = Array.isArray(data.models) ? data.models.filter((model) => isObject(model) && model.name) : [];
  } catch (error) {
    if (load !== state.loads) return;
    state.models = [];
    select.replaceChildren(el("option", { value: "", text: "no models: see the error" }));
    renderModel();
    report(error);
    select.dataset.state = "error";
    return;
  }
  if (load !== state.loads) return;
  state.models = models;
  const tasks = new Map();
  for (const model of models) {
    if (!tasks.has(model.task)) tasks.set(model.task, []);
    tasks.get(model.task).push(model);
  }
  const groups = [...tasks.keys()].sort().map((task) =>
    el(
      "optgroup",
      { label: task },
      ...tasks.get(task).map((model) =>
        el("option", { value: model.name, text: model.default ? `${model.name} (default)` : model.name }),
      ),
    ),
  );
  const wanted = select.value;
  select.replaceChildren(...groups);
  if (!models.length) select.append(el("option", { value: "", text: "no models this token may use" }));
  if (models.some((model) => model.name === wanted)) select.value = wanted;
  select.disabled = models.length === 0;
  renderModel();
  select.dataset.state = "ready";
}

function currentModel() {
  return state.models.find((model) => model.name === $("model").value) || null;
}

function renderModel() {
  const model = currentModel();
  state.model = model;
  const form = $("job-form");
  if (!model) {
    $("model-info").textContent = "";
    $("text-group").hidden = true;
    $("file-group").hidden = true;
    $("parameters").hidden = true;
    $("parameter-fields").replaceChildren();
    state.fields = [];
    delete form.dataset.model;
    setBusy(state.busy);
    return;
  }
  const input = isObject(model.input) ? model.input : {};
  const modality = input.modality;
  const textual = modality === "text";
  const dict = modality === "dict";
  $("model-info").textContent = `task ${model.task}; input: ${modality || "?"}`;
  $("text-group").hidden = !(textual || dict);
  $("file-group").hidden = textual;
  const text = $("text-input");
  text.classList.toggle("json", dict);
  if (model.task === "feature-extraction") {
    $("text-label").textContent = "Texts, one per line";
    $("text-hint").textContent =
      "Each non-empty line is one job; the other lines are ranked by cosine similarity to the first.";
    text.placeholder = "the first line is compared with\neach of the others";
  } else if (textual) {
    $("text-label").textContent = "Text";
    $("text-hint").textContent = isNumber(input.max_text_chars) ? `up to ${input.max_text_chars} characters` : "";
    text.placeholder = "";
  } else if (dict) {
    const keys = Array.isArray(input.dict_keys) ? input.dict_keys.join(", ") : "";
    const required = Array.isArray(input.required_dict_keys) ? input.required_dict_keys.join(", ") : "";
    $("text-label").textContent = "Input (a JSON object)";
    $("text-hint").textContent =
      `keys: ${keys}${required ? `; required: ${required}` : ""}. ` +
      'Write "$1", "$2", … for the files below (uploaded in the order picked).';
    text.placeholder = "{}";
  }
  const file = $("file-input");
  file.accept = Array.isArray(input.upload_types) ? input.upload_types.join(",") : "";
  file.multiple = dict;
  const kind = modality ? modality[0].toUpperCase() + modality.slice(1) : "Input";
  $("file-label").textContent = dict ? "Files (optional)" : `${kind} file`;
  $("file-hint").textContent = isNumber(input.max_media_bytes) ? `up to ${formatBytes(input.max_media_bytes)}` : "";
  renderParameters(model.parameters);
  form.dataset.model = model.name;
  setBusy(state.busy);
}

/** The non-null options of a schema (its anyOf / oneOf, or itself). */
function optionsOf(schema) {
  const list = Array.isArray(schema.anyOf) ? schema.anyOf : Array.isArray(schema.oneOf) ? schema.oneOf : [schema];
  return list.filter((option) => isObject(option) && option.type !== "null");
}

function isStringList(option) {
  return option.type === "array" && isObject(option.items) && option.items.type === "string";
}

/** How a parameter is asked for: checkbox, number, choice (a select), text, list (comma-separated) or json. */
function widgetOf(schema) {
  const options = optionsOf(schema);
  if (options.length === 1) {
    const [option] = options;
    if (option.type === "boolean") return { kind: "checkbox" };
    if (option.type === "number" || option.type === "integer") return { kind: "number", schema: option };
    if (Array.isArray(option.enum)) return { kind: "choice", values: option.enum };
    if (option.type === "string") return { kind: "text", schema: option };
    if (isStringList(option)) return { kind: "list" };
    return { kind: "json" };
  }
  if (options.length > 1 && options.every((option) => option.type === "boolean" || Array.isArray(option.enum))) {
    const values = options.flatMap((option) => (option.type === "boolean" ? [true, false] : option.enum));
    return { kind: "choice", values };
  }
  if (options.some(isStringList) && options.every((option) => isStringList(option) || option.type === "string")) {
    return { kind: "list" };
  }
  return { kind: "json" };
}

class FieldError extends Error {
  constructor(field, detail) {
    super(detail);
    this.entry = { field: `parameters.${field}`, detail };
  }
}

function parameterField(name, schema, required) {
  const id = `param-${name}`;
  const widget = widgetOf(schema);
  const label = el("label", { htmlFor: id, text: name });
  if (required) label.append(el("span", { className: "required", text: "*", attrs: { "aria-hidden": "true" } }));
  const notes = [typeof schema.description === "string" ? schema.description : ""];
  if (widget.kind === "list") notes.push("comma-separated");
  if (widget.kind === "json") notes.push("as JSON");
  const hint = el("p", { className: "hint", id: `${id}-hint`, text: notes.filter(Boolean).join("; ") });
  let control;
  let read;
  if (widget.kind === "checkbox") {
    control = el("input", { type: "checkbox" });
    let touched = false;
    control.addEventListener("change", () => {
      touched = true;
    });
    read = () => (touched ? control.checked : undefined);
  } else if (widget.kind === "number") {
    const integer = widget.schema.type === "integer";
    control = el("input", { type: "number", step: integer ? "1" : "any" });
    if (isNumber(widget.schema.minimum)) control.min = String(widget.schema.minimum);
    if (isNumber(widget.schema.maximum)) control.max = String(widget.schema.maximum);
    read = () => {
      const raw = control.value.trim();
      if (raw === "") {
        if (control.validity.badInput) throw new FieldError(name, "not a number");
        return undefined;
      }
      const value = Number(raw);
      if (!Number.isFinite(value)) throw new FieldError(name, "not a number");
      if (integer && !Number.isInteger(value)) throw new FieldError(name, "a whole number");
      return value;
    };
  } else if (widget.kind === "choice") {
    control = el(
      "select",
      {},
      el("option", { value: "", text: "(default)" }),
      ...widget.values.map((value) => el("option", { value: JSON.stringify(value), text: String(value) })),
    );
    read = () => (control.value === "" ? undefined : JSON.parse(control.value));
  } else if (widget.kind === "text") {
    control = el("input", { type: "text", spellcheck: false });
    if (isNumber(widget.schema.maxLength)) control.maxLength = widget.schema.maxLength;
    read = () => (control.value === "" ? undefined : control.value);
  } else if (widget.kind === "list") {
    control = el("input", { type: "text", placeholder: "first, second, third", spellcheck: false });
    read = () => {
      const items = control.value
        .split(",")
        .map((item) => item.trim())
        .filter(Boolean);
      return items.length ? items : undefined;
    };
  } else {
    control = el("textarea", { rows: 2, className: "json", spellcheck: false });
    read = () => {
      const raw = control.value.trim();
      if (raw === "") return undefined;
      try {
        return JSON.parse(raw);
      } catch (error) {
        throw new FieldError(name, `not JSON: ${error.message}`);
      }
    };
  }
  control.id = id;
  control.name = name;
  control.required = required;
  control.setAttribute("aria-describedby", hint.id);
  const node =
    widget.kind === "checkbox"
      ? el("div", { className: "field check" }, control, label, hint)
      : el("div", { className: "field" }, label, control, hint);
  node.dataset.kind = widget.kind;
  return { name, node, read, required };
}

function renderParameters(schema) {
  const properties = isObject(schema) && isObject(schema.properties) ? schema.properties : {};
  const required = new Set(isObject(schema) && Array.isArray(schema.required) ? schema.required : []);
  state.fields = Object.entries(properties).map(([name, property]) =>
    parameterField(name, isObject(property) ? property : {}, required.has(name)),
  );
  $("parameter-fields").replaceChildren(...state.fields.map((field) => field.node));
  $("parameters").hidden = state.fields.length === 0;
}

/** The parameters the user filled in; a ProblemError listing the fields at fault. */
function collectParameters() {
  const parameters = {};
  const errors = [];
  for (const field of state.fields) {
    try {
      const value = field.read();
      if (value !== undefined) parameters[field.name] = value;
      else if (field.required) errors.push({ field: `parameters.${field.name}`, detail: "required" });
    } catch (error) {
      if (!(error instanceof FieldError)) throw error;
      errors.push(error.entry);
    }
  }
  if (errors.length) throw problem("Check the parameters", "some parameters are missing or malformed", errors);
  return parameters;
}

// --- input and uploads -------------------------------------------------------------------------------------------

function typeOf(file) {
  if (file.type) return file.type.toLowerCase();
  const extension = file.name.includes(".") ? file.name.split(".").pop().toLowerCase() : "";
  return TYPES[extension] || "application/octet-stream";
}

/** Upload ``file`` straight to object storage with a presigned PUT; its ``s3://`` input. */
async function upload(file, signal) {
  setState("uploading");
  $("progress").removeAttribute("value");
  $("progress-detail").textContent = `${file.name} (${formatBytes(file.size)})`;
  const grant = await requestJson("/v1/uploads", {
    method: "POST",
    json: { content_type: typeOf(file), size: file.size, filename: file.name },
    signal,
  });
  const headers = {};
  for (const [name, value] of Object.entries(isObject(grant.headers) ? grant.headers : {})) {
    if (name.toLowerCase() !== "content-length") headers[name] = String(value); // the browser sets it
  }
  let where = "object storage";
  try {
    where = new URL(grant.url).origin;
  } catch {
    // kept generic
  }
  let response;
  try {
    response = await fetch(grant.url, {
      method: grant.method || "PUT",
      headers,
      body: file,
      signal,
      mode: "cors",
      credentials: "omit",
      referrerPolicy: "no-referrer",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw problem(
      "The upload was blocked",
      `The browser could not send ${file.name} to ${where} (${error.message}). Object storage must allow PUT ` +
        `from ${location.origin} in its CORS rules, and the API's Content-Security-Policy must allow ${where} ` +
        "(connect-src).",
      [{ field: "input", detail: "the file was not uploaded" }],
    );
  }
  if (!response.ok) {
    let message = "";
    try {
      message = (await response.text()).match(/<Message>([^<]{1,300})<\/Message>/)?.[1] || "";
    } catch {
      // no body
    }
    throw problem(
      "The upload was refused",
      `${where} answered ${response.status}${message ? `: ${message}` : ""}`,
      [{ field: "input", detail: "the file was not uploaded" }],
    );
  }
  return grant.input;
}

function replacePlaceholders(value, references) {
  if (typeof value === "string") {
    const match = /^\$(\d+)$/.exec(value);
    return match && references[Number(match[1]) - 1] ? references[Number(match[1]) - 1] : value;
  }
  if (Array.isArray(value)) return value.map((item) => replacePlaceholders(item, references));
  if (isObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([key, item]) => [key, replacePlaceholders(item, references)]));
  }
  return value;
}

/** The job's input (uploading files first), a line describing it, and the file shown with the result. */
async function prepareInput(model, signal) {
  const modality = model.input?.modality;
  if (modality === "text") {
    const text = $("text-input").value;
    if (!text.trim()) throw problem("Type some text first", "", [{ field: "input", detail: "empty" }]);
    return { input: text, echo: clip(text) };
  }
  const files = [...$("file-input").files];
  if (modality === "dict") {
    let input;
    try {
      input = JSON.parse($("text-input").value.trim() || "{}");
    } catch (error) {
      throw problem("The input is not JSON", error.message, [{ field: "input", detail: "not JSON" }]);
    }
    if (!isObject(input)) throw problem("The input is a JSON object", "", [{ field: "input", detail: "an object" }]);
    const references = [];
    for (const file of files) references.push(await upload(file, signal));
    input = replacePlaceholders(input, references);
    return { input, echo: clip(JSON.stringify(input)), file: files[0] };
  }
  const [file] = files;
  if (!file) throw problem("Pick a file first", "", [{ field: "input", detail: `a ${modality || "media"} file` }]);
  const input = await upload(file, signal);
  return { input, echo: `${file.name} (${formatBytes(file.size)})`, file };
}

// --- following jobs ----------------------------------------------------------------------------------------------

/** The job once final: its event stream, or long polls where the stream is refused or cut. */
async function follow(job, signal) {
  let view = job;
  showJob(view);
  const path = `/v1/jobs/${encodeURIComponent(job.id)}`;
  if (!FINAL.has(view.state)) {
    try {
      const response = await request(`${path}/events`, { headers: { Accept: "text/event-stream" }, signal });
      for await (const event of serverEvents(response)) {
        if (event.type === "state") {
          view = JSON.parse(event.data);
          showJob(view);
          if (FINAL.has(view.state)) break;
        } else if (event.type === "progress") {
          showProgress(JSON.parse(event.data), view.state);
        }
      }
    } catch (error) {
      if (error.name === "AbortError") throw error;
      if (error instanceof ProblemError && [401, 403, 404].includes(error.problem.status)) throw error;
      // too many streams, a cut connection, an error event: long polls below
    }
  }
  return finish(path, view, signal);
}

async function waitFor(id, signal) {
  const path = `/v1/jobs/${encodeURIComponent(id)}`;
  return finish(path, await requestJson(path, { signal }), signal);
}

async function finish(path, view, signal) {
  let latest = view;
  while (!FINAL.has(latest.state)) {
    const started = Date.now();
    latest = await requestJson(path, { headers: { Prefer: "wait=20" }, signal });
    if (!FINAL.has(latest.state) && Date.now() - started < 500) await sleep(1000, signal);
  }
  if (latest.state === "succeeded" && (latest.result_offloaded || latest.result === undefined)) {
    latest = await requestJson(path, { signal });
  }
  return latest;
}

function jobFailed(view) {
  if (view.state === "failed") {
    const error = isObject(view.error) ? view.error : {};
    showError({ title: "The job failed", detail: `${error.type || "error"}: ${error.message || "no message"}` });
  } else if (view.state === "expired") {
    showError({ title: "The job expired", detail: "it did not run before its deadline" });
  }
}

async function submit(event) {
  event.preventDefault();
  const model = state.model;
  if (!model || state.busy) return;
  clearError();
  resetResult();
  setBusy(true);
  const controller = new AbortController();
  state.controller = controller;
  try {
    const parameters = collectParameters();
    const base = { task: model.task, model: model.name };
    if (Object.keys(parameters).length) base.parameters = parameters;
    if (model.task === "feature-extraction") await runEmbeddings(base, controller.signal);
    else await runOne(model, base, controller.signal);
  } catch (error) {
    const aborted = error?.name === "AbortError";
    if (aborted) setState("canceled");
    else if (!FINAL.has($("state").dataset.state)) setState("error");
    report(error);
    $("progress").value = 0;
    $("progress-detail").textContent = "";
    $("result").dataset.rendered = aborted ? "canceled" : "error";
  } finally {
    state.controller = null;
    setBusy(false);
  }
}

async function runOne(model, base, signal) {
  addSummary("model", model.name);
  addSummary("task", model.task);
  if (base.parameters) addSummary("parameters", JSON.stringify(base.parameters));
  const { input, echo, file } = await prepareInput(model, signal);
  addSummary("input", echo);
  setState("submitting");
  const job = await requestJson("/v1/jobs", { method: "POST", json: { ...base, input }, signal });
  state.jobIds = [job.id];
  $("result").dataset.jobs = job.id;
  addSummary("job", job.id);
  const view = await follow(job, signal);
  showJob(view);
  if (view.state === "succeeded") {
    await renderResult(model.task, view.result, file);
  } else {
    jobFailed(view);
  }
  $("result").dataset.rendered = view.state;
}

async function cancel() {
  $("cancel").disabled = true;
  const ids = state.jobIds;
  if (!ids.length) {
    state.controller?.abort();
    return;
  }
  try {
    await Promise.all(ids.map((id) => request(`/v1/jobs/${encodeURIComponent(id)}/cancel`, { method: "POST" })));
  } catch (error) {
    report(error);
  }
}

// --- results -----------------------------------------------------------------------------------------------------

async function renderResult(task, result, file) {
  let nodes = null;
  if (CLASSIFICATION.has(task)) {
    const items = classificationItems(result);
    if (items) nodes = renderBars(items);
  } else if (task === "automatic-speech-recognition" && isObject(result)) {
    nodes = renderSpeech(result, file);
  } else if (DETECTION.has(task) && Array.isArray(result) && file) {
    nodes = await renderBoxes(result, file);
  } else if (task === "image-segmentation" && Array.isArray(result) && file) {
    nodes = await renderMasks(result, file);
  }
  if (!nodes) {
    $("result").replaceChildren(...renderGeneric(result));
    return;
  }
  $("result").replaceChildren(...nodes, jsonDetails(result));
}

/** [{label, score}] from a classification result: a list (possibly nested once) or zero-shot's labels/scores. */
function classificationItems(result) {
  if (isObject(result) && Array.isArray(result.labels) && Array.isArray(result.scores)) {
    return result.labels.map((label, index) => ({ label, score: result.scores[index] }));
  }
  let items = result;
  if (Array.isArray(items) && items.length === 1 && Array.isArray(items[0])) [items] = items;
  if (isObject(items)) items = [items];
  if (!Array.isArray(items) || !items.every((item) => isObject(item) && "label" in item)) return null;
  return items;
}

function renderBars(items) {
  const top = Math.max(1, ...items.map((item) => (isNumber(item.score) ? item.score : 0)));
  const list = el("ol", { className: "bars", attrs: { "aria-label": "score of each label" } });
  for (const item of items) {
    const score = isNumber(item.score) ? item.score : 0;
    const bar = el("span", { className: "bar", dataset: { label: item.label, score } });
    bar.style.width = `${(Math.max(0, score) / top) * 100}%`;
    list.append(
      el(
        "li",
        { className: "bar-row" },
        el("span", { className: "bar-label", text: item.label, title: String(item.label) }),
        el("span", { className: "bar-track" }, bar),
        el("span", { className: "bar-value", text: top > 1 ? score.toFixed(3) : percent(score) }),
      ),
    );
  }
  return [list];
}

function renderSpeech(result, file) {
  const nodes = [];
  let audio = null;
  if (file) {
    audio = el("audio", { className: "player", controls: true, preload: "metadata", src: objectUrl(file) });
    nodes.push(audio);
  }
  nodes.push(el("p", { className: "transcript", text: typeof result.text === "string" ? result.text : "" }));
  const chunks = Array.isArray(result.chunks) ? result.chunks.filter(isObject) : [];
  if (chunks.length) {
    const group = el("div", {
      className: "chunks",
      attrs: { role: "group", "aria-label": "the transcript by time: pick a piece to play from there" },
    });
    for (const chunk of chunks) {
      const [start, end] = Array.isArray(chunk.timestamp) ? chunk.timestamp : [];
      const button = el("button", { type: "button", className: "chunk", text: chunk.text ?? "" });
      if (isNumber(start)) {
        button.dataset.start = String(start);
        button.title = `play from ${formatTime(start)}`;
        button.append(el("span", { className: "chunk-time", text: formatTime(start) }));
      } else {
        button.disabled = true;
      }
      if (isNumber(end)) button.dataset.end = String(end);
      button.addEventListener("click", () => {
        if (!audio || !isNumber(start)) return;
        for (const other of group.querySelectorAll(".chunk.playing")) other.classList.remove("playing");
        button.classList.add("playing");
        audio.currentTime = start;
        audio.play()?.catch(() => {}); // a refused autoplay leaves the audio paused at the chunk
      });
      group.append(button);
    }
    nodes.push(group);
  }
  return nodes;
}

async function imageOf(file) {
  const image = el("img", { alt: `the uploaded image, ${file.name}`, src: objectUrl(file) });
  await image.decode();
  return image;
}

async function renderBoxes(detections, file) {
  let image;
  try {
    image = await imageOf(file);
  } catch {
    return null;
  }
  const width = image.naturalWidth;
  const height = image.naturalHeight;
  const figure = el("div", { className: "figure" }, image);
  const legend = el("ul", { className: "legend" });
  detections.forEach((detection, index) => {
    const box = isObject(detection) && isObject(detection.box) ? detection.box : null;
    if (!box || ![box.xmin, box.ymin, box.xmax, box.ymax].every(isNumber)) return;
    const colour = css(colourOf(labelIndex(detection.label)));
    const node = el("div", {
      className: "box",
      dataset: { index, label: detection.label ?? "", score: detection.score ?? "" },
    });
    node.style.left = `${(box.xmin / width) * 100}%`;
    node.style.top = `${(box.ymin / height) * 100}%`;
    node.style.width = `${((box.xmax - box.xmin) / width) * 100}%`;
    node.style.height = `${((box.ymax - box.ymin) / height) * 100}%`;
    node.style.borderColor = colour;
    const tag = el("span", { className: "box-label", text: `${detection.label ?? ""} ${percent(detection.score)}` });
    tag.style.backgroundColor = colour;
    node.append(tag);
    figure.append(node);
  });
  const count = figure.querySelectorAll(".box").length;
  legend.append(el("li", { className: "hint", text: `${count} object${count === 1 ? "" : "s"} found` }));
  return [figure, legend];
}

function bytesOf(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let index = 0; index < binary.length; index += 1) bytes[index] = binary.charCodeAt(index);
  return bytes;
}

/** Draw a mask PNG (white in, black out) into ``canvas`` as a translucent ``colour``, transparent elsewhere. */
async function paintMask(canvas, mask, [red, green, blue]) {
  if (!isObject(mask) || typeof mask.data !== "string") throw new Error("no mask");
  const bitmap = await createImageBitmap(new Blob([bytesOf(mask.data)], { type: mask.content_type || "image/png" }));
  canvas.width = bitmap.width;
  canvas.height = bitmap.height;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const image = context.getImageData(0, 0, canvas.width, canvas.height);
  const pixels = image.data;
  for (let index = 0; index < pixels.length; index += 4) {
    const inside = pixels[index + 3] > 0 && pixels[index] + pixels[index + 1] + pixels[index + 2] > 382;
    pixels[index] = red;
    pixels[index + 1] = green;
    pixels[index + 2] = blue;
    pixels[index + 3] = inside ? 120 : 0;
  }
  context.putImageData(image, 0, 0);
}

async function renderMasks(segments, file) {
  let image;
  try {
    image = await imageOf(file);
  } catch {
    return null;
  }
  const figure = el("div", { className: "figure" }, image);
  const legend = el("ul", { className: "legend", attrs: { "aria-label": "segments: pick one to hide or show it" } });
  for (const [index, segment] of segments.entries()) {
    const colour = colourOf(index);
    const label = isObject(segment) ? String(segment.label ?? "") : "";
    const canvas = el("canvas", { className: "mask", dataset: { index, label } });
    canvas.setAttribute("aria-hidden", "true");
    try {
      await paintMask(canvas, segment?.mask, colour);
    } catch {
      canvas.dataset.unreadable = "true";
    }
    figure.append(canvas);
    const swatch = el("span", { className: "swatch" });
    swatch.style.backgroundColor = css(colour, 0.8);
    const score = isObject(segment) && isNumber(segment.score) ? ` ${percent(segment.score)}` : "";
    const button = el("button", { type: "button", attrs: { "aria-pressed": "true" } }, swatch, `${label}${score}`);
    button.addEventListener("click", () => {
      canvas.hidden = !canvas.hidden;
      button.setAttribute("aria-pressed", String(!canvas.hidden));
    });
    legend.append(el("li", {}, button));
  }
  if (!segments.length) legend.append(el("li", { className: "hint", text: "no segments found" }));
  return [figure, legend];
}

function isMedia(value) {
  return isObject(value) && typeof value.content_type === "string" && typeof value.data === "string";
}

function findMedia(value, found = [], depth = 0) {
  if (found.length >= 8 || depth > 4) return found;
  if (isMedia(value)) found.push(value);
  else if (Array.isArray(value)) value.forEach((item) => findMedia(item, found, depth + 1));
  else if (isObject(value)) Object.values(value).forEach((item) => findMedia(item, found, depth + 1));
  return found;
}

function abbreviated(key, value) {
  return isMedia(value) ? { ...value, data: `<${Math.floor((value.data.length * 3) / 4)} bytes, base64>` } : value;
}

function jsonText(result) {
  return JSON.stringify(result, abbreviated, 2) ?? "null";
}

function jsonDetails(result) {
  return el(
    "details",
    { className: "raw" },
    el("summary", { text: "JSON" }),
    el("pre", { className: "json", text: jsonText(result) }),
  );
}

function mediaNode(media) {
  const kind = media.content_type.split("/")[0];
  let url;
  try {
    url = objectUrl(new Blob([bytesOf(media.data)], { type: media.content_type }));
  } catch {
    return null;
  }
  if (kind === "image") return el("img", { src: url, alt: `a ${media.content_type} result` });
  if (kind === "audio") return el("audio", { src: url, controls: true });
  if (kind === "video") return el("video", { src: url, controls: true });
  return null;
}

function renderGeneric(result) {
  const nodes = findMedia(result)
    .map(mediaNode)
    .filter(Boolean)
    .map((node) => el("div", { className: "media-result" }, node));
  nodes.push(el("pre", { className: "json", text: jsonText(result) }));
  return nodes;
}

// --- embeddings ---------------------------------------------------------------------------------------------------

/** The mean of a feature-extraction result's token vectors (``[[vector per token]]``). */
function meanPool(result) {
  let tokens = result;
  while (Array.isArray(tokens) && tokens.length === 1 && Array.isArray(tokens[0]) && Array.isArray(tokens[0][0])) {
    [tokens] = tokens;
  }
  if (!Array.isArray(tokens) || !tokens.length) throw problem("Not an embedding", "the result holds no vectors");
  if (isNumber(tokens[0])) return tokens;
  const size = tokens[0].length;
  const sum = new Float64Array(size);
  for (const vector of tokens) for (let index = 0; index < size; index += 1) sum[index] += vector[index];
  return Array.from(sum, (value) => value / tokens.length);
}

function cosine(a, b) {
  let dot = 0;
  let normA = 0;
  let normB = 0;
  for (let index = 0; index < a.length; index += 1) {
    dot += a[index] * b[index];
    normA += a[index] * a[index];
    normB += b[index] * b[index];
  }
  return normA && normB ? dot / Math.sqrt(normA * normB) : 0;
}

async function runEmbeddings(base, signal) {
  const lines = $("text-input")
    .value.split(/\r?\n/)
    .map((line) => line.trim())
    .filter(Boolean);
  addSummary("model", base.model);
  addSummary("task", base.task);
  if (base.parameters) addSummary("parameters", JSON.stringify(base.parameters));
  if (!lines.length) throw problem("Type some text first", "one text per line", [{ field: "input", detail: "empty" }]);
  addSummary("input", clip(lines.join("\n")));
  setState("submitting");
  const submitted = await requestJson("/v1/jobs", {
    method: "POST",
    json: lines.map((text) => ({ ...base, input: text })),
    signal,
  });
  const ids = Array.isArray(submitted.ids) ? submitted.ids : [];
  state.jobIds = ids;
  $("result").dataset.jobs = ids.join(",");
  addSummary("jobs", ids.join(", "));
  setState("running");
  const views = [];
  for (const id of ids) {
    showProgress({ fraction: views.length / ids.length, detail: `${views.length} of ${ids.length} done` }, "running");
    const view = await waitFor(id, signal);
    views.push(view);
    if (view.state !== "succeeded") {
      showJob(view);
      jobFailed(view);
      $("result").dataset.rendered = view.state;
      return;
    }
  }
  setState("succeeded");
  showProgress({ fraction: 1, detail: `${ids.length} of ${ids.length} done` }, "succeeded");
  const vectors = views.map((view) => meanPool(view.result));
  const [first, ...others] = lines;
  const nodes = [
    el("p", { className: "reference" }, "Similarity to ", el("q", { text: first })),
    el("p", {
      className: "hint",
      text: `${vectors.length} embeddings of ${vectors[0].length} dimensions (mean-pooled tokens); cosine similarity`,
    }),
  ];
  if (others.length) {
    const ranked = others
      .map((text, index) => ({ text, score: cosine(vectors[0], vectors[index + 1]) }))
      .sort((a, b) => b.score - a.score);
    nodes.push(
      el(
        "ol",
        { className: "similarities" },
        ...ranked.map(({ text, score }) =>
          el(
            "li",
            { className: "similarity", dataset: { score } },
            el("span", { className: "similarity-score", text: score.toFixed(3) }),
            el("span", { className: "similarity-text", text }),
          ),
        ),
      ),
    );
  } else {
    nodes.push(el("p", { className: "hint", text: "Type more lines to compare them with the first." }));
  }
  $("result").replaceChildren(...nodes);
  $("result").dataset.rendered = "succeeded";
}

// --- start ------------------------------------------------------------------------------------------------------

function useToken(event) {
  event?.preventDefault();
  const value = $("token").value.trim();
  if (/[^\x21-\x7e]/.test(value)) {
    showError({ title: "That is not a token", detail: "a token is visible ASCII characters, without spaces" });
    return;
  }
  if (value === (state.token ?? token()) && event?.type === "change") return;
  saveToken(value);
  loadModels();
}

function start() {
  state.token = token();
  $("token").value = state.token;
  $("token-form").addEventListener("submit", useToken);
  $("token").addEventListener("change", useToken);
  $("model").addEventListener("change", renderModel);
  $("job-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  loadModels();
}

start();
