"""Routing, as visitors and agents see it: strategies, the queue, wrap-up, the maximum wait and
callbacks, opening hours. Real aiortc peers over the server's sockets, a real Postgres."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import pytest

from server.app import Running
from server.appkeys import SWITCHBOARD
from server.config import Settings
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, Tenant, login_cookie, make_admin, make_tenant
from tests.peers import Agent, Visitor


async def call_api(
    method: str,
    url: str,
    *,
    cookie: str | None = None,
    origin: str | None = None,
    json: Any = None,
) -> tuple[int, Any]:
    headers = {}
    if cookie:
        headers["Cookie"] = cookie
    if origin:
        headers["Origin"] = origin
    async with aiohttp.ClientSession() as http, http.request(method, url, json=json, headers=headers) as response:
        body = await response.json() if response.content_type == "application/json" else None
        return response.status, body


async def stored_events(database: Database, org: uuid.UUID, call_id: str, until: str) -> list[Any]:
    """The call's stored events, once one of kind ``until`` is among them (writes trail the call)."""
    for _ in range(50):
        events = await database.calls.events(org, uuid.UUID(call_id))
        if any(e.kind == until for e in events):
            return events
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {until} event stored: {events}")


class Floor:
    """The agents and visitors of a test, closed at its end."""

    def __init__(self, server: Running, tenants: Sequence[Tenant]) -> None:
        self.server = server
        self.tenants = list(tenants)
        self.agents = [Agent(server.url, t.agent_email, t.agent_password) for t in tenants]
        self.visitors: list[Visitor] = []

    async def all_available(self) -> None:
        for index, agent in enumerate(self.agents):
            await agent.connect()
            await agent.go_available(tone=700.0 + 100 * index)

    def visitor(self) -> Visitor:
        visitor = Visitor(self.server.url, self.tenants[0].button_key, VISITOR_ORIGIN)
        self.visitors.append(visitor)
        return visitor

    async def place(self, **call: Any) -> tuple[Visitor, str]:
        visitor = self.visitor()
        await visitor.connect()
        return visitor, await visitor.call(**call)

    def rung(self, call_id: str) -> list[int]:
        """Which agents (by index) have been rung for ``call_id`` so far."""
        return [i for i, a in enumerate(self.agents) if any(m["call_id"] == call_id for m in a.messages("ring"))]

    async def close(self) -> None:
        for peer in [*self.visitors, *self.agents]:
            await peer.close()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """These tests place many calls from one address."""
    return dataclasses.replace(settings, call_rate_per_address=600.0)


@pytest.fixture
async def floor_of(server: Running, database: Database) -> AsyncIterator[Any]:
    floors: list[Floor] = []

    async def make(agents: int, **button: Any) -> Floor:
        floor = Floor(server, await make_tenant(database, agents=agents, **button))
        floors.append(floor)
        return floor

    yield make
    for floor in floors:
        await floor.close()


async def test_ring_all_rings_every_available_agent_and_stops_the_others_on_accept(floor_of: Any) -> None:
    floor = await floor_of(3, strategy="ring_all")
    await floor.all_available()
    _, call_id = await floor.place()
    for agent in floor.agents:
        await agent.expect("ring", call_id=call_id)
    await floor.agents[2].send({"type": "accept", "call_id": call_id})
    await floor.agents[2].expect("call_state", call_id=call_id, state="answered")
    for agent in floor.agents[:2]:
        await agent.expect("ring_stopped", call_id=call_id, reason="answered_elsewhere")
        await agent.expect("presence", status="available")


async def test_longest_idle_rings_the_agent_idle_longest_and_a_decline_passes_it_on(
    floor_of: Any, database: Database
) -> None:
    floor = await floor_of(3, strategy="longest_idle", ring_timeout_s=1)
    await floor.all_available()  # agent 0 first, so idle longest
    _, call_id = await floor.place()
    await floor.agents[0].expect("ring", call_id=call_id)
    await asyncio.sleep(0.3)
    assert floor.rung(call_id) == [0]
    # A decline passes the call to the next idle longest ...
    await floor.agents[0].send({"type": "decline", "call_id": call_id})
    await floor.agents[1].expect("ring", call_id=call_id)
    assert floor.rung(call_id) == [0, 1]
    # ... and so does silence, after the button's per-agent ring timeout.
    await floor.agents[1].expect("ring_stopped", call_id=call_id, reason="timeout", timeout=3)
    await floor.agents[2].expect("ring", call_id=call_id)
    await floor.agents[2].send({"type": "accept", "call_id": call_id})
    await floor.agents[2].expect("call_state", call_id=call_id, state="answered")
    # The agent who declined is not rung again for this call.
    assert sum(1 for m in floor.agents[0].messages("ring") if m["call_id"] == call_id) == 1

    org = floor.tenants[0].organisation_id
    events = await stored_events(database, org, call_id, until="answered")
    ids = [t.agent_id for t in floor.tenants]
    assert [(e.kind, e.agent_id) for e in events if e.kind.startswith("agent_")] == [
        ("agent_rung", ids[0]),
        ("agent_declined", ids[0]),
        ("agent_rung", ids[1]),
        ("agent_ring_timeout", ids[1]),
        ("agent_rung", ids[2]),
    ]
    # Admins read the same as rings: who, for how long, how each ended.
    email, password = await make_admin(database, org)
    cookie = await login_cookie(floor.server.url, email, password)
    status, body = await call_api("GET", f"{floor.server.url}/api/v1/calls/{call_id}", cookie=cookie)
    assert status == 200
    rings = body["rings"]
    assert [(r["agent_id"], r["outcome"]) for r in rings] == [
        (str(ids[0]), "declined"),
        (str(ids[1]), "timeout"),
        (str(ids[2]), "answered"),
    ]
    assert 900 <= rings[1]["ring_ms"] < 2000
    assert body["call"]["agent_id"] == str(ids[2]) and body["call"]["direction"] == "inbound"


async def test_round_robin_rotates_through_the_agents(floor_of: Any) -> None:
    floor = await floor_of(3, strategy="round_robin")
    await floor.all_available()
    answered_by = []
    for _ in range(4):
        visitor, call_id = await floor.place()
        await asyncio.sleep(0.2)
        (index,) = floor.rung(call_id)
        answered_by.append(index)
        agent = floor.agents[index]
        await agent.send({"type": "accept", "call_id": call_id})
        await visitor.expect("call_state", state="answered")
        await agent.send({"type": "hangup", "call_id": call_id})
        await visitor.expect("call_state", state="ended")
        await agent.expect("presence", status="available")
    assert sorted(answered_by[:3]) == [0, 1, 2], answered_by
    assert answered_by[3] == answered_by[0], answered_by


async def test_a_queued_visitor_learns_its_position_and_is_connected_after_wrap_up(floor_of: Any) -> None:
    floor = await floor_of(1, wrap_up_s=1)
    await floor.all_available()
    agent = floor.agents[0]
    first, first_id = await floor.place(tone=440.0)
    await agent.send({"type": "accept", "call_id": first_id})
    await first.expect("call_state", state="answered")

    second, second_id = await floor.place(tone=550.0)
    third, third_id = await floor.place(tone=660.0)
    await second.expect("call_state", call_id=second_id, state="queued", position=1, ringing=False)
    await third.expect("call_state", call_id=third_id, state="queued", position=2, ringing=False)
    await asyncio.sleep(0.5)
    assert not agent.messages("ring")[1:], "a busy agent is not rung"

    await agent.send({"type": "hangup", "call_id": first_id})
    wrap_up = await agent.expect("presence", status="wrap_up")
    assert 0 < wrap_up["wrap_up_seconds"] <= 1
    ring = await agent.expect("ring", call_id=second_id, timeout=4)
    assert ring["visitor"]["page_url"] == "https://shop.example.test/cart"
    await second.expect("call_state", call_id=second_id, state="queued", position=1, ringing=True)
    await agent.send({"type": "accept", "call_id": second_id})
    await second.expect("call_state", call_id=second_id, state="answered")
    await third.expect("call_state", call_id=third_id, state="queued", position=1, ringing=False)
    # The agent's standing leg now carries the second visitor, both ways.
    await second.hears(700.0)
    await agent.hears(550.0)


async def test_past_the_maximum_wait_the_visitor_leaves_a_callback_request_that_agents_see(
    floor_of: Any, server: Running, database: Database
) -> None:
    floor = await floor_of(1, max_queue_wait_s=2)
    await floor.all_available()
    agent = floor.agents[0]
    first, first_id = await floor.place()
    await agent.send({"type": "accept", "call_id": first_id})
    await first.expect("call_state", state="answered")

    second, second_id = await floor.place()
    await second.expect("call_state", call_id=second_id, state="queued", position=1)
    ended = await second.expect("call_state", call_id=second_id, state="ended", timeout=5)
    assert (ended["reason"], ended["detail"]) == ("no_answer", "max_wait")

    key = floor.tenants[0].button_key
    status, created = await call_api(
        "POST",
        f"{server.url}/api/v1/widget/{key}/callbacks",
        origin=VISITOR_ORIGIN,
        json={"name": "Grace", "phone": "+33 1 23 45 67 89", "note": "About my order", "reason": "max_wait",
              "call_id": second_id},
    )  # fmt: skip
    assert status == 201, created
    notice = await agent.expect("callback")
    assert notice["callback"]["name"] == "Grace" and notice["callback"]["state"] == "open"
    assert notice["callback"]["call_id"] == second_id

    await agent.login()  # a second session, for REST
    status, listed = await call_api("GET", f"{server.url}/api/v1/callbacks?state=open", cookie=agent.cookie)
    assert status == 200
    assert [(c["phone"], c["note"], c["reason"]) for c in listed["callbacks"]] == [
        ("+33 1 23 45 67 89", "About my order", "max_wait")
    ]
    callback_id = listed["callbacks"][0]["id"]
    status, done = await call_api(
        "POST", f"{server.url}/api/v1/callbacks/{callback_id}/done", cookie=agent.cookie, origin=server.url
    )
    assert status == 200 and done["callback"]["state"] == "done"
    stored = await database.callbacks.get(floor.tenants[0].organisation_id, uuid.UUID(callback_id))
    assert stored is not None and stored.done_by == floor.tenants[0].agent_id


async def test_a_callback_request_needs_a_way_to_call_back_and_a_permitted_origin(
    server: Running, tenant: Tenant, database: Database
) -> None:
    url = f"{server.url}/api/v1/widget/{tenant.button_key}/callbacks"
    status, body = await call_api("POST", url, origin=VISITOR_ORIGIN, json={"name": "No contact"})
    assert (status, body["error"]) == (400, "bad_request")
    assert "phone number or an email" in body["message"]
    status, body = await call_api("POST", url, origin=VISITOR_ORIGIN, json={"email": "not an email"})
    assert status == 400 and "'email'" in body["message"]
    status, body = await call_api("POST", url, origin="https://evil.example", json={"email": "a@b.example"})
    assert (status, body["error"]) == (403, "origin_not_allowed")
    assert await database.callbacks.all(tenant.organisation_id) == []


async def test_outside_opening_hours_the_call_is_refused_with_the_closed_message(
    server: Running, database: Database
) -> None:
    message = "Nous sommes fermés. Laissez-nous vos coordonnées."
    (tenant,) = await make_tenant(
        database,
        opening_hours={"mon": [["09:00", "17:00"]]},
        time_zone="Europe/Paris",
        closed_message=message,
        language="fr",
    )
    switchboard = server.runner.app[SWITCHBOARD]
    paris = datetime.timezone(datetime.timedelta(hours=1))  # CET, in November
    switchboard.clock = lambda: datetime.datetime(2026, 11, 30, 8, 59, tzinfo=paris)  # a Monday
    lookup = f"{server.url}/api/v1/widget/{tenant.button_key}"
    status, body = await call_api("GET", lookup, origin=VISITOR_ORIGIN)
    assert (status, body["open"], body["closed_message"]) == (200, False, message)

    visitor = Visitor(server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await visitor.connect()
        call_id = await visitor.call()
        ended = await visitor.expect("call_state", call_id=call_id, state="ended")
        assert (ended["reason"], ended["detail"], ended["message"]) == ("rejected", "closed", message)
    finally:
        await visitor.close()

    switchboard.clock = lambda: datetime.datetime(2026, 11, 30, 9, 0, tzinfo=paris)
    status, body = await call_api("GET", lookup, origin=VISITOR_ORIGIN)
    assert (status, body["open"]) == (200, True) and "closed_message" not in body


async def test_a_button_rings_only_its_teams_and_nobody_once_they_are_deleted(
    floor_of: Any, database: Database
) -> None:
    floor = await floor_of(2)
    org, button = floor.tenants[0].organisation_id, floor.tenants[0].button_id
    team = await database.teams.create(org, "Billing")
    await database.teams.set_members(org, team.id, [floor.tenants[1].agent_id])
    assert await database.buttons.set_targets(org, button, [], [team.id])
    await floor.all_available()
    _, call_id = await floor.place()
    await floor.agents[1].expect("ring", call_id=call_id)
    await asyncio.sleep(0.3)
    assert floor.rung(call_id) == [1], "only the team's member is rung"
    await floor.agents[1].send({"type": "decline", "call_id": call_id})

    # Deleting the button's only team leaves it ringing nobody, not everybody.
    assert await database.teams.delete(org, team.id)
    assert await database.buttons.eligible_agents(org, button) == frozenset()
    visitor, call_id = await floor.place()
    ended = await visitor.expect("call_state", call_id=call_id, state="ended")
    assert (ended["reason"], ended["detail"]) == ("rejected", "no_agent_available")
    assert floor.rung(call_id) == []
    # Listing nobody again means everybody.
    assert await database.buttons.set_targets(org, button, [], [])
    assert await database.buttons.eligible_agents(org, button) is None


async def test_an_agent_freed_by_a_ring_stopping_takes_the_next_queued_call(floor_of: Any) -> None:
    # ring_all: the second call waits while both agents ring for the first; one accepts, and the
    # other, free again, is rung for the second at once.
    floor = await floor_of(2, strategy="ring_all")
    await floor.all_available()
    _, first_id = await floor.place()
    for agent in floor.agents:
        await agent.expect("ring", call_id=first_id)
    second, second_id = await floor.place()
    await second.expect("call_state", call_id=second_id, state="queued", position=2, ringing=False)
    await floor.agents[0].send({"type": "accept", "call_id": first_id})
    await floor.agents[1].expect("ring", call_id=second_id, timeout=3)

    # longest_idle: a visitor who leaves while ringing frees the agent for the next in line.
    lone = await floor_of(1, strategy="longest_idle")
    await lone.all_available()
    leaving, leaving_id = await lone.place()
    await lone.agents[0].expect("ring", call_id=leaving_id)
    waiting, waiting_id = await lone.place()
    await waiting.expect("call_state", call_id=waiting_id, state="queued", position=2, ringing=False)
    await leaving.send({"type": "hangup"})
    await lone.agents[0].expect("ring", call_id=waiting_id, timeout=3)


async def test_calls_are_rung_oldest_first_whatever_their_button(floor_of: Any, database: Database) -> None:
    floor = await floor_of(1)
    org = floor.tenants[0].organisation_id
    other = await database.buttons.create(org, name="Sales", allowed_origins=[VISITOR_ORIGIN])
    await floor.all_available()
    agent = floor.agents[0]
    busy, busy_id = await floor.place()
    await agent.send({"type": "accept", "call_id": busy_id})
    await busy.expect("call_state", state="answered")

    _, older_id = await floor.place()  # on the first button
    sales = Visitor(floor.server.url, other.public_key, VISITOR_ORIGIN)
    floor.visitors.append(sales)
    await sales.connect()
    await sales.call()  # newer, on another button (its queue's first)
    await asyncio.sleep(0.2)
    await agent.send({"type": "hangup", "call_id": busy_id})
    ring = await agent.wait_for(lambda m: m["type"] == "ring" and m["call_id"] != busy_id, 3, "the next ring")
    assert ring["call_id"] == older_id


async def test_queued_calls_end_when_the_last_agent_who_could_answer_chooses_away(floor_of: Any) -> None:
    floor = await floor_of(1)
    await floor.all_available()
    agent = floor.agents[0]
    busy, busy_id = await floor.place()
    await agent.send({"type": "accept", "call_id": busy_id})
    await busy.expect("call_state", state="answered")
    waiting, waiting_id = await floor.place()
    await waiting.expect("call_state", call_id=waiting_id, state="queued")
    await agent.send({"type": "presence", "status": "away"})  # done for the day, after this call
    await asyncio.sleep(0.3)
    assert not waiting.messages("call_state")[-1]["state"] == "ended", "busy agents still count"
    await agent.send({"type": "hangup", "call_id": busy_id})
    ended = await waiting.expect("call_state", call_id=waiting_id, state="ended", timeout=3)
    assert (ended["reason"], ended["detail"]) == ("rejected", "agent_offline")


async def test_a_call_link_waits_for_its_busy_agent_even_one_away(floor_of: Any) -> None:
    floor = await floor_of(1)
    await floor.all_available()
    agent = floor.agents[0]
    busy, busy_id = await floor.place()
    await agent.send({"type": "accept", "call_id": busy_id})
    await busy.expect("call_state", state="answered")
    await agent.send({"type": "presence", "status": "away"})
    status, created = await call_api(
        "POST", f"{floor.server.url}/api/v1/call-links", cookie=agent.cookie, origin=floor.server.url, json={}
    )
    assert status == 201
    customer = Visitor.through_link(floor.server.url, created["link"]["url"].rsplit("/", 1)[1])
    floor.visitors.append(customer)
    await customer.connect()
    call_id = await customer.call()
    await customer.expect("call_state", call_id=call_id, state="queued")
    await agent.send({"type": "hangup", "call_id": busy_id})
    await agent.expect("ring", call_id=call_id, direction="outbound", timeout=3)


async def test_a_database_outage_while_placing_a_call_fails_it_cleanly(
    floor_of: Any, server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    floor = await floor_of(1)
    await floor.all_available()
    switchboard = server.runner.app[SWITCHBOARD]

    async def outage(*args: Any) -> None:
        raise ConnectionError("the database is gone")

    monkeypatch.setattr(switchboard._directory, "eligible_agents", outage)
    visitor, call_id = await floor.place()
    ended = await visitor.expect("call_state", call_id=call_id, state="ended")
    assert (ended["reason"], ended["detail"]) == ("failed", "routing_unavailable")
    assert uuid.UUID(call_id) not in switchboard.calls
    assert not floor.agents[0].messages("ring")


async def test_saving_a_button_whose_teams_were_deleted_keeps_it_ringing_nobody(
    server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    team = await database.teams.create(org, "Night shift")
    assert await database.buttons.set_targets(org, tenant.button_id, [], [team.id])
    await database.teams.delete(org, team.id)
    email, password = await make_admin(database, org)
    cookie = await login_cookie(server.url, email, password)
    url = f"{server.url}/api/v1/buttons/{tenant.button_id}"
    status, body = await call_api(
        "PATCH", url, cookie=cookie, origin=server.url, json={"colour": "#123456", "agents": [], "teams": []}
    )
    assert status == 200 and body["button"]["routes_to_all"] is False
    assert await database.buttons.eligible_agents(org, tenant.button_id) == frozenset()
    status, body = await call_api("PATCH", url, cookie=cookie, origin=server.url, json={"routes_to_all": True})
    assert status == 200 and body["button"]["routes_to_all"] is True
    assert await database.buttons.eligible_agents(org, tenant.button_id) is None
    status, body = await call_api("PATCH", url, cookie=cookie, origin=server.url, json={"max_queue_wait_s": 0})
    assert status == 400 and "max_queue_wait_s" in body["message"]
    status, body = await call_api("PATCH", url, cookie=cookie, origin=server.url, json={"time_zone": "localtime"})
    assert status == 400 and "time zone" in body["message"]
