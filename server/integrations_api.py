"""Integrations, for admins: API tokens and webhook endpoints with their delivery logs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from server import body
from server.api import actor, audit, path_uuid, require_admin
from server.appkeys import DATABASE
from server.errors import ApiError
from server.playback import NO_STORE
from storage.tokens import ApiToken
from storage.webhooks import EVENTS, Endpoint, LoggedEvent

_TOKEN_FIELDS = frozenset({"name"})
_WEBHOOK_FIELDS = frozenset({"url", "events", "description", "enabled"})


def _at(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# --- API tokens ------------------------------------------------------------------------------------


def token_json(token: ApiToken) -> dict[str, Any]:
    return {
        "id": str(token.id),
        "name": token.name,
        "created_by": str(token.created_by) if token.created_by else None,
        "created_at": _at(token.created_at),
        "last_used_at": _at(token.last_used_at),
        "revoked_at": _at(token.revoked_at),
    }


async def list_tokens(request: web.Request) -> web.Response:
    session = await require_admin(request)
    tokens = await request.app[DATABASE].tokens.all(session.user.organisation_id)
    return web.json_response({"tokens": [token_json(t) for t in tokens]}, headers=NO_STORE)


async def create_token(request: web.Request) -> web.Response:
    """A new token; its secret is in this response only (the server keeps its hash)."""
    session = await require_admin(request)
    data = await body.read(request, _TOKEN_FIELDS)
    name = data.required_text("name", 200)
    secret, token = await request.app[DATABASE].tokens.create(
        session.user.organisation_id, name=name, created_by=actor(session)
    )
    await audit(request, session, "token.create", "token", token.id)
    return web.json_response({"token": token_json(token), "secret": secret}, status=201, headers=NO_STORE)


async def revoke_token(request: web.Request) -> web.Response:
    session = await require_admin(request)
    token = await request.app[DATABASE].tokens.revoke(session.user.organisation_id, path_uuid(request, "id", "token"))
    if token is None:
        raise ApiError(404, "not_found", "no such token")
    await audit(request, session, "token.revoke", "token", token.id)
    return web.json_response({"token": token_json(token)}, headers=NO_STORE)


# --- webhooks --------------------------------------------------------------------------------------


def endpoint_json(endpoint: Endpoint) -> dict[str, Any]:
    return {
        "id": str(endpoint.id),
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "enabled": endpoint.enabled,
        "secret": endpoint.secret,
        "created_at": _at(endpoint.created_at),
    }


def logged_json(event: LoggedEvent) -> dict[str, Any]:
    given_up = event.delivered_at is None and event.next_attempt_at.year > 9000
    return {
        "event_id": str(event.event_id),
        "type": event.kind,
        "subject": str(event.subject),
        "created_at": _at(event.created_at),
        "attempts": event.attempts,
        "state": "delivered" if event.delivered_at else "given_up" if given_up else "pending",
        "delivered_at": _at(event.delivered_at),
        "next_attempt_at": None if event.delivered_at or given_up else _at(event.next_attempt_at),
        "last_status": event.last_status,
        "last_error": event.last_error,
    }


def _changes(data: body.Body, *, creating: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "url" in data or creating:
        url = data.required_text("url", 2048)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise body.bad("field 'url' must be an http or https URL such as https://crm.example.com/hooks/calls")
        changes["url"] = url
    if "events" in data or creating:
        events = data.texts("events", len(EVENTS), 40)
        unknown = sorted(set(events) - set(EVENTS))
        if unknown or not events:
            raise body.bad(f"field 'events' lists some of {', '.join(EVENTS)}")
        changes["events"] = sorted(set(events), key=EVENTS.index)
    if "description" in data:
        changes["description"] = data.text("description", 200, required=False)
    if "enabled" in data:
        changes["enabled"] = data.boolean("enabled")
    return changes


async def list_webhooks(request: web.Request) -> web.Response:
    session = await require_admin(request)
    endpoints = await request.app[DATABASE].webhooks.all(session.user.organisation_id)
    return web.json_response({"webhooks": [endpoint_json(e) for e in endpoints]}, headers=NO_STORE)


async def create_webhook(request: web.Request) -> web.Response:
    session = await require_admin(request)
    changes = _changes(await body.read(request, _WEBHOOK_FIELDS), creating=True)
    endpoint = await request.app[DATABASE].webhooks.create(
        session.user.organisation_id,
        url=changes["url"],
        events=changes["events"],
        description=changes.get("description"),
        enabled=changes.get("enabled", True),
    )
    await audit(request, session, "webhook.create", "webhook", endpoint.id)
    return web.json_response({"webhook": endpoint_json(endpoint)}, status=201, headers=NO_STORE)


async def get_webhook(request: web.Request) -> web.Response:
    session = await require_admin(request)
    endpoint = await request.app[DATABASE].webhooks.get(
        session.user.organisation_id, path_uuid(request, "id", "webhook")
    )
    if endpoint is None:
        raise ApiError(404, "not_found", "no such webhook")
    return web.json_response({"webhook": endpoint_json(endpoint)}, headers=NO_STORE)


async def update_webhook(request: web.Request) -> web.Response:
    session = await require_admin(request)
    endpoint_id = path_uuid(request, "id", "webhook")
    webhooks = request.app[DATABASE].webhooks
    if await webhooks.get(session.user.organisation_id, endpoint_id) is None:
        raise ApiError(404, "not_found", "no such webhook")
    changes = _changes(await body.read(request, _WEBHOOK_FIELDS), creating=False)
    endpoint = await webhooks.update(session.user.organisation_id, endpoint_id, changes)
    if endpoint is None:
        raise ApiError(404, "not_found", "no such webhook")
    await audit(request, session, "webhook.update", "webhook", endpoint.id)
    return web.json_response({"webhook": endpoint_json(endpoint)}, headers=NO_STORE)


async def delete_webhook(request: web.Request) -> web.Response:
    session = await require_admin(request)
    endpoint_id = path_uuid(request, "id", "webhook")
    if not await request.app[DATABASE].webhooks.delete(session.user.organisation_id, endpoint_id):
        raise ApiError(404, "not_found", "no such webhook")
    await audit(request, session, "webhook.delete", "webhook", endpoint_id)
    return web.Response(status=204)


async def deliveries(request: web.Request) -> web.Response:
    """``GET /api/v1/webhooks/{id}/deliveries``: the endpoint's latest events and how each went."""
    session = await require_admin(request)
    endpoint_id = path_uuid(request, "id", "webhook")
    webhooks = request.app[DATABASE].webhooks
    if await webhooks.get(session.user.organisation_id, endpoint_id) is None:
        raise ApiError(404, "not_found", "no such webhook")
    events = await webhooks.log(session.user.organisation_id, endpoint_id)
    return web.json_response({"deliveries": [logged_json(e) for e in events]}, headers=NO_STORE)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/tokens", list_tokens)
    app.router.add_post("/api/v1/tokens", create_token)
    app.router.add_delete("/api/v1/tokens/{id}", revoke_token)
    app.router.add_get("/api/v1/webhooks", list_webhooks)
    app.router.add_post("/api/v1/webhooks", create_webhook)
    app.router.add_get("/api/v1/webhooks/{id}", get_webhook)
    app.router.add_patch("/api/v1/webhooks/{id}", update_webhook)
    app.router.add_delete("/api/v1/webhooks/{id}", delete_webhook)
    app.router.add_get("/api/v1/webhooks/{id}/deliveries", deliveries)
