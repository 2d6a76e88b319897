/*
 * Buttons: the call widgets websites embed, with whom each rings and how, its opening hours, the
 * visitor's form, recording, and the embed code.
 */

import { api, message, send } from "./api.js";
import { $, button, checked, checkList, deleteButton, el, fail, reloading, say, show } from "./dom.js";
import { directory, refresh, teamName, userName } from "./directory.js";
import { userItems } from "./teams.js";

const STRATEGIES = { ring_all: "Ring all", longest_idle: "Longest idle", round_robin: "Round robin" };
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
  clips_per_call: 20,
  clip_max_mb: 100,
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

async function load() {
  const failure = await refresh("users", "teams", "buttons");
  if (failure) {
    fail("buttons-error", failure);
    return;
  }
  renderButtons();
}

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
  $("buttons-list").replaceChildren(...directory.buttons.map(buttonItem));
  show("buttons-empty", directory.buttons.length === 0);
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
  const teams = directory.teams.map((t) => ({ id: t.id, label: t.name }));
  checkList("bf-teams", teams, values.teams, "No teams yet.");
  checkList("bf-agents", userItems(), values.agents, "No users yet.");
  $("bf-strategy").value = values.strategy;
  $("bf-ring-timeout").value = values.ring_timeout_s === null ? "" : String(values.ring_timeout_s);
  $("bf-queue-wait").value = String(values.max_queue_wait_s);
  $("bf-wrap-up").value = String(values.wrap_up_s);
  $("bf-clips-per-call").value = String(values.clips_per_call);
  $("bf-clip-max-mb").value = String(values.clip_max_mb);
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
    clips_per_call: wholeNumber("bf-clips-per-call"),
    clip_max_mb: wholeNumber("bf-clip-max-mb"),
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
  await load();
}

async function removeButton(item) {
  const result = await api(`/api/v1/buttons/${item.id}`, { method: "DELETE" });
  if (!result.ok) {
    fail("buttons-error", message(result));
    return false;
  }
  say("buttons", `Deleted ${item.name}.`);
  await load();
  $("button-new").focus();
  return true;
}

export default {
  init() {
    for (const select of document.querySelectorAll("select.form-mode")) {
      select.append(...FORM_MODES.map(([value, text]) => el("option", { value, textContent: text })));
    }
    buildDays();
    $("bf-always").addEventListener("change", () => show("bf-days", !$("bf-always").checked));
    $("button-new").addEventListener("click", () => openButtonForm(null));
    $("button-cancel").addEventListener("click", closeButtonForm);
    $("button-form").addEventListener("submit", saveButton);
  },

  async show() {
    fail("buttons-error", "");
    await reloading("buttons-list", load);
  },

  reset() {
    show("button-form", false);
    $("button-form").reset();
  },
};
