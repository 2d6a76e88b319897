/*
 * Calls: the organisation's calls, newest first, narrowed by date, button, agent, outcome,
 * recording, rating and the visitor's email, phone or name; 50 at a time, "Load more" asking for the
 * next keyset page (next_cursor). Each call opens its own page (#calls/{id}, call.js).
 */

import { api, message, withQuery } from "./api.js";
import { $, cell, dateTime, dayBoundary, duration, el, fail, fillSelect, show } from "./dom.js";
import { buttonChoices, buttonName, refresh, userChoices, userName } from "./directory.js";

const PAGE = 50;

export const OUTCOMES = { answered: "Answered", missed: "Missed", abandoned: "Abandoned", no_answer: "No answer" };
export const DIRECTIONS = { inbound: "Inbound", outbound: "Outbound (call link)" };
const IN_PROGRESS = { created: "Starting", queued: "Waiting", answered: "In progress" };

/** What a call came to: its outcome, or where it is while it lasts. */
export function outcomeText(call) {
  return call.outcome ? OUTCOMES[call.outcome] || call.outcome : IN_PROGRESS[call.state] || call.state;
}

/** The visitor's name, and their email or phone, as far as they gave them. */
export function visitorText(visitor) {
  const contact = [visitor.email, visitor.phone].filter(Boolean).join(", ");
  return { name: visitor.name || (contact ? "" : "Not given"), contact };
}

/** The query of the list shown (the filters as they were applied): "Load more" keeps to it. */
let shown = null;
/** Bumped by every new query, so that an older answer arriving late is dropped. */
let generation = 0;

function filters() {
  const from = $("cf-from").value;
  const to = $("cf-to").value;
  return {
    from: from ? dayBoundary(from) : "",
    to: to ? dayBoundary(to, true) : "",
    button_id: $("cf-button").value,
    agent_id: $("cf-agent").value,
    outcome: $("cf-outcome").value,
    has_recording: $("cf-recording").value,
    rating: $("cf-rating").value,
    q: $("cf-q").value.trim(),
    limit: PAGE,
  };
}

function callRow(call) {
  const when = dateTime(call.created_at);
  const link = el("a", { href: `#calls/${call.id}`, textContent: when });
  link.setAttribute("aria-label", `Open the call of ${when}`);
  const visitor = visitorText(call.visitor);
  const who = el("td", {}, el("div", { className: "strong", textContent: visitor.name }));
  if (visitor.contact) {
    who.append(el("div", { className: "muted small", textContent: visitor.contact }));
  }
  const tr = el(
    "tr",
    { className: "clickable" },
    el("td", {}, link),
    cell(DIRECTIONS[call.direction] || call.direction),
    who,
    cell(call.button_id ? buttonName(call.button_id) : "–"),
    cell(call.agent_id ? userName(call.agent_id) : "–"),
    cell(outcomeText(call), `outcome-${call.outcome || "open"}`),
    cell(duration(call.wait_ms)),
    cell(duration(call.talk_ms)),
    cell(call.rating ? `${call.rating}/5` : "–"),
    cell(call.has_recording ? "Yes" : "No"),
  );
  tr.dataset.call = call.id;
  // The whole row opens the call for a mouse; keyboards use the link in its first cell.
  tr.addEventListener("click", (event) => {
    if (!event.target.closest("a, button")) {
      location.hash = `#calls/${call.id}`;
    }
  });
  return tr;
}

function summary(count, more) {
  if (count === 0) {
    return "";
  }
  const calls = count === 1 ? "1 call" : `${count} calls`;
  return more ? `Showing the latest ${calls}; more match.` : `${calls}.`;
}

/** Runs ``query`` from its first page (``cursor`` null) or appends its next page. */
async function fetchPage(query, cursor) {
  const mine = ++generation;
  const result = await api(withQuery("/api/v1/calls", { ...query, cursor }));
  if (mine !== generation) {
    return;
  }
  if (!result.ok) {
    fail("calls-error", message(result));
    return;
  }
  fail("calls-error", "");
  const rows = result.body.calls.map(callRow);
  if (cursor) {
    $("calls-rows").append(...rows);
  } else {
    $("calls-rows").replaceChildren(...rows);
  }
  shown = { query, next: result.body.next_cursor };
  const count = $("calls-rows").children.length;
  show("calls-table", count > 0);
  show("calls-empty", count === 0);
  show("calls-more", Boolean(shown.next));
  $("calls-status").textContent = summary(count, Boolean(shown.next));
  if (cursor && rows.length) {
    // Keyboard users carry on from the first call just added.
    rows[0].querySelector("a").focus();
  }
}

export default {
  init() {
    fillSelect($("cf-outcome"), "Any outcome", Object.entries(OUTCOMES).map(([id, label]) => ({ id, label })));
    $("calls-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      fetchPage(filters(), null);
    });
    $("calls-clear").addEventListener("click", () => {
      $("calls-filters").reset();
      fetchPage(filters(), null);
    });
    $("calls-more").addEventListener("click", () => {
      if (shown && shown.next) {
        fetchPage(shown.query, shown.next);
      }
    });
  },

  async show() {
    fail("calls-error", "");
    const failure = await refresh("users", "buttons");
    if (failure) {
      fail("calls-error", failure);
      return;
    }
    fillSelect($("cf-button"), "Any button", buttonChoices());
    fillSelect($("cf-agent"), "Any agent", userChoices());
    await fetchPage(filters(), null);
  },

  reset() {
    generation += 1;
    shown = null;
    $("calls-filters").reset();
    $("calls-rows").replaceChildren();
    $("calls-status").textContent = "";
    show("calls-table", false);
    show("calls-more", false);
  },
};
