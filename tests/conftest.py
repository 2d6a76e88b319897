"""Fixtures: a real Postgres, the real server on a loopback port, a tenant to call.

The database is ``CALLBUTTON_TEST_DATABASE_URL`` when set (a fresh database is created in it for the
run); otherwise a throwaway Postgres cluster is created in a temporary folder, the same way
``callbutton serve`` creates its local one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from media import aiortc_release
from media.aiortc_seam import pin_host_addresses
from server import auth, logs
from server.app import Running, start
from server.config import Settings
from storage.db import Database
from storage.localpg import LocalPostgres
from tests.peers import Agent, Visitor, answered_call, ringing_call
from tests.run_keys import MASTER_KEY

VISITOR_ORIGIN = "http://shop.example.test"
AGENT_PASSWORD = "correct horse battery staple"

logs.configure("warning", "console")
# The tests' own peers gather loopback candidates, whether or not a server in this process pinned them.
pin_host_addresses(("127.0.0.1",))


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A DSN to a database of our own for this test run."""
    configured = os.environ.get("CALLBUTTON_TEST_DATABASE_URL")
    if configured:
        name = f"callbutton_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_create_database(configured, name))
        parts = urlsplit(configured)
        yield urlunsplit(parts._replace(path="/" + name))
        asyncio.run(_drop_database(configured, name))
        return
    folder = Path(tempfile.mkdtemp(prefix="callbutton-test-pg-"))
    folder.chmod(0o755)  # the cluster may run as the postgres user
    cluster = LocalPostgres(folder / "cluster", database="callbutton_test")
    try:
        yield cluster.start()
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def _create_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_database(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}_keys" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def migrated(postgres_dsn: str) -> str:
    async def run() -> None:
        database = await Database.connect(postgres_dsn, min_size=1, max_size=2)
        try:
            await database.migrate()
        finally:
            await database.close()

    asyncio.run(run())
    return postgres_dsn


@pytest.fixture
async def database(migrated: str) -> AsyncIterator[Database]:
    db = await Database.connect(migrated, min_size=1, max_size=5)
    yield db
    await db.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        data_dir=tmp_path,
        ice_host_addresses=("127.0.0.1",),
        ring_timeout=20.0,
        # Tests log in often from one address; the login limits have their own test.
        login_rate_per_address=6000.0,
        login_rate_per_account=6000.0,
        log_level="warning",
        master_key=MASTER_KEY.to_text(),
        # The scheduled purge has its own test; elsewhere it would purge other tests' old data.
        purge_interval=0,
        # A server in a test shares its event loop with the test's own peers, whose load is not the
        # server's; refusing calls for load has its own test.
        max_loop_busy=0.0,
    )


@pytest.fixture
async def server(settings: Settings, database: Database) -> AsyncIterator[Running]:
    running = await start(settings, database)
    yield running
    await running.stop()


@dataclasses.dataclass(frozen=True)
class Tenant:
    organisation_id: uuid.UUID
    agent_email: str
    agent_password: str
    agent_id: uuid.UUID
    button_key: str
    button_id: uuid.UUID


async def make_tenant(
    database: Database,
    *,
    agents: int = 1,
    ring_timeout_s: int | None = None,
    recording: bool = False,
    **button_settings: Any,
) -> list[Tenant]:
    """An organisation with ``agents`` agents (one Tenant each) and one button for VISITOR_ORIGIN,
    with any further button settings (``storage.buttons.SETTINGS``) given."""
    organisation = await database.accounts.create_organisation(f"Org {uuid.uuid4().hex[:6]}")
    button = await database.buttons.create(
        organisation.id,
        name="Support",
        allowed_origins=[VISITOR_ORIGIN],
        ring_timeout_s=ring_timeout_s,
        recording_enabled=recording,
        **button_settings,
    )
    password_hash = await auth.hash_password(AGENT_PASSWORD)
    tenants = []
    for index in range(agents):
        email = f"agent{index}-{uuid.uuid4().hex[:8]}@example.test"
        user = await database.accounts.create_user(
            organisation.id,
            email=email,
            display_name=f"Agent {index}",
            role="agent",
            password_hash=password_hash,
        )
        tenants.append(
            Tenant(
                organisation_id=organisation.id,
                agent_email=email,
                agent_password=AGENT_PASSWORD,
                agent_id=user.id,
                button_key=button.public_key,
                button_id=button.id,
            )
        )
    return tenants


@pytest.fixture
async def tenant(database: Database) -> Tenant:
    return (await make_tenant(database))[0]


async def make_admin(database: Database, organisation_id: uuid.UUID) -> tuple[str, str]:
    """An admin of ``organisation_id``: (email, password)."""
    email = f"admin-{uuid.uuid4().hex[:8]}@example.test"
    await database.accounts.create_user(
        organisation_id,
        email=email,
        display_name="Admin",
        role="admin",
        password_hash=await auth.hash_password(AGENT_PASSWORD),
    )
    return email, AGENT_PASSWORD


async def login_cookie(base_url: str, email: str, password: str) -> str:
    """A session cookie header value for ``email``."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base_url}/api/v1/session", json={"email": email, "password": password}, headers={"Origin": base_url}
        ) as response:
            assert response.status == 200, await response.text()
            morsel = next(iter(response.cookies.values()))
            return f"{morsel.key}={morsel.value}"


@pytest.fixture
async def fresh_database(migrated: str) -> AsyncIterator[tuple[str, Database]]:
    """A migrated database of its own, for tests that change every organisation (key rotation)."""
    name = f"fresh_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(migrated)
    await admin.execute(f'CREATE DATABASE "{name}"')
    host_part, _, query = migrated.partition("?")
    dsn = host_part.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    database = await Database.connect(dsn, min_size=1, max_size=5)
    await database.migrate()
    try:
        yield dsn, database
    finally:
        await database.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}_keys" WITH (FORCE)')
        await admin.close()


def parties(tenant: Tenant) -> dict[str, str]:
    """:func:`ringing_call`'s arguments for a call on ``tenant``'s button to its agent."""
    return {
        "button_key": tenant.button_key,
        "origin": VISITOR_ORIGIN,
        "agent_email": tenant.agent_email,
        "agent_password": tenant.agent_password,
    }


async def ringing_call_for(base_url: str, tenant: Tenant, **details: Any) -> tuple[Visitor, Agent, str]:
    """A call on ``tenant``'s button ringing its agent: visitor 440 Hz, agent 880 Hz."""
    return await ringing_call(base_url, **parties(tenant), **details)


async def answered_call_for(base_url: str, tenant: Tenant, **details: Any) -> tuple[Visitor, Agent, str]:
    """An answered call on ``tenant``'s button: visitor 440 Hz, agent 880 Hz."""
    return await answered_call(base_url, **parties(tenant), **details)


@pytest.fixture
def no_collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The cycle collector off (what a test's objects free, reference counting frees), and closed legs
    released soon (media/aiortc_release.py)."""
    monkeypatch.setattr(aiortc_release, "RELEASE_DELAY", 0.2)
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """The server's /metrics: status and text."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics", headers=headers or {}) as response:
        return response.status, await response.text()


def sample(text: str, name: str, labels: str = "") -> float:
    """One sample's value from Prometheus text."""
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.MULTILINE)
    assert match is not None, f"no {name}{labels} in:\n{text}"
    return float(match[1])
