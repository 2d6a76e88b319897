/*
 * Privacy: how long each category of data is kept (and the purge that applies it, previewed or run
 * now), legal holds that keep data from every deletion, the rights of data subjects (callers, found
 * by the email or phone they gave: what is held, a copy, corrections, a restriction, erasure), the
 * deletion receipts, the record of processing, and in the danger zone the organisation's
 * termination. Every deletion asks first; every refusal shows the server's own message.
 */

import { api, message, send } from "./api.js";
import { OUTCOMES } from "./calls.js";
import { $, button, cell, dateTime, deleteButton, el, fail, say, show } from "./dom.js";
import { refresh, userName } from "./directory.js";

/** The categories of data, in the order the API keeps them. */
const CATEGORIES = {
  recordings: "Recordings",
  clips: "Clips (photos, videos, documents)",
  calls: "Calls",
  callbacks: "Callback requests",
  audit: "Audit log",
  webhook_log: "Webhook log",
};
/** What a receipt or request counted, for the counts the API names, in the order they are shown. */
const COUNTED = {
  recordings: CATEGORIES.recordings,
  clips: "Clips",
  calls: CATEGORIES.calls,
  calls_anonymised: "Calls anonymised",
  callbacks: CATEGORIES.callbacks,
  audit: CATEGORIES.audit,
  webhook_log: CATEGORIES.webhook_log,
  restrictions: "Restrictions",
  lifted_holds: "Lifted holds on record",
  lifted_restrictions: "Lifted restrictions on record",
  files: "Encrypted files",
  data_keys: "Data keys",
  organisation_keys: "Organisation keys",
};
const RECEIPT_KINDS = {
  purge: "Purge",
  erasure: "Erasure of a person's data",
  recording: "Deletion of a recording",
  termination: "Termination of the organisation",
};
const REQUEST_KINDS = {
  export: "Export",
  rectify: "Rectification",
  restrict: "Restriction",
  lift_restriction: "Restriction lifted",
  erase: "Erasure",
};
const UNTIL_DELETED = "Until deleted by hand";

const state = {
  /** The person shown: the API's ``subject`` of the last lookup. */
  subject: null,
  /** The Blob URL of the termination receipt, revoked at logout. */
  terminationUrl: null,
};

function facts(pairs) {
  const list = el("dl", { className: "facts" });
  for (const [term, text] of pairs) {
    list.append(el("dt", { textContent: term }), el("dd", { textContent: text }));
  }
  return list;
}

function table(labelledBy, heads, rows) {
  const head = heads.map((text) => el("th", { scope: "col", textContent: text }));
  const node = el("table", {}, el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows));
  if (labelledBy) {
    node.setAttribute("aria-labelledby", labelledBy);
  }
  return el("div", { className: "table-wrap" }, node);
}

function days(value) {
  return value === null || value === undefined ? UNTIL_DELETED : `${value} days`;
}

/** ``{recordings: 2, calls: 0}`` as "Recordings: 2"; "Nothing" when every count is zero. */
function countsText(counts) {
  const order = Object.keys(COUNTED);
  const rank = (name) => (order.includes(name) ? order.indexOf(name) : order.length);
  const parts = Object.entries(counts || {})
    .filter(([, n]) => n)
    .sort(([a], [b]) => rank(a) - rank(b))
    .map(([name, n]) => `${COUNTED[name] || name.replaceAll("_", " ")}: ${n}`);
  return parts.length ? parts.join(", ") : "Nothing";
}

/** The person as they were looked up: their email, their phone, or both. */
function who(subject) {
  return [subject.email, subject.phone].filter(Boolean).join(" or ");
}

/** A link that downloads the receipt ``id`` as a JSON file the server names. */
function receiptLink(id, label, text = "Download") {
  const href = `/api/v1/receipts/${encodeURIComponent(id)}`;
  const link = el("a", { href, className: "button-link", textContent: text });
  link.setAttribute("download", "");
  link.setAttribute("aria-label", label);
  return link;
}

/** The file name of a Content-Disposition header, or ``fallback``. */
function fileName(response, fallback) {
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

/** Has the browser save ``blob`` as ``name``. */
function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// --- retention and the purge -----------------------------------------------------------------------

function retentionField(category, body) {
  const label = CATEGORIES[category];
  const { min_days: low, max_days: high } = body.limits[category];
  const kept = body.retention[category];
  const fallback = body.defaults[category];
  const id = `rt-${category}`;
  const input = el("input", {
    id,
    type: "number",
    min: String(low),
    max: String(high),
    step: "1",
    inputMode: "numeric",
    value: kept === null ? "" : String(kept),
    disabled: kept === null,
    attrs: { "aria-describedby": `${id}-hint` },
  });
  const forever = el("input", { id: `${id}-forever`, type: "checkbox", checked: kept === null });
  forever.addEventListener("change", () => {
    input.disabled = forever.checked;
    if (!forever.checked && !input.value) {
      input.value = String(fallback === null ? high : fallback);
    }
  });
  const hint = `From ${low} to ${high} days. Default: ${days(fallback).toLowerCase()}.`;
  return el(
    "div",
    { className: "retention-field" },
    el("label", { htmlFor: id, textContent: `${label}: days kept` }),
    el(
      "div",
      { className: "controls" },
      input,
      el(
        "div",
        { className: "check" },
        forever,
        el("label", { htmlFor: forever.id, textContent: `Keep ${label.toLowerCase()} until deleted by hand` }),
      ),
    ),
    el("p", { id: `${id}-hint`, className: "hint", textContent: hint }),
  );
}

function renderRetention(body) {
  $("retention-fields").replaceChildren(...Object.keys(CATEGORIES).map((c) => retentionField(c, body)));
}

async function loadRetention() {
  const result = await api("/api/v1/retention");
  if (!result.ok) {
    return message(result);
  }
  renderRetention(result.body);
  return null;
}

async function saveRetention(event) {
  event.preventDefault();
  fail("retention-form-error", "");
  const data = {};
  for (const category of Object.keys(CATEGORIES)) {
    const input = $(`rt-${category}`);
    if (!input) {
      return;
    }
    const text = input.value.trim();
    // What is not a whole number goes as typed: the server says what it takes.
    data[category] = $(`rt-${category}-forever`).checked ? null : /^\d+$/.test(text) ? Number(text) : text;
  }
  const result = await send("PUT", "/api/v1/retention", data);
  if (!result.ok) {
    fail("retention-form-error", message(result));
    return;
  }
  renderRetention(result.body);
  say("retention", "Saved the retention. The next purge applies it to the data already stored.");
  await loadRecord();
}

function purgeTable(purge, doneHead) {
  const held = purge.kept_under_legal_hold || {};
  const rows = Object.entries(CATEGORIES).map(([category, label]) => {
    const tr = el(
      "tr",
      {},
      el("th", { scope: "row", textContent: label }),
      cell(days(purge.retention_days[category])),
      cell(String(purge.due[category] || 0)),
      cell(category in held ? String(held[category]) : "–"),
    );
    tr.dataset.category = category;
    return tr;
  });
  return table("purge-result-title", ["Category", "Retention", doneHead, "Kept under a legal hold"], rows);
}

async function purge(dryRun) {
  fail("retention-error", "");
  const result = await send("POST", "/api/v1/retention/purge", { dry_run: dryRun });
  if (!result.ok) {
    fail("retention-error", message(result));
    return false;
  }
  const { purge: report, receipt } = result.body;
  const title = dryRun ? "What a purge would delete now" : "What the purge deleted";
  const parts = [el("h5", { id: "purge-result-title", textContent: title })];
  parts.push(purgeTable(report, dryRun ? "Due for deletion" : "Deleted"));
  if (receipt) {
    const when = dateTime(receipt.finished_at);
    parts.push(
      el("p", { className: "controls" }, receiptLink(receipt.receipt, `Download the receipt of the purge of ${when}`)),
    );
  }
  $("purge-result").replaceChildren(...parts);
  show("purge-result", true);
  if (dryRun) {
    say("retention", "Previewed the purge: nothing was deleted.");
  } else {
    say("retention", receipt ? `Purged: ${countsText(report.due)}.` : "Purged: nothing was due.");
    await loadReceipts();
  }
  return true;
}

function renderPurgeControls() {
  const controls = $("purge-controls");
  const preview = button("Preview purge", "secondary", null, () => purge(true));
  const question = "Delete everything past its retention now, for good? What a legal hold covers stays.";
  const now = deleteButton(
    controls,
    "everything past its retention",
    question,
    async () => {
      const done = await purge(false);
      if (done) {
        renderPurgeControls();
        $("purge-result-title").tabIndex = -1;
        $("purge-result-title").focus();
      }
      return done;
    },
    { verb: "Purge now", doing: "purging" },
  );
  now.className = "danger";
  controls.replaceChildren(preview, now);
}

// --- legal holds -----------------------------------------------------------------------------------

function holdScope(hold) {
  if (hold.scope === "call") {
    return el("td", {}, el("a", { href: `#calls/${hold.call_id}`, textContent: `Call ${hold.call_id.slice(0, 8)}` }));
  }
  if (hold.scope === "subject") {
    return cell(`Person: ${who(hold)}`);
  }
  return cell("The whole organisation");
}

function holdRow(hold) {
  const actions = el("div", { className: "controls" });
  if (hold.lifted_at) {
    actions.append(el("span", { className: "muted", textContent: "–" }));
  } else {
    const question = "Lift this hold? What it kept can be deleted again, by the purge as by an erasure.";
    const lift = { verb: "Lift", doing: "lifting" };
    actions.append(deleteButton(actions, `the hold “${hold.reason}”`, question, () => liftHold(hold), lift));
  }
  const by = `by ${hold.created_by ? userName(hold.created_by) : "–"}`;
  const placed = el(
    "td",
    {},
    el("div", { textContent: dateTime(hold.created_at) }),
    el("div", { className: "muted small", textContent: by }),
  );
  const lifted = hold.lifted_at
    ? `Lifted ${dateTime(hold.lifted_at)} by ${hold.lifted_by ? userName(hold.lifted_by) : "–"}`
    : "Active";
  const tr = el(
    "tr",
    {},
    holdScope(hold),
    cell(hold.reason),
    placed,
    cell(lifted, hold.lifted_at ? "revoked" : "strong"),
    el("td", {}, actions),
  );
  tr.dataset.hold = hold.id;
  return tr;
}

async function loadHolds() {
  const result = await api("/api/v1/legal-holds");
  if (!result.ok) {
    return message(result);
  }
  const holds = result.body.holds;
  $("holds-rows").replaceChildren(...holds.map(holdRow));
  show("holds-table", holds.length > 0);
  show("holds-empty", holds.length === 0);
  return null;
}

function holdScopeChosen() {
  return $("hold-form").querySelector("input[name=hold-scope]:checked").value;
}

function showHoldFields() {
  const scope = holdScopeChosen();
  show("hf-call-box", scope === "call");
  show("hf-subject-box", scope === "subject");
}

async function createHold(event) {
  event.preventDefault();
  fail("hold-form-error", "");
  const data = { reason: $("hf-reason").value };
  const scope = holdScopeChosen();
  // Without a call, an email or a phone the server holds the whole organisation: a hold meant for
  // one call or one person never goes without them.
  if (scope === "call") {
    data.call_id = $("hf-call").value.trim();
    if (!data.call_id) {
      fail("hold-form-error", "Give the ID of the call to hold.");
      $("hf-call").focus();
      return;
    }
  } else if (scope === "subject") {
    data.email = $("hf-email").value.trim() || null;
    data.phone = $("hf-phone").value.trim() || null;
    if (!data.email && !data.phone) {
      fail("hold-form-error", "Give the email or the phone of the person to hold.");
      $("hf-email").focus();
      return;
    }
  }
  const result = await send("POST", "/api/v1/legal-holds", data);
  if (!result.ok) {
    fail("hold-form-error", message(result));
    return;
  }
  $("hold-form").reset();
  showHoldFields();
  say("holds", `Placed the hold “${result.body.hold.reason}”.`);
  const failure = await loadHolds();
  if (failure) {
    fail("holds-error", failure);
  }
  await loadRecord();
}

async function liftHold(hold) {
  const result = await api(`/api/v1/legal-holds/${hold.id}`, { method: "DELETE" });
  if (!result.ok) {
    fail("holds-error", message(result));
    return false;
  }
  say("holds", `Lifted the hold “${hold.reason}”.`);
  const failure = await loadHolds();
  if (failure) {
    fail("holds-error", failure);
  }
  $("hf-reason").focus();
  await loadRecord();
  return true;
}

// --- data subjects ---------------------------------------------------------------------------------

/** The person shown, as the API names them in a request. */
function subjectBody() {
  const { email, phone } = state.subject;
  return { ...(email ? { email } : {}), ...(phone ? { phone } : {}) };
}

function subjectCalls(calls) {
  if (calls.length === 0) {
    return el("p", { className: "muted", textContent: "No calls." });
  }
  const rows = calls.map((call) => {
    const when = dateTime(call.created_at);
    const link = el("a", { href: `#calls/${call.id}`, textContent: when });
    link.setAttribute("aria-label", `Open the call of ${when}`);
    const tr = el(
      "tr",
      {},
      el("td", {}, link),
      cell(call.outcome ? OUTCOMES[call.outcome] || call.outcome : "In progress"),
      cell(call.name || "–"),
      cell(call.email || "–"),
      cell(call.phone || "–"),
      cell(call.recorded ? "Yes" : "No"),
    );
    tr.dataset.call = call.id;
    return tr;
  });
  return table("subject-title", ["Time", "Outcome", "Name", "Email", "Phone", "Recorded"], rows);
}

function renderSubject() {
  const subject = state.subject;
  const name = who(subject);
  $("subject-title").textContent = `What is held about ${name}`;
  $("subject-facts").replaceChildren(
    facts([
      ["Calls", String(subject.calls.length)],
      ["Callback requests", String(subject.callbacks)],
      ["Recordings", String(subject.recordings)],
      [
        "Processing",
        subject.restricted
          ? "Restricted: kept, but left out of webhooks, statistics, lists, exports and playback"
          : "Not restricted",
      ],
      ["Legal hold", subject.held ? "Yes: nothing of it can be erased until the hold is lifted" : "No"],
    ]),
  );
  $("subject-calls").replaceChildren(subjectCalls(subject.calls));
  const actions = $("subject-actions");
  const restrict = subject.restricted
    ? button("Lift restriction", "secondary", `Lift the restriction on the data of ${name}`, () =>
        restrictSubject(true),
      )
    : button("Restrict", "secondary", `Restrict the processing of the data of ${name}`, () =>
        restrictSubject(false),
      );
  const question =
    "Erase everything held about this person? Their recordings are destroyed, their callback requests " +
    "deleted and their calls anonymised. This cannot be undone.";
  restrict.id = "subject-restrict";
  const erasing = { verb: "Erase", doing: "erasing" };
  const erase = deleteButton(actions, `the data of ${name}`, question, eraseSubject, erasing);
  erase.className = "danger";
  actions.replaceChildren(
    button("Export", "secondary", `Export the data of ${name}`, exportSubject),
    button("Rectify", "secondary", `Rectify the data of ${name}`, openRectify),
    restrict,
    erase,
  );
  show("subject-result", true);
}

async function lookup(subject, done) {
  const result = await send("POST", "/api/v1/data-subjects/lookup", subject);
  if (!result.ok) {
    fail("subject-error", message(result));
    return false;
  }
  state.subject = result.body.subject;
  closeRectify(false);
  renderSubject();
  say("subject", done || "");
  return true;
}

async function findSubject(event) {
  event.preventDefault();
  const subject = {};
  for (const [name, id] of [
    ["email", "ds-email"],
    ["phone", "ds-phone"],
  ]) {
    const value = $(id).value.trim();
    if (value) {
      subject[name] = value;
    }
  }
  fail("subject-error", "");
  show("subject-receipt", false);
  if (await lookup(subject)) {
    $("subject-title").focus();
  } else {
    state.subject = null;
    show("subject-result", false);
  }
}

async function exportSubject() {
  const name = who(state.subject);
  let response;
  try {
    response = await fetch("/api/v1/data-subjects/export", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(subjectBody()),
    });
  } catch {
    fail("subject-error", "The server cannot be reached. Check the connection.");
    return;
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    fail("subject-error", message({ status: response.status, body }));
    if (response.status === 401) {
      await api("/api/v1/me"); // the session is gone: api.js logs out
    }
    return;
  }
  const file = fileName(response, "data-subject-export.zip");
  saveBlob(await response.blob(), file);
  say("subject", `Exported the data of ${name} as ${file}.`);
  await loadRequests();
}

function openRectify() {
  fail("rectify-form-error", "");
  $("rectify-form").reset();
  show("rectify-form", true);
  $("rf-name").focus();
}

function closeRectify(focus = true) {
  show("rectify-form", false);
  $("rectify-form").reset();
  fail("rectify-form-error", "");
  if (focus && state.subject) {
    $("subject-title").focus();
  }
}

async function rectifySubject(event) {
  event.preventDefault();
  fail("rectify-form-error", "");
  const name = who(state.subject);
  const changes = {};
  for (const [field, id] of [
    ["name", "rf-name"],
    ["email", "rf-email"],
    ["phone", "rf-phone"],
  ]) {
    const value = $(id).value.trim();
    if (value) {
      changes[field] = value;
    }
  }
  const result = await send("POST", "/api/v1/data-subjects/rectify", { ...subjectBody(), set: changes });
  if (!result.ok) {
    fail("rectify-form-error", message(result));
    return;
  }
  // Corrected, the person is known by their new email or phone.
  const next = { ...subjectBody(), ...(changes.email ? { email: changes.email } : {}) };
  if (changes.phone) {
    next.phone = changes.phone;
  }
  $("ds-email").value = next.email || "";
  $("ds-phone").value = next.phone || "";
  const { calls, callbacks } = result.body.rectified;
  const done = `Corrected the data of ${name}: calls ${calls}, callback requests ${callbacks}.`;
  if (await lookup(next, done)) {
    $("subject-title").focus();
  }
  await loadRequests();
}

async function restrictSubject(lift) {
  const name = who(state.subject);
  const path = lift ? "/api/v1/data-subjects/lift-restriction" : "/api/v1/data-subjects/restrict";
  const result = await send("POST", path, subjectBody());
  if (!result.ok) {
    fail("subject-error", message(result));
    return;
  }
  const counts = result.body[lift ? "lifted" : "restricted"];
  const rows = `calls ${counts.calls}, callback requests ${counts.callbacks}`;
  state.subject.restricted = !lift;
  renderSubject();
  say(
    "subject",
    lift
      ? `Lifted the restriction on the data of ${name} (${rows}): it is processed again.`
      : `Restricted the processing of the data of ${name} (${rows}): it is kept, but left out.`,
  );
  $("subject-restrict").focus();
  await loadRequests();
}

async function eraseSubject() {
  const name = who(state.subject);
  const result = await send("POST", "/api/v1/data-subjects/erase", subjectBody());
  if (!result.ok) {
    fail("subject-error", message(result));
    return false;
  }
  const receipt = result.body.receipt;
  state.subject = null;
  closeRectify(false);
  show("subject-result", false);
  const link = receiptLink(
    receipt.receipt,
    `Download the receipt of the erasure of the data of ${name}`,
    "Download the receipt",
  );
  $("subject-receipt").replaceChildren(
    el("h4", { textContent: `Erased the data of ${name}` }),
    el("p", { textContent: `${countsText(receipt.deleted)}. Receivers of webhooks are told.` }),
    el("div", { className: "controls" }, link),
  );
  show("subject-receipt", true);
  say("subject", `Erased the data of ${name}.`);
  link.focus();
  await loadRequests();
  await loadReceipts();
  // An erasure also removes the record of the person's lifted holds.
  const failure = await loadHolds();
  if (failure) {
    fail("holds-error", failure);
  }
  return true;
}

async function loadRequests() {
  const result = await api("/api/v1/data-subject-requests");
  if (!result.ok) {
    fail("subject-error", message(result));
    return message(result);
  }
  const requests = result.body.requests;
  $("requests-rows").replaceChildren(
    ...requests.map((request) => {
      const when = dateTime(request.created_at);
      const receipt = request.receipt
        ? el("td", {}, receiptLink(request.receipt, `Download the receipt of the request of ${when}`))
        : cell("–");
      const tr = el(
        "tr",
        {},
        cell(when),
        cell(REQUEST_KINDS[request.kind] || request.kind),
        cell(request.created_by ? userName(request.created_by) : "–"),
        cell(countsText(request.counts)),
        receipt,
      );
      tr.dataset.kind = request.kind;
      return tr;
    }),
  );
  show("requests-table", requests.length > 0);
  show("requests-empty", requests.length === 0);
  return null;
}

// --- receipts --------------------------------------------------------------------------------------

async function loadReceipts() {
  const result = await api("/api/v1/receipts");
  if (!result.ok) {
    fail("receipts-error", message(result));
    return message(result);
  }
  fail("receipts-error", "");
  const receipts = result.body.receipts;
  $("receipts-rows").replaceChildren(
    ...receipts.map((receipt) => {
      const when = dateTime(receipt.finished_at);
      const kind = RECEIPT_KINDS[receipt.kind] || receipt.kind;
      const tr = el(
        "tr",
        {},
        cell(when),
        cell(kind),
        cell(receipt.requested_by ? userName(receipt.requested_by) : "The purge"),
        cell(countsText(receipt.deleted)),
        cell(Object.keys(receipt.kept_under_legal_hold || {}).length ? countsText(receipt.kept_under_legal_hold) : "–"),
        el("td", {}, receiptLink(receipt.receipt, `Download the receipt of the ${kind.toLowerCase()} of ${when}`)),
      );
      tr.dataset.receipt = receipt.receipt;
      tr.dataset.kind = receipt.kind;
      return tr;
    }),
  );
  show("receipts-table", receipts.length > 0);
  show("receipts-empty", receipts.length === 0);
  return null;
}

// --- record of processing --------------------------------------------------------------------------

function renderRecord(record) {
  const categories = record.categories.map((c) => {
    const data = c.data.length ? c.data.join("; ") : "None collected";
    const buttons = c.buttons && c.buttons.length ? ` (buttons: ${c.buttons.join(", ")})` : "";
    const tr = el(
      "tr",
      {},
      el("th", { scope: "row", textContent: CATEGORIES[c.category] || c.category }),
      cell(data + buttons),
      cell(c.subjects),
      cell(c.purpose),
      cell(c.retention),
    );
    tr.dataset.category = c.category;
    return tr;
  });
  const recipients = record.recipients.length
    ? el(
        "ul",
        {},
        ...record.recipients.map((r) => {
          const events = r.events.join(", ");
          const text = `${events}${r.enabled ? "" : " (disabled)"}${r.description ? `: ${r.description}` : ""}`;
          return el("li", {}, el("span", { className: "url", textContent: r.url }), ` ${text}`);
        }),
      )
    : el("p", { className: "muted", textContent: "None: no webhook is set up." });
  $("record-body").replaceChildren(
    facts([
      ["Controller", record.controller],
      ["Processor", record.processor],
      ["Generated", dateTime(record.generated_at)],
      ["Transfers", record.transfers_outside_the_controller],
      ["Active legal holds", String(record.legal_holds_active)],
    ]),
    el("h4", { id: "record-categories-title", textContent: "Categories of data" }),
    table("record-categories-title", ["Category", "Data", "Data subjects", "Purpose", "Kept"], categories),
    el("h4", { textContent: "Recipients" }),
    recipients,
    el("h4", { textContent: "Security measures" }),
    el("ul", {}, ...record.security_measures.map((m) => el("li", { textContent: m }))),
  );
}

async function loadRecord() {
  const result = await api("/api/v1/processing-record");
  if (!result.ok) {
    fail("record-error", message(result));
    return message(result);
  }
  fail("record-error", "");
  // The organisation's name, which the termination asks for, is the record's controller.
  $("tz-confirm-hint").textContent = `Type the organisation's name exactly: ${result.body.record.controller}`;
  renderRecord(result.body.record);
  return null;
}

// --- termination -----------------------------------------------------------------------------------

function forgetTermination() {
  if (state.terminationUrl) {
    URL.revokeObjectURL(state.terminationUrl);
    state.terminationUrl = null;
  }
  $("terminated").replaceChildren();
  show("terminated", false);
}

async function terminate(event) {
  event.preventDefault();
  fail("terminate-error", "");
  const result = await send("POST", "/api/v1/organisation/terminate", { confirm: $("tz-confirm").value });
  if (!result.ok) {
    fail("terminate-error", message(result));
    return;
  }
  const receipt = result.body.receipt;
  const text = JSON.stringify(receipt, null, 2);
  forgetTermination();
  state.terminationUrl = URL.createObjectURL(new Blob([text], { type: "application/json" }));
  const link = el("a", {
    href: state.terminationUrl,
    download: `deletion-receipt-${receipt.receipt}.json`,
    className: "button-link",
    textContent: "Download the deletion receipt",
  });
  $("terminate-form").reset();
  show("terminate-form", false);
  $("terminated").replaceChildren(
    el("h4", { textContent: "Your organisation no longer exists" }),
    el("p", {
      textContent:
        "All of its data is deleted and every session ended, yours included: nobody can log in to it any more. " +
        "Download the deletion receipt now; this page cannot show it again.",
    }),
    el("div", { className: "controls" }, link),
    el("pre", { className: "receipt", textContent: text }),
  );
  show("terminated", true);
  $("terminate-status").textContent = "The organisation was terminated.";
  link.focus();
}

export default {
  init() {
    renderPurgeControls();
    $("retention-form").addEventListener("submit", saveRetention);
    $("hold-form").addEventListener("submit", createHold);
    for (const radio of $("hold-form").querySelectorAll("input[name=hold-scope]")) {
      radio.addEventListener("change", showHoldFields);
    }
    $("subject-form").addEventListener("submit", findSubject);
    $("rectify-form").addEventListener("submit", rectifySubject);
    $("rectify-cancel").addEventListener("click", () => closeRectify());
    $("terminate-form").addEventListener("submit", terminate);
  },

  async show() {
    fail("privacy-error", "");
    const failure = (await refresh("users")) || (await loadRetention()) || (await loadHolds());
    if (failure) {
      fail("privacy-error", failure);
      return;
    }
    await loadRequests();
    await loadReceipts();
    await loadRecord();
  },

  reset() {
    state.subject = null;
    forgetTermination();
    for (const form of ["retention-form", "hold-form", "subject-form", "rectify-form", "terminate-form"]) {
      $(form).reset();
    }
    showHoldFields();
    show("rectify-form", false);
    show("terminate-form", true);
    $("terminate-status").textContent = "";
    $("tz-confirm-hint").textContent = "Type the organisation's name exactly.";
    for (const id of ["retention-fields", "purge-result", "holds-rows", "requests-rows", "receipts-rows"]) {
      $(id).replaceChildren();
    }
    $("record-body").replaceChildren();
    $("subject-receipt").replaceChildren();
    for (const id of ["purge-result", "subject-result", "subject-receipt", "holds-table", "requests-table"]) {
      show(id, false);
    }
    show("receipts-table", false);
    for (const part of ["retention", "holds", "subject"]) {
      say(part, "");
    }
    renderPurgeControls();
  },
};
