// The state file: read it highlighted, edit it, see its problems and the plan as you type
// (PUT /state?dry_run=true), save it with If-Match, and meet a concurrent edit as a conflict.

import { ApiError, request } from "./api.js";
import { model, refreshReadOnly, subscribe } from "./model.js";
import { highlight } from "./toml.js";
import { confirmDialog, errorText, h, markWritable, notify } from "./ui.js";

const CHECK_AFTER_MS = 500; // a pause in typing this long checks the text

async function readState(signal) {
  const response = await request("GET", "/state", { signal });
  return { text: await response.text(), revision: (response.headers.get("ETag") || "").replaceAll('"', "") };
}

async function putState(text, { dryRun, revision }) {
  const headers = revision ? { "If-Match": `"${revision}"` } : {};
  const response = await request("PUT", `/state${dryRun ? "?dry_run=true" : ""}`, { body: text, type: "application/toml", headers });
  return response.json();
}

export function mountState(main) {
  const controller = new AbortController();
  let base = { text: "", revision: "" }; // what the server had when we loaded it
  let editing = false;
  let loaded = false; // editing starts only once the file is in the editor
  let checkTimer = null;
  let checkSeq = 0;

  const revision = h("span", { class: "muted mono" });
  const editButton = markWritable(h("button", { type: "button", onclick: () => startEditing() }, "Edit"));
  const reloadButton = h("button", { type: "button", class: "secondary", onclick: () => load() }, "Reload");
  const checkButton = h("button", { type: "button", class: "secondary", onclick: () => check(true) }, "Validate and preview");
  const saveButton = markWritable(h("button", { type: "button", onclick: () => save() }, "Save"));
  const cancelButton = h("button", { type: "button", class: "secondary", onclick: () => stopEditing() }, "Cancel");
  const tools = h("div", { class: "tools" });

  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  const painted = h("pre", { class: "toml painted", "aria-hidden": "true" });
  const textarea = h("textarea", {
    class: "source",
    id: "state-text",
    spellcheck: "false",
    autocapitalize: "off",
    autocomplete: "off",
    wrap: "off",
    "aria-label": "State file (TOML)",
    "aria-describedby": "state-problems",
    oninput: () => {
      paint();
      scheduleCheck();
    },
    onscroll: () => syncScroll(),
    onkeydown: (e) => {
      if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey && editing) {
        // Tab indents inside the editor; Escape first, then Tab, leaves it.
        if (textarea.dataset.escaped === "1") return;
        e.preventDefault();
        textarea.setRangeText("  ", textarea.selectionStart, textarea.selectionEnd, "end");
        paint();
        scheduleCheck();
      } else if (e.key === "Escape") {
        textarea.dataset.escaped = "1";
      } else {
        textarea.dataset.escaped = "";
      }
    },
  });
  const viewer = h("div", { class: "editor" }, gutter, h("div", { class: "layers" }, painted, textarea));
  const conflict = h("div", { class: "banner error", role: "alert", hidden: true });
  const problems = h("div", { id: "state-problems", class: "problems", "aria-live": "polite" });
  const plan = h("div", { class: "plan", "aria-live": "polite" });
  const hint = h("p", { class: "muted" });

  main.append(
    h("div", { class: "heading" }, h("h1", {}, "State file ", revision), tools),
    hint,
    conflict,
    viewer,
    h("div", { class: "columns" }, h("section", { "aria-labelledby": "s-problems" }, h("h2", { id: "s-problems" }, "Problems"), problems), h("section", { "aria-labelledby": "s-plan" }, h("h2", { id: "s-plan" }, "Plan"), plan)),
  );

  function paint(errorLines = currentErrors) {
    const text = textarea.value;
    const lines = highlight(text);
    const count = Math.max(1, text.split("\n").length - (text.endsWith("\n") ? 1 : 0));
    painted.replaceChildren(
      ...Array.from({ length: Math.max(count, lines.length) }, (_, n) => {
        const line = h("span", { class: errorLines.has(n + 1) ? "line err" : "line" });
        line.innerHTML = (lines[n] || "") + "\n"; // highlight() escapes every piece of text
        return line;
      }),
    );
    gutter.replaceChildren(...Array.from({ length: count }, (_, n) => h("span", { class: errorLines.has(n + 1) ? "err" : "" }, String(n + 1))));
    syncScroll();
  }

  function syncScroll() {
    painted.scrollTop = textarea.scrollTop;
    painted.scrollLeft = textarea.scrollLeft;
    gutter.scrollTop = textarea.scrollTop;
  }

  let currentErrors = new Set();

  function showProblems(details, message) {
    currentErrors = new Set(details.filter((d) => d.line).map((d) => d.line));
    paint();
    if (!details.length && !message) {
      problems.replaceChildren(h("p", { class: "ok" }, "No problems: the file is valid."));
      return;
    }
    const items = details.length ? details : [{ field: "", message }];
    problems.replaceChildren(
      h(
        "ul",
        { class: "problem-list" },
        items.map((d) =>
          h(
            "li",
            {},
            d.line
              ? h("button", { type: "button", class: "link", onclick: () => jumpTo(d.line, d.column), "aria-label": `Go to line ${d.line}` }, `line ${d.line}${d.column ? `:${d.column}` : ""}`)
              : null,
            d.line ? " " : "",
            d.field ? h("code", {}, d.field) : null,
            d.field ? ": " : "",
            d.message,
          ),
        ),
      ),
    );
  }

  function jumpTo(line, column) {
    const lines = textarea.value.split("\n");
    let offset = 0;
    for (let n = 0; n < line - 1 && n < lines.length; n++) offset += lines[n].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    textarea.focus();
    textarea.setSelectionRange(offset, offset);
  }

  function showPlan(actions, note) {
    if (!actions.length) {
      plan.replaceChildren(h("p", { class: "muted" }, note === null ? "No plan while the file has problems." : "Nothing to do: the instances already match this file."));
      return;
    }
    plan.replaceChildren(
      note ? h("p", { class: "muted" }, note) : "",
      h("ul", { class: "plan-list" }, actions.map((a) => h("li", {}, h("strong", {}, a.action), " ", h("a", { href: `#/instances/${a.instance}` }, a.instance), a.reason ? `: ${a.reason}` : ""))),
    );
  }

  function showConflict(err) {
    conflict.hidden = false;
    conflict.replaceChildren(
      h("p", {}, `Someone else changed the state file since you opened it (${errorText(err)}). Your text is still here, unsaved.`),
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "secondary", onclick: () => load({ keepEditing: true }) }, "Load their version (drop mine)"),
        markWritable(h("button", { type: "button", class: "danger", onclick: () => overwrite() }, "Save mine over theirs")),
      ),
    );
    conflict.querySelector("button").focus();
  }

  function drawTools() {
    tools.replaceChildren(...(editing ? [checkButton, saveButton, cancelButton] : loaded ? [editButton, reloadButton] : []));
    textarea.readOnly = !editing;
    viewer.classList.toggle("editing", editing);
    hint.textContent = editing
      ? model.readOnly
        ? "Read-only file: you can edit here to validate and preview a change, but not save it."
        : "Problems and the plan update as you type. Save writes the file only if nobody changed it meanwhile."
      : "";
  }

  async function load({ keepEditing = false } = {}) {
    try {
      base = await readState(controller.signal);
    } catch (err) {
      if (err.name !== "AbortError") notify(`Cannot read the state file: ${errorText(err)}`, "error");
      return;
    }
    revision.textContent = base.revision ? `revision ${base.revision.slice(0, 12)}` : "";
    textarea.value = base.text;
    conflict.hidden = true;
    loaded = true;
    editing = keepEditing && editing;
    drawTools();
    paint();
    check(false);
  }

  function startEditing() {
    editing = true;
    drawTools();
    textarea.focus();
  }

  async function stopEditing() {
    if (textarea.value !== base.text && !(await confirmDialog("Drop your changes?", "The text you typed is not saved.", "Drop them"))) return;
    editing = false;
    load();
  }

  function scheduleCheck() {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(() => check(false), CHECK_AFTER_MS);
  }

  // Validate and plan the text in the editor (a dry run: nothing is written).
  async function check(announce) {
    clearTimeout(checkTimer);
    const seq = ++checkSeq;
    try {
      const body = await putState(textarea.value, { dryRun: true });
      if (seq !== checkSeq) return;
      showProblems([]);
      showPlan(body.actions, textarea.value === base.text ? "What the controller is doing to reach this file:" : "If you save, the controller will:");
      if (announce) notify("The file is valid; the plan is below.");
    } catch (err) {
      if (seq !== checkSeq || err.name === "AbortError") return;
      if (err instanceof ApiError && err.code === "VALIDATION_ERROR") {
        showProblems(err.details, err.message);
        showPlan([], null);
      } else {
        showProblems([], errorText(err));
      }
    }
  }

  async function save(revisionOverride) {
    if (model.readOnly) {
      notify(`Read-only: ${model.readOnly}`, "error");
      return;
    }
    try {
      const body = await putState(textarea.value, { dryRun: false, revision: revisionOverride || base.revision });
      notify(`Saved: revision ${body.revision.slice(0, 12)}${body.actions.length ? `; ${body.actions.length} action(s) to take` : ""}.`);
      editing = false;
      await load();
    } catch (err) {
      if (err instanceof ApiError && err.code === "REVISION_MISMATCH") showConflict(err);
      else if (err instanceof ApiError && err.code === "VALIDATION_ERROR") {
        showProblems(err.details, err.message);
        notify("Not saved: the file has problems (listed below the editor).", "error");
      } else {
        if (err instanceof ApiError && err.code === "STATE_READ_ONLY") refreshReadOnly();
        notify(`Not saved: ${errorText(err)}`, "error");
      }
    }
  }

  async function overwrite() {
    try {
      const theirs = await readState(controller.signal);
      conflict.hidden = true;
      await save(theirs.revision);
    } catch (err) {
      notify(errorText(err), "error");
    }
  }

  drawTools();
  load();
  const unsubscribe = subscribe((kind) => {
    if (kind === "readonly") drawTools();
  });
  return () => {
    unsubscribe();
    clearTimeout(checkTimer);
    controller.abort();
  };
}
