// A new instance from a form: POST /instances, the API's errors shown beside their fields.

import { ApiError, post } from "./api.js";
import { asking, model, putInstance } from "./model.js";
import { errorText, h, markWritable, notify } from "./ui.js";

const FIELDS = [
  { name: "name", label: "Name", required: true, hint: "lowercase letters, digits and '-' (a DNS label)", attrs: { pattern: "[a-z0-9]([-a-z0-9]*[a-z0-9])?", maxlength: 63, autocomplete: "off" } },
  { name: "model_id", label: "Model", required: true, hint: "a Hugging Face id (org/name) or an absolute path", attrs: { autocomplete: "off", placeholder: "sentence-transformers/all-MiniLM-L6-v2" } },
  { name: "gpu", label: "GPU", hint: '"all", "none" (CPU), an index or a list such as 0,1', attrs: { placeholder: "all" } },
  { name: "port", label: "Port", hint: "empty: picked from instance_port_range", attrs: { inputmode: "numeric" } },
  { name: "revision", label: "Revision", hint: "the model revision (optional)" },
  { name: "pooling", label: "Pooling", choices: ["", "cls", "mean", "splade", "last-token"] },
  { name: "dtype", label: "Dtype", choices: ["", "float16", "float32", "bfloat16"] },
  { name: "state", label: "Desired state", choices: ["running", "stopped"] },
  { name: "extra_args", label: "Extra TEI flags", hint: "separated by spaces, e.g. --max-batch-requests 8" },
];

// The form's strings as the API's JSON body.
function bodyOf(values) {
  const body = { name: values.name.trim(), model_id: values.model_id.trim() };
  const gpu = values.gpu.trim();
  if (gpu) {
    if (gpu === "all" || gpu === "none") body.gpu = gpu;
    else if (/^\d+$/.test(gpu)) body.gpu = Number(gpu);
    else body.gpu = gpu.split(/[\s,]+/).filter(Boolean).map((g) => (/^\d+$/.test(g) ? Number(g) : g));
  }
  if (values.port.trim()) body.port = /^\d+$/.test(values.port.trim()) ? Number(values.port.trim()) : values.port.trim();
  for (const key of ["revision", "pooling", "dtype"]) if (values[key].trim()) body[key] = values[key].trim();
  if (values.state && values.state !== "running") body.state = values.state;
  const extra = values.extra_args.trim();
  if (extra) body.extra_args = extra.split(/\s+/);
  return body;
}

export function mountCreate(main) {
  const summary = h("div", { class: "banner error", role: "alert", tabindex: "-1", hidden: true });
  const inputs = new Map();
  const errors = new Map();
  const rows = FIELDS.map((f) => {
    const id = `f-${f.name}`;
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    const control = f.choices
      ? h("select", { id, name: f.name }, f.choices.map((c) => h("option", { value: c }, c || "(TEI's default)")))
      : h("input", { id, name: f.name, type: "text", required: f.required || null, "aria-describedby": `${f.hint ? hintId : ""} ${errorId}`.trim(), ...f.attrs });
    const error = h("p", { id: errorId, class: "field-error", hidden: true });
    inputs.set(f.name, control);
    errors.set(f.name, error);
    return h(
      "div",
      { class: "field" },
      h("label", { for: id }, f.label, f.required ? h("span", { class: "muted" }, " (required)") : ""),
      control,
      f.hint ? h("p", { id: hintId, class: "hint" }, f.hint) : null,
      error,
    );
  });
  const submit = markWritable(h("button", { type: "submit" }, "Create"));
  const form = h(
    "form",
    { class: "create", novalidate: true, onsubmit: (e) => { e.preventDefault(); create(); } },
    summary,
    rows,
    h("div", { class: "row" }, submit, h("a", { href: "#/", class: "button secondary" }, "Cancel")),
  );
  main.append(h("div", { class: "heading" }, h("h1", {}, "New instance")), h("p", { class: "muted" }, "Adds an [instances.<name>] table to the state file; the reconciler starts it."), form);
  inputs.get("name").focus();

  function clearErrors() {
    summary.hidden = true;
    for (const [name, error] of errors) {
      error.hidden = true;
      error.textContent = "";
      inputs.get(name).removeAttribute("aria-invalid");
    }
  }

  function showError(err) {
    summary.replaceChildren(h("p", {}, errorText(err)));
    summary.hidden = false;
    let first = null;
    for (const detail of err instanceof ApiError ? err.details : []) {
      const key = detail.field === "gpu_id" ? "gpu" : detail.field.split(".")[0];
      const error = errors.get(key);
      if (!error) continue;
      error.textContent = detail.message;
      error.hidden = false;
      inputs.get(key).setAttribute("aria-invalid", "true");
      first ??= inputs.get(key);
    }
    (first || summary).focus();
  }

  async function create() {
    if (model.readOnly) {
      notify(`Read-only: ${model.readOnly}`, "error");
      return;
    }
    clearErrors();
    const values = Object.fromEntries([...inputs].map(([k, control]) => [k, control.value]));
    submit.setAttribute("aria-busy", "true");
    try {
      const mark = asking();
      const item = await post("/instances", bodyOf(values));
      putInstance(item, mark);
      notify(`${item.name} created`);
      location.hash = `#/instances/${item.name}`;
    } catch (err) {
      showError(err);
    } finally {
      submit.removeAttribute("aria-busy");
    }
  }

  return null;
}
