"""The agent console's REST API: the agent's own calls and their notes, callback requests, call links.

Any logged-in user of the organisation (agent or admin) may use these; everything is scoped to the
session's organisation, and an id of another organisation is not found (404).
"""

from __future__ import annotations

import datetime
from typing import Any

from aiohttp import web

from server import body
from server.api import current_session, path_uuid
from server.appkeys import CLIPS, DATABASE, ROSTER, SETTINGS, SWITCHBOARD
from server.calls_api import call_json
from server.cliptokens import clip_json
from server.errors import ApiError
from server.messages import CallbackNotice
from server.playback import NO_STORE
from storage.call_links import CallLink
from storage.callbacks import CallbackRequest
from storage.calls import CallRecord
from storage.db import Database

LINK_MINUTES_DEFAULT = 60
LINK_MINUTES_MAX = 7 * 24 * 60


def history_json(record: CallRecord) -> dict[str, Any]:
    """A call as its agent sees it in the console's history: the call, who called, notes, rating."""
    return {
        **call_json(record),
        "direction": record.direction,
        "visitor": {"name": record.visitor_name, "email": record.visitor_email, "phone": record.visitor_phone},
        "notes": record.notes,
        "rating": record.rating,
        "rating_comment": record.rating_comment,
    }


def callback_json(callback: CallbackRequest) -> dict[str, Any]:
    return {
        "id": str(callback.id),
        "button_id": str(callback.button_id) if callback.button_id else None,
        "call_id": str(callback.call_id) if callback.call_id else None,
        "name": callback.name,
        "email": callback.email,
        "phone": callback.phone,
        "note": callback.note,
        "reason": callback.reason,
        "state": callback.state,
        "created_at": callback.created_at.isoformat(),
        "done_at": callback.done_at.isoformat() if callback.done_at else None,
        "done_by": str(callback.done_by) if callback.done_by else None,
    }


def link_json(token: str | None, link: CallLink, origin: str) -> dict[str, Any]:
    result: dict[str, Any] = {
        "agent_id": str(link.agent_id),
        "button_id": str(link.button_id) if link.button_id else None,
        "callback_id": str(link.callback_id) if link.callback_id else None,
        "created_at": link.created_at.isoformat(),
        "expires_at": link.expires_at.isoformat(),
        "used_at": link.used_at.isoformat() if link.used_at else None,
        "call_id": str(link.call_id) if link.call_id else None,
    }
    if token is not None:
        result["url"] = f"{origin}/call/{token}"
    return result


async def my_calls(request: web.Request) -> web.Response:
    session = await current_session(request)
    records = await request.app[DATABASE].calls.of_agent(session.user.organisation_id, session.user.id)
    return web.json_response({"calls": [history_json(r) for r in records]}, headers=NO_STORE)


async def set_notes(request: web.Request) -> web.Response:
    """``PUT /api/v1/calls/{call_id}/notes``: the agent who answered the call (or an admin) writes its notes."""
    session = await current_session(request)
    call_id = path_uuid(request, "call_id", "call")
    data = await body.read(request, frozenset({"notes"}))
    notes = data.text("notes", 10_000, required=False, strip=False) or ""
    user = session.user
    calls = request.app[DATABASE].calls
    live = request.app[SWITCHBOARD].calls.get(call_id)
    if live is not None and live.call.organisation_id == user.organisation_id:
        await live.call.flush()  # notes typed in a call's first moments find its answer stored
    agent = None if user.role == "admin" else user.id
    if not await calls.set_notes(user.organisation_id, call_id, notes, agent_id=agent):
        raise ApiError(404, "not_found", "no such call of yours")
    record = await calls.get(user.organisation_id, call_id)
    assert record is not None
    return web.json_response({"call": history_json(record)}, headers=NO_STORE)


async def list_callbacks(request: web.Request) -> web.Response:
    session = await current_session(request)
    state = request.query.get("state")
    if state not in (None, "open", "done"):
        raise body.bad("state is open or done")
    callbacks = await request.app[DATABASE].callbacks.all(session.user.organisation_id, state)
    clips = await request.app[CLIPS].of(session.user.organisation_id, callback_ids=[c.id for c in callbacks])
    return web.json_response(
        {
            "callbacks": [
                {**callback_json(c), "clips": [clip_json(k) for k in clips if k.callback_id == c.id]} for c in callbacks
            ]
        },
        headers=NO_STORE,
    )


async def mark_callback_done(request: web.Request) -> web.Response:
    session = await current_session(request)
    callback_id = path_uuid(request, "id", "callback request")
    user = session.user
    callback = await request.app[DATABASE].callbacks.mark_done(user.organisation_id, callback_id, user.id)
    if callback is None:
        raise ApiError(404, "not_found", "no such callback request")
    tell_agents(request, callback)
    return web.json_response({"callback": callback_json(callback)}, headers=NO_STORE)


def tell_agents(request: web.Request, callback: CallbackRequest) -> None:
    notice = CallbackNotice(callback=callback_json(callback))
    for agent in request.app[ROSTER].of(callback.organisation_id):
        agent.send(notice)


async def create_link(request: web.Request) -> web.Response:
    """``POST /api/v1/call-links``: a single-use link for a customer to call this agent back.

    Optional ``callback_id`` (the request being answered), ``button_id`` (whose recording, language
    and look apply; by default the callback's button, or the organisation's first) and ``minutes``.
    """
    session = await current_session(request)
    data = await body.read(request, frozenset({"callback_id", "button_id", "minutes"}))
    user = session.user
    database: Database = request.app[DATABASE]
    minutes = data.integer("minutes", 1, LINK_MINUTES_MAX, required=False) or LINK_MINUTES_DEFAULT
    callback_id = data.optional_id("callback_id")
    button_id = data.optional_id("button_id")
    callback = None
    if callback_id is not None:
        callback = await database.callbacks.get(user.organisation_id, callback_id)
        if callback is None:
            raise ApiError(404, "not_found", "no such callback request")
    if button_id is not None:
        if await database.buttons.get(user.organisation_id, button_id) is None:
            raise ApiError(404, "not_found", "no such button")
    elif callback is not None and callback.button_id is not None:
        button_id = callback.button_id
    else:
        buttons = await database.buttons.all(user.organisation_id)
        if not buttons:
            raise ApiError(409, "no_button", "create a call button first: a call link uses its settings")
        button_id = buttons[0].id
    token, link = await database.call_links.create(
        user.organisation_id,
        agent_id=user.id,
        button_id=button_id,
        callback_id=callback_id,
        lifetime=datetime.timedelta(minutes=minutes),
    )
    body_json = {"link": link_json(token, link, request.app[SETTINGS].origin)}
    return web.json_response(body_json, status=201, headers=NO_STORE)


async def my_links(request: web.Request) -> web.Response:
    session = await current_session(request)
    links = await request.app[DATABASE].call_links.of_agent(session.user.organisation_id, session.user.id)
    origin = request.app[SETTINGS].origin
    return web.json_response({"links": [link_json(None, link, origin) for link in links]}, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/me/calls", my_calls)
    app.router.add_put("/api/v1/calls/{call_id}/notes", set_notes)
    app.router.add_get("/api/v1/callbacks", list_callbacks)
    app.router.add_post("/api/v1/callbacks/{id}/done", mark_callback_done)
    app.router.add_post("/api/v1/call-links", create_link)
    app.router.add_get("/api/v1/call-links", my_links)


__all__ = ["add_routes", "callback_json", "tell_agents"]
