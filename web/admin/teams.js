/* Teams: named groups of users that a button can ring instead of naming each agent. */

import { api, message, send } from "./api.js";
import { $, button, cell, checked, checkList, deleteButton, el, fail, reloading, say, show } from "./dom.js";
import { directory, refresh, userName } from "./directory.js";

async function load() {
  const failure = await refresh("users", "teams");
  if (failure) {
    fail("teams-error", failure);
    return;
  }
  render();
}

/** Users as checkbox items, each with their email (and whether they are disabled). */
export function userItems() {
  return directory.users.map((u) => ({
    id: u.id,
    label: u.name,
    detail: u.disabled ? `${u.email}, disabled` : u.email,
  }));
}

function teamRow(team) {
  const members = team.members.map(userName).sort();
  const actions = el("div", { className: "controls" });
  actions.append(
    button("Edit", "secondary small", `Edit ${team.name}`, () => openForm(team)),
    deleteButton(actions, team.name, `Delete ${team.name}?`, () => remove(team)),
  );
  return el(
    "tr",
    {},
    el("td", { className: "strong", textContent: team.name }),
    cell(members.length ? members.join(", ") : "No members"),
    el("td", {}, actions),
  );
}

function render() {
  $("teams-rows").replaceChildren(...directory.teams.map(teamRow));
  show("teams-table", directory.teams.length > 0);
  show("teams-empty", directory.teams.length === 0);
}

function openForm(team) {
  $("team-form").dataset.id = team ? team.id : "";
  $("team-form-title").textContent = team ? `Edit ${team.name}` : "New team";
  $("tf-name").value = team ? team.name : "";
  checkList("tf-members", userItems(), team ? team.members : [], "No users yet: add some under Users.");
  $("team-submit").textContent = team ? "Save team" : "Create team";
  say("teams", "");
  fail("team-form-error", "");
  show("team-form", true);
  $("tf-name").focus();
}

function closeForm() {
  show("team-form", false);
  $("team-form").reset();
  $("team-new").focus();
}

async function save(event) {
  event.preventDefault();
  const id = $("team-form").dataset.id;
  const data = { name: $("tf-name").value, members: checked("tf-members") };
  const result = await send(id ? "PATCH" : "POST", id ? `/api/v1/teams/${id}` : "/api/v1/teams", data);
  if (!result.ok) {
    fail("team-form-error", message(result));
    return;
  }
  closeForm();
  say("teams", `${id ? "Saved" : "Created"} ${result.body.team.name}.`);
  await load();
}

async function remove(team) {
  const result = await api(`/api/v1/teams/${team.id}`, { method: "DELETE" });
  if (!result.ok) {
    fail("teams-error", message(result));
    return false;
  }
  say("teams", `Deleted ${team.name}.`);
  await load();
  $("team-new").focus();
  return true;
}

export default {
  init() {
    $("team-new").addEventListener("click", () => openForm(null));
    $("team-cancel").addEventListener("click", closeForm);
    $("team-form").addEventListener("submit", save);
  },

  async show() {
    fail("teams-error", "");
    await reloading("teams-rows", load);
  },

  reset() {
    show("team-form", false);
    $("team-form").reset();
  },
};
