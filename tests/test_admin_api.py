"""The admin API of issue 5: the calls view (filters, search, keyset pages), statistics checked against
figures computed here from the seeded calls, the audit log, recording deletion, and API tokens."""

from __future__ import annotations

import csv
import datetime
import io
import random
import statistics
import uuid
import zoneinfo
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from server.app import Running
from server.appkeys import RECORDINGS
from storage.db import Database
from tests.conftest import Tenant, login_cookie, make_admin, make_tenant
from tests.test_recording import finished_recording, recorded_call
from tests.test_routing import call_api

START = datetime.datetime(2026, 10, 1, tzinfo=datetime.UTC)


@dataclass
class Seeded:
    id: uuid.UUID
    created_at: datetime.datetime
    button_id: uuid.UUID
    agent_id: uuid.UUID | None
    rung: list[uuid.UUID]
    outcome: str
    answered_at: datetime.datetime | None
    ended_at: datetime.datetime
    name: str | None
    email: str | None
    phone: str | None
    rating: int | None

    @property
    def wait_ms(self) -> float | None:
        return None if self.answered_at is None else (self.answered_at - self.created_at).total_seconds() * 1000

    @property
    def talk_ms(self) -> float | None:
        return None if self.answered_at is None else (self.ended_at - self.answered_at).total_seconds() * 1000


END_REASONS = {"answered": "visitor_hangup", "missed": "rejected", "abandoned": "abandoned", "no_answer": "no_answer"}


async def seed(
    database: Database, org: uuid.UUID, buttons: list[uuid.UUID], agents: list[uuid.UUID], n: int
) -> list[Seeded]:
    """``n`` ended calls over October 2026 with known outcomes, times, rings and visitors."""
    rng = random.Random(5)
    calls = []
    for index in range(n):
        created = START + datetime.timedelta(minutes=rng.randrange(0, 31 * 24 * 60), seconds=rng.randrange(60))
        outcome = rng.choices(["answered", "missed", "abandoned", "no_answer"], [6, 2, 1, 1])[0]
        rung = rng.sample(agents, rng.randint(1, len(agents)))
        agent = rung[-1] if outcome == "answered" else None
        answered = created + datetime.timedelta(seconds=rng.uniform(2, 90)) if agent else None
        ended = (answered or created) + datetime.timedelta(seconds=rng.uniform(5, 600))
        calls.append(
            Seeded(
                id=uuid.uuid4(),
                created_at=created,
                button_id=rng.choice(buttons),
                agent_id=agent,
                rung=rung,
                outcome=outcome,
                answered_at=answered,
                ended_at=ended,
                name=f"Visitor {index}" if index % 3 else None,
                email=f"visitor{index}@example.test" if index % 4 == 0 else None,
                phone=f"+33 1 00 00 {index:04d}" if index % 5 == 0 else None,
                rating=rng.randint(1, 5) if agent and index % 2 else None,
            )
        )
    async with database.pool.acquire() as conn:
        await conn.executemany(
            """
            INSERT INTO calls (id, organisation_id, button_id, agent_id, state, end_reason, created_at, queued_at,
                               answered_at, ended_at, visitor_name, visitor_email, visitor_phone, rating)
            VALUES ($1, $2, $3, $4, 'ended', $5, $6, $6, $7, $8, $9, $10, $11, $12)
            """,
            [
                (c.id, org, c.button_id, c.agent_id, END_REASONS[c.outcome], c.created_at, c.answered_at, c.ended_at,
                 c.name, c.email, c.phone, c.rating)
                for c in calls
            ],
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO call_events (call_id, organisation_id, at, kind, agent_id) "
            "VALUES ($1, $2, $3, 'agent_rung', $4)",
            [(c.id, org, c.created_at, agent) for c in calls for agent in c.rung],
        )
    return calls


def p90(values: list[float]) -> float | None:
    """Postgres' percentile_cont(0.9): linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = 0.9 * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def expected(calls: list[Seeded]) -> dict[str, Any]:
    answered = [c for c in calls if c.outcome == "answered"]
    waits = [c.wait_ms for c in answered if c.wait_ms is not None]
    talks = [c.talk_ms for c in answered if c.talk_ms is not None]
    return {
        "attempted": len(calls),
        "answered": len(answered),
        "missed": sum(c.outcome == "missed" for c in calls),
        "abandoned": sum(c.outcome == "abandoned" for c in calls),
        "no_answer": sum(c.outcome == "no_answer" for c in calls),
        "answer_rate": round(len(answered) / len(calls), 4) if calls else None,
        "wait_avg_ms": round(statistics.fmean(waits), 1) if waits else None,
        "wait_p90_ms": round(p90(waits), 1) if waits else None,  # type: ignore[arg-type]
        "talk_avg_ms": round(statistics.fmean(talks), 1) if talks else None,
        "talk_p90_ms": round(p90(talks), 1) if talks else None,  # type: ignore[arg-type]
    }


def close(actual: dict[str, Any], wanted: dict[str, Any]) -> None:
    for name, value in wanted.items():
        if isinstance(value, float):
            assert actual[name] == pytest.approx(value, abs=0.2), (name, actual, wanted)
        else:
            assert actual[name] == value, (name, actual, wanted)


@pytest.fixture
async def seeded(server: Running, database: Database) -> tuple[Tenant, str, list[Seeded], list[uuid.UUID]]:
    tenants = await make_tenant(database, agents=3)
    org = tenants[0].organisation_id
    other = await database.buttons.create(org, name="Sales", allowed_origins=[])
    buttons = [tenants[0].button_id, other.id]
    agents = [t.agent_id for t in tenants]
    calls = await seed(database, org, buttons, agents, 400)
    email, password = await make_admin(database, org)
    return tenants[0], await login_cookie(server.url, email, password), calls, buttons


async def test_statistics_match_the_seeded_calls(server: Running, seeded: Any) -> None:
    _, cookie, calls, buttons = seeded
    base = f"{server.url}/api/v1/stats?from=2026-10-01&to=2026-10-31"

    # Days in Paris: the period is 1 October 00:00 to 1 November 00:00 there (CEST until 25 October).
    status, body = await call_api("GET", f"{base}&group=day&tz=Europe/Paris", cookie=cookie)
    assert status == 200
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    start, end = datetime.datetime(2026, 10, 1, tzinfo=paris), datetime.datetime(2026, 11, 1, tzinfo=paris)
    in_paris = [c for c in calls if start <= c.created_at < end]
    assert 0 < len(calls) - len(in_paris) < 40  # the seeded UTC month's last hour is November in Paris
    close(body["total"], expected(in_paris))
    by_day: dict[str, list[Seeded]] = {}
    for call in in_paris:
        by_day.setdefault(call.created_at.astimezone(paris).date().isoformat(), []).append(call)
    assert [row["key"] for row in body["rows"]] == sorted(by_day)
    for row in body["rows"]:
        close(row, expected(by_day[row["key"]]))

    status, body = await call_api("GET", f"{base}&group=button", cookie=cookie)
    assert status == 200
    for row in body["rows"]:
        close(row, expected([c for c in calls if str(c.button_id) == row["key"]]))
    assert {row["key"] for row in body["rows"]} == {str(b) for b in buttons}

    status, body = await call_api("GET", f"{base}&group=agent", cookie=cookie)
    assert status == 200
    for row in body["rows"]:
        agent = uuid.UUID(row["key"])
        offered = [c for c in calls if agent in c.rung]
        mine = [c for c in offered if c.agent_id == agent]
        assert (row["attempted"], row["answered"], row["missed"]) == (len(offered), len(mine), len(offered) - len(mine))
        close(row, {k: v for k, v in expected(mine).items() if k.endswith("_ms")})

    # Filtered by a button, and as CSV: the same figures.
    status, body = await call_api("GET", f"{base}&button_id={buttons[1]}", cookie=cookie)
    close(body["total"], expected([c for c in calls if c.button_id == buttons[1]]))
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{server.url}/api/v1/stats.csv?from=2026-10-01&to=2026-10-31&group=button", headers={"Cookie": cookie}
        ) as response,
    ):
        assert response.status == 200 and response.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert rows[-1]["button"] == "total" and int(rows[-1]["attempted"]) == len(calls)
    assert float(rows[-1]["answer_rate"]) == pytest.approx(expected(calls)["answer_rate"])


async def test_the_calls_view_filters_searches_and_pages_by_keyset(server: Running, seeded: Any) -> None:
    tenant, cookie, calls, buttons = seeded
    agent = tenant.agent_id
    wanted = sorted(
        (c for c in calls if c.agent_id == agent and c.outcome == "answered"),
        key=lambda c: (c.created_at, c.id),
        reverse=True,
    )
    url = f"{server.url}/api/v1/calls?agent_id={agent}&outcome=answered&limit=7"
    seen: list[str] = []
    cursor = None
    while True:
        status, body = await call_api("GET", url + (f"&cursor={cursor}" if cursor else ""), cookie=cookie)
        assert status == 200
        assert len(body["calls"]) <= 7
        seen += [c["id"] for c in body["calls"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(c.id) for c in wanted]

    async def ids(query: str) -> set[str]:
        status, body = await call_api("GET", f"{server.url}/api/v1/calls?limit=200&{query}", cookie=cookie)
        assert status == 200, body
        return {c["id"] for c in body["calls"]}

    assert await ids("q=VISITOR8%40example.test") == {str(c.id) for c in calls if c.email == "visitor8@example.test"}
    assert await ids("q=%2B3310000%200010") == {str(c.id) for c in calls if c.phone == "+33 1 00 00 0010"}
    assert await ids("q=visitor%2012") == {str(c.id) for c in calls if c.name and c.name.startswith("Visitor 12")}
    assert await ids("q=visitor%_") == set()  # wildcards are plain text
    assert await ids("rating=5&from=2026-10-10&to=2026-10-12") == {
        str(c.id) for c in calls if c.rating == 5 and datetime.datetime(2026, 10, 10, tzinfo=datetime.UTC)
        <= c.created_at < datetime.datetime(2026, 10, 13, tzinfo=datetime.UTC)
    }  # fmt: skip
    assert await ids(f"button_id={buttons[1]}&outcome=abandoned") == {
        str(c.id) for c in calls if c.button_id == buttons[1] and c.outcome == "abandoned"
    }
    for bad, field in (("outcome=won", "outcome"), ("from=yesterday", "from"), ("cursor=xyz", "cursor"),
                       ("limit=0", "limit"), ("agent_id=7", "agent_id"), ("colour=red", "colour")):  # fmt: skip
        status, body = await call_api("GET", f"{server.url}/api/v1/calls?{bad}", cookie=cookie)
        assert status == 400 and f"'{field}'" in body["message"], (bad, body)


async def test_deleting_a_recording_destroys_its_key_and_file_and_keeps_the_call(
    server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    call_id = await recorded_call(server, tenant, talk_seconds=1.0)
    record = await finished_recording(server.runner.app[RECORDINGS], tenant, call_id)
    path = server.runner.app[RECORDINGS].path(tenant.organisation_id, record.id)
    assert path.exists()
    email, password = await make_admin(database, tenant.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    url = f"{server.url}/api/v1/recordings/{record.id}"
    status, _ = await call_api("GET", url + "/audio", cookie=cookie)
    assert status == 200  # played (and cached) before the deletion

    status, body = await call_api("DELETE", url, cookie=cookie, origin=server.url)
    assert status == 200 and body["recording"]["state"] == "deleted"
    assert not path.exists()
    assert await database.pool.fetchval("SELECT state FROM recordings WHERE id = $1", record.id) == "deleted"
    assert not await database.keystore_pool.fetchval(
        "SELECT count(*) FROM data_keys WHERE recording_id = $1", record.id
    )
    assert await database.calls.get(tenant.organisation_id, uuid.UUID(call_id)) is not None
    for suffix in ("/audio", "/file"):
        status, body = await call_api("GET", url + suffix, cookie=cookie)
        assert (status, body["error"]) == (410, "deleted")
    status, _ = await call_api("DELETE", url, cookie=cookie, origin=server.url)
    assert status == 410
    status, body = await call_api("GET", f"{server.url}/api/v1/audit?object_id={record.id}", cookie=cookie)
    assert [e["action"] for e in body["entries"]] == ["recording.delete", "recording.play"]
    status, body = await call_api("GET", f"{server.url}/api/v1/audit?action=session", cookie=cookie)
    assert body["entries"][0]["action"] == "session.login"


async def test_api_tokens_act_as_their_organisations_admin_until_revoked(server: Running, database: Database) -> None:
    (a,) = await make_tenant(database)
    (b,) = await make_tenant(database)
    email, password = await make_admin(database, a.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    status, created = await call_api("POST", f"{server.url}/api/v1/tokens", cookie=cookie, origin=server.url,
                                     json={"name": "CRM sync"})  # fmt: skip
    assert status == 201
    secret = created["secret"]
    bearer = {"Authorization": f"Bearer {secret}"}

    async def with_token(method: str, path: str, headers: dict[str, str] = bearer) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.request(method, server.url + path, headers=headers) as r:
            return r.status, await r.json() if r.content_type == "application/json" else None

    assert (await with_token("GET", "/api/v1/calls"))[0] == 200
    status, body = await with_token("GET", f"/api/v1/buttons/{a.button_id}")
    assert status == 200 and body["button"]["id"] == str(a.button_id)
    assert (await with_token("GET", f"/api/v1/buttons/{b.button_id}"))[0] == 404  # another organisation's
    assert (await with_token("GET", "/api/v1/me/calls"))[0] == 401  # agents' routes are for people
    status, body = await with_token("GET", "/api/v1/calls", {"Authorization": "Bearer cbt_not-a-token"})
    assert (status, body["error"]) == (401, "invalid_token")
    status, body = await call_api("GET", f"{server.url}/api/v1/tokens", cookie=cookie)
    assert body["tokens"][0]["last_used_at"] is not None and "secret" not in body["tokens"][0]

    status, _ = await call_api("DELETE", f"{server.url}/api/v1/tokens/{created['token']['id']}", cookie=cookie,
                               origin=server.url)  # fmt: skip
    assert status == 200
    status, body = await with_token("GET", "/api/v1/calls")
    assert (status, body["error"]) == (401, "invalid_token")
    status, body = await call_api("GET", f"{server.url}/api/v1/audit?action=token", cookie=cookie)
    assert [e["action"] for e in body["entries"]] == ["token.revoke", "token.create"]
