"""The connection pool and the repositories that share it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from storage.accounts import Accounts
from storage.audit import AuditLog
from storage.buttons import Buttons
from storage.call_links import CallLinks
from storage.callbacks import Callbacks
from storage.calls import CallSearch, CallStore
from storage.keys import adopt_legacy_keys
from storage.migrations import load_migrations, migrate, pending
from storage.retention import Retention
from storage.teams import Teams
from storage.tokens import Tokens
from storage.webhooks import Webhooks

log = structlog.get_logger(__name__)

KEYSTORE_CREATED = "db.keystore_created"


class KeystoreError(Exception):
    """The key store cannot be reached or made; the message says what to do."""


def keystore_dsn_for(dsn: str) -> str:
    """The default key store beside a main database: the same server, database ``<name>_keys``."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/") or "postgres"
    return urlunsplit(parts._replace(path=f"/{name}_keys"))


class Database:
    """One asyncpg pool and a repository per concern, and a pool to the key store (a database of its
    own, see ``storage/keys.py``). Every tenant query takes an organisation id."""

    def __init__(self, pool: Any, keystore_pool: Any, *, dsn: str | None = None) -> None:
        self.pool = pool
        #: The main database's address, for a connection of one's own (``server.directory`` listens).
        self.dsn = dsn
        self.keystore_pool = keystore_pool
        self.accounts = Accounts(pool)
        self.buttons = Buttons(pool)
        self.calls = CallStore(pool)
        self.call_search = CallSearch(pool)
        self.audit = AuditLog(pool)
        self.teams = Teams(pool)
        self.callbacks = Callbacks(pool)
        self.call_links = CallLinks(pool)
        self.tokens = Tokens(pool)
        self.webhooks = Webhooks(pool)
        self.retention = Retention(pool)

    @classmethod
    async def connect(
        cls, dsn: str, *, keystore_dsn: str | None = None, min_size: int = 1, max_size: int = 10
    ) -> Database:
        """Connect to the main database and the key store (``keystore_dsn``; by default database
        ``<name>_keys`` on the same server, created when missing)."""
        pool = await _main_pool(dsn, min_size, max_size)
        try:
            keystore = await _keystore_pool(dsn, keystore_dsn or keystore_dsn_for(dsn), create=keystore_dsn is None)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, keystore, dsn=dsn)

    async def migrate(self) -> int:
        async with self.keystore_pool.acquire() as conn:
            await migrate(conn, load_migrations("keystore_schema"))
        async with self.pool.acquire() as conn:
            applied = len(await migrate(conn))
        await adopt_legacy_keys(self.keystore_pool, self.pool)
        return applied

    async def pending_migrations(self) -> int:
        async with self.keystore_pool.acquire() as conn:
            keystore = len(await pending(conn, load_migrations("keystore_schema")))
        async with self.pool.acquire() as conn:
            return keystore + len(await pending(conn))

    async def close(self) -> None:
        await self.pool.close()
        await self.keystore_pool.close()


async def _main_pool(dsn: str, min_size: int, max_size: int) -> Any:
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        # Statements are few and fixed; a server-side cache per connection is worth it.
        statement_cache_size=256,
        server_settings={
            # A cached generic plan cannot use a LIKE prefix's index range (a visitor-name
            # search) and costs a keyset page's LIMIT as 10% of the table; planning each
            # execution costs ~0.2 ms. And JIT only slows these short queries down.
            "plan_cache_mode": "force_custom_plan",
            "jit": "off",
        },
    )


async def _keystore_pool(main_dsn: str, dsn: str, *, create: bool) -> Any:
    try:
        return await asyncpg.create_pool(dsn, min_size=1, max_size=4, command_timeout=30)
    except asyncpg.InvalidCatalogNameError:
        if not create:
            raise
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(main_dsn)
    try:
        await conn.execute('CREATE DATABASE "{}"'.format(name.replace('"', '""')))
    except asyncpg.DuplicateDatabaseError:
        pass  # another process made it meanwhile
    except asyncpg.InsufficientPrivilegeError:
        raise KeystoreError(
            f"the key store database {name!r} does not exist and this role may not create it: create it, "
            "or set CALLBUTTON_KEYSTORE_URL to a database of its own"
        ) from None
    finally:
        await conn.close()
    log.warning(KEYSTORE_CREATED, database=name, message="created the key store database beside the main one")
    return await asyncpg.create_pool(dsn, min_size=1, max_size=4, command_timeout=30)
