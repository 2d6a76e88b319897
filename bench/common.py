"""What several benchmarks share: a throwaway database on a Postgres server they are given, and the
environment their servers start from."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def inherited_env() -> dict[str, str]:
    """This process's environment without its ``CALLBUTTON_`` settings (a benchmark sets the server's
    own), except the event loop: ``CALLBUTTON_EVENT_LOOP=uvloop`` runs a benchmark's servers on uvloop."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_") or k == "CALLBUTTON_EVENT_LOOP"}


async def admin(server_dsn: str, *statements: str) -> None:
    """Run ``statements`` on the server's own database (creating and dropping databases)."""
    conn = await asyncpg.connect(server_dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def database_dsn(server_dsn: str, name: str) -> str:
    """The DSN of database ``name`` on ``server_dsn``'s server."""
    return urlunsplit(urlsplit(server_dsn)._replace(path="/" + name))


@asynccontextmanager
async def throwaway_database(server_dsn: str, label: str) -> AsyncIterator[str]:
    """A new database on ``server_dsn``'s server, named for ``label``; its DSN. Dropped at the end,
    with the key store the server creates beside it (``<name>_keys``)."""
    name = f"callbutton_bench_{label}_{uuid.uuid4().hex[:8]}"
    await admin(server_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield database_dsn(server_dsn, name)
    finally:
        await admin(
            server_dsn,
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'DROP DATABASE IF EXISTS "{name}_keys" WITH (FORCE)',
        )
