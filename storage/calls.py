"""Calls and their append-only event log.

A call's row holds its current state and the timestamp of each phase; ``call_events`` holds every
transition and every agent-level event (rung, declined, ring stopped), so wait time, ring time, talk
time and the funnel are queries over stored facts.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from storage import webhooks

_CALL_COLUMNS = (
    "id, organisation_id, button_id, agent_id, state, end_reason, outcome, page_url, created_at, queued_at, "
    "answered_at, ended_at, direction, visitor_name, visitor_email, visitor_phone, rating, rating_comment, notes"
)

# The column set on entering each state.
_STATE_COLUMN = {"queued": "queued_at", "answered": "answered_at", "ended": "ended_at"}


@dataclass(frozen=True)
class CallRecord:
    id: uuid.UUID
    organisation_id: uuid.UUID
    button_id: uuid.UUID | None
    agent_id: uuid.UUID | None
    state: str
    end_reason: str | None
    outcome: str | None
    page_url: str | None
    created_at: datetime.datetime
    queued_at: datetime.datetime | None
    answered_at: datetime.datetime | None
    ended_at: datetime.datetime | None
    direction: str = "inbound"
    visitor_name: str | None = None
    visitor_email: str | None = None
    visitor_phone: str | None = None
    rating: int | None = None
    rating_comment: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class CallEvent:
    at: datetime.datetime
    kind: str
    from_state: str | None
    to_state: str | None
    agent_id: uuid.UUID | None
    reason: str | None


class CallStore:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def create(
        self,
        *,
        call_id: uuid.UUID,
        organisation_id: uuid.UUID,
        button_id: uuid.UUID | None,
        page_url: str | None,
        at: datetime.datetime,
        direction: str = "inbound",
        visitor: dict[str, str | None] | None = None,
    ) -> None:
        visitor = visitor or {}
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                INSERT INTO calls (id, organisation_id, button_id, state, page_url, created_at, direction,
                                   visitor_name, visitor_email, visitor_phone)
                VALUES ($1, $2, $3, 'created', $4, $5, $6, $7, $8, $9)
                RETURNING {_CALL_COLUMNS}
                """,
                call_id,
                organisation_id,
                button_id,
                page_url,
                at,
                direction,
                visitor.get("name"),
                visitor.get("email"),
                visitor.get("phone"),
            )
            await conn.execute(
                """
                INSERT INTO call_events (call_id, organisation_id, at, kind, to_state)
                VALUES ($1, $2, $3, 'created', 'created')
                """,
                call_id,
                organisation_id,
                at,
            )
            await webhooks.emit(conn, organisation_id, "call.created", call_id, webhooks.call_data(row))

    async def transition(
        self,
        *,
        call_id: uuid.UUID,
        organisation_id: uuid.UUID,
        from_state: str,
        to_state: str,
        at: datetime.datetime,
        agent_id: uuid.UUID | None = None,
        reason: str | None = None,
    ) -> None:
        column = _STATE_COLUMN[to_state]
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                UPDATE calls
                SET state = $4, {column} = $5,
                    agent_id = COALESCE($6, agent_id),
                    end_reason = COALESCE($7, end_reason)
                WHERE id = $1 AND organisation_id = $2 AND state = $3
                RETURNING {_CALL_COLUMNS}
                """,
                call_id,
                organisation_id,
                from_state,
                to_state,
                at,
                agent_id,
                reason,
            )
            if row is None:
                raise LookupError(f"call {call_id} is not in state {from_state}")
            await conn.execute(
                """
                INSERT INTO call_events
                    (call_id, organisation_id, at, kind, from_state, to_state, agent_id, reason)
                VALUES ($1, $2, $3, $4, $5, $4, $6, $7)
                """,
                call_id,
                organisation_id,
                at,
                to_state,
                from_state,
                agent_id,
                reason,
            )
            if to_state in ("answered", "ended"):
                await webhooks.emit(conn, organisation_id, f"call.{to_state}", call_id, webhooks.call_data(row))

    async def agent_event(
        self,
        *,
        call_id: uuid.UUID,
        organisation_id: uuid.UUID,
        kind: str,
        agent_id: uuid.UUID,
        at: datetime.datetime,
        reason: str | None = None,
    ) -> None:
        await self._pool.execute(
            """
            INSERT INTO call_events (call_id, organisation_id, at, kind, agent_id, reason)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            call_id,
            organisation_id,
            at,
            kind,
            agent_id,
            reason,
        )

    async def get(self, organisation_id: uuid.UUID, call_id: uuid.UUID) -> CallRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_CALL_COLUMNS} FROM calls WHERE organisation_id = $1 AND id = $2", organisation_id, call_id
        )
        return None if row is None else CallRecord(**dict(row))

    async def of_agent(self, organisation_id: uuid.UUID, agent_id: uuid.UUID, limit: int = 50) -> list[CallRecord]:
        """An agent's own calls, newest first."""
        rows = await self._pool.fetch(
            f"""
            SELECT {_CALL_COLUMNS} FROM calls WHERE organisation_id = $1 AND agent_id = $2
            ORDER BY created_at DESC, id DESC LIMIT $3
            """,
            organisation_id,
            agent_id,
            limit,
        )
        return [CallRecord(**dict(r)) for r in rows]

    async def earlier_calls(
        self, organisation_id: uuid.UUID, call_id: uuid.UUID, email: str | None, phone: str | None
    ) -> int:
        """How many earlier calls came from the same email or phone (what an agent sees on a ring)."""
        if not email and not phone:
            return 0
        return int(
            await self._pool.fetchval(
                """
                SELECT count(*) FROM calls
                WHERE organisation_id = $1 AND id <> $2
                  AND ((visitor_email IS NOT NULL AND visitor_email = $3)
                       OR (visitor_phone IS NOT NULL AND visitor_phone = $4))
                """,
                organisation_id,
                call_id,
                email,
                phone,
            )
        )

    async def set_rating_token(self, *, call_id: uuid.UUID, organisation_id: uuid.UUID, token_hash: bytes) -> None:
        await self._pool.execute(
            "UPDATE calls SET rating_token_hash = $3 WHERE organisation_id = $1 AND id = $2",
            organisation_id,
            call_id,
            token_hash,
        )

    async def rate(
        self, call_id: uuid.UUID, token_hash: bytes, rating: int, comment: str | None, *, button_id: uuid.UUID
    ) -> bool:
        """Store the visitor's rating, once, if ``token_hash`` is the call's rating token."""
        status = await self._pool.execute(
            """
            UPDATE calls SET rating = $3, rating_comment = $4, rating_token_hash = NULL
            WHERE id = $1 AND rating_token_hash = $2 AND answered_at IS NOT NULL AND button_id = $5
            """,
            call_id,
            token_hash,
            rating,
            comment,
            button_id,
        )
        return bool(status == "UPDATE 1")

    async def set_notes(
        self, organisation_id: uuid.UUID, call_id: uuid.UUID, notes: str, *, agent_id: uuid.UUID | None
    ) -> bool:
        """Write the call's notes; with ``agent_id``, only if that agent answered the call."""
        status = await self._pool.execute(
            """
            UPDATE calls SET notes = $3
            WHERE organisation_id = $1 AND id = $2 AND ($4::uuid IS NULL OR agent_id = $4)
            """,
            organisation_id,
            call_id,
            notes,
            agent_id,
        )
        return bool(status == "UPDATE 1")

    async def events(self, organisation_id: uuid.UUID, call_id: uuid.UUID) -> list[CallEvent]:
        rows = await self._pool.fetch(
            """
            SELECT at, kind, from_state, to_state, agent_id, reason
            FROM call_events WHERE organisation_id = $1 AND call_id = $2 ORDER BY id
            """,
            organisation_id,
            call_id,
        )
        return [CallEvent(**dict(r)) for r in rows]

    async def close_interrupted(self) -> list[uuid.UUID]:
        """End, as ``failed``, every call a previous process left open (it died with them).

        Run at start, before taking calls. One server process per database is assumed here; the
        scale-out work scopes this to the calls of the process that died.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""
                WITH open AS (
                    SELECT id, state FROM calls WHERE state <> 'ended' FOR UPDATE
                )
                UPDATE calls c SET state = 'ended', end_reason = 'failed', ended_at = now()
                FROM open WHERE c.id = open.id
                RETURNING {", ".join("c." + name.strip() for name in _CALL_COLUMNS.split(","))},
                          open.state AS from_state
                """
            )
            for row in rows:
                await conn.execute(
                    """
                    INSERT INTO call_events (call_id, organisation_id, at, kind, from_state, to_state, reason)
                    VALUES ($1, $2, $3, 'ended', $4, 'ended', 'failed')
                    """,
                    row["id"],
                    row["organisation_id"],
                    row["ended_at"],
                    row["from_state"],
                )
                await webhooks.emit(conn, row["organisation_id"], "call.ended", row["id"], webhooks.call_data(row))
        return [r["id"] for r in rows]
