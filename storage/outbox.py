"""Writes that must reach the database even when it is away for a while (SECURITY.md, Faults).

A live call does not wait for its history to be stored: its events (and the webhook deliveries
written in the same transactions) and its recording's final row are handed to an :class:`Outbox`,
which retries a write that failed because the database could not be reached, with a growing delay,
until it is stored. Every write so retried is idempotent (the call's row is inserted once, each
event carries a write id, a recording is finished once), so a write whose commit was lost with the
connection is not stored twice. A write refused for any other reason (a bug, a constraint) is
logged with what it was and counted, never dropped silently. When the server stops while the
database is still away, writes are retried for :data:`SHUTDOWN_GRACE_SECONDS` more, then given up,
each logged at error level with its content.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger(__name__)

DATABASE_UNAVAILABLE = "outbox.database_unavailable"
DATABASE_BACK = "outbox.database_back"
WRITE_FAILED = "outbox.write_failed"
WRITE_ABANDONED = "outbox.write_abandoned"

FIRST_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 4.0
SHUTDOWN_GRACE_SECONDS = 15.0
#: Writes made at once, at most: half the main pool's connections (storage/db.py, 10), so that a
#: burst of calls' events leaves the rest to the reads someone waits for (a visitor's earlier calls
#: before a ring, a login, an admin's page). 50 calls set up at once had all 10 busy with their events.
WRITES_AT_ONCE = 5

# Errors that say the database could not be reached or is not taking work right now (connection
# refused or reset, the server shutting down or starting up, out of connections or disk), as
# opposed to a write it refused.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def transient(exc: BaseException) -> bool:
    """True when ``exc`` says the database is away rather than that it refused the write."""
    if isinstance(exc, _TRANSIENT):
        return True
    # asyncpg's pool hands back a connection the server has just closed as "connection is closed".
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


class Outbox:
    """The writes of one server process that are on their way to the database."""

    def __init__(self, *, first_retry: float = FIRST_RETRY_SECONDS, max_retry: float = MAX_RETRY_SECONDS) -> None:
        self._first_retry = first_retry
        self._max_retry = max_retry
        #: Writes handed over and not yet stored (nor given up).
        self.pending = 0
        #: Of those, writes that failed at least once and wait for the database to come back.
        self.waiting = 0
        #: Writes stored only after one or more retries, since start.
        self.recovered = 0
        #: Writes refused by the database or given up at shutdown, since start (each logged).
        self.failed = 0
        self._deadline: float | None = None
        self._writing = asyncio.Semaphore(WRITES_AT_ONCE)

    async def write(self, what: str, write: Callable[[], Awaitable[Any]], **detail: Any) -> bool:
        """Store with ``write()``, retrying through an outage; True once stored. ``what`` and
        ``detail`` say in the logs what the write was, should it fail for good."""
        self.pending += 1
        delay = self._first_retry
        waited = False
        try:
            while True:
                try:
                    async with self._writing:
                        await write()
                except Exception as exc:
                    if not transient(exc):
                        self.failed += 1
                        log.exception(WRITE_FAILED, what=what, **detail)
                        return False
                    loop = asyncio.get_running_loop()
                    if self._deadline is not None and loop.time() >= self._deadline:
                        self.failed += 1
                        log.error(WRITE_ABANDONED, what=what, error=repr(exc), **detail)
                        return False
                    if not waited:
                        waited = True
                        self.waiting += 1
                        log.warning(DATABASE_UNAVAILABLE, what=what, error=repr(exc), **detail)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry)
                    continue
                if waited:
                    self.recovered += 1
                    log.info(DATABASE_BACK, what=what, **detail)
                return True
        finally:
            self.pending -= 1
            if waited:
                self.waiting -= 1

    def give_up_after(self, seconds: float) -> None:
        """Shutting down: writes still failing ``seconds`` from now are given up (and logged)."""
        deadline = asyncio.get_running_loop().time() + seconds
        self._deadline = deadline if self._deadline is None else min(self._deadline, deadline)
