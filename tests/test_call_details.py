"""What a call carries besides audio: the visitor's form, the recording notice, the rating, the
agent's notes and history, and outbound calls through call links."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import pytest

from server.app import Running
from server.appkeys import SWITCHBOARD
from server.config import Settings
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, answered_call_for, make_tenant
from tests.peers import Agent, Visitor
from tests.test_call import wait_for_row
from tests.test_routing import call_api


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, call_rate_per_address=600.0)


async def test_the_pre_call_form_is_validated_and_its_answers_reach_the_agent(
    server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(
        database,
        form_fields={"name": "optional", "email": "required", "phone": "off"},
        recording=True,
        recording_notice="We record calls to train our staff.",
    )
    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    visitors = [Visitor(server.url, tenant.button_key, VISITOR_ORIGIN) for _ in range(3)]
    try:
        await agent.connect()
        await agent.go_available()
        hello = await visitors[0].connect()
        assert hello["button"]["recording"] == {"enabled": True, "notice": "We record calls to train our staff."}
        assert hello["button"]["form_fields"] == {"name": "optional", "email": "required", "phone": "off"}

        # A required field missing, or malformed: a clear error, and no call.
        sdp = await visitors[0].offer(440.0)
        await visitors[0].send({"type": "call", "sdp": sdp, "visitor": {"name": "Ada"}})
        error = await visitors[0].expect("error")
        assert (error["code"], error["ref"]) == ("bad_message", "call")
        assert "requires the visitor's email" in error["message"]
        await visitors[0].send({"type": "call", "sdp": sdp, "visitor": {"email": "ada at example"}})
        error = await visitors[0].wait_for(lambda m: m["type"] == "error" and "email" in m["message"]
                                           and "not valid" in m["message"], 5, "an invalid email error")  # fmt: skip
        await visitors[0].send({"type": "call", "sdp": sdp, "visitor": {"email": "x@y.example", "shoe": "42"}})
        error = await visitors[0].wait_for(lambda m: m["type"] == "error" and "shoe" in m["message"], 5, "unknown")
        await asyncio.sleep(0.2)
        assert not agent.messages("ring")
        assert await database.pool.fetchval("SELECT count(*) FROM calls WHERE button_id = $1", tenant.button_id) == 0

        # A valid form: the agent sees the answers, and how often this caller called before.
        answers = {"name": "Ada Lovelace", "email": "ada@example.test", "phone": "+44 20 7946 0000"}
        await visitors[0].send({"type": "call", "sdp": sdp, "visitor": answers, "page_url": "https://shop.example/a"})
        first = (await visitors[0].expect("call_state"))["call_id"]
        ring = await agent.expect("ring", call_id=first)
        # phone is off for this button: dropped, not stored. The earlier calls follow the ring.
        assert ring["visitor"] == {
            "name": "Ada Lovelace",
            "email": "ada@example.test",
            "page_url": "https://shop.example/a",
        }
        details = await agent.expect("call_details", call_id=first)
        assert details["visitor"] == {"earlier_calls": 0}
        await visitors[0].close()
        await wait_for_row(database, tenant, first, "ended")

        await visitors[1].connect()
        second = await visitors[1].call(visitor={"email": "ada@example.test"})
        await agent.expect("ring", call_id=second)
        assert (await agent.expect("call_details", call_id=second))["visitor"]["earlier_calls"] == 1
        # The call's row is written behind the ring (call events are batched): read it once the call has ended.
        await visitors[1].close()
        row = await wait_for_row(database, tenant, second, "ended")
        assert (row.visitor_email, row.visitor_name, row.visitor_phone) == (
            "ada@example.test",
            None,
            None,
        )
    finally:
        for peer in [*visitors, agent]:
            await peer.close()


async def test_a_call_rings_before_its_history_is_read_and_goes_on_if_it_cannot_be(
    server: Running, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ring waits for no database read; when the earlier calls cannot be read (the database is
    away), the call is still answered, only without them."""
    (tenant,) = await make_tenant(database, form_fields={"name": "off", "email": "required", "phone": "off"})
    switchboard = server.runner.app[SWITCHBOARD]
    read = asyncio.Event()

    async def unreadable(*args: object) -> int:
        read.set()
        raise ConnectionError("the database is away")

    monkeypatch.setattr(switchboard._directory, "earlier_calls", unreadable)
    agent = Agent(server.url, tenant.agent_email, tenant.agent_password)
    visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await agent.connect()
        await agent.go_available()
        await visitor.connect()
        call_id = await visitor.call(visitor={"email": "ada@example.test"})
        ring = await agent.expect("ring", call_id=call_id)
        assert "earlier_calls" not in ring["visitor"] and ring["visitor"]["email"] == "ada@example.test"
        await asyncio.wait_for(read.wait(), 5)
        await agent.send({"type": "accept", "call_id": call_id})
        await visitor.expect("call_state", state="answered")
        await visitor.hears(880.0)
        assert not agent.messages("call_details")
    finally:
        await visitor.close()
        await agent.close()
    await wait_for_row(database, tenant, call_id, "ended")


async def test_the_visitor_rates_the_call_once_and_the_agent_writes_notes(server: Running, database: Database) -> None:
    tenant, colleague = await make_tenant(database, agents=2)
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    try:
        await agent.send({"type": "hangup", "call_id": call_id})
        ended = await visitor.expect("call_state", state="ended")
        token = ended["rating_token"]
        assert isinstance(token, str) and len(token) >= 20
    finally:
        await visitor.close()
    await wait_for_row(database, tenant, call_id, "ended")

    ratings = f"{server.url}/api/v1/widget/{tenant.button_key}/ratings"
    status, body = await call_api(
        "POST", ratings, origin=VISITOR_ORIGIN, json={"call_id": call_id, "token": "x" * 24, "rating": 5}
    )
    assert (status, body["error"]) == (404, "not_found")
    status, body = await call_api(
        "POST", ratings, origin=VISITOR_ORIGIN, json={"call_id": call_id, "token": token, "rating": 6}
    )
    assert status == 400 and "'rating'" in body["message"]
    good = {"call_id": call_id, "token": token, "rating": 4, "comment": "Helpful, a bit slow"}
    status, _ = await call_api("POST", ratings, origin=VISITOR_ORIGIN, json=good)
    assert status == 204
    status, _ = await call_api("POST", ratings, origin=VISITOR_ORIGIN, json={**good, "rating": 1})
    assert status == 404  # once only

    notes_url = f"{server.url}/api/v1/calls/{call_id}/notes"
    status, body = await call_api(
        "PUT", notes_url, cookie=agent.cookie, origin=server.url, json={"notes": "Wants a refund; sent form."}
    )
    assert status == 200 and body["call"]["notes"] == "Wants a refund; sent form."
    other = Agent(server.url, colleague.agent_email, colleague.agent_password)
    try:
        await other.login()
        status, body = await call_api("PUT", notes_url, cookie=other.cookie, origin=server.url, json={"notes": "x"})
        assert (status, body["error"]) == (404, "not_found")  # not the colleague's call
    finally:
        await other.close()

    row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
    assert row is not None
    assert (row.rating, row.rating_comment, row.notes) == (4, "Helpful, a bit slow", "Wants a refund; sent form.")

    status, history = await call_api("GET", f"{server.url}/api/v1/me/calls", cookie=agent.cookie)
    assert status == 200
    (mine,) = history["calls"]
    assert (mine["id"], mine["rating"], mine["notes"], mine["direction"]) == (
        call_id,
        4,
        "Wants a refund; sent form.",
        "inbound",
    )
    assert mine["talk_ms"] is not None and mine["wait_ms"] is not None


async def test_a_call_link_rings_only_its_agent_once_and_expires(server: Running, database: Database) -> None:
    owner, colleague = await make_tenant(database, agents=2, recording=True)
    agents = [Agent(server.url, t.agent_email, t.agent_password) for t in (owner, colleague)]
    customers: list[Visitor] = []
    try:
        for index, agent in enumerate(agents):
            await agent.connect()
            await agent.go_available(tone=700.0 + 100 * index)
        status, created = await call_api(
            "POST", f"{server.url}/api/v1/call-links", cookie=agents[0].cookie, origin=server.url, json={"minutes": 30}
        )
        assert status == 201, created
        url = created["link"]["url"]
        token = url.rsplit("/", 1)[1]
        assert url == f"{server.url}/call/{token}"
        status, info = await call_api("GET", f"{server.url}/api/v1/call-links/{token}")
        assert status == 200 and info["agent"] == {"name": "Agent 0"} and info["button"]["form_fields"] == {}

        # Not from another site: the link is used from this server's own page.
        stranger = Visitor(server.url, "", "https://evil.example", link=token)
        customers.append(stranger)
        with pytest.raises(Exception, match="403"):
            await stranger.connect()

        # The agent who sent the link is rung for it even when away from inbound calls.
        await agents[0].send({"type": "presence", "status": "away"})
        await agents[0].expect("presence", status="away")
        customer = Visitor.through_link(server.url, token)
        customers.append(customer)
        await customer.connect()
        call_id = await customer.call(tone=500.0)
        await agents[0].expect("ring", call_id=call_id, direction="outbound")
        await asyncio.sleep(0.3)
        assert not agents[1].messages("ring"), "only the link's agent is rung"
        await agents[0].send({"type": "accept", "call_id": call_id})
        await customer.expect("call_state", state="answered")
        await customer.hears(700.0)
        await agents[0].hears(500.0)

        # Used once: the page says so, and a second call through it is refused.
        status, info = await call_api("GET", f"{server.url}/api/v1/call-links/{token}")
        assert (status, info["error"]) == (410, "link_used")
        again = Visitor.through_link(server.url, token)
        customers.append(again)
        with pytest.raises(Exception, match="410"):
            await again.connect()

        await agents[0].send({"type": "hangup", "call_id": call_id})
        await customer.expect("call_state", state="ended")
        row = await wait_for_row(database, owner, call_id, "ended")
        assert (row.direction, row.agent_id) == ("outbound", owner.agent_id)
        link = await database.call_links.find(token)
        assert link is not None and link.used_at is not None and link.call_id == uuid.UUID(call_id)
        for _ in range(50):
            if await database.pool.fetchval("SELECT count(*) FROM recordings WHERE call_id = $1", row.id):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the outbound call was not recorded")

        # An expired link is refused like a used one.
        status, created = await call_api(
            "POST", f"{server.url}/api/v1/call-links", cookie=agents[0].cookie, origin=server.url, json={}
        )
        expired = created["link"]["url"].rsplit("/", 1)[1]
        await database.pool.execute(
            "UPDATE call_links SET expires_at = now() - interval '1 second' "
            "WHERE organisation_id = $1 AND used_at IS NULL",
            owner.organisation_id,
        )
        status, info = await call_api("GET", f"{server.url}/api/v1/call-links/{expired}")
        assert status == 410
        late = Visitor.through_link(server.url, expired)
        customers.append(late)
        with pytest.raises(Exception, match="410"):
            await late.connect()
    finally:
        for peer in [*customers, *agents]:
            await peer.close()
