"""A Postgres outage during live calls (SECURITY.md, Faults; docs/operations.md, "Database outage").

The server reaches Postgres (main database and key store) through a TCP proxy the test controls.
Cutting it closes every connection and refuses new ones, as a database restart or a network
partition that resets connections would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from server.app import start
from server.appkeys import RECORDINGS
from server.config import Settings
from storage.db import Database
from storage.recordings import read_plaintext
from tests.conftest import VISITOR_ORIGIN, answered_call_for, make_tenant, sample, scrape
from tests.peers import Visitor
from tests.test_call import wait_for_row
from tests.test_recording import finished_recording

CUT_SECONDS = 10.0


class PostgresProxy:
    """127.0.0.1:<port> -> the Postgres of ``dsn`` (TCP or Unix socket), until :meth:`cut`."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        self._user = parts.username or "postgres"
        self._host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
        self._port = int(query.get("port", [parts.port or 5432])[0])
        self._listener: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0

    def dsn(self, database: str) -> str:
        return f"postgresql://{self._user}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    async def start(self) -> None:
        self._listener = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._listener is not None
        self._listener.close()
        await self._listener.wait_closed()
        self._listener = None
        for writer in list(self._pipes):
            writer.transport.abort()
        self._pipes.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self._host.startswith("/"):
            reader, writer = await asyncio.open_unix_connection(f"{self._host}/.s.PGSQL.{self._port}")
        else:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        self._pipes.update((client_writer, writer))

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(client_reader, writer), pump(reader, client_writer))
        self._pipes.difference_update((client_writer, writer))


@pytest.fixture
async def proxy(migrated: str) -> PostgresProxy:
    running = PostgresProxy(migrated)
    await running.start()
    return running


async def test_a_call_goes_on_through_a_database_outage_and_its_history_is_written_after(
    settings: Settings, database: Database, migrated: str, proxy: PostgresProxy
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    kinds_wanted = ["call.created", "call.answered", "call.ended", "recording.ready"]
    await database.webhooks.create(
        tenant.organisation_id, url="http://127.0.0.1:9/hook", events=kinds_wanted, description="outage"
    )
    name = urlsplit(migrated).path.lstrip("/")
    proxied = await Database.connect(proxy.dsn(name), keystore_dsn=proxy.dsn(f"{name}_keys"), max_size=4)
    running = await start(settings, proxied)
    try:
        visitor, agent, call_id = await answered_call_for(
            running.url,
            tenant,
        )
        try:
            await visitor.hears(880.0)
            await agent.hears(440.0)
            store = running.runner.app[RECORDINGS]
            for _ in range(100):  # the recording's row and key are made before the cut
                if await store.for_call(tenant.organisation_id, uuid.UUID(call_id)):
                    break
                await asyncio.sleep(0.05)

            await proxy.cut()
            loop = asyncio.get_running_loop()
            cut_at = loop.time()
            assert visitor.sink is not None and agent.sink is not None
            heard = (visitor.sink.frames_received, agent.sink.frames_received)

            # A new call needs the database: it is refused, saying so.
            late = Visitor(running.url, tenant.button_key, VISITOR_ORIGIN)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await late.connect()
            assert refused.value.status == 503
            await late.close()

            # The call in progress goes on: both sides keep hearing each other.
            await asyncio.sleep(4.0)
            assert visitor.sink.frames_received - heard[0] > 100  # 50 frames a second
            assert agent.sink.frames_received - heard[1] > 100
            await visitor.hears(880.0)
            await agent.hears(440.0)

            # It ends while the database is still away: its last events wait in the outbox.
            await visitor.send({"type": "hangup"})
            await agent.expect("call_state", call_id=call_id, state="ended")
            await asyncio.sleep(1.0)
            status, text = await scrape(running.url)
            assert status == 200
            assert sample(text, "callbutton_outbox_waiting") >= 1
            await asyncio.sleep(max(0.0, CUT_SECONDS - (loop.time() - cut_at)))
        finally:
            await visitor.close()
            await agent.close()

        await proxy.start()  # the database is back
        row = await wait_for_row(database, tenant, call_id, "ended", timeout=20.0)
        assert row.end_reason == "visitor_hangup" and row.answered_at is not None
        events = await database.calls.events(tenant.organisation_id, uuid.UUID(call_id))
        kinds = [e.kind for e in events]
        assert kinds[:2] == ["created", "queued"] and kinds[-2:] == ["answered", "ended"], kinds
        assert "agent_rung" in kinds and len(kinds) == len(set(kinds)), kinds  # each once
        record = await finished_recording(store, tenant, call_id)
        assert record.state == "complete"
        plaintext = read_plaintext(store.path(tenant.organisation_id, record.id), await store.key(record), record.id)
        assert plaintext.startswith(b"OggS") and record.duration_ms >= 4000
        hooks = await database.pool.fetch(
            "SELECT kind FROM webhook_events WHERE subject = $1 ORDER BY id", uuid.UUID(call_id)
        )
        assert sorted(h["kind"] for h in hooks) == sorted(kinds_wanted)  # each once
        status, text = await scrape(running.url)
        assert sample(text, "callbutton_outbox_pending") == 0
        assert sample(text, "callbutton_outbox_failed_total") == 0
    finally:
        await running.stop()
        await proxied.close()
