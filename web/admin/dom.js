/*
 * Small DOM helpers shared by the admin console's sections. Nothing here parses HTML: every text,
 * the server's included, goes in through textContent or an attribute.
 */

export const $ = (id) => document.getElementById(id);

export function show(id, visible) {
  $(id).hidden = !visible;
}

/** An element with properties (textContent, className, type…) and children; never parses HTML. */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "attrs") {
      for (const [attr, text] of Object.entries(value)) {
        node.setAttribute(attr, text);
      }
    } else {
      node[name] = value;
    }
  }
  node.append(...children);
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An SVG element with presentation attributes (never a style attribute: the CSP forbids them). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "textContent") {
      node.textContent = value;
    } else {
      node.setAttribute(name, String(value));
    }
  }
  node.append(...children);
  return node;
}

export function button(text, className, label, onClick) {
  const node = el("button", { type: "button", className, textContent: text });
  if (label) {
    node.setAttribute("aria-label", label);
  }
  node.addEventListener("click", onClick);
  return node;
}

export function cell(text, className) {
  const td = el("td", { textContent: text });
  if (className) {
    td.className = className;
  }
  return td;
}

/** Shows ``text`` in the alert ``id`` (hidden when empty). */
export function fail(id, text) {
  $(id).textContent = text;
  show(id, Boolean(text));
}

/** A confirmation in ``{section}-status``, clearing the section's error. */
export function say(section, text) {
  fail(`${section}-error`, "");
  $(`${section}-status`).textContent = text;
}

/** A duration in milliseconds as m:ss (– when unknown). */
export function duration(ms) {
  if (ms === null || ms === undefined) {
    return "–";
  }
  const seconds = Math.round(ms / 1000);
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** A rate (0–1) as a percentage with at most one decimal; – when there is none. */
export function percent(rate) {
  return rate === null || rate === undefined ? "–" : `${Math.round(rate * 1000) / 10}%`;
}

/** A server time (ISO 8601) in the admin's locale; – when there is none. */
export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

/** A local date as the value of an <input type=date> (YYYY-MM-DD). */
export function dateValue(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

/**
 * The start of the local day ``value`` (YYYY-MM-DD) as an ISO time, or of the day after with
 * ``next``: the API reads a bare date as a UTC day, and the admin means their own.
 */
export function dayBoundary(value, next = false) {
  const [year, month, day] = value.split("-").map(Number);
  return new Date(year, month - 1, day + (next ? 1 : 0)).toISOString();
}

/** Ticked ids of a checkbox list made by ``checkList``. */
export function checked(containerId) {
  return [...$(containerId).querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
}

/** Checkboxes for ``items`` ({id, label, detail}) in ``containerId``, ``ticked`` ids ticked. */
export function checkList(containerId, items, ticked, emptyText) {
  const container = $(containerId);
  if (items.length === 0) {
    container.replaceChildren(el("p", { className: "muted", textContent: emptyText }));
    return;
  }
  container.replaceChildren(
    ...items.map((item) => {
      const id = `${containerId}-${item.id}`;
      const box = el("input", { type: "checkbox", id, value: item.id, checked: ticked.includes(item.id) });
      const label = el("label", { htmlFor: id, textContent: item.label });
      if (item.detail) {
        label.append(" ", el("span", { className: "muted", textContent: item.detail }));
      }
      return el("div", { className: "check" }, box, label);
    }),
  );
}

/** Options for a <select>: a first "any" option, then ``items`` ({id, label}); keeps the choice. */
export function fillSelect(select, anyText, items) {
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "", textContent: anyText }),
    ...items.map((item) => el("option", { value: item.id, textContent: item.label })),
  );
  if ([...select.options].some((option) => option.value === chosen)) {
    select.value = chosen;
  }
}

/**
 * A Delete button that first asks: it swaps ``controls``' buttons for a question, a confirm and a
 * cancel button (Escape cancels too). ``onConfirm`` resolves true when the thing is gone. ``verb``
 * and ``doing`` name another such action (Revoke, revoking).
 */
export function deleteButton(controls, name, question, onConfirm, { verb = "Delete", doing = "deleting" } = {}) {
  const opener = button(verb, "danger small", `${verb} ${name}`, () => {
    const previous = [...controls.childNodes];
    const restore = () => {
      controls.replaceChildren(...previous);
      opener.focus();
    };
    const yes = button(verb, "danger small", `Confirm ${doing} ${name}`, async () => {
      yes.disabled = true;
      if (!(await onConfirm())) {
        restore();
      }
    });
    const no = button("Cancel", "secondary small", null, restore);
    for (const control of [yes, no]) {
      control.addEventListener("keydown", (event) => {
        if (event.key === "Escape") {
          restore();
        }
      });
    }
    controls.replaceChildren(el("span", { className: "confirm", textContent: question }), yes, no);
    yes.focus();
  });
  return opener;
}

/**
 * A read-only text field showing ``value`` with a Copy button (falling back to selecting the text
 * where the clipboard is refused) and a status that says which happened.
 */
export function copyField(id, labelText, value, copyLabel) {
  const input = el("input", { id, type: "text", className: "url secret", readOnly: true, value });
  input.spellcheck = false;
  input.autocomplete = "off";
  const status = el("span", { className: "muted", attrs: { role: "status" } });
  const copy = button("Copy", "secondary small", copyLabel, async () => {
    try {
      await navigator.clipboard.writeText(value);
      status.textContent = "Copied.";
    } catch {
      input.focus();
      input.select();
      status.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
    }
  });
  return el(
    "div",
    { className: "copy-field" },
    el("label", { htmlFor: id, textContent: labelText }),
    el("div", { className: "controls" }, input, copy, status),
  );
}

/** Run ``load`` (which redraws the list ``id``) with the rows shown so far not clickable: they are
 * from the last visit, and are replaced under the pointer when the list arrives. */
export async function reloading(id, load) {
  const rows = $(id);
  rows.inert = true;
  try {
    await load();
  } finally {
    rows.inert = false;
  }
}
