"""Statistics and the audit log, for admins: figures over a period (JSON or CSV) and who did what."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from server.api import require_admin
from server.appkeys import DATABASE
from server.body import bad
from server.calls_api import call_filter
from server.playback import NO_STORE
from server.query import Query, decode_cursor, encode_cursor
from storage.audit import AuditRow
from storage.calls import StatsRow

GROUPS = ("day", "agent", "button")
_STATS_PARAMETERS = frozenset({"from", "to", "button_id", "agent_id", "group", "tz"})
_AUDIT_PARAMETERS = frozenset({"from", "to", "action", "actor_id", "object_id", "limit", "cursor"})
COLUMNS = (
    "key", "attempted", "answered", "missed", "abandoned", "no_answer", "answer_rate",
    "wait_avg_ms", "wait_p90_ms", "talk_avg_ms", "talk_p90_ms",
)  # fmt: skip


def row_json(row: StatsRow) -> dict[str, Any]:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 1)

    return {
        "key": row.key,
        "attempted": row.attempted,
        "answered": row.answered,
        "missed": row.missed,
        "abandoned": row.abandoned,
        "no_answer": row.no_answer,
        "answer_rate": None if row.answer_rate is None else round(row.answer_rate, 4),
        "wait_avg_ms": rounded(row.wait_avg_ms),
        "wait_p90_ms": rounded(row.wait_p90_ms),
        "talk_avg_ms": rounded(row.talk_avg_ms),
        "talk_p90_ms": rounded(row.talk_p90_ms),
    }


async def _figures(request: web.Request) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    session = await require_admin(request)
    query = Query(request, _STATS_PARAMETERS)
    time_zone = query.time_zone("tz")
    filters = call_filter(query, time_zone)
    group = query.choice("group", GROUPS, default="day") or "day"
    search = request.app[DATABASE].call_search
    organisation_id = session.user.organisation_id
    rows = await search.stats(organisation_id, filters, group=group, time_zone=time_zone)
    (total,) = await search.stats(organisation_id, filters, group="total") or [
        StatsRow(None, 0, 0, 0, 0, 0, *[None] * 4)
    ]
    return group, [row_json(r) for r in rows], row_json(total)


async def stats(request: web.Request) -> web.Response:
    """``GET /api/v1/stats``: the funnel (attempted -> answered / missed / abandoned / no answer), the
    answer rate, average and p90 wait and talk time, per day, agent or button, and in total."""
    group, rows, total = await _figures(request)
    return web.json_response({"group": group, "rows": rows, "total": total}, headers=NO_STORE)


async def stats_csv(request: web.Request) -> web.Response:
    """``GET /api/v1/stats.csv``: the same rows as CSV, the total last."""
    group, rows, total = await _figures(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([group if name == "key" else name for name in COLUMNS])
    for row in [*rows, {**total, "key": "total"}]:
        writer.writerow(["" if row[name] is None else row[name] for name in COLUMNS])
    headers = {**NO_STORE, "Content-Disposition": f'attachment; filename="callbutton-stats-by-{group}.csv"'}
    return web.Response(text=out.getvalue(), content_type="text/csv", headers=headers)


def audit_json(row: AuditRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": row.at.isoformat(),
        "actor_id": str(row.actor_id) if row.actor_id else None,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": str(row.object_id) if row.object_id else None,
        "address": row.address,
        "user_agent": row.user_agent,
    }


async def audit(request: web.Request) -> web.Response:
    """``GET /api/v1/audit``: the organisation's audit log, newest first, filtered, a page at a time."""
    session = await require_admin(request)
    query = Query(request, _AUDIT_PARAMETERS)
    limit = query.integer("limit", 1, 500, default=100) or 100
    cursor = decode_cursor(query.text("cursor", 100), 1)
    before = int(cursor[0]) if cursor is not None and cursor[0].isdigit() else None
    if cursor is not None and before is None:
        raise bad("parameter 'cursor' is not one this server gave")
    rows = await request.app[DATABASE].audit.search(
        session.user.organisation_id,
        since=query.moment("from"),
        until=query.moment("to", end_of_day=True),
        action=query.text("action", 100),
        actor_id=query.ident("actor_id"),
        object_id=query.ident("object_id"),
        limit=limit + 1,
        before=before,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    body = {
        "entries": [audit_json(r) for r in rows],
        "next_cursor": encode_cursor(rows[-1].id) if more and rows else None,
    }
    return web.json_response(body, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/stats", stats)
    app.router.add_get("/api/v1/stats.csv", stats_csv)
    app.router.add_get("/api/v1/audit", audit)
