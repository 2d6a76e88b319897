"""REST API under ``/api/v1``: sessions, the current user, and the widget's button lookup.

``docs/openapi.json`` describes every route here; ``tests/test_api.py`` checks the two match.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from aiohttp import web

from server.appkeys import DATABASE, LIMITS, ROSTER, SESSIONS, SETTINGS
from server.auth import CookiePolicy, check_password_policy
from server.clients import client_address
from server.errors import ApiError
from storage.accounts import Session, User
from storage.buttons import Button

MAX_BODY = 16 * 1024
CLOSE_SESSION_ENDED = 4002


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send a JSON body (Content-Type: application/json)")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    try:
        body = json.loads(await request.content.read(MAX_BODY + 1))
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, max_chars: int) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "bad_request", f"field {name!r} is required (a string)")
    if len(value) > max_chars:
        raise ApiError(400, "bad_request", f"field {name!r} is longer than {max_chars} characters")
    return value


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "organisation_id": str(user.organisation_id),
        "email": user.email,
        "name": user.display_name,
        "role": user.role,
    }


async def current_session(request: web.Request) -> Session:
    cookie = CookiePolicy.for_origin(request.app[SETTINGS].origin)
    session = await request.app[SESSIONS].lookup(request.cookies.get(cookie.name))
    if session is None:
        raise ApiError(401, "not_authenticated", "log in first")
    return session


async def require_admin(request: web.Request) -> Session:
    """The caller's session, which must be an admin's (403 for agents, 401 without a session), or
    an organisation's API token (``Authorization: Bearer cbt_...``), which acts as its admin."""
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        return await token_session(request, authorization)
    session = await current_session(request)
    if session.user.role != "admin":
        raise ApiError(403, "forbidden", "this is for admins of the organisation")
    return session


async def token_session(request: web.Request, authorization: str) -> Session:
    scheme, _, token = authorization.partition(" ")
    found = await request.app[DATABASE].tokens.lookup(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise ApiError(401, "invalid_token", "the API token is unknown or revoked")
    now = datetime.datetime.now(datetime.UTC)
    # The token acts for its organisation as the admin who made it (audit entries name that admin).
    user = User(
        id=found.created_by or found.id,
        organisation_id=found.organisation_id,
        email="",
        display_name=f"API token {found.name}",
        role="admin",
        password_hash="",
        disabled=False,
    )
    return Session(user=user, created_at=found.created_at, last_seen_at=now, expires_at=now, token_id=found.id)


def actor(session: Session) -> uuid.UUID | None:
    """Who the audit log names for ``session``: its user, or the admin who made its API token."""
    if session.token_id is not None and session.user.id == session.token_id:
        return None  # the token's maker was deleted
    return session.user.id


async def audit(request: web.Request, session: Session, action: str, kind: str, object_id: uuid.UUID | None) -> None:
    """An audit entry for what ``session`` just did in its organisation, from this request's
    address and browser."""
    await request.app[DATABASE].audit.add(
        organisation_id=session.user.organisation_id,
        actor_id=actor(session),
        action=action,
        object_type=kind,
        object_id=object_id,
        address=client_address(request),
        user_agent=request.headers.get("User-Agent"),
    )


def path_uuid(request: web.Request, name: str, what: str) -> uuid.UUID:
    """A UUID from the path; anything else is simply not found."""
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise ApiError(404, "not_found", f"no such {what}") from None


async def login(request: web.Request) -> web.Response:
    body = await _json_body(request)
    email = _text(body, "email", 320)
    password = _text(body, "password", 1024)
    # Attempts are limited per address and per (address, account): guessing is slowed down, but the
    # account is never locked, so nobody can lock a colleague out by failing on purpose.
    limits = request.app[LIMITS]
    address = client_address(request)
    if not await limits.allow_login(address, email):
        raise ApiError(429, "too_many_attempts", "too many login attempts from here; wait a minute and try again")
    token, user = await request.app[SESSIONS].login(email, password)
    if user is not None:
        # The organisation sees every login to its accounts, and every failed one.
        await request.app[DATABASE].audit.add(
            organisation_id=user.organisation_id,
            actor_id=user.id,
            action="session.login" if token is not None else "session.login_failed",
            object_type="user",
            object_id=user.id,
            address=address,
            user_agent=request.headers.get("User-Agent"),
        )
    if token is None or user is None:
        # One message whatever was wrong: no user enumeration.
        raise ApiError(401, "invalid_credentials", "the email or the password is wrong")
    response = web.json_response({"user": user_json(user)}, headers={"Cache-Control": "no-store"})
    settings = request.app[SETTINGS]
    CookiePolicy.for_origin(settings.origin).set(response, token, settings.session_max_age)
    return response


async def logout(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    cookie = CookiePolicy.for_origin(settings.origin)
    token = request.cookies.get(cookie.name)
    if token:
        session = await request.app[SESSIONS].lookup(token)
        await request.app[SESSIONS].logout(token)
        request.app[ROSTER].close_sockets(CLOSE_SESSION_ENDED, "logged out", session=token)
        if session is not None:
            await request.app[DATABASE].audit.add(
                organisation_id=session.user.organisation_id,
                actor_id=session.user.id,
                action="session.logout",
                object_type="user",
                object_id=session.user.id,
                address=client_address(request),
                user_agent=request.headers.get("User-Agent"),
            )
    response = web.Response(status=204)
    cookie.clear(response)
    return response


async def me(request: web.Request) -> web.Response:
    session = await current_session(request)
    return web.json_response({"user": user_json(session.user)}, headers={"Cache-Control": "no-store"})


def button_json(button: Button, *, link: bool = False) -> dict[str, Any]:
    """A button as visitors see it: its name, look and language, the pre-call form, and whether (and
    how) they are told calls are recorded. A call link's visitor fills in no form."""
    recording: dict[str, Any] = {"enabled": button.recording_enabled}
    if button.recording_enabled:
        recording["notice"] = button.recording_notice
    return {
        "name": button.name,
        "recording": recording,
        "form_fields": {} if link else dict(button.form_fields),
        "language": button.language,
        "colour": button.colour,
        "position": button.position,
        # What callers may send (server/clips_api.py): per call or callback request, and per clip.
        "clips": {
            "enabled": button.clips_per_call > 0 and not link,
            "per_call": button.clips_per_call,
            "max_mb": button.clip_max_mb,
        },
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


OPENAPI = web.AppKey("openapi", dict)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/session", login)
    app.router.add_delete("/api/v1/session", logout)
    app.router.add_get("/api/v1/me", me)
    app.router.add_get("/api/v1/openapi.json", openapi)


__all__ = ["add_routes", "check_password_policy", "current_session"]
