"""What routing reads from the database, kept in memory for as long as the database says it holds.

Opening a visitor's socket waits for the button of its key, and ringing an agent for whom the
button may ring. Read from the database every time, those reads queued behind every write of a
burst: 50 requests at once through a longest-idle button waited up to 1.1 s to ring (p95 0.8-1.1
s, docs/benchmarks.md), and their sockets up to 0.4 s for their button, with the pool's connections
busy storing the same calls' events. Both change only when an admin changes a button, its targets
or a team's members; migration 0012's triggers ``NOTIFY callbutton_routing`` when such a change
commits, and every server process (each worker, each node) LISTENs on a connection of its own and
forgets what it held.

An answer is kept 60 s at most, notified or not, in case notifications stop arriving unnoticed.
While that connection is down nothing is kept: each call reads the database, as before, and a
change made meanwhile is seen. The connection is made again with a growing pause; what is read
once it is back is kept again. A change reaches a process as soon as Postgres delivers the
notification (a millisecond on a local network): a call placed in that window is routed as if
placed just before the change.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from server.tasks import cancel_and_wait
from storage.buttons import Button
from storage.db import Database

log = structlog.get_logger(__name__)

CHANNEL = "callbutton_routing"
#: The listening connection's name in ``pg_stat_activity``.
APPLICATION = "callbutton directory"
LISTENING = "directory.listening"
NOT_LISTENING = "directory.not_listening"
#: Pauses between tries to make the listening connection again, the last repeated.
RECONNECT_SECONDS = (0.5, 1.0, 2.0, 5.0, 10.0)
#: Answers kept at most; past it everything is forgotten and read again.
MAX_KEPT = 10_000
#: Seconds an answer is kept at most, notified or not: the bound on a stale answer should
#: notifications stop arriving unnoticed (a pooler in transaction mode between the server and
#: Postgres takes LISTEN and never delivers, PgBouncer for one).
KEEP_SECONDS = 60.0

Eligible = frozenset[uuid.UUID] | None


class Directory:
    """A button by its public key and whom a button rings (kept while listening), and a visitor's
    earlier calls (always read)."""

    def __init__(self, database: Database, *, connect: Callable[[], Awaitable[Any]] | None = None) -> None:
        self._database = database
        dsn = database.dsn
        self._connect = connect or (
            None if dsn is None else (lambda: asyncpg.connect(dsn, server_settings={"application_name": APPLICATION}))
        )
        #: What was read, by what it answers: ("eligible", org, button) or ("key", public key).
        self._kept: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}
        self._connection: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        #: Reads from the database so far (what was not found kept).
        self.reads = 0

    @property
    def listening(self) -> bool:
        return self._connection is not None

    @property
    def listener_pid(self) -> int | None:
        """The Postgres backend of the listening connection (``pg_stat_activity.pid``), if any."""
        return None if self._connection is None else int(self._connection.get_server_pid())

    async def start(self) -> None:
        """Listen for changes, in the background from now on (a first try is made before returning)."""
        if self._connect is None or self._task is not None:
            return
        with contextlib.suppress(Exception):
            await self._listen()
        self._task = asyncio.create_task(self._keep_listening(), name="directory-listener")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self._drop()

    async def eligible_agents(self, organisation_id: uuid.UUID, button_id: uuid.UUID) -> Eligible:
        """The users the button may ring, None for everyone (``Buttons.eligible_agents``)."""
        eligible: Eligible = await self._read(
            ("eligible", organisation_id, button_id),
            lambda: self._database.buttons.eligible_agents(organisation_id, button_id),
        )
        return eligible

    async def button_by_key(self, public_key: str) -> Button | None:
        """The button with this public key (``Buttons.by_public_key``). A key no button has is read
        each time: only buttons are kept, so made-up keys cannot crowd them out."""
        button: Button | None = await self._read(
            ("key", public_key), lambda: self._database.buttons.by_public_key(public_key), keep_none=False
        )
        return button

    async def _read(self, key: tuple[Any, ...], read: Callable[[], Awaitable[Any]], *, keep_none: bool = True) -> Any:
        if not self.listening:
            self.reads += 1
            return await read()
        now = asyncio.get_running_loop().time()
        kept = self._kept.get(key)
        if kept is not None and now - kept[0] < KEEP_SECONDS:
            found = kept[1]
        else:
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()
            # One read for every caller that asks meanwhile (a burst on one button reads once).
            self.reads += 1
            found = asyncio.ensure_future(read())
            found.add_done_callback(lambda done: self._unkeep(key, done, keep_none))
            self._kept[key] = (now, found)
        return await asyncio.shield(found)

    async def earlier_calls(
        self, organisation_id: uuid.UUID, call_id: uuid.UUID, email: str | None, phone: str | None
    ) -> int:
        return await self._database.calls.earlier_calls(organisation_id, call_id, email, phone)

    def forget(self) -> None:
        self._kept.clear()

    def _unkeep(self, key: tuple[Any, ...], done: asyncio.Future[Any], keep_none: bool) -> None:
        # A failed read is not kept (the next caller reads again), nor, where asked, a None.
        failed = done.cancelled() or done.exception() is not None
        kept = self._kept.get(key)
        if (failed or (not keep_none and done.result() is None)) and kept is not None and kept[1] is done:
            del self._kept[key]

    async def _listen(self) -> None:
        assert self._connect is not None
        connection = await self._connect()
        try:
            await connection.add_listener(CHANNEL, self._changed)
        except BaseException:
            await connection.close()
            raise
        connection.add_termination_listener(self._terminated)
        self._lost.clear()
        self.forget()  # what was read before listening may have changed unseen
        self._connection = connection
        log.info(LISTENING, channel=CHANNEL, backend_pid=self.listener_pid)

    async def _keep_listening(self) -> None:
        failures = 0
        while True:
            if self._connection is not None:
                await self._lost.wait()
                await self._drop()
                failures = 0
            try:
                await self._listen()
                continue
            except Exception as exc:
                log.warning(NOT_LISTENING, error=str(exc) or type(exc).__name__)
            await asyncio.sleep(RECONNECT_SECONDS[min(failures, len(RECONNECT_SECONDS) - 1)])
            failures += 1

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        self.forget()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    def _changed(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self.forget()

    def _terminated(self, connection: Any) -> None:
        if connection is self._connection:
            self.forget()  # nothing kept from now until listening again
            self._connection = None
            self._lost.set()
            log.warning(NOT_LISTENING, error="the listening connection was closed")
