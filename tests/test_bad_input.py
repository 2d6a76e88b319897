"""Hostile and broken input on both sockets: each gets a clear error or close code, and a call running
beside it goes on unharmed (its parties keep hearing each other)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from server import messages
from server.app import Running
from server.appkeys import LIMITS
from server.signalling import CLOSE_TOO_SLOW, MAX_MESSAGE_BYTES, OUTBOX_SIZE, Socket
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, Tenant, answered_call_for, make_tenant, ringing_call_for
from tests.peers import Agent, Message, Visitor

VALID_SDP_HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


@pytest.fixture
async def live_call(server: Running, database: Database) -> AsyncIterator[tuple[Visitor, Agent, Tenant]]:
    """A call in progress, to check that nothing below disturbs it."""
    (tenant,) = await make_tenant(database)
    visitor, agent, _ = await answered_call_for(server.url, tenant)
    await visitor.hears(880)
    await agent.hears(440)
    yield visitor, agent, tenant
    await visitor.close()
    await agent.close()


async def reply_error(peer: Visitor | Agent, message: Message | str) -> Message:
    """Send ``message`` and return the error it gets."""
    before = len(peer.messages("error"))
    await peer.send(message)
    await peer.wait_for(lambda m: len(peer.messages("error")) > before, 5, "an error")
    return peer.messages("error")[before]


async def still_talking(visitor: Visitor, agent: Agent) -> None:
    assert not visitor.closed.is_set() and not agent.closed.is_set()
    assert not [m for m in visitor.received + agent.received if m.get("type") == "error"]
    assert not [m for m in visitor.received if m.get("type") == "call_state" and m.get("state") == "ended"]
    # Fresh audio: clear what was heard and hear it again.
    for peer, tone in ((visitor, 880), (agent, 440)):
        assert peer.sink is not None
        peer.sink._frames.clear()
        await peer.hears(tone, timeout=5)


async def test_visitor_socket_bad_messages(server: Running, live_call: tuple[Visitor, Agent, Tenant]) -> None:
    visitor, agent, tenant = live_call
    other = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await other.connect()
        cases: list[tuple[str, str, str]] = [
            ("{not json", "bad_json", "not valid JSON"),
            ("[1, 2]", "bad_message", "JSON object"),
            ('{"sdp": "x"}', "bad_message", "missing field 'type'"),
            ('{"type": "dial"}', "unknown_type", "unknown message type 'dial'"),
            ('{"type": "call"}', "bad_message", "missing field 'sdp' in 'call'"),
            ('{"type": "call", "sdp": 42}', "bad_message", "field 'sdp' in 'call' must be a string"),
            ('{"type": "call", "sdp": "x", "extra": 1}', "bad_message", "unknown field 'extra'"),
            ('{"type": "call", "sdp": "x", "page_url": "javascript:alert(1)"}', "bad_message", "http(s) URL"),
            ('{"type": "call", "sdp": "x", "visitor": {"name": "A\\u0000B"}}', "bad_message", "NUL character"),
            ('{"type": "call", "sdp": "x", "visitor": {"name": "A\\udadcB"}}', "bad_message", "lone surrogate"),
            ('{"type": "hangup"}', "wrong_state", "no call to hang up"),
            (json.dumps({"type": "call", "sdp": "hello"}), "invalid_sdp", "v=0"),
            (json.dumps({"type": "call", "sdp": VALID_SDP_HEAD}), "invalid_sdp", "exactly one audio section"),
            ("[" * 30000 + "]" * 30000, "bad_json", "not valid JSON"),
        ]
        for text, code, fragment in cases:
            error = await reply_error(other, text)
            assert error["code"] == code, (text[:60], error)
            assert fragment in error["message"], (text[:60], error)
        # None of those created a call.
        assert not other.messages("call_state")
        await still_talking(visitor, agent)
    finally:
        await other.close()


async def test_hostile_sdp_is_refused_clearly(server: Running, live_call: tuple[Visitor, Agent, Tenant]) -> None:
    visitor, agent, tenant = live_call
    other = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await other.connect()
        real = await other.offer(440)
        many_candidates = real.replace(
            "a=candidate:",
            "".join(f"a=candidate:{i} 1 udp 1 127.0.0.1 {10000 + i} typ host\r\n" for i in range(100)) + "a=candidate:",
            1,
        )
        no_fingerprint = "\r\n".join(line for line in real.split("\r\n") if not line.startswith("a=fingerprint"))
        no_candidates = "\r\n".join(line for line in real.split("\r\n") if not line.startswith("a=candidate"))
        video_only = real.replace("m=audio", "m=video")
        mangled = real.replace("m=audio 9", "m=audio x").replace("UDP/TLS/RTP/SAVPF 96", "UDP/TLS/RTP/SAVPF abc")
        cases = [
            (many_candidates, "candidates; at most"),
            (no_fingerprint, "fingerprint"),
            (no_candidates, "no ICE candidates"),
            (video_only, "audio"),
            (mangled, "could not be parsed"),
            (real.replace("opus/48000/2", "speex/8000"), "does not offer Opus"),
        ]
        for sdp, fragment in cases:
            error = await reply_error(other, {"type": "call", "sdp": sdp})
            assert (error["code"], error["ref"]) == ("invalid_sdp", "call"), error
            assert fragment in error["message"], error
        assert not other.messages("call_state")
        await still_talking(visitor, agent)
    finally:
        await other.close()


async def test_oversized_message_closes_with_1009(server: Running, live_call: tuple[Visitor, Agent, Tenant]) -> None:
    visitor, agent, tenant = live_call
    other = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await other.connect()
        await other.send(json.dumps({"type": "call", "sdp": "x" * MAX_MESSAGE_BYTES}))
        await asyncio.wait_for(other.closed.wait(), 5)
        assert other.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await still_talking(visitor, agent)
    finally:
        await other.close()


async def test_message_flood_is_rate_limited(server: Running, live_call: tuple[Visitor, Agent, Tenant]) -> None:
    visitor, agent, tenant = live_call
    other = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await other.connect()
        for _ in range(200):
            await other.send('{"type": "hangup"}')
        await asyncio.wait_for(other.closed.wait(), 5)
        assert other.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
        assert any(m["code"] == "rate_limited" for m in other.messages("error"))
        await still_talking(visitor, agent)
    finally:
        await other.close()


async def test_visitor_socket_handshake_refusals(server: Running, live_call: tuple[Visitor, Agent, Tenant]) -> None:
    visitor, agent, tenant = live_call
    base = server.url.replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        for key, origin, status, code in [
            (tenant.button_key, "https://evil.example", 403, "origin_not_allowed"),
            (tenant.button_key, None, 403, "origin_not_allowed"),
            ("cb_" + "A" * 24, VISITOR_ORIGIN, 404, "unknown_button"),
            ("../../etc/passwd", VISITOR_ORIGIN, 404, "unknown_button"),
        ]:
            headers = {"Origin": origin} if origin else {}
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}/ws/v1/visitor?key={key}", headers=headers)
            assert refused.value.status == status
            # The same URL over plain HTTP shows the JSON body a developer would read.
            async with http.get(f"{server.url}/ws/v1/visitor", params={"key": key}, headers=headers) as response:
                assert response.status == status
                assert (await response.json())["error"] == code
    await still_talking(visitor, agent)


async def test_agent_socket_refusals_and_wrong_state(
    server: Running, database: Database, live_call: tuple[Visitor, Agent, Tenant]
) -> None:
    visitor, agent, _ = live_call
    base = server.url.replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as unauthenticated:
            await http.ws_connect(f"{base}/ws/v1/agent", headers={"Origin": server.url})
        assert unauthenticated.value.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as forged:
            await http.ws_connect(
                f"{base}/ws/v1/agent", headers={"Origin": server.url, "Cookie": "__Host-callbutton_session=forged"}
            )
        assert forged.value.status == 401

    (colleague,) = await make_tenant(database)
    other = Agent(server.url, colleague.agent_email, colleague.agent_password)
    try:
        await other.login()
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as cross_site:
                await http.ws_connect(
                    f"{base}/ws/v1/agent", headers={"Origin": "https://evil.example", "Cookie": other.cookie or ""}
                )
            assert cross_site.value.status == 403
        await other.connect()
        call_id = visitor.call_id
        for message, code, fragment in [
            ({"type": "accept", "call_id": call_id}, "wrong_state", "not ringing you"),
            ({"type": "decline", "call_id": call_id}, "wrong_state", "not ringing you"),
            ({"type": "hangup", "call_id": call_id}, "wrong_state", "not in call"),
            ({"type": "accept", "call_id": "not-a-uuid"}, "bad_message", "must be a UUID"),
            ({"type": "presence", "status": "asleep"}, "bad_message", "one of 'available', 'away'"),
            ({"type": "offer", "sdp": "v=0\r\n"}, "invalid_sdp", "exactly one audio section"),
            ({"type": "call", "sdp": "x"}, "unknown_type", "unknown message type 'call'"),
            ("{not json", "bad_json", "not valid JSON"),
            ({"type": "accept"}, "bad_message", "missing field 'call_id' in 'accept'"),
            ({"type": "offer"}, "bad_message", "missing field 'sdp' in 'offer'"),
            ({"type": "presence", "status": "available", "mood": "happy"}, "bad_message", "unknown field 'mood'"),
        ]:
            error = await reply_error(other, message)
            assert (error["code"], fragment in error["message"]) == (code, True), error
        await other.send(json.dumps({"type": "offer", "sdp": "x" * MAX_MESSAGE_BYTES}))
        await asyncio.wait_for(other.closed.wait(), 5)
        assert other.close_code == aiohttp.WSCloseCode.MESSAGE_TOO_BIG
        await still_talking(visitor, agent)
    finally:
        await other.close()


async def test_one_socket_carries_one_call(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    visitor, agent, _ = await ringing_call_for(server.url, tenant)
    try:
        error = await reply_error(visitor, {"type": "call", "sdp": visitor.pc.localDescription.sdp})  # type: ignore[union-attr]
        assert error["code"] == "wrong_state" and "already has a call" in error["message"]
        # Once the visitor has heard that the call ended, the server closes the socket.
        await visitor.send({"type": "hangup"})
        await visitor.expect("call_state", state="ended", reason="abandoned")
        await asyncio.wait_for(visitor.closed.wait(), 5)
        assert visitor.close_code == aiohttp.WSCloseCode.OK
    finally:
        await visitor.close()
        await agent.close()


async def test_call_attempts_are_limited_per_address(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    codes = []
    for _ in range(5):
        visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
        try:
            await visitor.connect()
            await visitor.send({"type": "call", "sdp": await visitor.offer(440)})
            reply = await visitor.wait_for(lambda m: m["type"] in ("call_state", "error"), 5, "a reply")
            codes.append(reply.get("code") or reply["state"])
        finally:
            await visitor.close()
    # A burst of half the per-minute rate (6 / 2 = 3) is let through; the rest are refused.
    assert codes == ["ended", "ended", "ended", "rate_limited", "rate_limited"]
    # Rows are written just after the visitor is told (writes trail the call): wait for the third.
    for _ in range(50):
        rows = await database.pool.fetchval("SELECT count(*) FROM calls WHERE button_id = $1", tenant.button_id)
        if rows >= 3:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.3)  # and for no fourth
    rows = await database.pool.fetchval("SELECT count(*) FROM calls WHERE button_id = $1", tenant.button_id)
    assert rows == 3


async def test_visitor_sockets_are_capped_per_address_and_must_ask_for_a_call(
    server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(database)
    server.runner.app[LIMITS].visitor_call_deadline = 1.0
    cap = server.settings.visitor_sockets_per_address
    visitors = [Visitor(server.url, tenant.button_key, VISITOR_ORIGIN) for _ in range(cap)]
    try:
        for visitor in visitors:
            await visitor.connect()
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(
                    server.url.replace("http", "ws", 1) + f"/ws/v1/visitor?key={tenant.button_key}",
                    headers={"Origin": VISITOR_ORIGIN},
                )
            assert refused.value.status == 429
        # None of them asked for a call: each is closed after the deadline, freeing its place.
        for visitor in visitors:
            await asyncio.wait_for(visitor.closed.wait(), 5)
            assert visitor.close_code == aiohttp.WSCloseCode.POLICY_VIOLATION
        again = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
        await again.connect()
        await again.close()
    finally:
        for visitor in visitors:
            await visitor.close()


async def test_a_client_that_stops_reading_is_cut_off() -> None:
    """The outbox is bounded: a stalled client (its TCP window full) is closed with 4003 instead of
    growing the server's memory. The stall is injected at the socket boundary."""

    class StalledWebSocket:
        def __init__(self) -> None:
            self.sent = 0
            self.unblock = asyncio.Event()
            self.closed = False
            self.close_code: int | None = None

        async def send_str(self, data: str) -> None:
            await self.unblock.wait()
            self.sent += 1

        async def close(self, *, code: int = 1000, message: bytes = b"") -> None:
            self.closed = True
            self.close_code = code

    ws = StalledWebSocket()
    registry: set[Socket] = set()
    socket = Socket(ws, structlog.get_logger(), registry)  # type: ignore[arg-type]
    for _ in range(OUTBOX_SIZE + 50):
        socket.send(messages.Presence(status="available"))
    ws.unblock.set()
    for _ in range(100):
        if ws.closed:
            break
        await asyncio.sleep(0.01)
    assert ws.close_code == CLOSE_TOO_SLOW
    assert ws.sent <= 1  # what was queued was dropped, not delivered late
