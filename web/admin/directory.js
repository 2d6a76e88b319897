/*
 * The organisation's users, teams and buttons as last fetched: the sections that manage them render
 * these lists, and the others use them to name the ids the API returns (a call's agent and button,
 * an audit entry's actor).
 */

import { api, message } from "./api.js";

export const directory = { users: [], teams: [], buttons: [] };

/** Fetches each of ``kinds`` (users, teams, buttons); resolves to the server's message on failure, else null. */
export async function refresh(...kinds) {
  for (const kind of kinds) {
    const result = await api(`/api/v1/${kind}`);
    if (!result.ok) {
      return message(result);
    }
    directory[kind] = result.body[kind];
  }
  return null;
}

export function userName(id) {
  const user = directory.users.find((u) => u.id === id);
  return user ? user.name : "a removed user";
}

export function teamName(id) {
  const team = directory.teams.find((t) => t.id === id);
  return team ? team.name : "a removed team";
}

export function buttonName(id) {
  const item = directory.buttons.find((b) => b.id === id);
  return item ? item.name : "a removed button";
}

/** Users as choices ({id, label}) for a filter, by name. */
export function userChoices() {
  return [...directory.users].sort((a, b) => a.name.localeCompare(b.name)).map((u) => ({ id: u.id, label: u.name }));
}

export function buttonChoices() {
  return [...directory.buttons]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((b) => ({ id: b.id, label: b.name }));
}
