/*
 * Statistics: over a period (the last 30 days unless chosen), by day, agent or button, optionally
 * for one button or agent: calls and how they ended, the answer rate, and wait and talk times
 * (average and 90th percentile), as charts and as a table, with the same figures as CSV.
 * Days are the admin's own: the period's ends are their local midnights, and days are grouped in
 * their time zone.
 */

import { api, message, withQuery } from "./api.js";
import { legend, rateChart, stackedChart } from "./charts.js";
import { $, cell, dateValue, dayBoundary, duration, el, fail, fillSelect, percent, show } from "./dom.js";
import { buttonChoices, buttonName, refresh, userChoices, userName } from "./directory.js";

const DAYS_SHOWN = 30;
const SERIES = [
  { key: "answered", label: "Answered" },
  { key: "missed", label: "Missed" },
  { key: "abandoned", label: "Abandoned" },
  { key: "no_answer", label: "No answer" },
];
const GROUP_NAMES = { day: "Day", agent: "Agent", button: "Button" };
const TIME_ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

let generation = 0;

function parameters() {
  return {
    from: dayBoundary($("sf-from").value),
    to: dayBoundary($("sf-to").value, true),
    group: $("sf-group").value,
    button_id: $("sf-button").value,
    agent_id: $("sf-agent").value,
    tz: TIME_ZONE,
  };
}

function dayLabel(key, options) {
  const [year, month, day] = key.split("-").map(Number);
  return new Date(year, month - 1, day).toLocaleDateString(undefined, options);
}

function keyLabel(group, key) {
  if (group === "day") {
    return dayLabel(key, { weekday: "short", year: "numeric", month: "short", day: "numeric" });
  }
  if (key === null) {
    return group === "button" ? "No button" : "Nobody";
  }
  return group === "agent" ? userName(key) : buttonName(key);
}

/** Each day of the period (a calendar: days without calls too), or the groups the server returned. */
function categories(group, rows) {
  if (group !== "day") {
    return rows.map((r) => ({ key: r.key, label: keyLabel(group, r.key) }));
  }
  const days = [];
  const [year, month, day] = $("sf-from").value.split("-").map(Number);
  const last = $("sf-to").value;
  for (let date = new Date(year, month - 1, day); days.length < 1000; date.setDate(date.getDate() + 1)) {
    const key = dateValue(date);
    if (key > last) {
      break;
    }
    days.push({
      key,
      label: keyLabel("day", key),
      short: dayLabel(key, { month: "short", day: "numeric" }),
    });
  }
  return days;
}

function figureRow(label, row, header) {
  const tr = el(
    "tr",
    {},
    el(header ? "th" : "td", { textContent: label, attrs: header ? { scope: "row" } : {} }),
    ...[row.attempted, row.answered, row.missed, row.abandoned, row.no_answer].map((n) => cell(String(n))),
    cell(percent(row.answer_rate)),
    ...[row.wait_avg_ms, row.wait_p90_ms, row.talk_avg_ms, row.talk_p90_ms].map((ms) => cell(duration(ms))),
  );
  tr.dataset.key = row.key === null ? "" : row.key;
  return tr;
}

function render(body) {
  const { group, rows, total } = body;
  const byKey = new Map(rows.map((r) => [r.key, r]));
  const horizontal = group !== "day";
  const groups = categories(group, rows);
  const per = group === "day" ? "per day" : `per ${group}`;
  const charts = [];
  if (total.attempted > 0) {
    charts.push(
      el("h3", { textContent: `Calls ${per}` }),
      legend(SERIES),
      stackedChart({
        title: `Calls ${per}, by how they ended`,
        horizontal,
        categories: groups,
        series: SERIES,
        value: (key, series) => (byKey.get(key) || {})[series] || 0,
      }),
      el("h3", { textContent: `Answer rate ${per}` }),
      rateChart({
        title: `Answer rate ${per}`,
        horizontal,
        categories: groups,
        rate: (key) => {
          const row = byKey.get(key);
          return row && row.answer_rate !== null ? row.answer_rate : null;
        },
      }),
    );
  }
  $("stats-charts").replaceChildren(...charts);
  $("stats-key-head").textContent = GROUP_NAMES[group];
  show("stats-agent-hint", group === "agent");
  $("stats-rows").replaceChildren(...rows.map((r) => figureRow(keyLabel(group, r.key), r, false)));
  $("stats-total").replaceChildren(figureRow("Total", { ...total, key: "total" }, true));
  show("stats-empty", total.attempted === 0);
  show("stats-figures", total.attempted > 0);
}

async function load() {
  const mine = ++generation;
  if (!$("sf-from").value || !$("sf-to").value) {
    fail("stats-error", "Choose the first and the last day of the period.");
    return;
  }
  const params = parameters();
  $("stats-csv").href = withQuery("/api/v1/stats.csv", params);
  const result = await api(withQuery("/api/v1/stats", params));
  if (mine !== generation) {
    return;
  }
  if (!result.ok) {
    fail("stats-error", message(result));
    return;
  }
  fail("stats-error", "");
  render(result.body);
}

function defaultPeriod() {
  const today = new Date();
  const first = new Date(today.getFullYear(), today.getMonth(), today.getDate() - (DAYS_SHOWN - 1));
  $("sf-from").value = dateValue(first);
  $("sf-to").value = dateValue(today);
}

export default {
  init() {
    defaultPeriod();
    $("stats-filters").addEventListener("submit", (event) => {
      event.preventDefault();
      load();
    });
  },

  async show() {
    fail("stats-error", "");
    const failure = await refresh("users", "buttons");
    if (failure) {
      fail("stats-error", failure);
      return;
    }
    fillSelect($("sf-button"), "Every button", buttonChoices());
    fillSelect($("sf-agent"), "Every agent", userChoices());
    await load();
  },

  reset() {
    generation += 1;
    $("stats-filters").reset();
    defaultPeriod();
    $("stats-charts").replaceChildren();
    $("stats-rows").replaceChildren();
    $("stats-total").replaceChildren();
  },
};
