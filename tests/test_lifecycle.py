"""How calls and sockets end when parties go away other than by hanging up, and at shutdown."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from server import presence, signalling
from server.app import Running, start
from server.appkeys import SWITCHBOARD
from server.config import Settings
from storage.db import Database
from tests.conftest import Tenant, answered_call_for, login_cookie, make_admin
from tests.peers import Agent, Visitor
from tests.test_call import wait_for_row
from tests.test_routing import call_api


@pytest.fixture
async def answered(server: Running, tenant: Tenant) -> AsyncIterator[tuple[Visitor, Agent, str]]:
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    await visitor.hears(880)
    yield visitor, agent, call_id
    await visitor.close()
    await agent.close()


async def test_visitor_closing_its_peer_connection_ends_the_call(
    answered: tuple[Visitor, Agent, str], database: Database, tenant: Tenant
) -> None:
    visitor, agent, call_id = answered
    assert visitor.pc is not None
    await visitor.pc.close()  # the socket stays open: only the media is gone
    ended = await agent.expect("call_state", call_id=call_id, state="ended")
    assert ended["reason"] == "failed"
    await visitor.expect("call_state", state="ended", reason="failed", detail="visitor_media_failed")
    await agent.expect("presence", status="available")
    row = await wait_for_row(database, tenant, call_id, "ended")
    assert row.end_reason == "failed"


async def test_agent_closing_its_peer_connection_ends_the_call(
    answered: tuple[Visitor, Agent, str], database: Database, tenant: Tenant
) -> None:
    visitor, agent, call_id = answered
    assert agent.pc is not None
    await agent.pc.close()
    await visitor.expect("call_state", state="ended", reason="failed", detail="agent_media_failed")
    await agent.expect("leg_state", state="closed")
    await agent.expect("call_state", call_id=call_id, state="ended")
    # Without a media leg the agent is not rung: away until it offers again.
    await agent.expect("presence", status="away")
    row = await wait_for_row(database, tenant, call_id, "ended")
    assert row.end_reason == "failed"


async def test_another_console_of_an_agent_in_a_call_sees_it_busy_and_leaves_the_call_alone(
    server: Running, answered: tuple[Visitor, Agent, str], tenant: Tenant
) -> None:
    visitor, agent, call_id = answered
    others = [Agent(server.url, tenant.agent_email, tenant.agent_password) for _ in range(presence.SOCKETS_PER_AGENT)]
    try:
        for other in others[:-1]:
            other.cookie = agent.cookie
            hello = await other.connect()
            assert (hello["agent"]["presence"], hello["agent"]["in_call"]) == ("busy", call_id)
        # One console too many replaces the oldest that does not carry the call: never the call's.
        others[-1].cookie = agent.cookie
        await others[-1].connect()
        await asyncio.wait_for(others[0].closed.wait(), 5)
        assert others[0].close_code == signalling.CLOSE_REPLACED
        assert not agent.closed.is_set()
        # The call goes on, and ends when its console hangs up.
        await agent.send({"type": "hangup", "call_id": call_id})
        await visitor.expect("call_state", state="ended", reason="agent_hangup")
        for other in others[1:]:
            await other.expect("call_state", call_id=call_id, state="ended")
    finally:
        for other in others:
            await other.close()


async def test_an_agent_socket_ends_with_its_session(
    server: Running, database: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signalling, "SESSION_CHECK_SECONDS", 0.2)
    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    try:
        await agent.connect()
        await asyncio.sleep(0.5)
        assert not agent.closed.is_set()  # a live session is kept alive by the open console
        await database.pool.execute("UPDATE users SET disabled_at = now() WHERE id = $1", tenant.agent_id)
        await asyncio.wait_for(agent.closed.wait(), 5)
        assert agent.close_code == signalling.CLOSE_SESSION_ENDED
    finally:
        await agent.close()


async def test_shutdown_ends_calls_tells_everyone_and_closes_sockets(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    running = await start(settings, database)
    try:
        visitor, agent, call_id = await answered_call_for(running.url, tenant)
    except BaseException:
        await running.stop()
        raise
    stopped = False
    try:
        switchboard = running.runner.app[SWITCHBOARD]

        began = time.monotonic()
        await running.stop()
        stopped = True
        # Nobody waits for clients to leave (aiohttp's shutdown timeout is 5 s).
        assert time.monotonic() - began < 4
        await visitor.expect("call_state", state="ended", reason="shutdown")
        await agent.expect("call_state", call_id=call_id, state="ended", reason="shutdown")
        for peer in (visitor, agent):
            await asyncio.wait_for(peer.closed.wait(), 5)
        assert agent.close_code == aiohttp.WSCloseCode.GOING_AWAY
        row = await wait_for_row(database, tenant, call_id, "ended")
        assert row.end_reason == "shutdown"
        # Every leg the switchboard made is closed.
        assert not switchboard._legs and not switchboard.calls
    finally:
        await visitor.close()
        await agent.close()
        if not stopped:
            await running.stop()


async def test_the_console_works_on_every_loopback_name(server: Running, tenant: Tenant) -> None:
    """Without a public URL, http://localhost:PORT is the same app as http://127.0.0.1:PORT."""
    port = server.settings.port
    agent = Agent(f"http://localhost:{port}", tenant.agent_email, tenant.agent_password)
    agent.base_url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{agent.base_url}/api/v1/session",
                json={"email": tenant.agent_email, "password": tenant.agent_password},
                headers={"Origin": f"http://localhost:{port}"},
            ) as response:
                assert response.status == 200
                morsel = response.cookies["__Host-callbutton_session"]
                agent.cookie = f"{morsel.key}={morsel.value}"
        url = agent.base_url.replace("http", "ws", 1) + "/ws/v1/agent"
        await agent.open(url, origin=f"http://localhost:{port}", headers={"Cookie": agent.cookie})
        await agent.expect("hello")
    finally:
        await agent.close()


async def test_presence_ends_with_the_last_socket_and_a_reload_comes_back_available(
    server: Running, database: Database, tenant: Tenant
) -> None:
    email, password = await make_admin(database, tenant.organisation_id)
    admin = await login_cookie(server.url, email, password)

    async def listed_presence() -> str:
        status, body = await call_api("GET", f"{server.url}/api/v1/users", cookie=admin)
        assert status == 200
        return next(u["presence"] for u in body["users"] if u["id"] == str(tenant.agent_id))

    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    await agent.connect()
    await agent.go_available()
    assert await listed_presence() == "available"
    cookie = agent.cookie
    await agent.close()  # the page reloads: its socket closes ...
    for _ in range(50):
        if await listed_presence() == "offline":
            break
        await asyncio.sleep(0.1)
    assert await listed_presence() == "offline"

    reloaded = Agent(server.url, tenant.agent_email, tenant.agent_password)
    try:
        reloaded.cookie = cookie
        hello = await reloaded.connect()  # ... and the new page's socket opens
        assert (hello["agent"]["presence"], hello["agent"]["wants_available"]) == ("away", True)
        # Its leg connects, and the agent is available again without choosing it again.
        await reloaded.send({"type": "offer", "sdp": await reloaded.offer(880.0)})
        await reloaded.apply_answer((await reloaded.expect("answer"))["sdp"])
        await reloaded.expect("presence", status="available")
        assert await listed_presence() == "available"
    finally:
        await reloaded.close()
