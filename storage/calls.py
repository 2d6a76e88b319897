"""Calls and their append-only event log.

A call's row holds its current state and the timestamp of each phase; ``call_events`` holds every
transition and every agent-level event (rung, declined, ring stopped), so wait time, ring time, talk
time and the funnel are queries over stored facts.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from storage import webhooks

_CALL_COLUMNS = (
    "id, organisation_id, button_id, agent_id, state, end_reason, outcome, page_url, created_at, queued_at, "
    "answered_at, ended_at, direction, visitor_name, visitor_email, visitor_phone, rating, rating_comment, notes, "
    "restricted"
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
    #: a data subject's restriction covers this call: kept, but out of processing (docs/privacy.md)
    restricted: bool = False


@dataclass(frozen=True)
class CallEvent:
    at: datetime.datetime
    kind: str
    from_state: str | None
    to_state: str | None
    agent_id: uuid.UUID | None
    reason: str | None


def restricted_subject(organisation: str, email: str, phone: str) -> str:
    """SQL: whether an active restriction covers this email or phone (SQL expressions)."""
    return f"""EXISTS (SELECT 1 FROM subject_restrictions s WHERE s.organisation_id = {organisation}
        AND s.lifted_at IS NULL
        AND ((s.subject_email IS NOT NULL AND s.subject_email = {email})
             OR (s.subject_phone IS NOT NULL AND s.subject_phone = regexp_replace({phone}, '[^0-9]', '', 'g'))))"""


@dataclass(frozen=True)
class AgentEvent:
    """An agent-level event of a call (``agent_rung``, ``agent_declined``, ``agent_ring_stopped``),
    with the id that makes its write idempotent."""

    kind: str
    agent_id: uuid.UUID
    at: datetime.datetime
    write_id: uuid.UUID
    reason: str | None = None


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
        node: str | None = None,
    ) -> None:
        visitor = visitor or {}
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                INSERT INTO calls (id, organisation_id, button_id, state, page_url, created_at, direction,
                                   visitor_name, visitor_email, visitor_phone, restricted, node)
                VALUES ($1, $2, $3, 'created', $4, $5, $6, $7, $8, $9, {restricted_subject("$2", "$8", "$9")}, $10)
                ON CONFLICT (id) DO NOTHING
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
                node,
            )
            if row is None:
                return  # written already, by a try whose commit outlived its connection
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
        write_id: uuid.UUID,
        agent_id: uuid.UUID | None = None,
        reason: str | None = None,
    ) -> None:
        """Move the call from ``from_state`` to ``to_state``; nothing when the event with
        ``write_id`` is stored already (a retried write)."""
        column = _STATE_COLUMN[to_state]
        async with self._pool.acquire() as conn, conn.transaction():
            event_id = await conn.fetchval(
                """
                INSERT INTO call_events
                    (call_id, organisation_id, at, kind, from_state, to_state, agent_id, reason, write_id)
                VALUES ($1, $2, $3, $4, $5, $4, $6, $7, $8)
                ON CONFLICT (write_id) DO NOTHING
                RETURNING id
                """,
                call_id,
                organisation_id,
                at,
                to_state,
                from_state,
                agent_id,
                reason,
                write_id,
            )
            if event_id is None:
                return
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
            if to_state in ("answered", "ended"):
                await webhooks.emit(conn, organisation_id, f"call.{to_state}", call_id, webhooks.call_data(row))

    async def agent_events(
        self, *, call_id: uuid.UUID, organisation_id: uuid.UUID, events: Sequence[AgentEvent]
    ) -> None:
        """Store a call's agent-level events in one statement, in their order; the ones stored
        already (a retried write, by ``write_id``) are skipped."""
        await self._pool.execute(
            """
            INSERT INTO call_events (call_id, organisation_id, at, kind, agent_id, reason, write_id)
            SELECT $1, $2, e.at, e.kind, u.id, e.reason, e.write_id
            FROM unnest($3::timestamptz[], $4::text[], $5::uuid[], $6::text[], $7::uuid[])
                WITH ORDINALITY AS e(at, kind, agent_id, reason, write_id, n)
            -- An agent deleted meanwhile is stored as no one (as its other events become),
            -- rather than refusing the step's every event.
            LEFT JOIN users u ON u.id = e.agent_id
            ORDER BY e.n
            ON CONFLICT (write_id) DO NOTHING
            """,
            call_id,
            organisation_id,
            [e.at for e in events],
            [e.kind for e in events],
            [e.agent_id for e in events],
            [e.reason for e in events],
            [e.write_id for e in events],
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
            SELECT {_CALL_COLUMNS} FROM calls WHERE organisation_id = $1 AND agent_id = $2 AND NOT restricted
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
                WHERE organisation_id = $1 AND id <> $2 AND NOT restricted
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

    async def close_interrupted(
        self, node: str | None = None, live_nodes: Collection[str] | None = None, *, own: bool = True
    ) -> list[uuid.UUID]:
        """End, as ``failed``, every call a previous process left open (it died with them).

        Run at start, before taking calls. Alone on its database (``live_nodes`` None) a process
        closes every open call; in a cluster, those ``node`` carried in its previous life (unless not
        ``own``: a running node reaping dead ones) and those of nodes no longer live, never those a
        live node carries.
        """
        mine = node if own else None
        others = None if live_nodes is None else [n for n in live_nodes if n != mine]
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                f"""
                WITH open AS (
                    SELECT id, state FROM calls WHERE state <> 'ended'
                      AND ($1::text[] IS NULL OR calls.node IS NULL OR calls.node = $2
                           OR NOT calls.node = ANY($1::text[]))
                    FOR UPDATE
                )
                UPDATE calls c SET state = 'ended', end_reason = 'failed', ended_at = now()
                FROM open WHERE c.id = open.id
                RETURNING {", ".join("c." + name.strip() for name in _CALL_COLUMNS.split(","))},
                          open.state AS from_state
                """,
                others,
                mine,
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


@dataclass(frozen=True)
class CallFilter:
    """What the calls view narrows calls to; every field optional."""

    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    button_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    outcome: str | None = None  # answered, missed, abandoned, no_answer
    has_recording: bool | None = None
    rating: int | None = None
    #: An email (exact, any case), a phone number (its digits), or the start of a name.
    search: str | None = None


@dataclass(frozen=True)
class ListedCall:
    call: CallRecord
    has_recording: bool


@dataclass(frozen=True)
class StatsRow:
    """Figures for one group (a day, an agent, a button; ``key`` None for the whole period)."""

    key: str | None
    attempted: int
    answered: int
    missed: int
    abandoned: int
    no_answer: int
    wait_avg_ms: float | None
    wait_p90_ms: float | None
    talk_avg_ms: float | None
    talk_p90_ms: float | None

    @property
    def answer_rate(self) -> float | None:
        return None if self.attempted == 0 else self.answered / self.attempted


_PHONE_NOISE = re.compile(r"[^0-9+]")
_HAS_RECORDING = "EXISTS (SELECT 1 FROM recordings r WHERE r.call_id = c.id AND r.state <> 'deleted')"
_ALIASED = ", ".join("c." + name.strip() for name in _CALL_COLUMNS.split(","))


def _where(organisation_id: uuid.UUID, f: CallFilter) -> tuple[list[str], list[Any]]:
    """SQL conditions on ``calls c`` for ``f``, with their arguments ($1 is the organisation)."""
    args: list[Any] = [organisation_id]
    # A restricted person's calls are kept, but left out of lists, exports and statistics.
    conditions = ["c.organisation_id = $1", "NOT c.restricted"]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if f.since is not None:
        conditions.append(f"c.created_at >= {arg(f.since)}")
    if f.until is not None:
        conditions.append(f"c.created_at < {arg(f.until)}")
    if f.button_id is not None:
        conditions.append(f"c.button_id = {arg(f.button_id)}")
    if f.agent_id is not None:
        conditions.append(f"c.agent_id = {arg(f.agent_id)}")
    if f.outcome is not None:
        conditions.append(f"c.outcome = {arg(f.outcome)}")
    if f.has_recording is not None:
        conditions.append(_HAS_RECORDING if f.has_recording else f"NOT {_HAS_RECORDING}")
    if f.rating is not None:
        conditions.append(f"c.rating = {arg(f.rating)}")
    if f.search:
        text = f.search.strip()
        digits = _PHONE_NOISE.sub("", text)
        if "@" in text:
            conditions.append(f"lower(c.visitor_email) = {arg(text.lower())} AND c.visitor_email IS NOT NULL")
        elif len(digits) >= 3 and len(digits) >= len(text.replace(" ", "")) - 4:
            conditions.append(
                f"regexp_replace(c.visitor_phone, '[^0-9+]', '', 'g') = {arg(digits)} AND c.visitor_phone IS NOT NULL"
            )
        else:
            pattern = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            conditions.append(f"lower(c.visitor_name) LIKE {arg(pattern)} AND c.visitor_name IS NOT NULL")
    return conditions, args


class CallSearch:
    """The admin's calls view and statistics (read-only queries over ``calls``)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def page(
        self,
        organisation_id: uuid.UUID,
        filters: CallFilter,
        *,
        limit: int = 50,
        after: tuple[datetime.datetime, uuid.UUID] | None = None,
    ) -> list[ListedCall]:
        """Calls newest first, ``limit`` of them after the (created_at, id) of the previous page's
        last call: a keyset page, as fast on the millionth call as on the first."""
        conditions, args = _where(organisation_id, filters)
        if after is not None:
            args.extend(after)
            conditions.append(f"(c.created_at, c.id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self._pool.fetch(
            f"""
            SELECT {_ALIASED}, {_HAS_RECORDING} AS has_recording
            FROM calls c WHERE {" AND ".join(conditions)}
            ORDER BY c.created_at DESC, c.id DESC LIMIT ${len(args)}
            """,
            *args,
        )
        return [
            ListedCall(call=CallRecord(**{k: v for k, v in dict(r).items() if k != "has_recording"}),
                       has_recording=r["has_recording"])
            for r in rows
        ]  # fmt: skip

    async def offset_page(self, organisation_id: uuid.UUID, filters: CallFilter, *, limit: int, offset: int) -> int:
        """The same page by OFFSET, for the benchmark's comparison only; returns the row count."""
        conditions, args = _where(organisation_id, filters)
        args.extend([limit, offset])
        rows = await self._pool.fetch(
            f"""
            SELECT {_ALIASED}, {_HAS_RECORDING} AS has_recording
            FROM calls c WHERE {" AND ".join(conditions)}
            ORDER BY c.created_at DESC, c.id DESC LIMIT ${len(args) - 1} OFFSET ${len(args)}
            """,
            *args,
        )
        return len(rows)

    async def stats(
        self,
        organisation_id: uuid.UUID,
        filters: CallFilter,
        *,
        group: str,
        time_zone: str = "UTC",
    ) -> list[StatsRow]:
        """Ended calls of the period by ``group``: ``total``, ``day`` (in ``time_zone``), ``button``
        or ``agent``. Wait is from the call's start to its answer (answered calls); talk from the
        answer to the end. For agents, ``attempted`` counts the calls that rang the agent and
        ``missed`` those it did not answer; abandoned and no-answer are per call, not per agent."""
        conditions, args = _where(organisation_id, filters)
        conditions.append("c.state = 'ended'")
        figures = """
            count(*) FILTER (WHERE c.outcome = 'answered') AS answered,
            count(*) FILTER (WHERE c.outcome = 'abandoned') AS abandoned,
            count(*) FILTER (WHERE c.outcome = 'no_answer') AS no_answer,
            count(*) FILTER (WHERE c.outcome = 'missed') AS missed,
            avg(extract(epoch FROM c.answered_at - c.created_at) * 1000)::float8 AS wait_avg_ms,
            percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM c.answered_at - c.created_at) * 1000)
                FILTER (WHERE c.answered_at IS NOT NULL) AS wait_p90_ms,
            avg(extract(epoch FROM c.ended_at - c.answered_at) * 1000)::float8 AS talk_avg_ms,
            percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM c.ended_at - c.answered_at) * 1000)
                FILTER (WHERE c.answered_at IS NOT NULL) AS talk_p90_ms
        """
        where = " AND ".join(conditions)
        if group == "agent":
            return await self._agent_stats(where, args)
        if group == "day":
            args.append(time_zone)
            key = f"to_char(c.created_at AT TIME ZONE ${len(args)}, 'YYYY-MM-DD')"
        elif group == "button":
            key = "c.button_id::text"
        elif group == "total":
            key = "NULL::text"
        else:
            raise ValueError(f"unknown group {group!r}")
        rows = await self._pool.fetch(
            f"""
            SELECT {key} AS key, count(*) AS attempted, {figures}
            FROM calls c WHERE {where} GROUP BY 1 ORDER BY 1
            """,
            *args,
        )
        return [StatsRow(**dict(r)) for r in rows]

    async def _agent_stats(self, where: str, args: list[Any]) -> list[StatsRow]:
        rows = await self._pool.fetch(
            f"""
            WITH period AS (SELECT c.* FROM calls c WHERE {where}),
            offered AS (
                SELECT DISTINCT e.agent_id, e.call_id FROM call_events e JOIN period p ON p.id = e.call_id
                WHERE e.kind = 'agent_rung' AND e.agent_id IS NOT NULL
                UNION
                SELECT p.agent_id, p.id FROM period p WHERE p.agent_id IS NOT NULL
            )
            SELECT o.agent_id::text AS key,
                   count(*) AS attempted,
                   count(*) FILTER (WHERE p.agent_id = o.agent_id) AS answered,
                   count(*) FILTER (WHERE p.agent_id IS DISTINCT FROM o.agent_id) AS missed,
                   0 AS abandoned, 0 AS no_answer,
                   (avg(extract(epoch FROM p.answered_at - p.created_at) * 1000)
                       FILTER (WHERE p.agent_id = o.agent_id))::float8 AS wait_avg_ms,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM p.answered_at - p.created_at) * 1000)
                       FILTER (WHERE p.agent_id = o.agent_id) AS wait_p90_ms,
                   (avg(extract(epoch FROM p.ended_at - p.answered_at) * 1000)
                       FILTER (WHERE p.agent_id = o.agent_id))::float8 AS talk_avg_ms,
                   percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM p.ended_at - p.answered_at) * 1000)
                       FILTER (WHERE p.agent_id = o.agent_id) AS talk_p90_ms
            FROM offered o JOIN period p ON p.id = o.call_id
            GROUP BY o.agent_id ORDER BY 1
            """,
            *args,
        )
        return [StatsRow(**dict(r)) for r in rows]
