"""The migration runner, the local cluster, and the repositories' tenancy and session rules."""

from __future__ import annotations

import asyncio
import datetime
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from storage.calls import AgentEvent
from storage.db import Database
from storage.localpg import LocalPostgres
from storage.migrations import Migration, MigrationError, load_migrations, migrate, pending
from tests.conftest import make_tenant


@pytest.fixture
async def scratch_db(migrated: str) -> AsyncIterator[str]:
    """An empty database of its own, for migration tests."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(migrated)
    await admin.execute(f'CREATE DATABASE "{name}"')
    host_part, _, query = migrated.partition("?")
    base = host_part.rsplit("/", 1)[0]
    yield f"{base}/{name}" + (f"?{query}" if query else "")
    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    await admin.close()


def test_shipped_migrations_are_numbered_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert migrations[0].name == "initial"


async def test_migrate_applies_once_and_checks_history(scratch_db: str) -> None:
    conn = await asyncpg.connect(scratch_db)
    try:
        assert [m.version for m in await pending(conn)] == [m.version for m in load_migrations()]
        assert len(await migrate(conn)) == len(load_migrations())
        assert await migrate(conn) == []
        assert await pending(conn) == []
        tables = {
            r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert {"organisations", "users", "sessions", "buttons", "calls", "call_events"} <= tables

        edited = [Migration(m.version, m.name, m.sql + "\n-- edited") for m in load_migrations()]
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await migrate(conn, edited)
        with pytest.raises(MigrationError, match="migrated by a newer release"):
            await migrate(conn, load_migrations()[:-1] if len(load_migrations()) > 1 else [])
    finally:
        await conn.close()


async def test_concurrent_migrations_apply_each_file_once(scratch_db: str) -> None:
    conns = [await asyncpg.connect(scratch_db) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, len(load_migrations())]
    finally:
        for c in conns:
            await c.close()


async def test_a_failing_migration_leaves_nothing_behind(scratch_db: str) -> None:
    broken = [
        *load_migrations(),
        Migration(len(load_migrations()) + 1, "broken", "CREATE TABLE half (x int); SELECT 1/0;"),
    ]
    conn = await asyncpg.connect(scratch_db)
    try:
        with pytest.raises(asyncpg.DivisionByZeroError):
            await migrate(conn, broken)
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_migrations") == len(load_migrations())
    finally:
        await conn.close()


def test_local_cluster_is_created_once_and_reused() -> None:
    folder = Path(tempfile.mkdtemp(prefix="callbutton-localpg-"))
    folder.chmod(0o755)
    try:
        cluster = LocalPostgres(folder / "pg")
        dsn = cluster.start()
        assert (folder / "pg" / "PG_VERSION").exists()
        cluster.stop()
        again = LocalPostgres(folder / "pg")
        assert again.start() == dsn

        async def check() -> int:
            conn = await asyncpg.connect(dsn)
            try:
                return int(await conn.fetchval("SELECT 1"))
            finally:
                await conn.close()

        assert asyncio.run(check()) == 1
        again.stop()
        assert not (folder / "pg" / "postmaster.pid").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def test_calls_are_scoped_by_organisation(database: Database) -> None:
    (a,) = await make_tenant(database)
    (b,) = await make_tenant(database)
    call_id = uuid.uuid4()
    now = datetime.datetime.now(datetime.UTC)
    await database.calls.create(
        call_id=call_id, organisation_id=a.organisation_id, button_id=a.button_id, page_url=None, at=now
    )
    assert (await database.calls.get(a.organisation_id, call_id)) is not None
    assert (await database.calls.get(b.organisation_id, call_id)) is None
    assert await database.calls.events(b.organisation_id, call_id) == []
    with pytest.raises(LookupError):
        await database.calls.transition(
            call_id=call_id,
            organisation_id=b.organisation_id,
            from_state="created",
            to_state="queued",
            at=now,
            write_id=uuid.uuid4(),
        )
    with pytest.raises(LookupError):  # a transition from a state the call is not in
        await database.calls.transition(
            call_id=call_id,
            organisation_id=a.organisation_id,
            from_state="queued",
            to_state="answered",
            at=now,
            write_id=uuid.uuid4(),
        )


async def test_a_retried_call_write_is_stored_once(database: Database) -> None:
    """The outbox tries a write again when its connection broke, which may be after the commit."""
    (tenant,) = await make_tenant(database)
    org, call_id, now = tenant.organisation_id, uuid.uuid4(), datetime.datetime.now(datetime.UTC)
    for _ in range(2):
        await database.calls.create(
            call_id=call_id, organisation_id=org, button_id=tenant.button_id, page_url=None, at=now
        )
    queued = uuid.uuid4()
    rung = AgentEvent("agent_rung", tenant.agent_id, now, uuid.uuid4())
    stopped = AgentEvent("agent_ring_stopped", tenant.agent_id, now, uuid.uuid4(), "answered_elsewhere")
    for batch in ([rung], [rung, stopped]):  # the second: a retried write that got further
        await database.calls.transition(
            call_id=call_id, organisation_id=org, from_state="created", to_state="queued", at=now, write_id=queued
        )
        await database.calls.agent_events(call_id=call_id, organisation_id=org, events=batch)
    # An agent deleted while rung: its event is stored as no one's, and the others of the step with it.
    gone = AgentEvent("agent_ring_stopped", uuid.uuid4(), now, uuid.uuid4(), "ended")
    kept = AgentEvent("agent_ring_stopped", tenant.agent_id, now, uuid.uuid4(), "ended")
    await database.calls.agent_events(call_id=call_id, organisation_id=org, events=[gone, kept])
    events = await database.calls.events(org, call_id)
    assert [e.kind for e in events] == ["created", "queued", "agent_rung"] + ["agent_ring_stopped"] * 3
    assert events[3].reason == "answered_elsewhere" and events[3].agent_id == tenant.agent_id
    assert [e.agent_id for e in events[4:]] == [None, tenant.agent_id]
    record = await database.calls.get(org, call_id)
    assert record is not None and record.state == "queued"


async def test_sessions_expire_when_idle_absolutely_or_when_the_user_is_disabled(database: Database) -> None:
    (tenant,) = await make_tenant(database)
    user = await database.accounts.user(tenant.organisation_id, tenant.agent_id)
    assert user is not None
    idle = datetime.timedelta(minutes=30)
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)

    await database.accounts.create_session(b"live" * 8, user, future)
    assert (await database.accounts.session(b"live" * 8, idle)) is not None

    await database.accounts.create_session(b"idle" * 8, user, future)
    await database.pool.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '31 minutes' WHERE token_hash = $1", b"idle" * 8
    )
    assert (await database.accounts.session(b"idle" * 8, idle)) is None

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    await database.accounts.create_session(b"over" * 8, user, past)
    assert (await database.accounts.session(b"over" * 8, idle)) is None
    # Expired sessions are deleted when found.
    assert (
        await database.pool.fetchval(
            "SELECT count(*) FROM sessions WHERE token_hash = ANY($1)", [b"idle" * 8, b"over" * 8]
        )
        == 0
    )

    await database.pool.execute("UPDATE users SET disabled_at = now() WHERE id = $1", user.id)
    assert (await database.accounts.session(b"live" * 8, idle)) is None


async def test_the_audit_log_is_append_only(database: Database) -> None:
    (tenant,) = await make_tenant(database)
    await database.audit.add(
        organisation_id=tenant.organisation_id,
        action="recording.play",
        object_type="recording",
        object_id=uuid.uuid4(),
        actor_id=tenant.agent_id,
        address="192.0.2.1",
    )
    for statement in (
        "UPDATE audit_log SET action = 'nothing'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(asyncpg.RaiseError, match="audit_log is append-only"):
            await database.pool.execute(statement)
    assert (
        await database.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE organisation_id = $1", tenant.organisation_id
        )
        == 1
    )
    # Deleting a user keeps the entry (actor forgotten); deleting the organisation removes its log.
    await database.pool.execute("DELETE FROM users WHERE id = $1", tenant.agent_id)
    assert (
        await database.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE organisation_id = $1 AND actor_id IS NULL", tenant.organisation_id
        )
        == 1
    )
    await database.pool.execute("DELETE FROM organisations WHERE id = $1", tenant.organisation_id)
    assert (
        await database.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE organisation_id = $1", tenant.organisation_id
        )
        == 0
    )


async def test_a_starting_node_closes_its_own_and_dead_nodes_calls_never_a_live_nodes(database: Database) -> None:
    (tenant,) = await make_tenant(database)
    org, now = tenant.organisation_id, datetime.datetime.now(datetime.UTC)
    calls = {}
    for node in ("mine", "alive", "dead", None):
        calls[node] = uuid.uuid4()
        await database.calls.create(
            call_id=calls[node], organisation_id=org, button_id=tenant.button_id, page_url=None, at=now, node=node
        )

    async def state(node: str | None) -> str:
        record = await database.calls.get(org, calls[node])
        assert record is not None
        return record.state

    # A running node reaping: only the dead node's (and unowned) calls.
    ours = set(calls.values())  # the test database holds other tests' calls too
    closed = await database.calls.close_interrupted("mine", {"mine", "alive"}, own=False)
    assert set(closed) & ours == {calls["dead"], calls[None]}
    assert await state("mine") == "created" and await state("alive") == "created"
    # The node starting again: its own calls from before too; a live node's never.
    assert set(await database.calls.close_interrupted("mine", {"mine", "alive"})) & ours == {calls["mine"]}
    assert await state("alive") == "created"
