"""Security of accounts and tenancy: one organisation's admin can neither read nor change anything of
another's, through any route; CSRF; disabling a user; session expiry; login limits without lock-out."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

import aiohttp
import pytest

from server import signalling
from server.app import Running, start
from server.appkeys import RECORDINGS
from server.config import Settings
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, login_cookie, make_admin, make_tenant
from tests.peers import Agent
from tests.test_recording import finished_recording, recorded_call
from tests.test_routing import call_api

# Routes with an id in the path whose object belongs to an organisation, by the collection it names.
_PUBLIC = ("/api/v1/widget/", "/api/v1/call-links/{token}")


def _templated_api_routes(server: Running) -> set[tuple[str, str]]:
    routes = set()
    for route in server.runner.app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path.startswith("/api/") and "{" in path and route.method not in ("HEAD", "OPTIONS"):
            if not path.startswith(_PUBLIC[0]) and path != _PUBLIC[1]:
                routes.add((route.method, path))
    return routes


async def test_another_organisations_admin_gets_404_from_every_route_and_changes_nothing(
    server: Running, database: Database
) -> None:
    # Organisation A, with one of everything.
    (a,) = await make_tenant(database, recording=True)
    call_id = await recorded_call(server, a, talk_seconds=1.0)
    recording = await finished_recording(server.runner.app[RECORDINGS], a, call_id)
    team = await database.teams.create(a.organisation_id, "Tier 1")
    await database.teams.set_members(a.organisation_id, team.id, [a.agent_id])
    callback = await database.callbacks.create(
        a.organisation_id, button_id=a.button_id, call_id=None, name="Ada", email="ada@example.test", phone=None,
        note=None, reason="visitor",
    )  # fmt: skip
    _, a_token = await database.tokens.create(a.organisation_id, name="A's CRM", created_by=None)
    a_hook = await database.webhooks.create(
        a.organisation_id, url="http://127.0.0.1:9/hooks", events=["call.ended"], description=None
    )
    a_hold = await database.retention.add_hold(
        a.organisation_id, reason="Dispute", actor=None, call_id=uuid.UUID(call_id)
    )
    assert a_hold is not None
    a_receipt = await database.retention.write_receipt(
        a.organisation_id, kind="purge", requested_by=None, started_at=a_hold.created_at, counts={"calls": 0}
    )
    a_clip = uuid.uuid4()
    await database.pool.execute(
        "INSERT INTO clips (id, organisation_id, call_id, state, declared_size, kind, media_type, byte_size, ready_at) "
        "VALUES ($1, $2, $3, 'ready', 10, 'image', 'image/jpeg', 10, now())",
        a_clip,
        a.organisation_id,
        uuid.UUID(call_id),
    )
    ids = {
        "clips": a_clip,
        "legal-holds": a_hold.id,
        "receipts": a_receipt.id,
        "tokens": a_token.id,
        "webhooks": a_hook.id,
        "users": a.agent_id,
        "teams": team.id,
        "buttons": a.button_id,
        "calls": uuid.UUID(call_id),
        "callbacks": callback.id,
        "recordings": recording.id,
    }

    # Organisation B's admin.
    (b,) = await make_tenant(database)
    b_email, b_password = await make_admin(database, b.organisation_id)
    cookie = await login_cookie(server.url, b_email, b_password)
    bodies: dict[str, Any] = {
        "PATCH": {"name": "Taken over"},
        "PUT": {"notes": "written by B"},
        "POST": {},
        "DELETE": None,
        "GET": None,
    }

    tried = set()
    for method, template in sorted(_templated_api_routes(server)):
        collection = template.split("/")[3]
        param = template[template.index("{") + 1 : template.index("}")]
        url = server.url + template.replace("{" + param + "}", str(ids[collection]))
        status, body = await call_api(method, url, cookie=cookie, origin=server.url, json=bodies[method])
        assert status == 404, (method, template, status, body)
        tried.add((method, template))
    assert len(tried) >= 20, tried  # every templated route, whatever it is

    # And with B's API token: refused too (404 on admin routes; 401 on the agents' routes, which
    # take no token).
    status, created = await call_api(
        "POST", f"{server.url}/api/v1/tokens", cookie=cookie, origin=server.url, json={"name": "B's CRM"}
    )
    assert status == 201
    async with aiohttp.ClientSession() as http:
        for method, template in sorted(tried):
            collection = template.split("/")[3]
            param = template[template.index("{") + 1 : template.index("}")]
            url = server.url + template.replace("{" + param + "}", str(ids[collection]))
            async with http.request(
                method, url, json=bodies[method], headers={"Authorization": f"Bearer {created['secret']}"}
            ) as response:
                expected = 401 if template.endswith(("/notes", "/done")) else 404
                assert response.status == expected, (method, template, response.status, await response.text())

    # Ids of A inside B's own requests are refused too.
    status, _ = await call_api(
        "POST",
        f"{server.url}/api/v1/call-links",
        cookie=cookie,
        origin=server.url,
        json={"callback_id": str(callback.id)},
    )
    assert status == 404
    status, _ = await call_api(
        "POST",
        f"{server.url}/api/v1/call-links",
        cookie=cookie,
        origin=server.url,
        json={"button_id": str(a.button_id)},
    )
    assert status == 404
    status, body = await call_api(
        "PATCH", f"{server.url}/api/v1/buttons/{b.button_id}", cookie=cookie, origin=server.url,
        json={"agents": [str(a.agent_id)]},
    )  # fmt: skip
    assert status == 400 and "organisation" in body["message"]
    status, _ = await call_api(
        "POST", f"{server.url}/api/v1/teams", cookie=cookie, origin=server.url,
        json={"name": "Poach", "members": [str(a.agent_id)]},
    )  # fmt: skip
    assert status == 400
    # Lists hold only B's own.
    for collection, key in (("users", "users"), ("teams", "teams"), ("buttons", "buttons"), ("callbacks", "callbacks"),
                            ("recordings", "recordings"), ("tokens", "tokens"), ("webhooks", "webhooks"),
                            ("calls", "calls"), ("legal-holds", "holds")):  # fmt: skip
        status, body = await call_api("GET", f"{server.url}/api/v1/{collection}", cookie=cookie)
        assert status == 200
        listed = {item["id"] for item in body[key]}
        assert str(ids[collection]) not in listed, collection
    status, body = await call_api("GET", f"{server.url}/api/v1/receipts", cookie=cookie)
    assert status == 200 and str(a_receipt.id) not in {r["receipt"] for r in body["receipts"]}
    # A person who called A is nobody to B: not found, not exported, not erased.
    status, body = await call_api(
        "POST", f"{server.url}/api/v1/data-subjects/lookup", cookie=cookie, origin=server.url,
        json={"email": "ada@example.test"},
    )  # fmt: skip
    assert status == 200 and body["subject"]["calls"] == [] and body["subject"]["callbacks"] == 0
    status, body = await call_api(
        "POST", f"{server.url}/api/v1/data-subjects/erase", cookie=cookie, origin=server.url,
        json={"email": "ada@example.test"},
    )  # fmt: skip
    assert status == 200 and body["receipt"]["deleted"]["callbacks"] == 0
    assert await database.callbacks.get(a.organisation_id, callback.id) is not None

    # Nothing of A changed.
    user = await database.accounts.user(a.organisation_id, a.agent_id)
    assert user is not None and not user.disabled and user.display_name == "Agent 0"
    kept = await database.teams.get(a.organisation_id, team.id)
    assert kept is not None and kept.name == "Tier 1" and kept.members == (a.agent_id,)
    button = await database.buttons.get(a.organisation_id, a.button_id)
    assert button is not None and button.name == "Support"
    row = await database.calls.get(a.organisation_id, uuid.UUID(call_id))
    assert row is not None and row.notes is None
    kept_callback = await database.callbacks.get(a.organisation_id, callback.id)
    assert kept_callback is not None and kept_callback.state == "open"
    assert await server.runner.app[RECORDINGS].get(a.organisation_id, recording.id) is not None
    assert [t.revoked_at for t in await database.tokens.all(a.organisation_id)] == [None]
    assert await database.webhooks.get(a.organisation_id, a_hook.id) == a_hook


async def test_agents_cannot_use_admin_routes_and_cross_site_requests_are_refused(
    server: Running, database: Database
) -> None:
    (a,) = await make_tenant(database)
    agent_cookie = await login_cookie(server.url, a.agent_email, a.agent_password)
    status, body = await call_api("GET", f"{server.url}/api/v1/users", cookie=agent_cookie)
    assert (status, body["error"]) == (403, "forbidden")

    email, password = await make_admin(database, a.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    new_user = {"email": "eve@example.test", "name": "Eve", "role": "admin", "password": "correct horse battery"}
    for origin in ("https://evil.example", VISITOR_ORIGIN):
        status, body = await call_api("POST", f"{server.url}/api/v1/users", cookie=cookie, origin=origin, json=new_user)
        assert (status, body["error"]) == (403, "cross_origin")
    assert await database.accounts.user_by_email("eve@example.test") is None
    status, body = await call_api("POST", f"{server.url}/api/v1/users", cookie=cookie, origin=server.url, json=new_user)
    assert status == 201, body


async def test_disabling_an_agent_ends_its_sessions_and_closes_its_console(server: Running, database: Database) -> None:
    (a,) = await make_tenant(database)
    email, password = await make_admin(database, a.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    agent = Agent(server.url, a.agent_email, a.agent_password)
    try:
        await agent.connect()
        await agent.go_available()
        status, body = await call_api(
            "PATCH", f"{server.url}/api/v1/users/{a.agent_id}", cookie=cookie, origin=server.url,
            json={"disabled": True},
        )  # fmt: skip
        assert status == 200 and body["user"]["disabled"] is True
        await asyncio.wait_for(agent.closed.wait(), 5)
        assert agent.close_code == signalling.CLOSE_SESSION_ENDED
        status, _ = await call_api("GET", f"{server.url}/api/v1/me", cookie=agent.cookie)
        assert status == 401
        status, body = await call_api(
            "POST", f"{server.url}/api/v1/session", origin=server.url,
            json={"email": a.agent_email, "password": a.agent_password},
        )  # fmt: skip
        assert (status, body["error"]) == (401, "invalid_credentials")  # the same answer as a wrong password
        # An admin cannot lock themselves out.
        me = (await call_api("GET", f"{server.url}/api/v1/me", cookie=cookie))[1]["user"]["id"]
        status, body = await call_api(
            "PATCH", f"{server.url}/api/v1/users/{me}", cookie=cookie, origin=server.url, json={"disabled": True}
        )
        assert (status, body["error"]) == (409, "own_account")
    finally:
        await agent.close()


async def test_an_idle_session_expires_and_its_console_closes(
    server: Running, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signalling, "SESSION_CHECK_SECONDS", 0.2)
    (a,) = await make_tenant(database)
    agent = Agent(server.url, a.agent_email, a.agent_password)
    try:
        await agent.connect()
        idle = server.settings.session_idle_timeout
        await database.pool.execute(
            "UPDATE sessions SET last_seen_at = now() - make_interval(secs => $2) WHERE user_id = $1",
            a.agent_id,
            idle + 1,
        )
        await asyncio.wait_for(agent.closed.wait(), 5)
        assert agent.close_code == signalling.CLOSE_SESSION_ENDED
        status, body = await call_api("GET", f"{server.url}/api/v1/me", cookie=agent.cookie)
        assert (status, body["error"]) == (401, "not_authenticated")
    finally:
        await agent.close()


async def test_login_attempts_are_limited_without_locking_the_account(settings: Settings, database: Database) -> None:
    running = await start(dataclasses.replace(settings, login_rate_per_account=3.0), database)
    try:
        (a,) = await make_tenant(database)
        url = f"{running.url}/api/v1/session"

        async def attempt(password: str, address: str = "127.0.0.1") -> int:
            connector = aiohttp.TCPConnector(local_addr=(address, 0))
            async with (
                aiohttp.ClientSession(connector=connector) as http,
                http.post(
                    url, json={"email": a.agent_email, "password": password}, headers={"Origin": running.url}
                ) as response,
            ):
                return response.status

        assert [await attempt("wrong password!") for _ in range(3)] == [401, 401, 401]
        assert await attempt(a.agent_password) == 429  # slowed down, even with the right password ...
        assert await attempt(a.agent_password, "127.0.0.2") == 200  # ... but the account is not locked
    finally:
        await running.stop()


async def test_behind_a_trusted_proxy_clients_are_counted_by_their_forwarded_address(
    settings: Settings, database: Database
) -> None:
    proxied = dataclasses.replace(settings, login_rate_per_account=2.0, trusted_proxies=("127.0.0.1",))
    running = await start(proxied, database)
    try:
        (a,) = await make_tenant(database)

        async def attempt(password: str, forwarded: str) -> int:
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{running.url}/api/v1/session",
                    json={"email": a.agent_email, "password": password},
                    headers={"Origin": running.url, "X-Forwarded-For": forwarded},
                ) as response,
            ):
                return response.status

        # Documentation addresses, only ever written in a header: no traffic goes anywhere.
        assert [await attempt("wrong password!", "198.51.100.7") for _ in range(2)] == [401, 401]
        assert await attempt(a.agent_password, "198.51.100.7") == 429
        assert await attempt(a.agent_password, "198.51.100.8, 127.0.0.1") == 200  # another client
        assert await attempt(a.agent_password, "not an address") == 200  # counted against the proxy
    finally:
        await running.stop()
