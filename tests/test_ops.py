"""What operators watch: /metrics (Prometheus) and /readyz."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import uuid
import weakref
from typing import Any

import aiohttp
import pytest

from server import load
from server.app import Running, collect_garbage, start
from server.appkeys import RECORDINGS
from server.config import Settings
from server.metrics import DRAINING
from storage.db import Database
from storage.recordings import read_plaintext
from tests.conftest import VISITOR_ORIGIN, Tenant, answered_call_for, make_tenant, sample, scrape
from tests.peers import Visitor
from tests.test_call import wait_for_row
from tests.test_load import keep_busy
from tests.test_recording import finished_recording, recorded_call


async def refused_call(url: str, tenant: Tenant) -> dict[str, Any]:
    """A new visitor's call request on ``tenant``'s button, and the error the server answered."""
    late = Visitor(url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await late.connect()
        await late.send({"type": "call", "sdp": await late.offer(440.0)})
        error: dict[str, Any] = await late.expect("error")
        return error
    finally:
        await late.close()


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
    for _ in range(20):  # the watcher observes every 0.5 s from the start: a quick call may end before
        if sample(after, "callbutton_event_loop_lag_seconds_count") > 0:
            break
        await asyncio.sleep(0.1)
        status, after = await scrape(server.url)
    assert sample(after, "callbutton_event_loop_lag_seconds_count") > 0
    full = sample(after, "callbutton_gc_pause_seconds_count", '{generation="2"}')
    found = sample(after, "callbutton_gc_collected_objects_total")
    assert sample(after, "callbutton_gc_frozen_objects") == gc.get_freeze_count()
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    gc.collect()  # as collect_garbage does every 5 s
    status, collected = await scrape(server.url)
    assert sample(collected, "callbutton_gc_pause_seconds_count", '{generation="2"}') >= full + 1
    assert sample(collected, "callbutton_gc_pause_seconds_sum", '{generation="2"}') > 0
    assert sample(collected, "callbutton_gc_collected_objects_total") >= found + 1
    assert sample(after, "callbutton_webhook_backlog") >= 0
    assert sample(after, "callbutton_outbox_pending") == 0 and sample(after, "callbutton_outbox_failed_total") == 0
    assert sample(after, "callbutton_packets_dropped_total", '{reason="over_rate"}') == 0
    for phase in ("ring", "visitor_answer", "visitor_connected", "agent_connected"):
        labels = f'{{phase="{phase}"}}'
        assert sample(after, "callbutton_setup_seconds_count", labels) == 1, phase
        assert 0 < sample(after, "callbutton_setup_seconds_sum", labels) < 10, phase


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


async def test_a_draining_server_lets_calls_finish_and_takes_no_new_ones(
    settings: Settings, database: Database
) -> None:
    (tenant,) = await make_tenant(database)
    running = await start(settings, database)
    try:
        visitor, agent, call_id = await answered_call_for(running.url, tenant)
        try:
            draining = asyncio.create_task(running.drain(20))
            await asyncio.sleep(0.2)
            async with aiohttp.ClientSession() as http, http.get(f"{running.url}/readyz") as response:
                assert response.status == 503
            error = await refused_call(running.url, tenant)
            assert error["code"] == "unavailable" and "shutting down" in error["message"]
            await visitor.hears(880.0)  # the call in progress goes on
            assert not draining.done()
            await visitor.send({"type": "hangup"})
            assert await asyncio.wait_for(draining, 5) is True
            row = await wait_for_row(database, tenant, call_id, "ended")
            assert row.end_reason == "visitor_hangup"
        finally:
            await visitor.close()
            await agent.close()
    finally:
        await running.stop()


async def test_calls_still_up_when_the_drain_times_out_end_cleanly_with_their_recordings(
    settings: Settings, database: Database
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    running = await start(settings, database)
    store = running.runner.app[RECORDINGS]
    visitor, agent, call_id = await answered_call_for(running.url, tenant)
    try:
        await visitor.hears(880.0)
        await asyncio.sleep(1.0)
        assert await running.drain(0.5) is False
        await running.stop()
    finally:
        await visitor.close()
        await agent.close()
    row = await wait_for_row(database, tenant, call_id, "ended")
    assert row.end_reason == "shutdown"
    record = await finished_recording(store, tenant, call_id)
    assert record.state == "complete" and (record.duration_ms or 0) > 500
    # The final segment is there: the file decrypts whole, not as truncated.
    plaintext = read_plaintext(store.path(tenant.organisation_id, record.id), await store.key(record), record.id)
    assert plaintext.startswith(b"OggS")
    events = [e.kind for e in await database.calls.events(tenant.organisation_id, uuid.UUID(call_id))]
    assert events[0] == "created" and events[-1] == "ended" and "answered" in events


async def test_metrics_count_recordings(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    call_id = await recorded_call(server, tenant, talk_seconds=1.0)
    record = await finished_recording(server.runner.app[RECORDINGS], tenant, call_id)
    _, text = await scrape(server.url)
    assert sample(text, "callbutton_recordings_total", '{outcome="opened"}') == 1
    assert sample(text, "callbutton_recordings_total", '{outcome="complete"}') == 1
    assert sample(text, "callbutton_recordings_total", '{outcome="unavailable"}') == 0
    assert sample(text, "callbutton_recording_bytes_total") == record.byte_size


async def test_a_process_at_its_call_limit_refuses_the_next_call_and_keeps_the_one_it_carries(
    settings: Settings, database: Database
) -> None:
    (tenant,) = await make_tenant(database)
    running = await start(dataclasses.replace(settings, max_calls=1), database)
    try:
        visitor, agent, call_id = await answered_call_for(running.url, tenant)
        try:
            error = await refused_call(running.url, tenant)
            assert error["code"] == "unavailable" and "every line is busy" in error["message"]
            await visitor.hears(880.0)  # the call in progress goes on
            _, text = await scrape(running.url)
            assert sample(text, "callbutton_calls_refused_at_capacity_total") == 1
            assert sample(text, "callbutton_calls_active") == 1, "the refused call was never a call"
            await visitor.send({"type": "hangup"})
            await wait_for_row(database, tenant, call_id, "ended")
        finally:
            await visitor.close()
            await agent.close()

        # Below the limit again: the next call is taken.
        visitor, agent, call_id = await answered_call_for(running.url, tenant)
        await visitor.close()
        await agent.close()
    finally:
        await running.stop()


async def test_a_process_whose_event_loop_is_too_busy_refuses_the_next_call_and_keeps_the_one_it_carries(
    settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(load, "WINDOW", 1.0)
    monkeypatch.setattr(load, "TICK", 0.1)
    (tenant,) = await make_tenant(database)
    running = await start(dataclasses.replace(settings, max_loop_busy=0.7), database)
    try:
        visitor, agent, call_id = await answered_call_for(running.url, tenant)
        try:
            # The loop held 90% of the time for over a window (as by more calls than its core carries).
            await keep_busy(1.3)
            error = await refused_call(running.url, tenant)
            assert error["code"] == "unavailable" and "every line is busy" in error["message"]
            _, text = await scrape(running.url)
            assert sample(text, "callbutton_calls_refused_overloaded_total") == 1
            assert sample(text, "callbutton_calls_refused_at_capacity_total") == 0
            assert sample(text, "callbutton_calls_active") == 1, "the refused call was never a call"
            await visitor.hears(880.0)  # the call in progress goes on
            await visitor.send({"type": "hangup"})
            await wait_for_row(database, tenant, call_id, "ended")
        finally:
            await visitor.close()
            await agent.close()

        # The loop idle again for a window: the next call is taken.
        await asyncio.sleep(1.2)
        _, text = await scrape(running.url)
        assert sample(text, "callbutton_event_loop_utilisation") < 0.7
        assert sample(text, "callbutton_event_loop_idle_seconds_total") > 1.0
        visitor, agent, call_id = await answered_call_for(running.url, tenant)
        await visitor.close()
        await agent.close()
    finally:
        await running.stop()


class _Node:
    """An object the collector tracks, that can refer to itself."""

    other: object = None


async def test_collect_garbage_freezes_what_lives_and_collects_what_was_made_since() -> None:
    lives = _Node()
    lives_ref = weakref.ref(lives)
    gc.disable()  # only collect_garbage collects
    collector = asyncio.create_task(collect_garbage(interval=0.05, trim_interval=0.05))
    try:
        await asyncio.sleep(0.2)
        assert gc.get_freeze_count() > 0  # what lived at the collection is out of the collector's way
        # A frozen object still goes with its last reference,
        del lives
        assert lives_ref() is None
        # and a cycle made since is collected at the next collection.
        cycle = _Node()
        cycle.other = cycle
        cycle_ref = weakref.ref(cycle)
        del cycle
        for _ in range(20):
            if cycle_ref() is None:
                break
            await asyncio.sleep(0.05)
        assert cycle_ref() is None
    finally:
        collector.cancel()
        gc.enable()
        gc.unfreeze()


async def test_collect_garbage_collects_everything_once_the_frozen_objects_grow() -> None:
    gc.disable()
    try:
        for growth, freed in ((1000.0, False), (0.0, True)):
            # A cycle alive when frozen, garbage since: no collection of what is not frozen finds it.
            cycle = _Node()
            cycle.other = cycle
            cycle_ref = weakref.ref(cycle)
            gc.freeze()
            del cycle
            collector = asyncio.create_task(collect_garbage(interval=0.02, trim_interval=10, audit_growth=growth))
            try:
                for _ in range(25):
                    if cycle_ref() is None:
                        break
                    _ = [_Node() for _ in range(100)]  # what the server makes meanwhile
                    await asyncio.sleep(0.02)
                assert (cycle_ref() is None) is freed, growth
            finally:
                collector.cancel()
                gc.unfreeze()
                gc.collect()
    finally:
        gc.enable()
