"""A whole call between synthetic peers through the real server and Postgres."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
from aiortc.rtp import RtpPacket

from media.leg import Leg
from media.synthetic import OpusLoopTrack, band_share, tone_loop
from server.app import Running
from server.appkeys import SWITCHBOARD
from storage.db import Database
from tests.conftest import (
    VISITOR_ORIGIN,
    Tenant,
    answered_call_for,
    login_cookie,
    make_admin,
    make_tenant,
    ringing_call_for,
)
from tests.peers import Agent, Visitor


async def wait_for_row(database: Database, tenant: Tenant, call_id: str, state: str, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
        if row is not None and row.state == state:
            return row
        if loop.time() > deadline:
            raise AssertionError(f"call {call_id} did not reach {state}: {row}")
        await asyncio.sleep(0.05)


async def test_visitor_and_agent_hear_each_other(server: Running, database: Database, tenant: Tenant) -> None:
    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        hello = await agent.connect()
        assert hello["agent"]["presence"] == "away"
        await agent.go_available(tone=880)
        await visitor.connect()
        call_id = await visitor.call(tone=440, page_url="https://shop.example.test/cart")

        ring = await agent.expect("ring", call_id=call_id)
        assert ring["visitor"]["page_url"] == "https://shop.example.test/cart"
        # Before an answer the visitor hears the server's ringback, 440 + 480 Hz together (its own
        # 440 Hz tone echoed back would have no 480), and nothing of the agent.
        await visitor.hears(440, tolerance=45)
        assert visitor.sink is not None
        ringback = visitor.sink.samples()
        assert band_share(ringback, 440) > 0.25 and band_share(ringback, 480) > 0.25
        assert band_share(ringback, 880) < 0.01

        await agent.send({"type": "accept", "call_id": call_id})
        await agent.expect("call_state", call_id=call_id, state="answered")
        await visitor.expect("call_state", call_id=call_id, state="answered")
        await agent.expect("presence", status="busy")

        # Each side hears exactly the other's tone: no ringback leaks to the agent, none stays with
        # the visitor.
        assert abs(await visitor.hears(880) - 880) < 15
        assert abs(await agent.hears(440) - 440) < 15
        assert agent.sink is not None
        assert band_share(agent.sink.samples(), 480) < 0.01
        visitor.sink._frames.clear()
        await asyncio.sleep(1)
        assert band_share(visitor.sink.samples(), 880) > 0.9

        await visitor.send({"type": "hangup"})
        ended = await agent.expect("call_state", call_id=call_id, state="ended")
        assert ended["reason"] == "visitor_hangup"
        await visitor.expect("call_state", call_id=call_id, state="ended", reason="visitor_hangup")
        await agent.expect("presence", status="available")

        row = await wait_for_row(database, tenant, call_id, "ended")
        assert row.end_reason == "visitor_hangup"
        assert row.outcome == "answered"
        assert row.agent_id == tenant.agent_id
        assert row.created_at <= row.queued_at <= row.answered_at <= row.ended_at
        assert (row.ended_at - row.answered_at).total_seconds() > 0.1  # talk time
        kinds = [e.kind for e in await database.calls.events(tenant.organisation_id, uuid.UUID(call_id))]
        assert kinds == ["created", "queued", "agent_rung", "answered", "ended"]
    finally:
        await visitor.close()
        await agent.close()


async def test_caller_hears_nothing_said_before_the_answer(server: Running, tenant: Tenant) -> None:
    """An available agent's microphone streams to the server all the time on their standing leg. When
    the server falls behind reading its sockets (an oversubscribed machine), seconds of it wait there
    at the moment a call is answered; the caller must hear none of it, only what the agent says after.
    The stall is made by pausing the reads of the agent leg's sockets for 2 s before the answer."""
    visitor, agent, call_id = await ringing_call_for(server.url, tenant)  # the agent's tone 880 Hz
    try:
        roster_agent = server.runner.app[SWITCHBOARD].roster.get(tenant.agent_id)
        assert roster_agent is not None
        (standing,) = [s.leg for s in roster_agent.sockets if s.leg is not None]
        sockets = _ice_transports(standing)
        assert sockets
        for transport in sockets:
            transport.pause_reading()
        await asyncio.sleep(2.0)
        assert agent.pc is not None
        (sender,) = agent.pc.getSenders()
        assert isinstance(sender.track, OpusLoopTrack)
        received = _payloads_received(visitor)
        sender.track.switch(list(tone_loop(660)))  # from the answer on: 660 Hz
        await agent.send({"type": "accept", "call_id": call_id})
        await agent.expect("call_state", call_id=call_id, state="answered")
        for transport in sockets:
            transport.resume_reading()

        # The tones are looped pre-encoded packets, forwarded as they are: every Opus payload the
        # caller receives tells which tone, and so which side of the answer, it comes from.
        await visitor.hears(660)
        await asyncio.sleep(1.0)
        before, after = set(tone_loop(880)), set(tone_loop(660))
        assert not [p for p in received if p in before], "the caller heard the agent from before the answer"
        assert len([p for p in received if p in after]) > 50
        assert standing.counters.packets_stale > 20  # most of the 2 s of 880 Hz waited in the socket
    finally:
        await visitor.close()
        await agent.close()


def _payloads_received(peer: Visitor) -> list[bytes]:
    """From now on, the payload of every RTP packet ``peer`` receives, in order."""
    assert peer.pc is not None
    (receiver,) = peer.pc.getReceivers()
    handle: Any = receiver._handle_rtp_packet
    payloads: list[bytes] = []

    async def keep(packet: RtpPacket, arrival_time_ms: int) -> None:
        payloads.append(packet.payload)
        await handle(packet, arrival_time_ms)

    receiver._handle_rtp_packet = keep  # type: ignore[method-assign]
    return payloads


def _ice_transports(leg: Leg) -> list[asyncio.DatagramTransport]:
    """The datagram transports of ``leg``'s ICE sockets (to stall them as a busy server would)."""
    pc: Any = leg._pc
    (transceiver,) = pc.getTransceivers()
    connection = transceiver.receiver.transport.transport._connection
    return [p.transport for p in connection._protocols if hasattr(p.transport, "pause_reading")]


async def test_ring_all_first_accept_wins(server: Running, database: Database) -> None:
    first, second = await make_tenant(database, agents=2)
    agents = [Agent(server.url, t.agent_email, t.agent_password) for t in (first, second)]
    visitor = Visitor(server.url, first.button_key, VISITOR_ORIGIN)
    try:
        for agent in agents:
            await agent.connect()
            await agent.go_available()
        await visitor.connect()
        call_id = await visitor.call()
        for agent in agents:
            await agent.expect("ring", call_id=call_id)
            await agent.expect("presence", status="ringing")
        await agents[1].send({"type": "accept", "call_id": call_id})
        await agents[1].expect("call_state", call_id=call_id, state="answered")
        stopped = await agents[0].expect("ring_stopped", call_id=call_id)
        assert stopped["reason"] == "answered_elsewhere"
        await agents[0].expect("presence", status="available")
        # The agent who lost the race cannot take the call any more.
        await agents[0].send({"type": "accept", "call_id": call_id})
        error = await agents[0].expect("error")
        assert error["code"] == "wrong_state"

        await agents[1].send({"type": "hangup", "call_id": call_id})
        await visitor.expect("call_state", state="ended", reason="agent_hangup")
        row = await wait_for_row(database, first, call_id, "ended")
        assert row.agent_id == second.agent_id
        events = await database.calls.events(first.organisation_id, uuid.UUID(call_id))
        rung = {e.agent_id for e in events if e.kind == "agent_rung"}
        assert rung == {first.agent_id, second.agent_id}
        stopped_events = [e for e in events if e.kind == "agent_ring_stopped"]
        assert [(e.agent_id, e.reason) for e in stopped_events] == [(first.agent_id, "answered_elsewhere")]
    finally:
        await visitor.close()
        for agent in agents:
            await agent.close()


async def test_a_silent_agent_is_rung_again_until_the_maximum_wait_ends_the_call(
    server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(database, ring_timeout_s=1, max_queue_wait_s=2)
    visitor, agent, call_id = await ringing_call_for(server.url, tenant)
    try:
        await agent.expect("ring_stopped", call_id=call_id, reason="timeout")
        # Nobody else can take it: the same agent is rung again.
        await agent.wait_for(
            lambda m: m["type"] == "ring" and len([x for x in agent.received if x["type"] == "ring"]) == 2,
            3,
            "a second ring",
        )
        ended = await visitor.expect("call_state", call_id=call_id, state="ended", timeout=5)
        assert (ended["reason"], ended["detail"]) == ("no_answer", "max_wait")
        await agent.expect("ring_stopped", call_id=call_id, reason="ended")
        await agent.expect("presence", status="available")
        row = await wait_for_row(database, tenant, call_id, "ended")
        assert row.end_reason == "no_answer" and row.outcome == "no_answer"
        assert row.answered_at is None
        assert 1.9 <= (row.ended_at - row.queued_at).total_seconds() < 4
        kinds = [e.kind for e in await database.calls.events(tenant.organisation_id, uuid.UUID(call_id))]
        assert kinds[:5] == ["created", "queued", "agent_rung", "agent_ring_timeout", "agent_rung"]
    finally:
        await visitor.close()
        await agent.close()


async def test_no_agent_available_is_rejected_and_recorded(server: Running, database: Database, tenant: Tenant) -> None:
    visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await visitor.connect()
        call_id = await visitor.call()
        ended = await visitor.expect("call_state", call_id=call_id, state="ended")
        assert (ended["reason"], ended["detail"]) == ("rejected", "no_agent_available")
        row = await wait_for_row(database, tenant, call_id, "ended")
        assert row.outcome == "missed"
    finally:
        await visitor.close()


async def test_visitor_leaving_while_ringing_is_abandoned(server: Running, database: Database, tenant: Tenant) -> None:
    visitor, agent, call_id = await ringing_call_for(server.url, tenant)
    try:
        await visitor.close()
        await agent.expect("ring_stopped", call_id=call_id, reason="ended")
        row = await wait_for_row(database, tenant, call_id, "ended")
        assert row.end_reason == "abandoned" and row.outcome == "abandoned"
    finally:
        await agent.close()


async def test_declined_by_every_agent_is_rejected(server: Running, database: Database, tenant: Tenant) -> None:
    visitor, agent, call_id = await ringing_call_for(server.url, tenant)
    try:
        await agent.send({"type": "decline", "call_id": call_id})
        ended = await visitor.expect("call_state", call_id=call_id, state="ended")
        assert (ended["reason"], ended["detail"]) == ("rejected", "declined")
        await agent.expect("presence", status="available")
        row = await wait_for_row(database, tenant, call_id, "ended")
        kinds = [e.kind for e in await database.calls.events(tenant.organisation_id, uuid.UUID(call_id))]
        assert kinds == ["created", "queued", "agent_rung", "agent_declined", "ended"]
        assert row.end_reason == "rejected"
    finally:
        await visitor.close()
        await agent.close()


async def test_admins_read_a_call_with_its_timeline_and_other_organisations_get_404(
    server: Running, database: Database, tenant: Tenant
) -> None:
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    try:
        await asyncio.sleep(0.5)
        await agent.send({"type": "hangup", "call_id": call_id})
        await visitor.expect("call_state", state="ended")
    finally:
        await visitor.close()
        await agent.close()
    await wait_for_row(database, tenant, call_id, "ended")
    admin = await login_cookie(server.url, *await make_admin(database, tenant.organisation_id))
    (other,) = await make_tenant(database)
    stranger = await login_cookie(server.url, *await make_admin(database, other.organisation_id))
    agent_cookie = await login_cookie(server.url, tenant.agent_email, tenant.agent_password)
    url = f"{server.url}/api/v1/calls/{call_id}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Cookie": admin}) as response:
            assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
            body = await response.json()
        for cookie, status in ((stranger, 404), (agent_cookie, 403), ("", 401)):
            async with http.get(url, headers={"Cookie": cookie} if cookie else {}) as refused:
                assert refused.status == status
        async with http.get(f"{server.url}/api/v1/calls/{uuid.uuid4()}", headers={"Cookie": admin}) as unknown:
            assert unknown.status == 404
    call = body["call"]
    assert (call["outcome"], call["end_reason"], call["agent_id"]) == ("answered", "agent_hangup", str(tenant.agent_id))
    assert call["talk_ms"] >= 400 and call["wait_ms"] >= 0
    assert [e["kind"] for e in body["events"]] == ["created", "queued", "agent_rung", "answered", "ended"]
    assert body["recordings"] == []
