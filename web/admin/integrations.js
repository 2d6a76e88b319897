/*
 * Integrations: API tokens (other software using this API as an admin of the organisation: each
 * secret shown once, at creation; tokens revoked, never deleted) and webhook endpoints (URLs told of
 * chosen events, each request signed with the endpoint's secret), with each endpoint's deliveries.
 */

import { api, message, send } from "./api.js";
import { $, button, cell, checkList, checked, copyField, dateTime, deleteButton, el, fail, say, show } from "./dom.js";

const EVENTS = [
  ["call.created", "A call starts"],
  ["call.answered", "An agent answers a call"],
  ["call.ended", "A call ends"],
  ["recording.ready", "A recording is ready"],
  ["recording.deleted", "A recording is deleted"],
  ["callback.requested", "A visitor asks to be called back"],
];
const SIGNATURE_HINT =
  "Each request carries a Callbutton-Signature header: t=the time, v1=the HMAC-SHA256, keyed with this " +
  "secret, of the time, a dot and the body.";
const DELIVERY_STATES = { delivered: "Delivered", pending: "Waiting to retry", given_up: "Given up" };

const state = { tokens: [], webhooks: [] };

async function load() {
  for (const [kind, path] of [
    ["tokens", "/api/v1/tokens"],
    ["webhooks", "/api/v1/webhooks"],
  ]) {
    const result = await api(path);
    if (!result.ok) {
      fail("integrations-error", message(result));
      return;
    }
    state[kind] = result.body[kind];
  }
  renderTokens();
  renderWebhooks();
}

// --- API tokens ------------------------------------------------------------------------------------

function tokenRow(token) {
  const actions = el("div", { className: "controls" });
  const name = `API token ${token.name}`;
  if (token.revoked_at) {
    actions.append(el("span", { className: "muted", textContent: "–" }));
  } else {
    const question = `Revoke ${token.name}? Software using it is refused from now on; this cannot be undone.`;
    const revoke = { verb: "Revoke", doing: "revoking" };
    actions.append(deleteButton(actions, name, question, () => revokeToken(token), revoke));
  }
  const tr = el(
    "tr",
    {},
    el("td", { className: "strong", textContent: token.name }),
    cell(dateTime(token.created_at)),
    cell(token.last_used_at ? dateTime(token.last_used_at) : "Never"),
    cell(token.revoked_at ? `Revoked ${dateTime(token.revoked_at)}` : "Active", token.revoked_at ? "revoked" : ""),
    el("td", {}, actions),
  );
  tr.dataset.token = token.id;
  return tr;
}

function renderTokens() {
  $("tokens-rows").replaceChildren(...state.tokens.map(tokenRow));
  show("tokens-table", state.tokens.length > 0);
  show("tokens-empty", state.tokens.length === 0);
}

function hideSecret() {
  $("token-secret").replaceChildren();
  show("token-secret", false);
}

async function createToken(event) {
  event.preventDefault();
  fail("token-form-error", "");
  const result = await send("POST", "/api/v1/tokens", { name: $("tk-name").value });
  if (!result.ok) {
    fail("token-form-error", message(result));
    return;
  }
  const { token, secret } = result.body;
  const name = `the API token ${token.name}`;
  $("token-form").reset();
  say("integrations", `Created the API token ${token.name}.`);
  const done = button("Done", "secondary small", `Done: hide the secret of ${token.name}`, () => {
    hideSecret();
    $("tk-name").focus();
  });
  $("token-secret").replaceChildren(
    el("h4", { textContent: `The secret of ${token.name}` }),
    el("p", {
      textContent:
        "Copy it now and keep it somewhere safe: it won't be shown again. " +
        "Software sends it as the header Authorization: Bearer followed by the secret.",
    }),
    copyField("token-secret-value", `Secret of ${name}`, secret, `Copy the secret of ${token.name}`),
    el("div", { className: "controls" }, done),
  );
  show("token-secret", true);
  $("token-secret-value").focus();
  $("token-secret-value").select();
  await load();
}

async function revokeToken(token) {
  const result = await api(`/api/v1/tokens/${token.id}`, { method: "DELETE" });
  if (!result.ok) {
    fail("integrations-error", message(result));
    return false;
  }
  say("integrations", `Revoked the API token ${token.name}.`);
  await load();
  $("tk-name").focus();
  return true;
}

// --- webhooks --------------------------------------------------------------------------------------

function eventItems() {
  return EVENTS.map(([id, detail]) => ({ id, label: id, detail }));
}

function deliveryTable(deliveries) {
  if (deliveries.length === 0) {
    return el("p", { className: "muted", textContent: "Nothing sent yet." });
  }
  const head = ["Time", "Event", "State", "Attempts", "Last answer"].map((text) =>
    el("th", { scope: "col", textContent: text }),
  );
  const rows = deliveries.map((d) => {
    const last = [d.last_status ? `HTTP ${d.last_status}` : "", d.last_error || ""].filter(Boolean).join(": ");
    const state = DELIVERY_STATES[d.state] || d.state;
    const next = d.next_attempt_at ? `, next ${dateTime(d.next_attempt_at)}` : "";
    return el(
      "tr",
      {},
      cell(dateTime(d.created_at)),
      el("td", {}, el("code", { textContent: d.type })),
      cell(`${state}${next}`, `delivery-${d.state}`),
      cell(String(d.attempts)),
      cell(last || "–"),
    );
  });
  return el(
    "div",
    { className: "table-wrap" },
    el("table", {}, el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows)),
  );
}

async function loadDeliveries(endpoint, box) {
  const result = await api(`/api/v1/webhooks/${endpoint.id}/deliveries`);
  if (!result.ok) {
    box.replaceChildren(el("p", { className: "error", textContent: message(result), attrs: { role: "alert" } }));
    return;
  }
  const again = button("Refresh", "secondary small", `Refresh the deliveries to ${endpoint.url}`, () =>
    loadDeliveries(endpoint, box),
  );
  box.replaceChildren(el("h5", { textContent: "Latest deliveries" }), deliveryTable(result.body.deliveries), again);
}

function webhookItem(endpoint) {
  const url = endpoint.url;
  const facts = [
    ["Events", endpoint.events.join(", ")],
    ["Description", endpoint.description || "–"],
    ["State", endpoint.enabled ? "Enabled" : "Disabled: nothing is sent"],
    ["Created", dateTime(endpoint.created_at)],
  ];
  const list = el("dl", { className: "facts" });
  for (const [term, text] of facts) {
    list.append(el("dt", { textContent: term }), el("dd", { textContent: text }));
  }
  const boxId = `deliveries-${endpoint.id}`;
  const box = el("div", { id: boxId, className: "deliveries" });
  box.hidden = true;
  const toggle = button("Deliveries", "secondary small", `Deliveries to ${endpoint.url}`, () => {
    const opening = box.hidden;
    box.hidden = !opening;
    toggle.setAttribute("aria-expanded", String(opening));
    if (opening) {
      box.replaceChildren(el("p", { className: "muted", textContent: "Loading…" }));
      loadDeliveries(endpoint, box);
    }
  });
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-controls", boxId);
  const actions = el("div", { className: "controls" });
  actions.append(
    button("Edit", "secondary small", `Edit the webhook ${endpoint.url}`, () => openWebhookForm(endpoint)),
    toggle,
    deleteButton(actions, `the webhook ${endpoint.url}`, "Delete this webhook? Nothing more is sent to it.", () =>
      removeWebhook(endpoint),
    ),
  );
  const li = el(
    "li",
    { className: "item" },
    el("h4", { className: "url", textContent: endpoint.url }),
    list,
    copyField(`wh-secret-${endpoint.id}`, "Signing secret", endpoint.secret, `Copy the signing secret of ${url}`),
    el("p", { className: "hint", textContent: SIGNATURE_HINT }),
    actions,
    box,
  );
  li.dataset.webhook = endpoint.id;
  return li;
}

function renderWebhooks() {
  $("webhooks-list").replaceChildren(...state.webhooks.map(webhookItem));
  show("webhooks-empty", state.webhooks.length === 0);
}

function openWebhookForm(endpoint) {
  $("webhook-form").dataset.id = endpoint ? endpoint.id : "";
  $("webhook-form-title").textContent = endpoint ? "Edit webhook" : "New webhook";
  $("wf-url").value = endpoint ? endpoint.url : "";
  checkList("wf-events", eventItems(), endpoint ? endpoint.events : [], "");
  $("wf-description").value = endpoint ? endpoint.description || "" : "";
  // A new endpoint starts enabled; whether it stays so is an edit.
  $("wf-enabled").checked = endpoint ? endpoint.enabled : true;
  show("wf-enabled-box", Boolean(endpoint));
  $("webhook-submit").textContent = endpoint ? "Save webhook" : "Create webhook";
  say("integrations", "");
  fail("webhook-form-error", "");
  show("webhook-form", true);
  $("wf-url").focus();
}

function closeWebhookForm() {
  show("webhook-form", false);
  $("webhook-form").reset();
  $("webhook-new").focus();
}

async function saveWebhook(event) {
  event.preventDefault();
  const id = $("webhook-form").dataset.id;
  const data = { url: $("wf-url").value.trim(), events: checked("wf-events"), description: $("wf-description").value };
  if (id) {
    data.enabled = $("wf-enabled").checked;
  }
  const result = await send(id ? "PATCH" : "POST", id ? `/api/v1/webhooks/${id}` : "/api/v1/webhooks", data);
  if (!result.ok) {
    fail("webhook-form-error", message(result));
    return;
  }
  closeWebhookForm();
  say("integrations", `${id ? "Saved" : "Created"} the webhook ${result.body.webhook.url}.`);
  await load();
}

async function removeWebhook(endpoint) {
  const result = await api(`/api/v1/webhooks/${endpoint.id}`, { method: "DELETE" });
  if (!result.ok) {
    fail("integrations-error", message(result));
    return false;
  }
  say("integrations", `Deleted the webhook ${endpoint.url}.`);
  await load();
  $("webhook-new").focus();
  return true;
}

export default {
  init() {
    $("token-form").addEventListener("submit", createToken);
    $("webhook-new").addEventListener("click", () => openWebhookForm(null));
    $("webhook-cancel").addEventListener("click", closeWebhookForm);
    $("webhook-form").addEventListener("submit", saveWebhook);
  },

  async show() {
    fail("integrations-error", "");
    await load();
  },

  hide() {
    hideSecret();
  },

  reset() {
    hideSecret();
    show("webhook-form", false);
    $("webhook-form").reset();
    $("token-form").reset();
    state.tokens = [];
    state.webhooks = [];
  },
};
