"""The admin REST API: users, teams and buttons of the admin's own organisation.

Every route takes the organisation from the admin's session and every query is scoped to it: an id
of another organisation is simply not found (404), whatever the route. Changes are audited.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from server import body, hours
from server.api import audit, path_uuid, require_admin
from server.appkeys import DATABASE, ROSTER, SETTINGS
from server.auth import PasswordPolicyError, check_password_policy, hash_password
from server.errors import ApiError
from server.origins import OriginError, normalise_origin
from server.playback import NO_STORE
from storage.accounts import DuplicateEmail, User
from storage.buttons import Button
from storage.teams import DuplicateTeam, Team

CLOSE_SESSION_ENDED = 4002
ROLES = ("agent", "admin")
STRATEGIES = ("ring_all", "longest_idle", "round_robin")
FORM_MODES = ("off", "optional", "required")
LANGUAGES = ("en", "fr")
POSITIONS = ("bottom-right", "bottom-left")

_USER_FIELDS = frozenset({"email", "name", "role", "password", "agent_code", "phone", "disabled"})
_TEAM_FIELDS = frozenset({"name", "members"})
_BUTTON_FIELDS = frozenset(
    {
        "name",
        "allowed_origins",
        "agents",
        "teams",
        "routes_to_all",
        "strategy",
        "ring_timeout_s",
        "max_queue_wait_s",
        "opening_hours",
        "time_zone",
        "closed_message",
        "wrap_up_s",
        "recording_enabled",
        "recording_notice",
        "form_fields",
        "language",
        "colour",
        "position",
        "clips_per_call",
        "clip_max_mb",
    }
)


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"no such {what}")


# --- users -------------------------------------------------------------------------------------------


def admin_user_json(user: User, presence: str) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.display_name,
        "role": user.role,
        "agent_code": user.agent_code,
        "phone": user.phone,
        "disabled": user.disabled,
        "presence": presence,
    }


def _presence(request: web.Request, user: User) -> str:
    agent = request.app[ROSTER].get(user.id)
    return agent.presence.value if agent is not None else "offline"


def _user_changes(data: body.Body) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    if "email" in data:
        changes["email"] = data.email("email")
    if "name" in data:
        changes["display_name"] = data.required_text("name", 200)
    if "role" in data:
        changes["role"] = data.choice("role", ROLES)
    if "agent_code" in data:
        changes["agent_code"] = data.text("agent_code", 64, required=False)
    if "phone" in data:
        changes["phone"] = data.phone("phone", required=False)
    return changes


async def _password_hash(data: body.Body) -> str:
    password = data.text("password", 1024, strip=False)
    assert password is not None
    try:
        check_password_policy(password)
    except PasswordPolicyError as exc:
        raise body.bad(str(exc)) from None
    return await hash_password(password)


def _end_user_sessions(request: web.Request, user_id: uuid.UUID, reason: str) -> None:
    request.app[ROSTER].close_sockets(CLOSE_SESSION_ENDED, reason, user_id=user_id)


async def list_users(request: web.Request) -> web.Response:
    session = await require_admin(request)
    users = await request.app[DATABASE].accounts.users(session.user.organisation_id)
    return web.json_response({"users": [admin_user_json(u, _presence(request, u)) for u in users]}, headers=NO_STORE)


async def create_user(request: web.Request) -> web.Response:
    session = await require_admin(request)
    data = await body.read(request, _USER_FIELDS - {"disabled"})
    changes = _user_changes(data)
    for name, field in (("email", "email"), ("display_name", "name")):
        if name not in changes:
            raise body.bad(f"field {field!r} is required")
    password_hash = await _password_hash(data)
    try:
        user = await request.app[DATABASE].accounts.create_user(
            session.user.organisation_id,
            email=changes["email"],
            display_name=changes["display_name"],
            role=changes.get("role", "agent"),
            password_hash=password_hash,
            agent_code=changes.get("agent_code"),
            phone=changes.get("phone"),
        )
    except DuplicateEmail:
        raise ApiError(409, "email_taken", "an account with this email address exists already") from None
    await audit(request, session, "user.create", "user", user.id)
    return web.json_response({"user": admin_user_json(user, "offline")}, status=201, headers=NO_STORE)


async def get_user(request: web.Request) -> web.Response:
    session = await require_admin(request)
    user = await request.app[DATABASE].accounts.user(session.user.organisation_id, path_uuid(request, "id", "user"))
    if user is None:
        raise _not_found("user")
    return web.json_response({"user": admin_user_json(user, _presence(request, user))}, headers=NO_STORE)


async def update_user(request: web.Request) -> web.Response:
    """Change a user; ``disabled: true`` ends every session and console of the user at once."""
    session = await require_admin(request)
    user_id = path_uuid(request, "id", "user")
    accounts = request.app[DATABASE].accounts
    organisation_id = session.user.organisation_id
    if await accounts.user(organisation_id, user_id) is None:
        raise _not_found("user")
    data = await body.read(request, _USER_FIELDS)
    changes = _user_changes(data)
    disabled = data.boolean("disabled") if "disabled" in data else None
    if user_id == session.user.id and (disabled or changes.get("role", "admin") != "admin"):
        raise ApiError(409, "own_account", "you cannot disable yourself or give up your own admin role")
    password_hash = await _password_hash(data) if "password" in data else None
    try:
        user = await accounts.update_user(organisation_id, user_id, changes)
    except DuplicateEmail:
        raise ApiError(409, "email_taken", "an account with this email address exists already") from None
    if user is None:
        raise _not_found("user")
    if password_hash is not None:
        await accounts.set_password_hash(user.id, password_hash)
        await accounts.delete_user_sessions(user.id)
        _end_user_sessions(request, user.id, "the password was changed; log in again")
    if disabled is not None:
        user = await accounts.set_disabled(organisation_id, user_id, disabled) or user
        if disabled:
            _end_user_sessions(request, user.id, "this account was disabled")
    await audit(request, session, "user.update", "user", user.id)
    return web.json_response({"user": admin_user_json(user, _presence(request, user))}, headers=NO_STORE)


async def delete_user(request: web.Request) -> web.Response:
    session = await require_admin(request)
    user_id = path_uuid(request, "id", "user")
    if user_id == session.user.id:
        raise ApiError(409, "own_account", "you cannot delete your own account")
    if not await request.app[DATABASE].accounts.delete_user(session.user.organisation_id, user_id):
        raise _not_found("user")
    _end_user_sessions(request, user_id, "this account was deleted")
    await audit(request, session, "user.delete", "user", user_id)
    return web.Response(status=204)


# --- teams -------------------------------------------------------------------------------------------


def team_json(team: Team) -> dict[str, Any]:
    return {"id": str(team.id), "name": team.name, "members": [str(m) for m in team.members]}


async def list_teams(request: web.Request) -> web.Response:
    session = await require_admin(request)
    teams = await request.app[DATABASE].teams.all(session.user.organisation_id)
    return web.json_response({"teams": [team_json(t) for t in teams]}, headers=NO_STORE)


async def create_team(request: web.Request) -> web.Response:
    session = await require_admin(request)
    data = await body.read(request, _TEAM_FIELDS)
    name = data.required_text("name", 200)
    members = data.ids("members")
    teams = request.app[DATABASE].teams
    organisation_id = session.user.organisation_id
    try:
        team = await teams.create(organisation_id, name)
    except DuplicateTeam:
        raise ApiError(409, "team_exists", f"a team named {name!r} exists already") from None
    if members and not await teams.set_members(organisation_id, team.id, members):
        await teams.delete(organisation_id, team.id)
        raise body.bad("field 'members' names a user who is not of this organisation")
    team = await teams.get(organisation_id, team.id) or team
    await audit(request, session, "team.create", "team", team.id)
    return web.json_response({"team": team_json(team)}, status=201, headers=NO_STORE)


async def get_team(request: web.Request) -> web.Response:
    session = await require_admin(request)
    team = await request.app[DATABASE].teams.get(session.user.organisation_id, path_uuid(request, "id", "team"))
    if team is None:
        raise _not_found("team")
    return web.json_response({"team": team_json(team)}, headers=NO_STORE)


async def update_team(request: web.Request) -> web.Response:
    session = await require_admin(request)
    team_id = path_uuid(request, "id", "team")
    teams = request.app[DATABASE].teams
    organisation_id = session.user.organisation_id
    if await teams.get(organisation_id, team_id) is None:
        raise _not_found("team")
    data = await body.read(request, _TEAM_FIELDS)
    name = data.required_text("name", 200) if "name" in data else None
    members = data.ids("members") if "members" in data else None
    # Members are checked before anything is written: a refused rename leaves them as they were.
    if members is not None:
        users = {user.id for user in await request.app[DATABASE].accounts.users(organisation_id)}
        if not set(members) <= users:
            raise body.bad("field 'members' names a user who is not of this organisation")
    if name is not None:
        try:
            await teams.rename(organisation_id, team_id, name)
        except DuplicateTeam:
            raise ApiError(409, "team_exists", f"a team named {name!r} exists already") from None
    if members is not None and not await teams.set_members(organisation_id, team_id, members):
        raise body.bad("field 'members' names a user who is not of this organisation")
    team = await teams.get(organisation_id, team_id)
    if team is None:
        raise _not_found("team")
    await audit(request, session, "team.update", "team", team.id)
    return web.json_response({"team": team_json(team)}, headers=NO_STORE)


async def delete_team(request: web.Request) -> web.Response:
    session = await require_admin(request)
    team_id = path_uuid(request, "id", "team")
    if not await request.app[DATABASE].teams.delete(session.user.organisation_id, team_id):
        raise _not_found("team")
    await audit(request, session, "team.delete", "team", team_id)
    return web.Response(status=204)


# --- buttons -----------------------------------------------------------------------------------------


def admin_button_json(button: Button, agents: list[uuid.UUID], teams: list[uuid.UUID], origin: str) -> dict[str, Any]:
    return {
        "id": str(button.id),
        "public_key": button.public_key,
        "name": button.name,
        "allowed_origins": list(button.allowed_origins),
        "agents": [str(a) for a in agents],
        "teams": [str(t) for t in teams],
        "routes_to_all": button.routes_to_all,
        "strategy": button.strategy,
        "ring_timeout_s": button.ring_timeout_s,
        "max_queue_wait_s": button.max_queue_wait_s,
        "opening_hours": button.opening_hours,
        "time_zone": button.time_zone,
        "closed_message": button.closed_message,
        "wrap_up_s": button.wrap_up_s,
        "recording_enabled": button.recording_enabled,
        "recording_notice": button.recording_notice,
        "form_fields": button.form_fields,
        "language": button.language,
        "colour": button.colour,
        "position": button.position,
        "clips_per_call": button.clips_per_call,
        "clip_max_mb": button.clip_max_mb,
        "snippet": f'<script src="{origin}/widget.js" data-button="{button.public_key}" async></script>',
    }


def button_settings(data: body.Body) -> dict[str, Any]:
    """The button settings in a request body, each validated (``storage.buttons.SETTINGS`` names)."""
    settings: dict[str, Any] = {}
    if "name" in data:
        settings["name"] = data.required_text("name", 200)
    if "allowed_origins" in data:
        try:
            origins = [normalise_origin(o) for o in data.texts("allowed_origins", 50, 300)]
        except OriginError as exc:
            raise body.bad(f"field 'allowed_origins': {exc}") from None
        settings["allowed_origins"] = sorted(set(origins))
    if "strategy" in data:
        settings["strategy"] = data.choice("strategy", STRATEGIES)
    if "ring_timeout_s" in data:
        settings["ring_timeout_s"] = data.integer("ring_timeout_s", 1, 300, required=False)
    if "max_queue_wait_s" in data:
        # At least the time it takes to pick up: a shorter wait would end every call unanswered.
        settings["max_queue_wait_s"] = data.integer("max_queue_wait_s", 10, 7200)
    if "wrap_up_s" in data:
        settings["wrap_up_s"] = data.integer("wrap_up_s", 0, 3600)
    if "clips_per_call" in data:
        settings["clips_per_call"] = data.integer("clips_per_call", 0, 50)
    if "clip_max_mb" in data:
        settings["clip_max_mb"] = data.integer("clip_max_mb", 1, 100)
    if "time_zone" in data:
        settings["time_zone"] = data.required_text("time_zone", 64)
    if "opening_hours" in data:
        settings["opening_hours"] = data.values["opening_hours"]
    if "opening_hours" in settings or "time_zone" in settings:
        try:
            hours.check(settings.get("opening_hours"), settings.get("time_zone", "UTC"))
        except hours.HoursError as exc:
            raise body.bad(f"field 'opening_hours': {exc}") from None
    if "closed_message" in data:
        settings["closed_message"] = data.required_text("closed_message", 500)
    if "recording_enabled" in data:
        settings["recording_enabled"] = data.boolean("recording_enabled")
    if "recording_notice" in data:
        settings["recording_notice"] = data.required_text("recording_notice", 500)
    if "form_fields" in data:
        form = data.values["form_fields"]
        if (
            not isinstance(form, dict)
            or set(form) - {"name", "email", "phone"}
            or not all(mode in FORM_MODES for mode in form.values())
        ):
            raise body.bad("field 'form_fields' maps name, email and phone to off, optional or required")
        settings["form_fields"] = {name: form.get(name, "off") for name in ("name", "email", "phone")}
    if "language" in data:
        settings["language"] = data.choice("language", LANGUAGES)
    if "colour" in data:
        colour = data.required_text("colour", 7)
        if not (len(colour) == 7 and colour[0] == "#" and all(c in "0123456789abcdefABCDEF" for c in colour[1:])):
            raise body.bad("field 'colour' must be a colour such as #1a7f4b")
        settings["colour"] = colour.lower()
    if "position" in data:
        settings["position"] = data.choice("position", POSITIONS)
    return settings


async def _button_response(request: web.Request, button: Button, status: int = 200) -> web.Response:
    agents, teams = await request.app[DATABASE].buttons.targets(button.organisation_id, button.id)
    origin = request.app[SETTINGS].origin
    return web.json_response(
        {"button": admin_button_json(button, agents, teams, origin)}, status=status, headers=NO_STORE
    )


async def _set_targets(request: web.Request, button: Button, data: body.Body) -> None:
    """Change whom the button rings: ``routes_to_all: true`` for everyone, or the listed ``agents``
    and ``teams``. Lists equal to the stored ones change nothing, so that saving a button whose
    listed teams were all deleted keeps it ringing nobody rather than everybody."""
    buttons = request.app[DATABASE].buttons
    stored_agents, stored_teams = await buttons.targets(button.organisation_id, button.id)
    agents = data.ids("agents") if "agents" in data else stored_agents
    teams = data.ids("teams") if "teams" in data else stored_teams
    if "routes_to_all" in data and data.boolean("routes_to_all"):
        if agents or teams:
            raise body.bad("a button that rings everyone lists no agents or teams")
    elif set(agents) == set(stored_agents) and set(teams) == set(stored_teams):
        return
    if not await buttons.set_targets(button.organisation_id, button.id, agents, teams):
        raise body.bad("fields 'agents' and 'teams' may only name this organisation's users and teams")


async def list_buttons(request: web.Request) -> web.Response:
    session = await require_admin(request)
    database = request.app[DATABASE]
    origin = request.app[SETTINGS].origin
    result = []
    for button in await database.buttons.all(session.user.organisation_id):
        agents, teams = await database.buttons.targets(button.organisation_id, button.id)
        result.append(admin_button_json(button, agents, teams, origin))
    return web.json_response({"buttons": result}, headers=NO_STORE)


async def create_button(request: web.Request) -> web.Response:
    session = await require_admin(request)
    data = await body.read(request, _BUTTON_FIELDS)
    settings = button_settings(data)
    if "name" not in settings:
        raise body.bad("field 'name' is required")
    settings.setdefault("allowed_origins", [])
    # Targets are checked before anything is written: a refused request leaves nothing behind.
    agents, teams = data.ids("agents"), data.ids("teams")
    database = request.app[DATABASE]
    organisation_id = session.user.organisation_id
    async with database.pool.acquire() as conn:
        owned = await conn.fetchval(
            """
            SELECT (SELECT count(*) FROM users WHERE organisation_id = $1 AND id = ANY($2)) = cardinality($2)
               AND (SELECT count(*) FROM teams WHERE organisation_id = $1 AND id = ANY($3)) = cardinality($3)
            """,
            organisation_id,
            list(set(agents)),
            list(set(teams)),
        )
    if not owned:
        raise body.bad("fields 'agents' and 'teams' may only name this organisation's users and teams")
    button = await database.buttons.create(organisation_id, **settings)
    await database.buttons.set_targets(organisation_id, button.id, agents, teams)
    await audit(request, session, "button.create", "button", button.id)
    return await _button_response(request, button, status=201)


async def get_button(request: web.Request) -> web.Response:
    session = await require_admin(request)
    button = await request.app[DATABASE].buttons.get(session.user.organisation_id, path_uuid(request, "id", "button"))
    if button is None:
        raise _not_found("button")
    return await _button_response(request, button)


async def update_button(request: web.Request) -> web.Response:
    session = await require_admin(request)
    button_id = path_uuid(request, "id", "button")
    buttons = request.app[DATABASE].buttons
    organisation_id = session.user.organisation_id
    current = await buttons.get(organisation_id, button_id)
    if current is None:
        raise _not_found("button")
    data = await body.read(request, _BUTTON_FIELDS)
    if "opening_hours" in data and "time_zone" not in data:
        data.values["time_zone"] = current.time_zone
    if "time_zone" in data and "opening_hours" not in data:
        data.values["opening_hours"] = current.opening_hours
    settings = button_settings(data)
    await _set_targets(request, current, data)
    button = await buttons.update(organisation_id, button_id, settings)
    if button is None:
        raise _not_found("button")
    await audit(request, session, "button.update", "button", button.id)
    return await _button_response(request, button)


async def delete_button(request: web.Request) -> web.Response:
    session = await require_admin(request)
    button_id = path_uuid(request, "id", "button")
    if not await request.app[DATABASE].buttons.delete(session.user.organisation_id, button_id):
        raise _not_found("button")
    await audit(request, session, "button.delete", "button", button_id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    for path, collection, create, item, update, delete in (
        ("/api/v1/users", list_users, create_user, get_user, update_user, delete_user),
        ("/api/v1/teams", list_teams, create_team, get_team, update_team, delete_team),
        ("/api/v1/buttons", list_buttons, create_button, get_button, update_button, delete_button),
    ):
        app.router.add_get(path, collection)
        app.router.add_post(path, create)
        app.router.add_get(path + "/{id}", item)
        app.router.add_patch(path + "/{id}", update)
        app.router.add_delete(path + "/{id}", delete)
