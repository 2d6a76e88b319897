"""The audit log: who did what to which object, when and from where. Append-only (a trigger refuses
updates and deletes), and holding no personal data beyond the actor's id and address."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuditEntry:
    at: datetime.datetime
    actor_id: uuid.UUID | None
    action: str
    object_type: str
    object_id: uuid.UUID | None
    address: str | None
    user_agent: str | None


class AuditLog:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def add(
        self,
        *,
        organisation_id: uuid.UUID,
        action: str,
        object_type: str,
        object_id: uuid.UUID | None,
        actor_id: uuid.UUID | None = None,
        address: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO audit_log (organisation_id, actor_id, action, object_type, object_id, address, user_agent)
            VALUES ($1, $2, $3, $4, $5, $6::inet, $7)
            """,
            organisation_id,
            actor_id,
            action,
            object_type,
            object_id,
            address or None,
            (user_agent or "")[:512] or None,
        )

    async def search(self, organisation_id: uuid.UUID, **filters: Any) -> list[AuditRow]:
        return await search(self._pool, organisation_id, **filters)

    async def for_object(self, organisation_id: uuid.UUID, object_id: uuid.UUID) -> list[AuditEntry]:
        rows = await self._pool.fetch(
            """
            SELECT at, actor_id, action, object_type, object_id, host(address) AS address, user_agent
            FROM audit_log WHERE organisation_id = $1 AND object_id = $2 ORDER BY id
            """,
            organisation_id,
            object_id,
        )
        return [AuditEntry(**dict(r)) for r in rows]


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime.datetime
    actor_id: uuid.UUID | None
    action: str
    object_type: str
    object_id: uuid.UUID | None
    address: str | None
    user_agent: str | None


async def search(
    pool: Any,
    organisation_id: uuid.UUID,
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    action: str | None = None,
    actor_id: uuid.UUID | None = None,
    object_id: uuid.UUID | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[AuditRow]:
    """The organisation's audit entries, newest first, filtered; ``action`` matches a whole action
    (``recording.play``) or a family (``recording``); ``before`` is the last id of the previous page."""
    args: list[Any] = [organisation_id]
    conditions = ["organisation_id = $1"]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if since is not None:
        conditions.append(f"at >= {arg(since)}")
    if until is not None:
        conditions.append(f"at < {arg(until)}")
    if action:
        conditions.append(f"(action = {arg(action)} OR action LIKE {arg(action.replace('%', '') + '.%')})")
    if actor_id is not None:
        conditions.append(f"actor_id = {arg(actor_id)}")
    if object_id is not None:
        conditions.append(f"object_id = {arg(object_id)}")
    if before is not None:
        conditions.append(f"id < {arg(before)}")
    rows = await pool.fetch(
        f"""
        SELECT id, at, actor_id, action, object_type, object_id, host(address) AS address, user_agent
        FROM audit_log WHERE {" AND ".join(conditions)} ORDER BY id DESC LIMIT {arg(limit)}
        """,
        *args,
    )
    return [AuditRow(**dict(r)) for r in rows]
