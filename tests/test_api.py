"""REST API, cookies, CSRF, headers, and the OpenAPI document kept in step with the routes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import yarl

from server.app import Running
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, Tenant
from tests.peers import Agent


async def login(http: aiohttp.ClientSession, server: Running, email: str, password: str) -> aiohttp.ClientResponse:
    return await http.post(
        f"{server.url}/api/v1/session", json={"email": email, "password": password}, headers={"Origin": server.url}
    )


async def test_login_sets_a_strict_cookie_and_me_returns_the_user(server: Running, tenant: Tenant) -> None:
    async with aiohttp.ClientSession() as http:
        response = await login(http, server, tenant.agent_email.upper(), tenant.agent_password)
        assert response.status == 200
        body = await response.json()
        assert body["user"]["email"] == tenant.agent_email and body["user"]["role"] == "agent"
        header = response.headers["Set-Cookie"]
        assert header.startswith("__Host-callbutton_session=")
        for attribute in ("HttpOnly", "Path=/", "SameSite=Strict", "Secure"):
            assert attribute in header
        assert "Domain" not in header
        token = response.cookies["__Host-callbutton_session"].value
        assert len(token) >= 22  # 128 bits, base64url
        me = await http.get(f"{server.url}/api/v1/me", headers={"Cookie": f"__Host-callbutton_session={token}"})
        assert me.status == 200 and (await me.json())["user"]["id"] == str(tenant.agent_id)

        # A second login gets a new token; both are distinct sessions.
        again = await login(http, server, tenant.agent_email, tenant.agent_password)
        assert again.cookies["__Host-callbutton_session"].value != token


async def test_wrong_password_and_unknown_email_look_the_same(server: Running, tenant: Tenant) -> None:
    async with aiohttp.ClientSession() as http:
        wrong = await login(http, server, tenant.agent_email, "not the password")
        unknown = await login(http, server, "nobody@example.test", "not the password")
        assert wrong.status == unknown.status == 401
        assert (
            await wrong.json()
            == await unknown.json()
            == {
                "error": "invalid_credentials",
                "message": "the email or the password is wrong",
            }
        )
        assert "Set-Cookie" not in wrong.headers
        anonymous = await http.get(f"{server.url}/api/v1/me")
        assert anonymous.status == 401 and (await anonymous.json())["error"] == "not_authenticated"


async def test_malformed_login_bodies_get_clear_errors(server: Running) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/api/v1/session"
        origin = {"Origin": server.url}
        cases = [
            (dict(data="{", headers={**origin, "Content-Type": "application/json"}), 400, "bad_json"),
            (
                dict(data="email=x", headers={**origin, "Content-Type": "application/x-www-form-urlencoded"}),
                415,
                "unsupported_media_type",
            ),
            (dict(json=["a"], headers=origin), 400, "bad_request"),
            (dict(json={"email": "a@b.c"}, headers=origin), 400, "bad_request"),
            (dict(json={"email": "a@b.c", "password": "x" * 2000}, headers=origin), 400, "bad_request"),
            (dict(data="x" * 100_000, headers={**origin, "Content-Type": "application/json"}), 413, "too_large"),
        ]
        for kwargs, status, code in cases:
            async with http.post(url, **kwargs) as response:  # type: ignore[arg-type]
                assert response.status == status, (kwargs, await response.text())
                body = await response.json()
                assert body["error"] == code and body["message"], body


async def test_cross_site_requests_cannot_change_anything(server: Running, tenant: Tenant) -> None:
    async with aiohttp.ClientSession() as http:
        for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
            async with http.post(
                f"{server.url}/api/v1/session",
                json={"email": tenant.agent_email, "password": tenant.agent_password},
                headers=headers,
            ) as response:
                assert response.status == 403
                assert (await response.json())["error"] == "cross_origin"


async def test_logout_ends_the_session_and_closes_its_agent_socket(server: Running, tenant: Tenant) -> None:
    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    try:
        await agent.connect()
        assert agent.cookie is not None
        async with aiohttp.ClientSession() as http:
            async with http.delete(
                f"{server.url}/api/v1/session", headers={"Origin": server.url, "Cookie": agent.cookie}
            ) as response:
                assert response.status == 204
                assert (
                    "Max-Age=0" in response.headers["Set-Cookie"] or "expires" in response.headers["Set-Cookie"].lower()
                )
            await asyncio.wait_for(agent.closed.wait(), 5)
            assert agent.close_code == 4002
            async with http.get(f"{server.url}/api/v1/me", headers={"Cookie": agent.cookie}) as me:
                assert me.status == 401
    finally:
        await agent.close()


async def test_widget_lookup_is_readable_by_allowed_origins_only(server: Running, tenant: Tenant) -> None:
    async with aiohttp.ClientSession() as http:
        url = f"{server.url}/api/v1/widget/{tenant.button_key}"
        async with http.get(url, headers={"Origin": VISITOR_ORIGIN}) as ok:
            assert ok.status == 200
            assert ok.headers["Access-Control-Allow-Origin"] == VISITOR_ORIGIN
            assert await ok.json() == {
                "button": {
                    "name": "Support",
                    "recording": {"enabled": False},
                    "form_fields": {"name": "off", "email": "off", "phone": "off"},
                    "language": "en",
                    "colour": "#1a7f4b",
                    "position": "bottom-right",
                    "clips": {"enabled": True, "per_call": 20, "max_mb": 100},
                },
                "open": True,
                "agents_available": False,
                "protocol": 1,
            }
        async with http.get(url, headers={"Origin": "https://evil.example"}) as refused:
            assert refused.status == 403
            assert (await refused.json())["error"] == "origin_not_allowed"
        async with http.get(
            f"{server.url}/api/v1/widget/cb_unknownunknownunknown", headers={"Origin": VISITOR_ORIGIN}
        ) as unknown:
            assert unknown.status == 404
            assert (await unknown.json())["error"] == "unknown_button"

        agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
        try:
            await agent.connect()
            await agent.go_available()
            async with http.get(url, headers={"Origin": VISITOR_ORIGIN}) as now:
                assert (await now.json())["agents_available"] is True
        finally:
            await agent.close()


async def test_pages_carry_security_headers(server: Running) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/agent/") as page:
            assert page.status == 200
            csp = page.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            assert page.headers["Referrer-Policy"] == "no-referrer"
        async with http.get(f"{server.url}/widget.js") as script:
            assert script.status == 200
            assert script.headers["Content-Type"].startswith("text/javascript")
            assert script.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
        async with http.get(f"{server.url}/demo") as demo:
            assert demo.status == 404  # only in demo mode
        # Sent as written (the client would otherwise resolve the dots itself).
        for path in (
            "/agent/static/../../pyproject.toml",
            "/agent/static/%2e%2e/%2e%2e/pyproject.toml",
            "/agent/static/..%2f..%2fpyproject.toml",
        ):
            async with http.get(yarl.URL(server.url + path, encoded=True)) as escape:
                assert escape.status in (403, 404), path
                assert "build-system" not in await escape.text()
        async with http.get(f"{server.url}/agent/static/agent.js") as allowed:
            assert allowed.status == 200
        async with http.get(f"{server.url}/no/such/page") as missing:
            assert missing.status == 404 and (await missing.json())["error"] == "not_found"


async def test_openapi_document_lists_exactly_the_api_routes(server: Running) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/api/v1/openapi.json") as response:
            served = await response.json()
    on_disk = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert served == on_disk
    documented = {(path, method.upper()) for path, item in on_disk["paths"].items() for method in item}
    app = server.runner.app
    routed = {
        (route.resource.canonical, route.method)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/") and route.method != "HEAD"
    }
    assert routed == documented


async def test_demo_mode_serves_a_page_for_the_demo_button(settings, database: Database) -> None:  # type: ignore[no-untyped-def]
    from server.app import start

    running = await start(settings, database, demo=True)
    try:
        assert running.demo is not None
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.url}/demo") as page:
                text = await page.text()
                assert page.status == 200
                assert f'data-button="{running.demo.button_key}"' in text
            async with http.post(
                f"{running.url}/api/v1/session",
                json={"email": running.demo.agent_email, "password": running.demo.agent_password},
                headers={"Origin": running.url},
            ) as response:
                assert response.status == 200
        button = await database.buttons.by_public_key(running.demo.button_key)
        assert button is not None and running.url in button.allowed_origins
    finally:
        await running.stop()
