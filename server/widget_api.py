"""What the widget reads and sends over HTTP, from other sites' pages: the button lookup, callback
requests, ratings, and the call-link page's lookup.

These routes carry no cookie. Each is readable (CORS) by the button's allowed origins, and by the
app's own origin (the call-link page); posts are limited per visitor address.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from typing import Any

from aiohttp import web

from server import body, hours, links
from server.agent_api import tell_agents
from server.api import button_json
from server.appkeys import CLIP_TOKENS, DATABASE, DIRECTORY, LIMITS, ROSTER, SETTINGS, SWITCHBOARD
from server.clients import client_address
from server.errors import ApiError
from storage.buttons import Button

_BUTTON_KEY = re.compile(r"^cb_[A-Za-z0-9_-]{16,64}$")
_CALLBACK_FIELDS = frozenset({"name", "email", "phone", "note", "call_id", "reason"})
_RATING_FIELDS = frozenset({"call_id", "token", "rating", "comment"})
CALLBACK_REASONS = ("closed", "max_wait", "no_agent", "visitor")


def _cors(origin: str | None) -> dict[str, str]:
    headers = {"Cache-Control": "no-store", "Vary": "Origin"}
    if origin:
        # Errors are readable too, so that the widget can say what is wrong.
        headers["Access-Control-Allow-Origin"] = origin
    return headers


def _error(error: ApiError, headers: dict[str, str]) -> web.Response:
    return web.json_response({"error": error.code, "message": error.message}, status=error.status, headers=headers)


async def _button_for(request: web.Request) -> Button:
    """The button of the path's key, if the request's Origin may use it; else ApiError."""
    key = request.match_info["key"]
    button = await request.app[DIRECTORY].button_by_key(key) if _BUTTON_KEY.match(key) else None
    if button is None:
        raise ApiError(404, "unknown_button", "no call button has this key")
    origin = request.headers.get("Origin")
    if origin is not None and origin not in button.allowed_origins and origin not in request.app[SETTINGS].origins:
        raise ApiError(403, "origin_not_allowed", "this call button may not be used from this website")
    return button


async def widget_button(request: web.Request) -> web.Response:
    """``GET /api/v1/widget/{key}``: what the widget shows before a call: the button's look, form and
    recording notice, whether it is open (and its closed message if not), whether anyone can answer."""
    headers = _cors(request.headers.get("Origin"))
    try:
        button = await _button_for(request)
    except ApiError as exc:
        return _error(exc, headers)
    eligible = await request.app[DATABASE].buttons.eligible_agents(button.organisation_id, button.id)
    available = sum(
        1
        for agent in request.app[ROSTER].available(button.organisation_id)
        if eligible is None or agent.user_id in eligible
    )
    is_open = hours.is_open(button.opening_hours, button.time_zone, request.app[SWITCHBOARD].clock())
    result: dict[str, Any] = {
        "button": button_json(button),
        "open": is_open,
        "agents_available": available > 0,
        "protocol": 1,
    }
    if not is_open:
        result["closed_message"] = button.closed_message
    return web.json_response(result, headers=headers)


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight for the widget's JSON posts."""
    headers = _cors(request.headers.get("Origin"))
    headers["Access-Control-Allow-Methods"] = "POST"
    headers["Access-Control-Allow-Headers"] = "Content-Type"
    headers["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=headers)


async def _admit(request: web.Request) -> None:
    if not await request.app[LIMITS].allow_widget_post(client_address(request)):
        raise ApiError(429, "rate_limited", "too many requests from here just now; try again in a minute")


async def create_callback(request: web.Request) -> web.Response:
    """``POST /api/v1/widget/{key}/callbacks``: a visitor asks to be called back.

    ``email`` or ``phone`` is required, ``name`` and ``note`` optional; ``reason`` says why the
    visitor could not talk now, ``call_id`` which call ended that way. Agents are told at once.
    """
    headers = _cors(request.headers.get("Origin"))
    try:
        button = await _button_for(request)
        await _admit(request)
        data = await body.read(request, _CALLBACK_FIELDS)
        email = data.email("email", required=False)
        phone = data.phone("phone", required=False)
        if email is None and phone is None:
            raise body.bad("leave a phone number or an email address so that we can call you back")
        callback = await request.app[DATABASE].callbacks.create(
            button.organisation_id,
            button_id=button.id,
            call_id=data.optional_id("call_id"),
            name=data.text("name", 200, required=False),
            email=email,
            phone=phone,
            note=data.text("note", 2000, required=False),
            reason=data.choice("reason", CALLBACK_REASONS) if "reason" in data else "visitor",
        )
    except ApiError as exc:
        return _error(exc, headers)
    if not callback.restricted:  # a restricted person's request is kept, and shown to nobody
        tell_agents(request, callback)
    token = request.app[CLIP_TOKENS].for_callback(callback.id)  # to send clips with the request
    return web.json_response({"callback": {"id": str(callback.id), "clip_token": token}}, status=201, headers=headers)


async def rate_call(request: web.Request) -> web.Response:
    """``POST /api/v1/widget/{key}/ratings``: the visitor rates a call (1 to 5, and a comment), once,
    with the token the call's end gave it."""
    headers = _cors(request.headers.get("Origin"))
    try:
        button = await _button_for(request)
        await _admit(request)
        data = await body.read(request, _RATING_FIELDS)
        call_id = data.optional_id("call_id")
        token = data.required_text("token", 64)
        rating = data.integer("rating", 1, 5)
        comment = data.text("comment", 2000, required=False)
        assert call_id is not None and rating is not None
        stored = await request.app[DATABASE].calls.rate(
            call_id, hashlib.sha256(token.encode()).digest(), rating, comment, button_id=button.id
        )
        if not stored:
            raise ApiError(404, "not_found", "this call cannot be rated (rated already, or not answered)")
    except ApiError as exc:
        return _error(exc, headers)
    return web.Response(status=204, headers=headers)


async def call_link(request: web.Request) -> web.Response:
    """``GET /api/v1/call-links/{token}``: what the call-link page shows: whom the customer will call,
    and how the call button looks, or 410 when the link was used or has expired."""
    token = request.match_info["token"]
    database = request.app[DATABASE]
    link = await database.call_links.find(token) if links.TOKEN.match(token) else None
    if link is None or not link.usable(datetime.datetime.now(datetime.UTC)):
        raise ApiError(410, "link_used", "this call link was used already or has expired")
    button = await database.buttons.get(link.organisation_id, link.button_id) if link.button_id else None
    agent = await database.accounts.user(link.organisation_id, link.agent_id)
    if button is None or agent is None:
        raise ApiError(410, "link_used", "this call link no longer works")
    return web.json_response(
        {
            "button": button_json(button, link=True),
            "button_key": button.public_key,
            "agent": {"name": agent.display_name},
            "expires_at": link.expires_at.isoformat(),
        },
        headers={"Cache-Control": "no-store"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/widget/{key}", widget_button)
    app.router.add_post("/api/v1/widget/{key}/callbacks", create_callback)
    app.router.add_route("OPTIONS", "/api/v1/widget/{key}/callbacks", preflight)
    app.router.add_post("/api/v1/widget/{key}/ratings", rate_call)
    app.router.add_route("OPTIONS", "/api/v1/widget/{key}/ratings", preflight)
    app.router.add_get("/api/v1/call-links/{token}", call_link)
