"""The connection pool and the repositories that share it."""

from __future__ import annotations

from typing import Any

import asyncpg

from storage.accounts import Accounts
from storage.audit import AuditLog
from storage.buttons import Buttons
from storage.call_links import CallLinks
from storage.callbacks import Callbacks
from storage.calls import CallSearch, CallStore
from storage.migrations import migrate, pending
from storage.teams import Teams
from storage.tokens import Tokens
from storage.webhooks import Webhooks


class Database:
    """One asyncpg pool and a repository per concern. Every tenant query takes an organisation id."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
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

    @classmethod
    async def connect(cls, dsn: str, *, min_size: int = 1, max_size: int = 10) -> Database:
        pool = await asyncpg.create_pool(
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
        return cls(pool)

    async def migrate(self) -> int:
        async with self.pool.acquire() as conn:
            return len(await migrate(conn))

    async def pending_migrations(self) -> int:
        async with self.pool.acquire() as conn:
            return len(await pending(conn))

    async def close(self) -> None:
        await self.pool.close()
