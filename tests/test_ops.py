"""What operators watch: /metrics (Prometheus) and /readyz."""

from __future__ import annotations

import dataclasses
import re

import aiohttp
import pytest

from server.app import Running, start
from server.config import Settings
from server.metrics import DRAINING
from storage.db import Database
from tests.conftest import Tenant, answered_call_for
from tests.test_call import wait_for_row


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text."""
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no {name}{labels} in:\n{text}"
    return float(match[1])


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics", headers=headers or {}) as response:
        return response.status, await response.text()


async def test_metrics_follow_a_call(server: Running, database: Database, tenant: Tenant) -> None:
    status, before = await scrape(server.url)
    assert status == 200
    assert sample(before, "callbutton_calls_active") == 0
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    try:
        await visitor.hears(880.0)
        status, during = await scrape(server.url)
        assert sample(during, "callbutton_calls_active") == 1
        assert sample(during, "callbutton_calls_answered_active") == 1
        assert sample(during, "callbutton_legs_active") >= 2
        assert sample(during, "callbutton_websockets") >= 2
        assert sample(during, "callbutton_agents", '{presence="busy"}') == 1
        assert sample(during, "callbutton_packets_forwarded_total") > 0
        await visitor.send({"type": "hangup"})
        await wait_for_row(database, tenant, call_id, "ended")
    finally:
        await visitor.close()
        await agent.close()
    status, after = await scrape(server.url)
    assert sample(after, "callbutton_calls_active") == 0
    assert sample(after, "callbutton_calls_ended_total", '{reason="visitor_hangup"}') == 1
    assert sample(after, "callbutton_call_answer_seconds_count") == 1
    assert sample(after, "callbutton_packets_forwarded_total") >= sample(during, "callbutton_packets_forwarded_total")
    assert sample(after, "callbutton_event_loop_lag_seconds_count") >= 0
    assert sample(after, "callbutton_webhook_backlog") >= 0


async def test_metrics_need_the_token_when_one_is_set(settings: Settings, database: Database) -> None:
    running = await start(dataclasses.replace(settings, metrics_token="scrape-me"), database)
    try:
        assert (await scrape(running.url))[0] == 404
        assert (await scrape(running.url, {"Authorization": "Bearer wrong"}))[0] == 404
        status, text = await scrape(running.url, {"Authorization": "Bearer scrape-me"})
        assert status == 200 and "callbutton_calls_active" in text
    finally:
        await running.stop()


async def test_readyz_says_what_is_wrong(server: Running, database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{server.url}/readyz") as response:
            assert response.status == 200 and (await response.json())["ready"] is True

        async def down() -> int:
            raise ConnectionRefusedError("no database")

        monkeypatch.setattr(database, "pending_migrations", down)
        async with http.get(f"{server.url}/readyz") as response:
            body = await response.json()
            assert response.status == 503 and "database" in body["problems"]
        monkeypatch.undo()

        server.runner.app[DRAINING].set()  # what shutdown does first
        async with http.get(f"{server.url}/readyz") as response:
            body = await response.json()
            assert response.status == 503 and "shutting down" in body["problems"]["draining"]
        # /healthz stays up: the process is alive, only not taking new work.
        async with http.get(f"{server.url}/healthz") as response:
            assert response.status == 200
