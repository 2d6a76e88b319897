/*
 * Admin console: users, teams, buttons and recordings of the admin's organisation. Talks only to the
 * REST API (/api/v1). Plain JS, no dependencies; every text from the server is set with textContent,
 * and every refused change shows the server's own message next to its form.
 */
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);

  const SECTIONS = ["recordings", "users", "teams", "buttons"];
  const STRATEGIES = { ring_all: "Ring all", longest_idle: "Longest idle", round_robin: "Round robin" };
  const PRESENCE = {
    offline: "Offline",
    available: "Available",
    ringing: "Ringing",
    busy: "In a call",
    wrap_up: "Wrapping up",
    away: "Away",
  };
  const DAYS = [
    ["mon", "Monday"],
    ["tue", "Tuesday"],
    ["wed", "Wednesday"],
    ["thu", "Thursday"],
    ["fri", "Friday"],
    ["sat", "Saturday"],
    ["sun", "Sunday"],
  ];
  const FORM_MODES = [
    ["off", "Off"],
    ["optional", "Optional"],
    ["required", "Required"],
  ];
  const NEW_BUTTON = {
    name: "",
    allowed_origins: [],
    agents: [],
    teams: [],
    strategy: "ring_all",
    ring_timeout_s: null,
    max_queue_wait_s: 300,
    wrap_up_s: 0,
    opening_hours: null,
    time_zone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
    closed_message: "",
    recording_enabled: false,
    recording_notice: "",
    form_fields: { name: "off", email: "off", phone: "off" },
    language: "en",
    colour: "#1a7f4b",
    position: "bottom-right",
  };

  const state = { me: null, users: [], teams: [], buttons: [] };

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  /** An element with properties (textContent, className, type…) and children; never parses HTML. */
  function el(tag, props = {}, ...children) {
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

  function button(text, className, label, onClick) {
    const node = el("button", { type: "button", className, textContent: text });
    if (label) {
      node.setAttribute("aria-label", label);
    }
    node.addEventListener("click", onClick);
    return node;
  }

  async function api(path, options = {}) {
    const response = await fetch(path, {
      credentials: "same-origin",
      headers: options.body ? { "Content-Type": "application/json" } : {},
      ...options,
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401 && path !== "/api/v1/session" && state.me) {
      loggedOut("Your session has ended. Log in again.");
    }
    return { status: response.status, ok: response.ok, body };
  }

  function send(method, path, data) {
    return api(path, { method, body: JSON.stringify(data) });
  }

  function message(result) {
    return (result.body && result.body.message) || `Error ${result.status}`;
  }

  function fail(id, text) {
    $(id).textContent = text;
    show(id, Boolean(text));
  }

  function say(section, text) {
    fail(`${section}-error`, "");
    $(`${section}-status`).textContent = text;
  }

  /** Ticked ids of a checkbox list made by ``checkList``. */
  function checked(containerId) {
    return [...$(containerId).querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
  }

  /** Checkboxes for ``items`` ({id, label, detail}) in ``containerId``, ``ticked`` ids ticked. */
  function checkList(containerId, items, ticked, emptyText) {
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

  /**
   * A Delete button that first asks: it swaps ``controls``' buttons for a question, a confirm and a
   * cancel button (Escape cancels too). ``onConfirm`` resolves true when the thing is gone.
   */
  function deleteButton(controls, name, question, onConfirm) {
    const opener = button("Delete", "danger small", `Delete ${name}`, () => {
      const previous = [...controls.childNodes];
      const restore = () => {
        controls.replaceChildren(...previous);
        opener.focus();
      };
      const yes = button("Delete", "danger small", `Confirm deleting ${name}`, async () => {
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
   * Fetch what section ``name`` shows and render it; a failure is shown in that section. Teams name
   * their members, and buttons their agents and teams, so those sections fetch users (and teams) too.
   */
  async function load(name) {
    const kinds = { users: ["users"], teams: ["users", "teams"], buttons: ["users", "teams", "buttons"] }[name];
    for (const kind of kinds) {
      const result = await api(`/api/v1/${kind}`);
      if (!result.ok) {
        fail(`${name}-error`, message(result));
        return;
      }
      state[kind] = result.body[kind];
    }
    ({ users: renderUsers, teams: renderTeams, buttons: renderButtons })[name]();
  }

  function userName(id) {
    const user = state.users.find((u) => u.id === id);
    return user ? user.name : "a removed user";
  }

  function teamName(id) {
    const team = state.teams.find((t) => t.id === id);
    return team ? team.name : "a removed team";
  }

  // --- recordings ---------------------------------------------------------------------------------

  function duration(ms) {
    if (ms === null || ms === undefined) {
      return "–";
    }
    const seconds = Math.round(ms / 1000);
    return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  }

  function cell(text, className) {
    const td = el("td", { textContent: text });
    if (className) {
      td.className = className;
    }
    return td;
  }

  function play(recording, startedText) {
    const player = $("player");
    player.src = recording.audio_url;
    $("now-playing").textContent = `Playing the call of ${startedText} (visitor left, agent right).`;
    show("player-box", true);
    const playing = player.play();
    if (playing) {
      playing.catch(() => {});
    }
  }

  function recordingRow(recording) {
    const started = new Date(recording.started_at).toLocaleString();
    const controls = el("div", { className: "controls" });
    if (recording.state === "complete" || recording.state === "truncated") {
      const link = el("a", { href: recording.file_url, textContent: "Download" });
      link.setAttribute("aria-label", `Download the recording of ${started}`);
      controls.append(
        button("Play", "secondary play", `Play the call of ${started}`, () => play(recording, started)),
        link,
      );
    } else {
      controls.textContent = recording.state === "recording" ? "In progress" : "–";
    }
    return el(
      "tr",
      {},
      cell(started),
      cell(duration(recording.duration_ms)),
      cell(recording.state, `state-${recording.state}`),
      el("td", {}, controls),
    );
  }

  async function loadRecordings() {
    const result = await api("/api/v1/recordings");
    if (!result.ok) {
      fail("error", message(result));
      return;
    }
    fail("error", "");
    $("rows").replaceChildren(...result.body.recordings.map(recordingRow));
    show("table", result.body.recordings.length > 0);
    show("empty", result.body.recordings.length === 0);
  }

  // --- users --------------------------------------------------------------------------------------

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
    actions.append(button("Edit", "secondary small", `Edit ${user.name}`, () => openUserForm(user)));
    if (state.me && user.id === state.me.id) {
      actions.append(el("span", { className: "muted", textContent: "You" }));
    } else {
      const verb = user.disabled ? "Enable" : "Disable";
      actions.append(
        button(verb, "secondary small", `${verb} ${user.name}`, () => setDisabled(user, !user.disabled)),
        deleteButton(actions, user.name, `Delete ${user.name} for good?`, () => removeUser(user)),
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

  function renderUsers() {
    $("users-rows").replaceChildren(...state.users.map(userRow));
    show("users-table", state.users.length > 0);
    show("users-empty", state.users.length === 0);
  }

  function openUserForm(user) {
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

  function closeUserForm() {
    show("user-form", false);
    $("user-form").reset();
    $("user-new").focus();
  }

  async function saveUser(event) {
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
    closeUserForm();
    say("users", `${id ? "Saved" : "Created"} ${result.body.user.name}.`);
    await load("users");
  }

  async function setDisabled(user, disabled) {
    const result = await send("PATCH", `/api/v1/users/${user.id}`, { disabled });
    if (!result.ok) {
      fail("users-error", message(result));
      return;
    }
    say("users", `${result.body.user.name} is ${disabled ? "disabled and logged out" : "enabled again"}.`);
    await load("users");
    const row = $("users-rows").querySelector(`tr[data-user="${user.id}"]`);
    const next = row && row.querySelector(`button[aria-label^="${disabled ? "Enable" : "Disable"}"]`);
    if (next) {
      next.focus();
    }
  }

  async function removeUser(user) {
    const result = await api(`/api/v1/users/${user.id}`, { method: "DELETE" });
    if (!result.ok) {
      fail("users-error", message(result));
      return false;
    }
    say("users", `Deleted ${user.name}.`);
    await load("users");
    $("user-new").focus();
    return true;
  }

  // --- teams --------------------------------------------------------------------------------------

  function teamRow(team) {
    const members = team.members.map(userName).sort();
    const actions = el("div", { className: "controls" });
    actions.append(
      button("Edit", "secondary small", `Edit ${team.name}`, () => openTeamForm(team)),
      deleteButton(actions, team.name, `Delete ${team.name}?`, () => removeTeam(team)),
    );
    return el(
      "tr",
      {},
      el("td", { className: "strong", textContent: team.name }),
      cell(members.length ? members.join(", ") : "No members"),
      el("td", {}, actions),
    );
  }

  function renderTeams() {
    $("teams-rows").replaceChildren(...state.teams.map(teamRow));
    show("teams-table", state.teams.length > 0);
    show("teams-empty", state.teams.length === 0);
  }

  function userItems() {
    return state.users.map((u) => ({ id: u.id, label: u.name, detail: u.disabled ? `${u.email}, disabled` : u.email }));
  }

  function openTeamForm(team) {
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

  function closeTeamForm() {
    show("team-form", false);
    $("team-form").reset();
    $("team-new").focus();
  }

  async function saveTeam(event) {
    event.preventDefault();
    const id = $("team-form").dataset.id;
    const data = { name: $("tf-name").value, members: checked("tf-members") };
    const result = await send(id ? "PATCH" : "POST", id ? `/api/v1/teams/${id}` : "/api/v1/teams", data);
    if (!result.ok) {
      fail("team-form-error", message(result));
      return;
    }
    closeTeamForm();
    say("teams", `${id ? "Saved" : "Created"} ${result.body.team.name}.`);
    await load("teams");
  }

  async function removeTeam(team) {
    const result = await api(`/api/v1/teams/${team.id}`, { method: "DELETE" });
    if (!result.ok) {
      fail("teams-error", message(result));
      return false;
    }
    say("teams", `Deleted ${team.name}.`);
    await load("teams");
    $("team-new").focus();
    return true;
  }

  // --- buttons ------------------------------------------------------------------------------------

  function hoursText(item) {
    if (item.opening_hours === null) {
      return "Always open";
    }
    const open = DAYS.filter(([day]) => (item.opening_hours[day] || []).length > 0).map(
      ([day, name]) => `${name.slice(0, 3)} ${item.opening_hours[day].map(([a, b]) => `${a}–${b}`).join(", ")}`,
    );
    return `${open.length ? open.join("; ") : "Closed every day"} (${item.time_zone})`;
  }

  function buttonItem(item) {
    const targets = [...item.teams.map(teamName), ...item.agents.map(userName)];
    const facts = [
      [
        "Rings",
        targets.length
          ? targets.join(", ")
          : item.routes_to_all
            ? "Every agent"
            : "Nobody: the agents and teams it rang were deleted. Choose some, and save.",
      ],
      ["Strategy", STRATEGIES[item.strategy] || item.strategy],
      ["Hours", hoursText(item)],
      ["Websites", item.allowed_origins.length ? item.allowed_origins.join(", ") : "None yet: it shows nowhere"],
      ["Recording", item.recording_enabled ? "Calls are recorded" : "Off"],
      ["Public key", item.public_key],
    ];
    const list = el("dl", { className: "facts" });
    for (const [term, text] of facts) {
      list.append(el("dt", { textContent: term }), el("dd", { textContent: text }));
    }
    const snippetId = `snippet-${item.id}`;
    const snippet = el("textarea", { id: snippetId, className: "url snippet", readOnly: true, rows: 2 });
    snippet.value = item.snippet;
    const copied = el("span", { className: "muted", attrs: { role: "status" } });
    const copy = button("Copy", "secondary small", `Copy the embed code of ${item.name}`, async () => {
      try {
        await navigator.clipboard.writeText(item.snippet);
        copied.textContent = "Copied.";
      } catch {
        snippet.focus();
        snippet.select();
        copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
      }
    });
    const actions = el("div", { className: "controls" });
    const question = `Delete ${item.name}? Websites embedding it lose their call button.`;
    actions.append(
      button("Edit", "secondary small", `Edit ${item.name}`, () => openButtonForm(item)),
      deleteButton(actions, item.name, question, () => removeButton(item)),
    );
    const li = el(
      "li",
      { className: "item" },
      el("h3", { textContent: item.name }),
      list,
      el("label", { htmlFor: snippetId, textContent: "Embed code" }),
      snippet,
      el("div", { className: "controls" }, copy, copied),
      actions,
    );
    li.dataset.button = item.id;
    return li;
  }

  function renderButtons() {
    $("buttons-list").replaceChildren(...state.buttons.map(buttonItem));
    show("buttons-empty", state.buttons.length === 0);
  }

  function setDayOpen(day, open) {
    $(`bf-open-${day}`).checked = open;
    show(`bf-day-${day}`, open);
    show(`bf-closed-${day}`, !open);
  }

  function addRange(day, dayName, from, until) {
    const ranges = $(`bf-ranges-${day}`);
    const number = ranges.children.length + 1;
    const label = `${dayName} hours ${number}`;
    const start = el("input", { type: "text", className: "time", value: from, placeholder: "09:00", maxLength: 5 });
    start.setAttribute("aria-label", `${label}: from`);
    const end = el("input", { type: "text", className: "time", value: until, placeholder: "17:00", maxLength: 5 });
    end.setAttribute("aria-label", `${label}: until`);
    const dash = el("span", { textContent: "–", attrs: { "aria-hidden": "true" } });
    const range = el("div", { className: "range" }, start, dash, end);
    range.append(
      button("Remove", "secondary small", `Remove ${label}`, () => {
        range.remove();
        if (ranges.children.length === 0) {
          setDayOpen(day, false);
          $(`bf-open-${day}`).focus();
        }
      }),
    );
    ranges.append(range);
    return start;
  }

  /** The seven weekday rows of the opening-hours editor: each closed, or open in one or more ranges. */
  function buildDays() {
    $("bf-days").replaceChildren(
      ...DAYS.map(([day, name]) => {
        const box = el("input", { type: "checkbox", id: `bf-open-${day}` });
        box.addEventListener("change", () => {
          setDayOpen(day, box.checked);
          if (box.checked && $(`bf-ranges-${day}`).children.length === 0) {
            addRange(day, name, "09:00", "17:00");
          }
        });
        const more = button("Add hours", "secondary small", `Add hours on ${name}`, () =>
          addRange(day, name, "", "").focus(),
        );
        return el(
          "div",
          { className: "day" },
          el("div", { className: "check" }, box, el("label", { htmlFor: `bf-open-${day}`, textContent: name })),
          el("span", { id: `bf-closed-${day}`, className: "muted", textContent: "Closed" }),
          el("div", { id: `bf-day-${day}`, className: "day-hours" }, el("div", { id: `bf-ranges-${day}` }), more),
        );
      }),
    );
  }

  function setHours(hours) {
    $("bf-always").checked = hours === null;
    show("bf-days", hours !== null);
    for (const [day, name] of DAYS) {
      const ranges = (hours && hours[day]) || [];
      $(`bf-ranges-${day}`).replaceChildren();
      for (const [from, until] of ranges) {
        addRange(day, name, from, until);
      }
      setDayOpen(day, ranges.length > 0);
    }
  }

  function hoursValue() {
    if ($("bf-always").checked) {
      return null;
    }
    const hours = {};
    for (const [day] of DAYS) {
      if ($(`bf-open-${day}`).checked) {
        hours[day] = [...$(`bf-ranges-${day}`).children].map((range) =>
          [...range.querySelectorAll("input")].map((input) => input.value.trim()),
        );
      }
    }
    return hours;
  }

  function wholeNumber(id) {
    const text = $(id).value.trim();
    return text === "" ? null : Number(text);
  }

  function openButtonForm(item) {
    const values = item || NEW_BUTTON;
    $("button-form").dataset.id = item ? item.id : "";
    $("button-form-title").textContent = item ? `Edit ${item.name}` : "New button";
    $("bf-name").value = values.name;
    $("bf-origins").value = values.allowed_origins.join("\n");
    $("bf-language").value = values.language;
    $("bf-colour").value = values.colour;
    $("bf-position").value = values.position;
    const teams = state.teams.map((t) => ({ id: t.id, label: t.name }));
    checkList("bf-teams", teams, values.teams, "No teams yet.");
    checkList("bf-agents", userItems(), values.agents, "No users yet.");
    $("bf-strategy").value = values.strategy;
    $("bf-ring-timeout").value = values.ring_timeout_s === null ? "" : String(values.ring_timeout_s);
    $("bf-queue-wait").value = String(values.max_queue_wait_s);
    $("bf-wrap-up").value = String(values.wrap_up_s);
    setHours(values.opening_hours);
    $("bf-time-zone").value = values.time_zone;
    $("bf-closed-message").value = values.closed_message;
    for (const field of ["name", "email", "phone"]) {
      $(`bf-form-${field}`).value = values.form_fields[field] || "off";
    }
    $("bf-recording").checked = values.recording_enabled;
    $("bf-recording-notice").value = values.recording_notice;
    $("button-submit").textContent = item ? "Save button" : "Create button";
    say("buttons", "");
    fail("button-form-error", "");
    show("button-form", true);
    $("bf-name").focus();
  }

  function closeButtonForm() {
    show("button-form", false);
    $("button-form").reset();
    $("button-new").focus();
  }

  async function saveButton(event) {
    event.preventDefault();
    const id = $("button-form").dataset.id;
    const data = {
      name: $("bf-name").value,
      allowed_origins: $("bf-origins")
        .value.split("\n")
        .map((line) => line.trim())
        .filter(Boolean),
      teams: checked("bf-teams"),
      agents: checked("bf-agents"),
      strategy: $("bf-strategy").value,
      ring_timeout_s: wholeNumber("bf-ring-timeout"),
      max_queue_wait_s: wholeNumber("bf-queue-wait"),
      wrap_up_s: wholeNumber("bf-wrap-up"),
      opening_hours: hoursValue(),
      time_zone: $("bf-time-zone").value,
      closed_message: $("bf-closed-message").value,
      recording_enabled: $("bf-recording").checked,
      recording_notice: $("bf-recording-notice").value,
      form_fields: Object.fromEntries(["name", "email", "phone"].map((f) => [f, $(`bf-form-${f}`).value])),
      language: $("bf-language").value,
      colour: $("bf-colour").value,
      position: $("bf-position").value,
    };
    if (!id) {
      // Left empty on a new button, the texts visitors read take the server's standard wording.
      for (const field of ["closed_message", "recording_notice"]) {
        if (!data[field].trim()) {
          delete data[field];
        }
      }
    }
    const result = await send(id ? "PATCH" : "POST", id ? `/api/v1/buttons/${id}` : "/api/v1/buttons", data);
    if (!result.ok) {
      fail("button-form-error", message(result));
      return;
    }
    closeButtonForm();
    say("buttons", `${id ? "Saved" : "Created"} ${result.body.button.name}.`);
    await load("buttons");
  }

  async function removeButton(item) {
    const result = await api(`/api/v1/buttons/${item.id}`, { method: "DELETE" });
    if (!result.ok) {
      fail("buttons-error", message(result));
      return false;
    }
    say("buttons", `Deleted ${item.name}.`);
    await load("buttons");
    $("button-new").focus();
    return true;
  }

  // --- navigation and session ---------------------------------------------------------------------

  function currentSection() {
    const name = location.hash.slice(1);
    return SECTIONS.includes(name) ? name : "recordings";
  }

  async function showSection(name, focus) {
    for (const section of SECTIONS) {
      show(section, section === name);
    }
    for (const link of $("sections").querySelectorAll("a")) {
      if (link.dataset.section === name) {
        link.setAttribute("aria-current", "page");
      } else {
        link.removeAttribute("aria-current");
      }
    }
    if (focus) {
      $(`${name}-title`).focus();
    }
    if (name === "recordings") {
      await loadRecordings();
    } else {
      fail(`${name}-error`, "");
      await load(name);
    }
  }

  function loggedIn(user) {
    state.me = user;
    $("user-name").textContent = user.name;
    show("who", true);
    show("login", false);
    if (user.role !== "admin") {
      show("recordings", true);
      fail("error", "This page is for admins. Agents answer calls in the agent console (/agent/).");
      return;
    }
    show("sections", true);
    showSection(currentSection(), false);
  }

  function loggedOut(notice) {
    state.me = null;
    $("player").removeAttribute("src");
    for (const form of ["user-form", "team-form", "button-form"]) {
      show(form, false);
      $(form).reset();
    }
    for (const section of SECTIONS) {
      show(section, false);
    }
    show("sections", false);
    show("who", false);
    show("login", true);
    fail("login-error", notice || "");
  }

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
    if (state.me && state.me.role === "admin") {
      showSection(currentSection(), true);
    }
  });

  for (const select of document.querySelectorAll("select.form-mode")) {
    select.append(...FORM_MODES.map(([value, text]) => el("option", { value, textContent: text })));
  }
  buildDays();
  $("bf-always").addEventListener("change", () => show("bf-days", !$("bf-always").checked));

  $("user-new").addEventListener("click", () => openUserForm(null));
  $("user-cancel").addEventListener("click", closeUserForm);
  $("user-form").addEventListener("submit", saveUser);
  $("team-new").addEventListener("click", () => openTeamForm(null));
  $("team-cancel").addEventListener("click", closeTeamForm);
  $("team-form").addEventListener("submit", saveTeam);
  $("button-new").addEventListener("click", () => openButtonForm(null));
  $("button-cancel").addEventListener("click", closeButtonForm);
  $("button-form").addEventListener("submit", saveButton);

  (async () => {
    const me = await api("/api/v1/me");
    show("loading", false);
    if (me.ok) {
      loggedIn(me.body.user);
    } else {
      show("login", true);
    }
  })();
})();
