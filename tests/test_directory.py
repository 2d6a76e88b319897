"""Whom a button rings, kept in memory while Postgres says it holds (server/directory.py): read once
for a burst, forgotten on every change an admin makes, read each time while not listening."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from server import directory as directory_module
from server.directory import APPLICATION, Directory
from storage.db import Database
from tests.conftest import make_tenant


async def eventually(read: Callable[[], Awaitable[Any]], expected: Any, timeout: float = 3.0) -> None:
    """Wait until ``read()`` gives ``expected`` (a change's notification arrives in a moment)."""
    found = None
    for _ in range(int(timeout / 0.02)):
        if (found := await read()) == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"still {found!r}, not {expected!r}, after {timeout} s")


async def listening(directory: Directory, state: bool, timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if directory.listening is state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"listening is not {state} after {timeout} s")


async def test_a_burst_reads_once_and_every_change_to_whom_a_button_rings_is_seen(database: Database) -> None:
    first, second = await make_tenant(database, agents=2)
    org, button = first.organisation_id, first.button_id
    directory = Directory(database)
    await directory.start()
    try:
        assert directory.listening
        results = await asyncio.gather(*(directory.eligible_agents(org, button) for _ in range(20)))
        assert results == [None] * 20 and directory.reads == 1, "one read for a burst"
        assert await directory.eligible_agents(org, button) is None and directory.reads == 1, "kept"

        def read() -> Awaitable[frozenset[uuid.UUID] | None]:
            return directory.eligible_agents(org, button)

        # The button's own agents, then a team, then the team's members, then everybody again.
        assert await database.buttons.set_targets(org, button, [second.agent_id], [])
        await eventually(read, frozenset({second.agent_id}))
        team = await database.teams.create(org, "Billing")
        await database.teams.set_members(org, team.id, [first.agent_id])
        assert await database.buttons.set_targets(org, button, [], [team.id])
        await eventually(read, frozenset({first.agent_id}))
        await database.teams.set_members(org, team.id, [first.agent_id, second.agent_id])
        await eventually(read, frozenset({first.agent_id, second.agent_id}))
        assert await database.teams.delete(org, team.id)
        await eventually(read, frozenset())
        assert await database.buttons.set_targets(org, button, [], [])
        await eventually(read, None)
        reads = directory.reads
        assert await read() is None and directory.reads == reads, "kept again once read"
    finally:
        await directory.stop()
    assert not directory.listening


async def test_while_its_connection_is_down_every_call_reads_and_it_listens_again(database: Database) -> None:
    (tenant,) = await make_tenant(database)
    org, button = tenant.organisation_id, tenant.button_id
    refused: list[bool] = []  # Postgres refuses the directory's new connections while this holds True
    assert database.dsn is not None
    dsn = database.dsn

    async def connect() -> Any:
        if refused and refused[-1]:
            raise OSError("connection refused")
        return await asyncpg.connect(dsn, server_settings={"application_name": APPLICATION})

    directory = Directory(database, connect=connect)
    await directory.start()
    try:
        assert await directory.eligible_agents(org, button) is None
        backend = directory.listener_pid
        refused.append(True)
        rows = await database.pool.fetch("SELECT application_name FROM pg_stat_activity WHERE pid = $1", backend)
        assert [r["application_name"] for r in rows] == ["callbutton directory"]
        assert await database.pool.fetchval("SELECT pg_terminate_backend($1)", backend)
        await listening(directory, False)

        # Meanwhile a change is seen at once: nothing was kept.
        assert await database.buttons.set_targets(org, button, [tenant.agent_id], [])
        reads = directory.reads
        assert await directory.eligible_agents(org, button) == frozenset({tenant.agent_id})
        assert await directory.eligible_agents(org, button) == frozenset({tenant.agent_id})
        assert directory.reads == reads + 2, "read each time while not listening"

        refused.append(False)
        await listening(directory, True)  # the first pause is half a second
        assert directory.listener_pid != backend
        reads = directory.reads
        for _ in range(3):
            assert await directory.eligible_agents(org, button) == frozenset({tenant.agent_id})
        assert directory.reads == reads + 1
    finally:
        await directory.stop()


async def test_a_failed_read_is_not_kept(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    (tenant,) = await make_tenant(database)
    org, button = tenant.organisation_id, tenant.button_id
    directory = Directory(database)
    await directory.start()
    real = database.buttons.eligible_agents

    async def outage(*args: Any) -> None:
        raise ConnectionError("the database is gone")

    try:
        monkeypatch.setattr(database.buttons, "eligible_agents", outage)
        with pytest.raises(ConnectionError):
            await directory.eligible_agents(org, button)
        monkeypatch.setattr(database.buttons, "eligible_agents", real)
        assert await directory.eligible_agents(org, button) is None
        assert directory.reads == 2
    finally:
        await directory.stop()


async def test_a_button_by_its_key_is_kept_until_it_changes_and_an_unknown_key_never(database: Database) -> None:
    (tenant,) = await make_tenant(database)
    org, key = tenant.organisation_id, tenant.button_key
    directory = Directory(database)
    await directory.start()
    try:
        found = await asyncio.gather(*(directory.button_by_key(key) for _ in range(20)))
        assert {b.id for b in found if b is not None} == {tenant.button_id} and directory.reads == 1

        def origins() -> Awaitable[Any]:
            async def read() -> Any:
                button = await directory.button_by_key(key)
                return None if button is None else tuple(button.allowed_origins)

            return read()

        before = await origins()
        await database.buttons.allow_origin(org, tenant.button_id, "https://shop.example.test")
        await eventually(origins, (*before, "https://shop.example.test"))

        reads = directory.reads
        for _ in range(3):
            assert await directory.button_by_key("k" * len(key)) is None
        assert directory.reads == reads + 3, "a key no button has is read each time, never kept"

        assert await database.buttons.delete(org, tenant.button_id)
        await eventually(lambda: directory.button_by_key(key), None)
    finally:
        await directory.stop()


async def test_an_answer_is_read_again_once_it_is_older_than_the_bound(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Should notifications stop arriving unnoticed (a pooler that swallows LISTEN), an answer is
    # still at most KEEP_SECONDS old.
    monkeypatch.setattr(directory_module, "KEEP_SECONDS", 0.3)
    (tenant,) = await make_tenant(database)
    directory = Directory(database)
    await directory.start()
    try:
        for _ in range(3):
            assert await directory.eligible_agents(tenant.organisation_id, tenant.button_id) is None
        assert directory.reads == 1
        await asyncio.sleep(0.35)
        assert await directory.eligible_agents(tenant.organisation_id, tenant.button_id) is None
        assert directory.reads == 2
    finally:
        await directory.stop()
