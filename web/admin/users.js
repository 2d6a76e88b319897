/* Users: the organisation's agents and admins; create, edit, disable and delete them. */

import { api, message, send, session } from "./api.js";
import { $, button, cell, deleteButton, el, fail, reloading, say, show } from "./dom.js";
import { directory, refresh } from "./directory.js";

const PRESENCE = {
  offline: "Offline",
  available: "Available",
  ringing: "Ringing",
  busy: "In a call",
  wrap_up: "Wrapping up",
  away: "Away",
};

async function load() {
  const failure = await refresh("users");
  if (failure) {
    fail("users-error", failure);
    return;
  }
  render();
}

function userStatus(user) {
  if (user.disabled) {
    return el("span", { className: "badge disabled", textContent: "Disabled" });
  }
  const badge = el("span", { className: "presence", textContent: PRESENCE[user.presence] || user.presence });
  badge.dataset.presence = user.presence;
  return badge;
}

function userRow(user) {
  const actions = el("div", { className: "controls" });
  actions.append(button("Edit", "secondary small", `Edit ${user.name}`, () => openForm(user)));
  if (session.me && user.id === session.me.id) {
    actions.append(el("span", { className: "muted", textContent: "You" }));
  } else {
    const verb = user.disabled ? "Enable" : "Disable";
    actions.append(
      button(verb, "secondary small", `${verb} ${user.name}`, () => setDisabled(user, !user.disabled)),
      deleteButton(actions, user.name, `Delete ${user.name} for good?`, () => remove(user)),
    );
  }
  const name = el("td", {}, el("div", { className: "strong", textContent: user.name }));
  name.append(el("div", { className: "muted small", textContent: user.email }));
  const tr = el(
    "tr",
    {},
    name,
    cell(user.role === "admin" ? "Admin" : "Agent"),
    cell(user.agent_code || "–"),
    cell(user.phone || "–"),
    el("td", {}, userStatus(user)),
    el("td", {}, actions),
  );
  tr.dataset.user = user.id;
  return tr;
}

function render() {
  $("users-rows").replaceChildren(...directory.users.map(userRow));
  show("users-table", directory.users.length > 0);
  show("users-empty", directory.users.length === 0);
}

function openForm(user) {
  const form = $("user-form");
  form.dataset.id = user ? user.id : "";
  $("user-form-title").textContent = user ? `Edit ${user.name}` : "New user";
  $("uf-name").value = user ? user.name : "";
  $("uf-email").value = user ? user.email : "";
  $("uf-role").value = user ? user.role : "agent";
  $("uf-agent-code").value = user ? user.agent_code || "" : "";
  $("uf-phone").value = user ? user.phone || "" : "";
  $("uf-password").value = "";
  $("uf-password-label").textContent = user ? "New password" : "Password";
  $("uf-password-hint").textContent = user
    ? "Leave empty to keep the current password. A new one logs the user out everywhere."
    : "At least 10 characters.";
  $("user-submit").textContent = user ? "Save user" : "Create user";
  say("users", "");
  fail("user-form-error", "");
  show("user-form", true);
  $("uf-name").focus();
}

function closeForm() {
  show("user-form", false);
  $("user-form").reset();
  $("user-new").focus();
}

async function save(event) {
  event.preventDefault();
  const id = $("user-form").dataset.id;
  const data = {
    name: $("uf-name").value,
    email: $("uf-email").value,
    role: $("uf-role").value,
    agent_code: $("uf-agent-code").value.trim() || null,
    phone: $("uf-phone").value.trim() || null,
  };
  const password = $("uf-password").value;
  if (!id || password) {
    data.password = password;
  }
  const result = await send(id ? "PATCH" : "POST", id ? `/api/v1/users/${id}` : "/api/v1/users", data);
  if (!result.ok) {
    fail("user-form-error", message(result));
    return;
  }
  closeForm();
  say("users", `${id ? "Saved" : "Created"} ${result.body.user.name}.`);
  await load();
}

async function setDisabled(user, disabled) {
  const result = await send("PATCH", `/api/v1/users/${user.id}`, { disabled });
  if (!result.ok) {
    fail("users-error", message(result));
    return;
  }
  say("users", `${result.body.user.name} is ${disabled ? "disabled and logged out" : "enabled again"}.`);
  await load();
  const row = $("users-rows").querySelector(`tr[data-user="${user.id}"]`);
  const next = row && row.querySelector(`button[aria-label^="${disabled ? "Enable" : "Disable"}"]`);
  if (next) {
    next.focus();
  }
}

async function remove(user) {
  const result = await api(`/api/v1/users/${user.id}`, { method: "DELETE" });
  if (!result.ok) {
    fail("users-error", message(result));
    return false;
  }
  say("users", `Deleted ${user.name}.`);
  await load();
  $("user-new").focus();
  return true;
}

export default {
  init() {
    $("user-new").addEventListener("click", () => openForm(null));
    $("user-cancel").addEventListener("click", closeForm);
    $("user-form").addEventListener("submit", save);
  },

  async show() {
    fail("users-error", "");
    await reloading("users-rows", load);
  },

  reset() {
    show("user-form", false);
    $("user-form").reset();
  },
};
