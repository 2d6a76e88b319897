/*
 * Audit log: who did what to which object, when and from where, newest first; narrowed by period,
 * family of actions and actor; 100 entries at a time, "Load more" asking for the next page.
 */

import { api, message, withQuery } from "./api.js";
import { $, cell, dateTime, dayBoundary, el, fail, fillSelect, show } from "./dom.js";
import { buttonName, refresh, teamName, userChoices, userName } from "./directory.js";

const FAMILIES = {
  session: "Logins",
  recording: "Recordings",
  user: "Users",
  team: "Teams",
  button: "Buttons",
  token: "API tokens",
  webhook: "Webhooks",
};
const ACTIONS = {
  "session.login": "Logged in",
  "session.login_failed": "Failed to log in",
  "recording.play": "Played a recording",
  "recording.download": "Downloaded a recording",
  "recording.delete": "Deleted a recording",
  "recording.decrypt": "Decrypted a recording (server command line)",
  "user.create": "Created a user",
  "user.update": "Changed a user",
  "user.delete": "Deleted a user",
  "team.create": "Created a team",
  "team.update": "Changed a team",
  "team.delete": "Deleted a team",
  "button.create": "Created a button",
  "button.update": "Changed a button",
  "button.delete": "Deleted a button",
  "token.create": "Created an API token",
  "token.revoke": "Revoked an API token",
  "webhook.create": "Created a webhook",
  "webhook.update": "Changed a webhook",
  "webhook.delete": "Deleted a webhook",
};

/** Names of the organisation's API tokens and webhooks by id, to name the objects of entries. */
const names = { token: new Map(), webhook: new Map() };
let shown = null;
let generation = 0;

function filters() {
  const from = $("af-from").value;
  const to = $("af-to").value;
  return {
    from: from ? dayBoundary(from) : "",
    to: to ? dayBoundary(to, true) : "",
    action: $("af-action").value,
    actor_id: $("af-actor").value,
  };
}

function objectText(entry) {
  const id = entry.object_id;
  if (!id) {
    return entry.object_type;
  }
  const kind = entry.object_type;
  if (kind === "user") {
    return `User ${userName(id)}`;
  }
  if (kind === "team") {
    return `Team ${teamName(id)}`;
  }
  if (kind === "button") {
    return `Button ${buttonName(id)}`;
  }
  if (kind in names) {
    const name = names[kind].get(id);
    return `${kind === "token" ? "API token" : "Webhook"} ${name || id.slice(0, 8)}`;
  }
  return `${kind[0].toUpperCase()}${kind.slice(1)} ${id.slice(0, 8)}`;
}

function entryRow(entry) {
  const action = el(
    "td",
    {},
    el("div", { textContent: ACTIONS[entry.action] || entry.action }),
    el("code", { className: "muted small", textContent: entry.action }),
  );
  const object = cell(objectText(entry));
  if (entry.object_id) {
    object.title = entry.object_id;
  }
  const tr = el(
    "tr",
    {},
    cell(dateTime(entry.at)),
    cell(entry.actor_id ? userName(entry.actor_id) : "–"),
    action,
    object,
    cell(entry.address || "–"),
  );
  tr.dataset.action = entry.action;
  return tr;
}

async function fetchPage(query, cursor) {
  const mine = ++generation;
  const result = await api(withQuery("/api/v1/audit", { ...query, cursor }));
  if (mine !== generation) {
    return;
  }
  if (!result.ok) {
    fail("audit-error", message(result));
    return;
  }
  fail("audit-error", "");
  const rows = result.body.entries.map(entryRow);
  if (cursor) {
    $("audit-rows").append(...rows);
  } else {
    $("audit-rows").replaceChildren(...rows);
  }
  shown = { query, next: result.body.next_cursor };
  const count = $("audit-rows").children.length;
  show("audit-table", count > 0);
  show("audit-empty", count === 0);
  show("audit-more", Boolean(shown.next));
  if (cursor && rows.length) {
    // Keyboard users carry on from the first entry just added.
    rows[0].tabIndex = -1;
    rows[0].focus();
  }
}

/** The names the entries' ids stand for: users, teams and buttons, API tokens and webhooks. */
async function loadNames() {
  const failure = await refresh("users", "teams", "buttons");
  if (failure) {
    return failure;
  }
  for (const [kind, path, list] of [
    ["token", "/api/v1/tokens", "tokens"],
    ["webhook", "/api/v1/webhooks", "webhooks"],
  ]) {
    const result = await api(path);
    if (!result.ok) {
      return message(result);
    }
    names[kind] = new Map(result.body[list].map((item) => [item.id, item.name || item.url]));
  }
  return null;
}

export default {
  init() {
    fillSelect($("af-action"), "Every action", Object.entries(FAMILIES).map(([id, label]) => ({ id, label })));
    $("audit-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      fetchPage(filters(), null);
    });
    $("audit-clear").addEventListener("click", () => {
      $("audit-filters").reset();
      fetchPage(filters(), null);
    });
    $("audit-more").addEventListener("click", () => {
      if (shown && shown.next) {
        fetchPage(shown.query, shown.next);
      }
    });
  },

  async show() {
    fail("audit-error", "");
    const failure = await loadNames();
    if (failure) {
      fail("audit-error", failure);
      return;
    }
    fillSelect($("af-actor"), "Anybody", userChoices());
    await fetchPage(filters(), null);
  },

  reset() {
    generation += 1;
    shown = null;
    names.token.clear();
    names.webhook.clear();
    $("audit-filters").reset();
    $("audit-rows").replaceChildren();
    show("audit-table", false);
    show("audit-more", false);
  },
};
