/*
 * Admin console: boot, login and navigation. Each section of the page (#recordings, #calls,
 * #calls/{id}, #stats, #audit, #privacy, #integrations, #users, #teams, #buttons) is a module with
 * ``show`` (fetch and render), and optionally ``init`` (wire its controls, once), ``hide`` (when
 * another section is shown: stop playing, hide a secret) and ``reset`` (forget what it showed, at
 * logout).
 * Talks only to the REST API; plain JS, no dependencies; every text from the server is set with
 * textContent, and every refused change shows the server's own message.
 */

import { api, message, onSessionEnded, session } from "./api.js";
import audit from "./audit.js";
import buttons from "./buttons.js";
import call from "./call.js";
import calls from "./calls.js";
import { $, fail, show } from "./dom.js";
import integrations from "./integrations.js";
import privacy from "./privacy.js";
import recordings from "./recordings.js";
import stats from "./stats.js";
import teams from "./teams.js";
import users from "./users.js";

const SECTIONS = { recordings, calls, call, stats, audit, privacy, integrations, users, teams, buttons };
/** The tab a section is under when it has none of its own. */
const TAB_OF = { call: "calls" };
/** Without a hash (or with an unknown one), the page opens on the recordings. */
const DEFAULT = "recordings";

/** The section and its parameter the hash names: ``#calls/{id}`` is one call's page. */
function route() {
  const [name, param] = location.hash.slice(1).split("/", 2);
  if (name === "calls" && param) {
    return { name: "call", param: decodeURIComponent(param) };
  }
  return { name: name in SECTIONS && name !== "call" ? name : DEFAULT, param: null };
}

async function showSection({ name, param }, focus) {
  for (const [key, section] of Object.entries(SECTIONS)) {
    if (key !== name && !$(key).hidden && section.hide) {
      section.hide();
    }
    show(key, key === name);
  }
  const tab = TAB_OF[name] || name;
  for (const link of $("sections").querySelectorAll("a")) {
    if (link.dataset.section === tab) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  if (focus) {
    $(`${name}-title`).focus();
  }
  await SECTIONS[name].show(param);
}

function loggedIn(user) {
  session.me = user;
  $("user-name").textContent = user.name;
  show("who", true);
  show("login", false);
  if (user.role !== "admin") {
    show("recordings", true);
    fail("error", "This page is for admins. Agents answer calls in the agent console (/agent/).");
    return;
  }
  show("sections", true);
  showSection(route(), false);
}

function loggedOut(notice) {
  session.me = null;
  for (const [name, section] of Object.entries(SECTIONS)) {
    if (section.reset) {
      section.reset();
    }
    show(name, false);
  }
  show("sections", false);
  show("who", false);
  show("login", true);
  fail("login-error", notice || "");
}

onSessionEnded(loggedOut);

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  fail("login-error", "");
  const result = await api("/api/v1/session", {
    method: "POST",
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  if (!result.ok) {
    fail("login-error", message(result));
    return;
  }
  $("password").value = "";
  loggedIn(result.body.user);
});

$("logout").addEventListener("click", async () => {
  await api("/api/v1/session", { method: "DELETE" });
  loggedOut();
});

window.addEventListener("hashchange", () => {
  if (session.me && session.me.role === "admin") {
    showSection(route(), true);
  }
});

for (const section of Object.values(SECTIONS)) {
  if (section.init) {
    section.init();
  }
}

const me = await api("/api/v1/me");
show("loading", false);
if (me.ok) {
  loggedIn(me.body.user);
} else {
  show("login", true);
}
