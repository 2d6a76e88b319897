/*
 * Charts as plain SVG: stacked counts (columns for days, bars for agents or buttons) and a rate
 * (a line over days, bars per agent or button). Built with createElementNS; colours and fonts come
 * from classes in admin.css (the CSP allows no style attributes). Each chart is an image labelled by
 * its title; every shape has a <title> with its figure, and the page shows the same figures as a
 * table for anyone who cannot see the chart.
 */

import { el, percent, svg } from "./dom.js";

const WIDTH = 720;
let charts = 0;

/** Axis ticks from 0 to a round maximum at or above ``max``, at most about five of them. */
function ticks(max) {
  if (max <= 0) {
    return [0, 1];
  }
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough && Number.isInteger(s)) || 1;
  const top = Math.ceil(max / step) * step;
  const values = [];
  for (let value = 0; value <= top; value += step) {
    values.push(value);
  }
  return values;
}

function frame(title, height) {
  const id = `chart-${++charts}`;
  const root = svg("svg", {
    class: "chart",
    viewBox: `0 0 ${WIDTH} ${height}`,
    role: "img",
    "aria-labelledby": id,
    preserveAspectRatio: "xMinYMin meet",
  });
  root.append(svg("title", { id, textContent: title }));
  return root;
}

function shape(tag, attrs, tip) {
  return svg(tag, attrs, svg("title", { textContent: tip }));
}

/** A legend for ``series`` ({key, label}): a swatch of each series' colour and its name. */
export function legend(series) {
  return el(
    "ul",
    { className: "legend" },
    ...series.map((s) =>
      el(
        "li",
        {},
        el("span", { className: `swatch series-${s.key}`, attrs: { "aria-hidden": "true" } }),
        el("span", { textContent: s.label }),
      ),
    ),
  );
}

/**
 * Counts of ``series`` ({key, label}) stacked for each of ``categories`` ({key, label, short}):
 * columns along the bottom, or with ``horizontal`` one bar a row with its label on the left.
 */
export function stackedChart({ title, horizontal, categories, series, value }) {
  const totals = categories.map((c) => series.reduce((sum, s) => sum + value(c.key, s.key), 0));
  const scale = ticks(Math.max(0, ...totals));
  const top = scale[scale.length - 1];
  const tip = (c, s, count) => `${c.label}: ${count} ${s.label.toLowerCase()}`;
  if (horizontal) {
    return barRows(title, categories, scale, (root, c, i, x, width, y, height) => {
      let at = x;
      for (const s of series) {
        const count = value(c.key, s.key);
        if (count > 0) {
          const length = (count / top) * width;
          root.append(shape("rect", { class: `series-${s.key}`, x: at, y, width: length, height }, tip(c, s, count)));
          at += length;
        }
      }
      const middle = { y: y + height / 2, "dominant-baseline": "middle" };
      root.append(svg("text", { class: "value", x: at + 6, ...middle, textContent: String(totals[i]) }));
    });
  }
  return columns(title, categories, scale, (root, c, x, width, yOf) => {
    let base = 0;
    for (const s of series) {
      const count = value(c.key, s.key);
      if (count > 0) {
        const y = yOf(base + count);
        root.append(shape("rect", { class: `series-${s.key}`, x, y, width, height: yOf(base) - y }, tip(c, s, count)));
        base += count;
      }
    }
  });
}

/** A rate (0–1, or null where there is nothing to rate) for each category: a line over days, or bars. */
export function rateChart({ title, horizontal, categories, rate }) {
  const scale = [0, 0.25, 0.5, 0.75, 1];
  if (horizontal) {
    return barRows(
      title,
      categories,
      scale,
      (root, c, i, x, width, y, height) => {
        const value = rate(c.key);
        const middle = { y: y + height / 2, "dominant-baseline": "middle" };
        if (value === null) {
          root.append(svg("text", { class: "value", x: x + 6, ...middle, textContent: "no calls" }));
          return;
        }
        const tip = `${c.label}: ${percent(value)}`;
        root.append(shape("rect", { class: "series-rate", x, y, width: value * width, height }, tip));
        root.append(svg("text", { class: "value", x: x + value * width + 6, ...middle, textContent: percent(value) }));
      },
      percent,
    );
  }
  const points = []; // [x, y] a category, null for one with nothing to rate
  const root = columns(
    title,
    categories,
    scale,
    (chart, c, x, width, yOf) => {
      const value = rate(c.key);
      if (value === null) {
        points.push(null);
        return;
      }
      const point = [x + width / 2, yOf(value)];
      points.push(point);
      const dot = { class: "series-rate", cx: point[0], cy: point[1], r: 3.5 };
      chart.append(shape("circle", dot, `${c.label}: ${percent(value)}`));
    },
    percent,
  );
  // The line joins consecutive days that had calls; a day without any breaks it. Drawn under the dots.
  const firstDot = root.querySelector("circle");
  let run = [];
  for (const point of [...points, null]) {
    if (point) {
      run.push(point);
      continue;
    }
    if (run.length > 1) {
      const line = svg("polyline", { class: "rate-line", points: run.map((p) => p.join(",")).join(" ") });
      root.insertBefore(line, firstDot);
    }
    run = [];
  }
  return root;
}

/** Columns along a bottom axis, labels thinned out to about ten; ``draw`` fills each column. */
function columns(title, categories, scale, draw, format = String) {
  const height = 240;
  const [left, right, top, bottom] = [48, 8, 12, 36];
  const plotHeight = height - top - bottom;
  const root = frame(title, height);
  const max = scale[scale.length - 1];
  const yOf = (v) => top + plotHeight - (v / max) * plotHeight;
  for (const tick of scale) {
    root.append(svg("line", { class: "grid", x1: left, x2: WIDTH - right, y1: yOf(tick), y2: yOf(tick) }));
    const label = { x: left - 6, y: yOf(tick), "text-anchor": "end", "dominant-baseline": "middle" };
    root.append(svg("text", { class: "tick", ...label, textContent: format(tick) }));
  }
  const step = (WIDTH - left - right) / Math.max(1, categories.length);
  const every = Math.ceil(categories.length / 10);
  categories.forEach((c, i) => {
    const x = left + i * step;
    draw(root, c, x + step * 0.15, Math.max(1, step * 0.7), yOf);
    if (i % every === 0) {
      const label = { x: x + step / 2, y: height - bottom + 18, "text-anchor": "middle" };
      root.append(svg("text", { class: "tick", ...label, textContent: c.short || c.label }));
    }
  });
  return root;
}

/** One bar a row, its label on the left and a scale along the bottom; ``draw`` fills each row. */
function barRows(title, categories, scale, draw, format = String) {
  const rowHeight = 30;
  const [left, right, top, bottom] = [170, 70, 8, 28];
  const height = top + Math.max(1, categories.length) * rowHeight + bottom;
  const width = WIDTH - left - right;
  const root = frame(title, height);
  const max = scale[scale.length - 1];
  for (const tick of scale) {
    const x = left + (tick / max) * width;
    root.append(svg("line", { class: "grid", x1: x, x2: x, y1: top, y2: height - bottom }));
    const label = { x, y: height - bottom + 18, "text-anchor": "middle" };
    root.append(svg("text", { class: "tick", ...label, textContent: format(tick) }));
  }
  categories.forEach((c, i) => {
    const y = top + i * rowHeight;
    const name = c.label.length > 24 ? `${c.label.slice(0, 23)}…` : c.label;
    const label = { x: left - 8, y: y + rowHeight / 2, "text-anchor": "end", "dominant-baseline": "middle" };
    root.append(svg("text", { class: "label", ...label, textContent: name }, svg("title", { textContent: c.label })));
    draw(root, c, i, left, width, y + 5, rowHeight - 10);
  });
  return root;
}
