"""Call links: an agent's single-use, expiring invitation for a customer to call that agent.

The link carries a random token; the database keeps only its SHA-256. A link is used by the first
call made with it, atomically, and never again.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CallLink:
    organisation_id: uuid.UUID
    agent_id: uuid.UUID
    callback_id: uuid.UUID | None
    button_id: uuid.UUID | None
    created_at: datetime.datetime
    expires_at: datetime.datetime
    used_at: datetime.datetime | None
    call_id: uuid.UUID | None

    def usable(self, now: datetime.datetime) -> bool:
        return self.used_at is None and self.expires_at > now


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_COLUMNS = "organisation_id, agent_id, callback_id, button_id, created_at, expires_at, used_at, call_id"


class CallLinks:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def create(
        self,
        organisation_id: uuid.UUID,
        *,
        agent_id: uuid.UUID,
        button_id: uuid.UUID | None,
        callback_id: uuid.UUID | None,
        lifetime: datetime.timedelta,
    ) -> tuple[str, CallLink]:
        token = "cl_" + secrets.token_urlsafe(24)
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO call_links (token_hash, organisation_id, agent_id, button_id, callback_id, expires_at)
            VALUES ($1, $2, $3,
                    (SELECT id FROM buttons WHERE organisation_id = $2 AND id = $4),
                    (SELECT id FROM callback_requests WHERE organisation_id = $2 AND id = $5),
                    now() + $6)
            RETURNING {_COLUMNS}
            """,
            digest(token),
            organisation_id,
            agent_id,
            button_id,
            callback_id,
            lifetime,
        )
        return token, CallLink(**dict(row))

    async def find(self, token: str) -> CallLink | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM call_links WHERE token_hash = $1", digest(token))
        return None if row is None else CallLink(**dict(row))

    async def use(self, token: str) -> CallLink | None:
        """Mark the link used, atomically; None when it was used already or has expired."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE call_links SET used_at = now()
            WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
            RETURNING {_COLUMNS}
            """,
            digest(token),
        )
        return None if row is None else CallLink(**dict(row))

    async def attach(self, token: str, call_id: uuid.UUID) -> None:
        """Record the call made through a used link (once the call's row exists)."""
        await self._pool.execute(
            "UPDATE call_links SET call_id = $2 WHERE token_hash = $1 AND used_at IS NOT NULL", digest(token), call_id
        )

    async def of_agent(self, organisation_id: uuid.UUID, agent_id: uuid.UUID, limit: int = 20) -> list[CallLink]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM call_links WHERE organisation_id = $1 AND agent_id = $2
            ORDER BY created_at DESC LIMIT $3
            """,
            organisation_id,
            agent_id,
            limit,
        )
        return [CallLink(**dict(r)) for r in rows]
