"""Calls over HTTP, for admins: one call with its timeline and recordings.

The admin console's call list, filters and statistics build on this (issue 5); the load tester's
pipeline checks read it to confirm that every synthetic call was stored as it happened.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from aiohttp import web

from server.api import path_uuid, require_admin
from server.appkeys import CLIPS, DATABASE, RECORDINGS
from server.body import bad
from server.cliptokens import clip_json
from server.errors import ApiError
from server.playback import NO_STORE, recording_json
from server.query import Query, decode_cursor, encode_cursor
from storage.calls import CallEvent, CallFilter, CallRecord, ListedCall


def _ms(record: CallRecord, start: str, end: str) -> int | None:
    first, last = getattr(record, start), getattr(record, end)
    return None if first is None or last is None else round((last - first).total_seconds() * 1000)


def call_json(record: CallRecord) -> dict[str, Any]:
    def at(value: Any) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "id": str(record.id),
        "button_id": str(record.button_id) if record.button_id else None,
        "agent_id": str(record.agent_id) if record.agent_id else None,
        "state": record.state,
        "outcome": record.outcome,
        "end_reason": record.end_reason,
        "page_url": record.page_url,
        "created_at": at(record.created_at),
        "queued_at": at(record.queued_at),
        "answered_at": at(record.answered_at),
        "ended_at": at(record.ended_at),
        # Waiting ends at the answer, or at the end for a call never answered.
        "wait_ms": _ms(record, "created_at", "answered_at" if record.answered_at else "ended_at"),
        "talk_ms": _ms(record, "answered_at", "ended_at"),
    }


def event_json(event: CallEvent) -> dict[str, Any]:
    return {
        "at": event.at.isoformat(),
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "agent_id": str(event.agent_id) if event.agent_id else None,
        "reason": event.reason,
    }


def rings_json(events: list[CallEvent]) -> list[dict[str, Any]]:
    """Every time an agent was rung for the call: when, for how long, and how it ended
    (``answered``, ``declined``, ``timeout``, ``answered_elsewhere``, ``ended``, ``agent_offline``)."""
    rings: list[dict[str, Any]] = []
    open_rings: dict[Any, dict[str, Any]] = {}
    for event in events:
        agent = event.agent_id
        if event.kind == "agent_rung" and agent is not None:
            ring = {"agent_id": str(agent), "rung_at": event.at.isoformat(), "ring_ms": None, "outcome": None}
            open_rings[agent] = {"ring": ring, "at": event.at}
            rings.append(ring)
            continue
        if event.kind == "answered" and agent in open_rings:
            outcome = "answered"
        elif event.kind == "agent_declined":
            outcome = "declined"
        elif event.kind == "agent_ring_timeout":
            outcome = "timeout"
        elif event.kind == "agent_ring_stopped":
            outcome = event.reason or "ended"
        else:
            continue
        entry = open_rings.pop(agent, None)
        if entry is not None:
            entry["ring"]["outcome"] = outcome
            entry["ring"]["ring_ms"] = round((event.at - entry["at"]).total_seconds() * 1000)
    return rings


async def get_call(request: web.Request) -> web.Response:
    session = await require_admin(request)
    call_id = path_uuid(request, "call_id", "call")
    organisation_id = session.user.organisation_id
    database = request.app[DATABASE]
    record = await database.calls.get(organisation_id, call_id)
    if record is None:
        raise ApiError(404, "not_found", "no such call")
    events = await database.calls.events(organisation_id, call_id)
    recordings = await request.app[RECORDINGS].for_call(organisation_id, call_id)
    call = {
        **call_json(record),
        "direction": record.direction,
        "visitor": {"name": record.visitor_name, "email": record.visitor_email, "phone": record.visitor_phone},
        "notes": record.notes,
        "rating": record.rating,
        "rating_comment": record.rating_comment,
        "restricted": record.restricted,
    }
    if record.restricted:
        # The caller restricted processing: the call is kept, but what they said about themselves is not shown.
        call.update(
            visitor={"name": None, "email": None, "phone": None}, notes=None, rating_comment=None, page_url=None
        )
    body = {
        "call": call,
        "rings": rings_json(events),
        "events": [event_json(e) for e in events],
        "recordings": [recording_json(r) for r in recordings],
        "clips": []
        if record.restricted
        else [clip_json(c) for c in await request.app[CLIPS].of(organisation_id, call_ids=[call_id])],
    }
    return web.json_response(body, headers=NO_STORE)


OUTCOMES = ("answered", "missed", "abandoned", "no_answer")
_LIST_PARAMETERS = frozenset(
    {"from", "to", "button_id", "agent_id", "outcome", "has_recording", "rating", "q", "limit", "cursor"}
)


def call_filter(query: Query, time_zone: str = "UTC") -> CallFilter:
    """The calls view's filters from a query string (shared by the list and the statistics); dates
    are days in ``time_zone``."""
    return CallFilter(
        since=query.moment("from", zone=time_zone),
        until=query.moment("to", end_of_day=True, zone=time_zone),
        button_id=query.ident("button_id"),
        agent_id=query.ident("agent_id"),
        outcome=query.choice("outcome", OUTCOMES),
        has_recording=query.boolean("has_recording"),
        rating=query.integer("rating", 1, 5),
        search=query.text("q", 320),
    )


def listed_json(listed: ListedCall) -> dict[str, Any]:
    record = listed.call
    return {
        **call_json(record),
        "direction": record.direction,
        "visitor": {"name": record.visitor_name, "email": record.visitor_email, "phone": record.visitor_phone},
        "rating": record.rating,
        "has_recording": listed.has_recording,
    }


async def list_calls(request: web.Request) -> web.Response:
    """``GET /api/v1/calls``: the organisation's calls, newest first, filtered, a keyset page at a
    time (``next_cursor`` asks for the next)."""
    session = await require_admin(request)
    query = Query(request, _LIST_PARAMETERS)
    filters = call_filter(query)
    limit = query.integer("limit", 1, 200, default=50) or 50
    cursor = decode_cursor(query.text("cursor", 200), 2)
    after = None
    if cursor is not None:
        try:
            after = (datetime.datetime.fromisoformat(cursor[0]), uuid.UUID(cursor[1]))
        except ValueError:
            raise bad("parameter 'cursor' is not one this server gave") from None
    page = await request.app[DATABASE].call_search.page(
        session.user.organisation_id, filters, limit=limit + 1, after=after
    )
    more = len(page) > limit
    page = page[:limit]
    last = page[-1].call if page else None
    body = {
        "calls": [listed_json(item) for item in page],
        "next_cursor": encode_cursor(last.created_at, last.id) if more and last is not None else None,
    }
    return web.json_response(body, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/calls", list_calls)
    app.router.add_get("/api/v1/calls/{call_id}", get_call)
