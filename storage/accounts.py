"""Organisations, users and sessions.

Passwords arrive here already hashed (argon2id, by ``server.auth``); session tokens arrive as their
SHA-256 digest: neither a password nor a usable token is ever stored.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg


class DuplicateEmail(Exception):
    """A user with this email already exists (emails name one user across organisations)."""


@dataclass(frozen=True)
class Organisation:
    id: uuid.UUID
    name: str


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    organisation_id: uuid.UUID
    email: str
    display_name: str
    role: str
    password_hash: str
    disabled: bool
    agent_code: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class Session:
    user: User
    created_at: datetime.datetime
    last_seen_at: datetime.datetime
    expires_at: datetime.datetime
    #: Set when the caller authenticated with an API token rather than a login.
    token_id: uuid.UUID | None = None


_USER_COLUMNS = (
    "u.id, u.organisation_id, u.email, u.display_name, u.role, u.password_hash, u.disabled_at, u.agent_code, u.phone"
)
#: What an admin may change on a user (the password has its own method).
USER_FIELDS = ("email", "display_name", "role", "agent_code", "phone")


def _user(row: Any) -> User:
    return User(
        id=row["id"],
        organisation_id=row["organisation_id"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        password_hash=row["password_hash"],
        disabled=row["disabled_at"] is not None,
        agent_code=row["agent_code"],
        phone=row["phone"],
    )


class Accounts:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def create_organisation(self, name: str) -> Organisation:
        row = await self._pool.fetchrow("INSERT INTO organisations (name) VALUES ($1) RETURNING id, name", name)
        return Organisation(id=row["id"], name=row["name"])

    async def organisation(self, organisation_id: uuid.UUID) -> Organisation | None:
        row = await self._pool.fetchrow("SELECT id, name FROM organisations WHERE id = $1", organisation_id)
        return None if row is None else Organisation(id=row["id"], name=row["name"])

    async def create_user(
        self,
        organisation_id: uuid.UUID,
        *,
        email: str,
        display_name: str,
        role: str,
        password_hash: str,
        agent_code: str | None = None,
        phone: str | None = None,
    ) -> User:
        try:
            row = await self._pool.fetchrow(
                f"""
                INSERT INTO users AS u (organisation_id, email, display_name, role, password_hash, agent_code, phone)
                VALUES ($1, $2, $3, $4, $5, $6, $7)
                RETURNING {_USER_COLUMNS}
                """,
                organisation_id,
                email.strip().lower(),
                display_name,
                role,
                password_hash,
                agent_code,
                phone,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateEmail(email) from None
        return _user(row)

    async def user_by_email(self, email: str) -> User | None:
        row = await self._pool.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.email = $1", email.strip().lower()
        )
        return None if row is None else _user(row)

    async def user(self, organisation_id: uuid.UUID, user_id: uuid.UUID) -> User | None:
        row = await self._pool.fetchrow(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.organisation_id = $1 AND u.id = $2",
            organisation_id,
            user_id,
        )
        return None if row is None else _user(row)

    async def users(self, organisation_id: uuid.UUID) -> list[User]:
        rows = await self._pool.fetch(
            f"SELECT {_USER_COLUMNS} FROM users u WHERE u.organisation_id = $1 ORDER BY u.display_name, u.id",
            organisation_id,
        )
        return [_user(r) for r in rows]

    async def update_user(self, organisation_id: uuid.UUID, user_id: uuid.UUID, changes: dict[str, Any]) -> User | None:
        """Change some of ``USER_FIELDS``; None when the organisation has no such user."""
        unknown = set(changes) - set(USER_FIELDS)
        if unknown:
            raise TypeError(f"unknown user field {sorted(unknown)[0]}")
        if "email" in changes:
            changes = {**changes, "email": str(changes["email"]).strip().lower()}
        names = list(changes)
        if not names:
            return await self.user(organisation_id, user_id)
        assignments = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(names))
        try:
            row = await self._pool.fetchrow(
                f"UPDATE users AS u SET {assignments} WHERE u.organisation_id = $1 AND u.id = $2 "
                f"RETURNING {_USER_COLUMNS}",
                organisation_id,
                user_id,
                *(changes[n] for n in names),
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateEmail(str(changes.get("email"))) from None
        return None if row is None else _user(row)

    async def set_disabled(self, organisation_id: uuid.UUID, user_id: uuid.UUID, disabled: bool) -> User | None:
        """Disable (ending every session of the user) or enable a user."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                UPDATE users AS u SET disabled_at = CASE WHEN $3 THEN COALESCE(disabled_at, now()) END
                WHERE u.organisation_id = $1 AND u.id = $2 RETURNING {_USER_COLUMNS}
                """,
                organisation_id,
                user_id,
                disabled,
            )
            if row is not None and disabled:
                await conn.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
        return None if row is None else _user(row)

    async def delete_user(self, organisation_id: uuid.UUID, user_id: uuid.UUID) -> bool:
        status = await self._pool.execute(
            "DELETE FROM users WHERE organisation_id = $1 AND id = $2", organisation_id, user_id
        )
        return bool(status == "DELETE 1")

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        await self._pool.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)

    async def create_session(self, token_hash: bytes, user: User, expires_at: datetime.datetime) -> None:
        await self._pool.execute(
            """
            INSERT INTO sessions (token_hash, user_id, organisation_id, expires_at)
            VALUES ($1, $2, $3, $4)
            """,
            token_hash,
            user.id,
            user.organisation_id,
            expires_at,
        )

    async def session(self, token_hash: bytes, idle_timeout: datetime.timedelta) -> Session | None:
        """The live session for ``token_hash``, its idle clock restarted; None if absent or expired.

        Expired sessions found here are deleted. A disabled user has no live session.
        """
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"""
                SELECT {_USER_COLUMNS}, s.created_at, s.last_seen_at, s.expires_at,
                       (s.expires_at <= now() OR s.last_seen_at + $2 <= now()) AS expired
                FROM sessions s JOIN users u ON u.id = s.user_id
                WHERE s.token_hash = $1
                """,
                token_hash,
                idle_timeout,
            )
            if row is None:
                return None
            if row["expired"] or row["disabled_at"] is not None:
                await conn.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)
                return None
            # Restart the idle clock, at most once a minute per session to spare writes.
            last_seen = await conn.fetchval(
                """
                UPDATE sessions SET last_seen_at = now()
                WHERE token_hash = $1 AND last_seen_at < now() - interval '1 minute'
                RETURNING last_seen_at
                """,
                token_hash,
            )
            return Session(
                user=_user(row),
                created_at=row["created_at"],
                last_seen_at=last_seen or row["last_seen_at"],
                expires_at=row["expires_at"],
            )

    async def delete_session(self, token_hash: bytes) -> None:
        await self._pool.execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)

    async def delete_user_sessions(self, user_id: uuid.UUID) -> None:
        await self._pool.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
