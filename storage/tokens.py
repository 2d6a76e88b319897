"""API tokens: how integrations authenticate to an organisation's admin API.

A token is shown once, when created; only its SHA-256 is stored. Revoking is immediate.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

PREFIX = "cbt_"


@dataclass(frozen=True)
class ApiToken:
    id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
    created_by: uuid.UUID | None
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None


_COLUMNS = "id, organisation_id, name, created_by, created_at, last_used_at, revoked_at"


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def create(
        self, organisation_id: uuid.UUID, *, name: str, created_by: uuid.UUID | None
    ) -> tuple[str, ApiToken]:
        token = PREFIX + secrets.token_urlsafe(32)
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO api_tokens (organisation_id, name, token_hash, created_by) VALUES ($1, $2, $3, $4)
            RETURNING {_COLUMNS}
            """,
            organisation_id,
            name,
            digest(token),
            created_by,
        )
        return token, ApiToken(**dict(row))

    async def all(self, organisation_id: uuid.UUID) -> list[ApiToken]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE organisation_id = $1 ORDER BY created_at DESC, id",
            organisation_id,
        )
        return [ApiToken(**dict(r)) for r in rows]

    async def revoke(self, organisation_id: uuid.UUID, token_id: uuid.UUID) -> ApiToken | None:
        row = await self._pool.fetchrow(
            f"""
            UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
            WHERE organisation_id = $1 AND id = $2 RETURNING {_COLUMNS}
            """,
            organisation_id,
            token_id,
        )
        return None if row is None else ApiToken(**dict(row))

    async def lookup(self, token: str) -> ApiToken | None:
        """The live token for ``token``, its last use noted (at most once a minute); None if unknown
        or revoked."""
        if not token.startswith(PREFIX) or len(token) > 100:
            return None
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", digest(token)
        )
        if row is None:
            return None
        if row["last_used_at"] is None or row["last_used_at"] < datetime.datetime.now(
            datetime.UTC
        ) - datetime.timedelta(minutes=1):
            await self._pool.execute("UPDATE api_tokens SET last_used_at = now() WHERE id = $1", row["id"])
        return ApiToken(**dict(row))
