"""The load test's verdict and reports: a JSON document with every figure, and an HTML page with
plots (plain SVG, no dependencies)."""

from __future__ import annotations

import collections
import dataclasses
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadtest.quality import percentiles
from loadtest.runner import PHASES, CallResult, Options

#: A load generator whose process uses this much of a core in any second is short of CPU (one
#: process runs on one core): the report warns that its figures include its own delays.
GENERATOR_SATURATED_PERCENT = 90.0


@dataclass(frozen=True)
class Thresholds:
    max_failed_calls: int = 0
    max_first_audio_p95_ms: float | None = None
    max_loss_p95_percent: float | None = None
    min_mos_p5: float | None = None


def summarise(
    options: Options,
    thresholds: Thresholds,
    results: list[CallResult],
    *,
    concurrency: list[tuple[float, int]],
    resources: list[dict[str, float]],
    generator: list[dict[str, float]],
    generator_drops: dict[str, int] | None = None,
    checks: dict[str, Any] | None,
    duration: float,
) -> dict[str, Any]:
    failed = [r for r in results if r.failures]
    by_reason = collections.Counter(reason for r in failed for reason in r.failures)
    phases = {name: percentiles([r.phases[name] for r in results if name in r.phases]) for name in PHASES}
    first_audio = [
        r.phases[name] for r in results for name in ("accept_to_first_audio_visitor", "accept_to_first_audio_agent")
        if name in r.phases
    ]  # fmt: skip
    sides = [s for r in results if r.answered_at is not None for s in (r.visitor, r.agent_side)]
    mos_p5 = _p(sorted(s.mos for s in sides if s.mos is not None), 5)
    quality: dict[str, Any] = {
        "loss_percent": percentiles([s.loss_percent for s in sides]),
        "jitter_ms": percentiles([s.jitter_ms for s in sides]),
        "rtt_ms": percentiles([s.rtt_ms for s in sides if s.rtt_ms is not None]),
        "mos": percentiles([s.mos for s in sides if s.mos is not None]),
        "mos_p5": mos_p5,
    }
    crossed = []
    if len(failed) > thresholds.max_failed_calls:
        crossed.append(f"{len(failed)} failed call(s), at most {thresholds.max_failed_calls} allowed")
    p95 = percentiles(first_audio)["p95"]
    if thresholds.max_first_audio_p95_ms is not None and (p95 is None or p95 > thresholds.max_first_audio_p95_ms):
        crossed.append(f"accept -> first audio p95 {p95} ms above {thresholds.max_first_audio_p95_ms} ms")
    loss = quality["loss_percent"]["p95"]
    if thresholds.max_loss_p95_percent is not None and loss is not None and loss > thresholds.max_loss_p95_percent:
        crossed.append(f"loss p95 {loss}% above {thresholds.max_loss_p95_percent}%")
    if thresholds.min_mos_p5 is not None and (mos_p5 is None or mos_p5 < thresholds.min_mos_p5):
        crossed.append(f"MOS p5 {mos_p5} below {thresholds.min_mos_p5}")
    warnings = []
    generator_cpu = sorted(sample["cpu_percent"] for sample in generator)
    busiest = generator_cpu[-1] if generator_cpu else None
    if busiest is not None and busiest >= GENERATOR_SATURATED_PERCENT:
        warnings.append(
            f"the load generator itself used up to {busiest}% of a core: it was short of CPU, so its packets "
            "and timings include its own delays; run fewer calls per process, or more processes"
        )
    drops = generator_drops or {}
    if drops.get("datagrams") or drops.get("sends"):
        warnings.append(
            f"the load generator itself dropped {drops.get('datagrams', 0)} datagram(s) it received and "
            f"{drops.get('sends', 0)} it had to send (its queues were full): part of the loss is its own"
        )
    options_json = dataclasses.asdict(options)
    options_json["agents"] = [email for email, _ in options.agents]  # never a password in a report
    return {
        "verdict": "fail" if crossed else "pass",
        "thresholds_crossed": crossed,
        "warnings": warnings,
        "thresholds": dataclasses.asdict(thresholds),
        "options": options_json,
        "duration_seconds": round(duration, 2),
        "calls": {
            "started": len(results),
            "answered": sum(1 for r in results if r.answered_at is not None),
            "ok": len(results) - len(failed),
            "failed": len(failed),
            "failures_by_reason": dict(by_reason.most_common()),
            "failed_calls": [
                {"index": r.index, "call_id": r.call_id, "reasons": r.failures, "details": r.details} for r in failed
            ],
        },
        "phases_ms": phases,
        "first_audio_ms": percentiles(first_audio),
        "quality": quality,
        "checks": checks,
        "concurrency": concurrency,
        "server_resources": resources,
        "generator_resources": generator,
        "generator_cpu_percent": {"p50": _p(generator_cpu, 50), "max": busiest},
        "generator_drops": drops,
        "per_call": [dataclasses.asdict(r) for r in results],
    }


def _p(values: list[float], percent: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(percent / 100 * (len(values) - 1))))
    return values[index]


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


def write_html(summary: dict[str, Any], path: Path) -> None:
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>callbutton load test</title>",
        "<style>body{font:15px system-ui,sans-serif;margin:24px;color:#17212b}table{border-collapse:collapse}"
        "td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}th:first-child,td:first-child"
        "{text-align:left}.pass{color:#1a7f4b}.fail{color:#c62828}figure{display:inline-block;margin:8px}"
        "figcaption{font-size:13px;color:#5b6773}</style></head><body>",
        f"<h1>Load test: <span class={summary['verdict']}>{summary['verdict'].upper()}</span></h1>",
    ]
    if summary["thresholds_crossed"]:
        parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in summary["thresholds_crossed"]) + "</ul>")
    if summary["warnings"]:
        parts.append(
            "<p>Warnings:</p><ul>" + "".join(f"<li>{html.escape(w)}</li>" for w in summary["warnings"]) + "</ul>"
        )
    calls = summary["calls"]
    parts.append(
        f"<p>{calls['started']} calls started, {calls['answered']} answered, {calls['ok']} fully verified, "
        f"{calls['failed']} failed, in {summary['duration_seconds']} s.</p>"
    )
    if calls["failures_by_reason"]:
        parts.append(_table(["failure", "calls"], [[k, v] for k, v in calls["failures_by_reason"].items()]))
    rows = [[name, *(_cell(stats[k]) for k in ("count", "p50", "p95", "p99", "max"))]
            for name, stats in summary["phases_ms"].items()]  # fmt: skip
    parts.append("<h2>Phases (ms)</h2>" + _table(["phase", "n", "p50", "p95", "p99", "max"], rows))
    quality = summary["quality"]
    rows = [[name, *(_cell(quality[name][k]) for k in ("count", "p50", "p95", "p99", "max"))]
            for name in ("loss_percent", "jitter_ms", "rtt_ms", "mos")]  # fmt: skip
    parts.append("<h2>Quality (per party and call)</h2>" + _table(["figure", "n", "p50", "p95", "p99", "max"], rows))
    parts.append("<h2>Plots</h2>")
    for name in summary["phases_ms"]:
        values = [r["phases"][name] for r in summary["per_call"] if name in r["phases"]]
        if values:
            parts.append(_figure(_histogram(values), f"{name} (ms), {len(values)} calls"))
    concurrency = summary["concurrency"]
    if concurrency:
        parts.append(_figure(_line([(t, float(c)) for t, c in concurrency]), "concurrent calls over time (s)"))
    resources = summary["server_resources"]
    if resources:
        parts.append(_figure(_line([(r["t"], r["cpu_percent"]) for r in resources]), "server CPU, % of a core"))
        parts.append(_figure(_line([(r["t"], r["rss_mib"]) for r in resources]), "server RSS (MiB)"))
    else:
        parts.append("<p>Server CPU and memory: not sampled (give <code>--server-pid</code> for a local server).</p>")
    generator = summary["generator_resources"]
    if generator:
        parts.append(_figure(_line([(r["t"], r["cpu_percent"]) for r in generator]), "load generator CPU, % of a core"))
    parts.append("</body></html>")
    path.write_text("".join(parts), encoding="utf-8")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(svg: str, caption: str) -> str:
    return f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"


_W, _H, _PAD = 360, 160, 28


def _histogram(values: list[float], bins: int = 12) -> str:
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int((value - low) / span * bins))] += 1
    top = max(counts)
    width = (_W - 2 * _PAD) / bins
    bars = "".join(
        f'<rect x="{_PAD + i * width:.1f}" y="{_H - _PAD - (c / top) * (_H - 2 * _PAD):.1f}" '
        f'width="{width - 2:.1f}" height="{(c / top) * (_H - 2 * _PAD):.1f}" fill="#1f6feb"/>'
        for i, c in enumerate(counts)
    )
    return _svg(bars + _axis_labels(f"{low:g}", f"{high:g}", str(top)))


def _line(points: list[tuple[float, float]]) -> str:
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y1 = min(xs), max(xs) or 1.0, max(max(ys), 1e-9)
    spread = (x1 - x0) or 1.0
    path = " ".join(
        f"{_PAD + (x - x0) / spread * (_W - 2 * _PAD):.1f},{_H - _PAD - y / y1 * (_H - 2 * _PAD):.1f}"
        for x, y in points
    )
    line = f'<polyline points="{path}" fill="none" stroke="#1a7f4b" stroke-width="2"/>'
    return _svg(line + _axis_labels(f"{x0:g}", f"{x1:g}", f"{y1:.3g}"))


def _axis_labels(left: str, right: str, top: str) -> str:
    return (
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#888"/>'
        f'<text x="{_PAD}" y="{_H - 8}" font-size="11">{html.escape(left)}</text>'
        f'<text x="{_W - _PAD}" y="{_H - 8}" font-size="11" text-anchor="end">{html.escape(right)}</text>'
        f'<text x="4" y="{_PAD}" font-size="11">{html.escape(top)}</text>'
    )


def _svg(body: str) -> str:
    return f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img">{body}</svg>'
