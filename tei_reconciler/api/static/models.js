// The model table: every model the state file declares, an instance uses, or the cache holds,
// with its download progress live from the watch, and a form to declare one (POST /models).

import { post } from "./api.js";
import { asking, model, putModel, subscribe } from "./model.js";
import { bytes, checkBadges, modelBadge, modelButtons, modelHref, parameters, statusNote } from "./modelkit.js";
import { errorText, h, markWritable, notify } from "./ui.js";

const COLUMNS = ["Model", "Status", "Revision", "Size on disk", "Used by", "Architecture", "Cache path", "Actions"];

function tags(item) {
  const words = [item.declared && "declared", item.keep && "keep", item.local && "local directory"].filter(Boolean);
  return words.length ? h("small", { class: "tags" }, words.join(" · ")) : null;
}

function usedBy(item) {
  const users = item.used_by || [];
  if (!users.length) return h("span", { class: "muted" }, "–");
  return h("span", { class: "users" }, users.flatMap((name, i) => [i ? ", " : "", h("a", { href: `#/instances/${name}` }, name)]));
}

function architecture(item) {
  const meta = item.metadata;
  if (!meta) return h("span", { class: "muted" }, "–");
  return [h("span", {}, meta.architecture || meta.model_type || "–"), parameters(meta) ? h("small", { class: "why" }, parameters(meta)) : null];
}

function revision(item) {
  return [h("span", {}, item.revision || "main"), item.commit ? h("small", { class: "why mono", title: item.commit }, item.commit.slice(0, 12)) : null];
}

function statusCell(item) {
  return h("td", { class: "status-cell" }, modelBadge(item), " ", checkBadges(item), statusNote(item));
}

// Everything a row shows but the download's progress: a progress step redraws the status cell
// alone, so the row's buttons stay the same elements under a pointer or keyboard focus.
function signature(item) {
  return JSON.stringify({ ...item, progress: null, message: item.progress ? "" : item.message });
}

function row(item) {
  return h(
    "tr",
    { dataset: { model: item.model_id, status: item.status } },
    h("th", { scope: "row" }, h("a", { href: modelHref(item.model_id) }, item.model_id), tags(item)),
    statusCell(item),
    h("td", {}, revision(item)),
    h("td", { class: "num" }, bytes(item.cache_size_bytes)),
    h("td", {}, usedBy(item)),
    h("td", {}, architecture(item)),
    h("td", { class: "path mono", title: item.cache_path || null }, item.cache_path || h("span", { class: "muted" }, "–")),
    h("td", { class: "actions" }, modelButtons(item, { compact: true })),
  );
}

function declareForm() {
  const error = h("p", { class: "field-error", id: "declare-error", role: "alert", hidden: true });
  const id = h("input", { id: "declare-id", name: "model_id", type: "text", required: true, autocomplete: "off", placeholder: "BAAI/bge-small-en-v1.5", "aria-describedby": "declare-error" });
  const rev = h("input", { id: "declare-revision", name: "revision", type: "text", autocomplete: "off", placeholder: "main" });
  const keep = h("input", { id: "declare-keep", name: "keep", type: "checkbox" });
  const submit = markWritable(h("button", { type: "submit" }, "Declare"));
  const form = h(
    "form",
    {
      class: "declare",
      "aria-label": "Declare a model",
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        if (model.readOnly) {
          notify(`Read-only: ${model.readOnly}`, "error");
          return;
        }
        error.hidden = true;
        id.removeAttribute("aria-invalid");
        const body = { model_id: id.value.trim() };
        if (rev.value.trim()) body.revision = rev.value.trim();
        if (keep.checked) body.keep = true;
        submit.setAttribute("aria-busy", "true");
        try {
          const mark = asking();
          const item = await post("/models", body);
          putModel(item, mark);
          notify(`${item.model_id} declared${item.keep ? ": it is fetched and kept on disk" : ""}`);
          id.value = "";
          rev.value = "";
          keep.checked = false;
        } catch (err) {
          error.textContent = errorText(err);
          error.hidden = false;
          id.setAttribute("aria-invalid", "true");
          id.focus();
        } finally {
          submit.removeAttribute("aria-busy");
        }
      },
    },
    h("div", { class: "field" }, h("label", { for: "declare-id" }, "Model id"), id),
    h("div", { class: "field" }, h("label", { for: "declare-revision" }, "Revision"), rev),
    h("label", { class: "option", for: "declare-keep" }, keep, " keep on disk with no instance on it"),
    submit,
    error,
  );
  return form;
}

export function mountModels(main) {
  const rows = new Map(); // model_id -> <tr>
  const drawn = new Map(); // model_id -> the signature its row was drawn for
  const body = h("tbody");
  const count = h("p", { class: "muted", id: "models-shown", "aria-live": "polite" });
  const table = h(
    "table",
    { class: "models", "aria-describedby": "models-shown" },
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c)))),
    body,
  );
  const empty = h("div", { class: "empty", hidden: true }, h("p", {}, "No model is declared, used or cached yet."));
  main.append(
    h("div", { class: "heading" }, h("h1", {}, "Models")),
    h("p", { class: "muted" }, 'Every model the state file declares ([models."org/name"]), an instance uses, or the Hugging Face cache holds.'),
    declareForm(),
    count,
    h("div", { class: "table-wrap" }, table),
    empty,
  );

  function sortedIds() {
    return [...model.models.keys()].sort();
  }

  function summary() {
    const total = rows.size;
    const downloading = [...model.models.values()].filter((m) => m.status === "downloading").length;
    if (!model.modelsLoaded) count.textContent = model.modelsError || "loading…";
    else count.textContent = `${total} model${total === 1 ? "" : "s"}${downloading ? `, ${downloading} downloading` : ""}`;
    empty.hidden = total > 0 || !model.modelsLoaded;
    table.hidden = total === 0;
  }

  function upsert(id) {
    const item = model.models.get(id);
    const old = rows.get(id);
    if (!item) {
      old?.remove();
      rows.delete(id);
      drawn.delete(id);
      return;
    }
    if (old && drawn.get(id) === signature(item)) {
      old.querySelector("td.status-cell").replaceWith(statusCell(item));
      return;
    }
    drawn.set(id, signature(item));
    const fresh = row(item);
    const controls = (tr) => [...tr.querySelectorAll("a, button")];
    const focused = old?.contains(document.activeElement) ? controls(old).indexOf(document.activeElement) : -1;
    if (old) old.replaceWith(fresh);
    else {
      const ids = sortedIds();
      const after = ids.slice(ids.indexOf(id) + 1).find((n) => rows.has(n));
      body.insertBefore(fresh, after ? rows.get(after) : null);
    }
    rows.set(id, fresh);
    if (focused >= 0) controls(fresh)[focused]?.focus();
  }

  function redrawAll() {
    for (const tr of rows.values()) tr.remove();
    rows.clear();
    drawn.clear();
    for (const id of sortedIds()) {
      drawn.set(id, signature(model.models.get(id)));
      const tr = row(model.models.get(id));
      rows.set(id, tr);
      body.append(tr);
    }
  }

  redrawAll();
  summary();
  return subscribe((kind, id) => {
    if (kind === "readonly") redrawAll();
    else if (kind === "models") for (const each of new Set([...rows.keys(), ...sortedIds()])) upsert(each);
    else if (kind === "model") upsert(id);
    else return;
    summary();
  });
}
