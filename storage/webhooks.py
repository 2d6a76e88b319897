"""Webhook endpoints and their outbox.

An event is written to ``webhook_events`` (one row per subscribed endpoint) in the same transaction
as the fact it tells of, so that no event is lost when the receiver or this server is down: the
server's delivery loop (``server/webhooks.py``) sends what is due, retries with backoff, and keeps
every attempt for the console's delivery log. Events with the same subject (a call, a recording's
call) are delivered in order, one at a time, per endpoint.
"""

from __future__ import annotations

import datetime
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

EVENTS = (
    "call.created",
    "call.answered",
    "call.ended",
    "recording.ready",
    "recording.deleted",
    "callback.requested",
    "call.rectified",
    "call.restricted",
    "call.unrestricted",
    "call.erased",
    "callback.erased",
    "clip.received",
)

#: Events telling receivers of a data subject's rights being exercised (GDPR Art. 19): sent even
#: when the subject is restricted. Every other event about a restricted subject is not sent.
SUBJECT_NOTICES = frozenset(
    {"call.rectified", "call.restricted", "call.unrestricted", "call.erased", "callback.erased"}
)


@dataclass(frozen=True)
class Endpoint:
    id: uuid.UUID
    organisation_id: uuid.UUID
    url: str
    events: tuple[str, ...]
    secret: str
    description: str | None
    enabled: bool
    created_at: datetime.datetime


@dataclass(frozen=True)
class Delivery:
    """An event due to one endpoint, with what sending it needs."""

    row: int
    event_id: uuid.UUID
    organisation_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    created_at: datetime.datetime
    attempts: int
    endpoint_id: uuid.UUID
    url: str
    secret: str


@dataclass(frozen=True)
class LoggedEvent:
    row: int
    event_id: uuid.UUID
    endpoint_id: uuid.UUID
    kind: str
    subject: uuid.UUID
    created_at: datetime.datetime
    attempts: int
    next_attempt_at: datetime.datetime
    delivered_at: datetime.datetime | None
    last_status: int | None
    last_error: str | None


_ENDPOINT_COLUMNS = "id, organisation_id, url, events, secret, description, enabled, created_at"


def _endpoint(row: Any) -> Endpoint:
    values = dict(row)
    values["events"] = tuple(values["events"])
    return Endpoint(**values)


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def emit(conn: Any, organisation_id: uuid.UUID, kind: str, subject: uuid.UUID, data: dict[str, Any]) -> None:
    """Queue event ``kind`` for every enabled endpoint of the organisation that wants it, on ``conn``
    (inside the caller's transaction: the event exists exactly when the fact does)."""
    await conn.execute(
        """
        INSERT INTO webhook_events (event_id, organisation_id, endpoint_id, kind, subject, payload)
        SELECT $1, $2, e.id, $3, $4, $5::jsonb FROM webhook_endpoints e
        WHERE e.organisation_id = $2 AND e.enabled AND $3 = ANY(e.events)
          AND ($6 OR NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = $4 AND c.restricted))
          AND ($6 OR NOT EXISTS (SELECT 1 FROM callback_requests b WHERE b.id = $4 AND b.restricted))
        """,
        uuid.uuid4(),
        organisation_id,
        kind,
        subject,
        json.dumps(data, default=str),
        kind in SUBJECT_NOTICES,
    )


async def emit_many(
    conn: Any, organisation_id: uuid.UUID, kind: str, events: list[tuple[uuid.UUID, dict[str, Any]]]
) -> None:
    """:func:`emit` for many events of one kind at once (one statement, whatever their number; none
    at all when no endpoint wants ``kind``)."""
    if not events or not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE organisation_id = $1 AND enabled AND $2 = ANY(events))",
        organisation_id,
        kind,
    ):
        return
    await conn.execute(
        """
        INSERT INTO webhook_events (event_id, organisation_id, endpoint_id, kind, subject, payload)
        SELECT x.event_id, $1, e.id, $2, x.subject, x.payload::jsonb
        FROM unnest($3::uuid[], $4::uuid[], $5::text[]) WITH ORDINALITY AS x(event_id, subject, payload, n)
        CROSS JOIN webhook_endpoints e
        WHERE e.organisation_id = $1 AND e.enabled AND $2 = ANY(e.events)
          AND ($6 OR NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = x.subject AND c.restricted))
          AND ($6 OR NOT EXISTS (SELECT 1 FROM callback_requests b WHERE b.id = x.subject AND b.restricted))
        ORDER BY x.n, e.id
        """,
        organisation_id,
        kind,
        [uuid.uuid4() for _ in events],
        [subject for subject, _ in events],
        [json.dumps(data, default=str) for _, data in events],
        kind in SUBJECT_NOTICES,
    )


def call_data(row: Any) -> dict[str, Any]:
    """A call as webhook receivers see it (``row`` has the ``calls`` columns)."""

    def ms(start: Any, end: Any) -> int | None:
        return None if start is None or end is None else round((end - start).total_seconds() * 1000)

    def at(value: Any) -> str | None:
        return None if value is None else value.isoformat()

    return {
        "call": {
            "id": str(row["id"]),
            "button_id": str(row["button_id"]) if row["button_id"] else None,
            "agent_id": str(row["agent_id"]) if row["agent_id"] else None,
            "direction": row["direction"],
            "state": row["state"],
            "outcome": row["outcome"],
            "end_reason": row["end_reason"],
            "page_url": row["page_url"],
            "visitor": {"name": row["visitor_name"], "email": row["visitor_email"], "phone": row["visitor_phone"]},
            "created_at": at(row["created_at"]),
            "answered_at": at(row["answered_at"]),
            "ended_at": at(row["ended_at"]),
            "wait_ms": ms(row["created_at"], row["answered_at"] or row["ended_at"]),
            "talk_ms": ms(row["answered_at"], row["ended_at"]),
        }
    }


class Webhooks:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    # --- endpoints ----------------------------------------------------------------------------------

    async def create(
        self,
        organisation_id: uuid.UUID,
        *,
        url: str,
        events: list[str],
        description: str | None,
        enabled: bool = True,
    ) -> Endpoint:
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO webhook_endpoints (organisation_id, url, events, secret, description, enabled)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}
            """,
            organisation_id,
            url,
            events,
            new_secret(),
            description,
            enabled,
        )
        return _endpoint(row)

    async def all(self, organisation_id: uuid.UUID) -> list[Endpoint]:
        rows = await self._pool.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE organisation_id = $1 ORDER BY created_at, id",
            organisation_id,
        )
        return [_endpoint(r) for r in rows]

    async def get(self, organisation_id: uuid.UUID, endpoint_id: uuid.UUID) -> Endpoint | None:
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE organisation_id = $1 AND id = $2",
            organisation_id,
            endpoint_id,
        )
        return None if row is None else _endpoint(row)

    async def update(
        self, organisation_id: uuid.UUID, endpoint_id: uuid.UUID, changes: dict[str, Any]
    ) -> Endpoint | None:
        allowed = {"url", "events", "description", "enabled"}
        if set(changes) - allowed:
            raise TypeError(f"unknown endpoint field {sorted(set(changes) - allowed)[0]}")
        if not changes:
            return await self.get(organisation_id, endpoint_id)
        names = list(changes)
        assignments = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(names))
        row = await self._pool.fetchrow(
            f"UPDATE webhook_endpoints SET {assignments} WHERE organisation_id = $1 AND id = $2 "
            f"RETURNING {_ENDPOINT_COLUMNS}",
            organisation_id,
            endpoint_id,
            *(changes[n] for n in names),
        )
        return None if row is None else _endpoint(row)

    async def delete(self, organisation_id: uuid.UUID, endpoint_id: uuid.UUID) -> bool:
        status = await self._pool.execute(
            "DELETE FROM webhook_endpoints WHERE organisation_id = $1 AND id = $2", organisation_id, endpoint_id
        )
        return bool(status == "DELETE 1")

    async def log(self, organisation_id: uuid.UUID, endpoint_id: uuid.UUID, limit: int = 100) -> list[LoggedEvent]:
        """The endpoint's events, newest first, with how their delivery went."""
        rows = await self._pool.fetch(
            """
            SELECT id AS row, event_id, endpoint_id, kind, subject, created_at, attempts, next_attempt_at,
                   delivered_at, last_status, last_error
            FROM webhook_events WHERE organisation_id = $1 AND endpoint_id = $2 ORDER BY id DESC LIMIT $3
            """,
            organisation_id,
            endpoint_id,
            limit,
        )
        return [LoggedEvent(**dict(r)) for r in rows]

    # --- delivery -----------------------------------------------------------------------------------

    async def claim(self, lease: datetime.timedelta, limit: int = 20) -> list[Delivery]:
        """Events due now, at most one per (endpoint, subject) and only the oldest undelivered of it
        (so a call's events arrive in order), leased for ``lease``: another worker leaves them alone
        until then, and they come due again if this one dies before recording the outcome."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """
                SELECT e.id AS row, e.event_id, e.organisation_id, e.kind, e.payload, e.created_at, e.attempts,
                       p.id AS endpoint_id, p.url, p.secret
                FROM webhook_events e JOIN webhook_endpoints p ON p.id = e.endpoint_id
                WHERE e.delivered_at IS NULL AND e.next_attempt_at <= now() AND p.enabled
                  AND NOT EXISTS (
                      SELECT 1 FROM webhook_events f
                      WHERE f.endpoint_id = e.endpoint_id AND f.subject = e.subject
                        AND f.delivered_at IS NULL AND f.id < e.id
                        AND f.next_attempt_at < 'infinity')  -- one given up on blocks nothing
                ORDER BY e.id
                LIMIT $1
                FOR UPDATE OF e SKIP LOCKED
                """,
                limit,
            )
            if rows:
                await conn.execute(
                    "UPDATE webhook_events SET next_attempt_at = now() + $2 WHERE id = ANY($1)",
                    [r["row"] for r in rows],
                    lease,
                )
        return [Delivery(**{**dict(r), "payload": _json(r["payload"])}) for r in rows]

    async def delivered(self, row: int, status: int, duration_ms: int) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                UPDATE webhook_events SET delivered_at = now(), attempts = attempts + 1, last_status = $2,
                                          last_error = NULL
                WHERE id = $1
                """,
                row,
                status,
            )
            await conn.execute(
                "INSERT INTO webhook_attempts (event_row, status, duration_ms) VALUES ($1, $2, $3)",
                row,
                status,
                duration_ms,
            )

    async def failed(
        self, row: int, status: int | None, error: str, retry_in: datetime.timedelta | None, duration_ms: int
    ) -> None:
        """Record a failed attempt; ``retry_in`` None gives up on the event (it stays in the log)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                UPDATE webhook_events
                SET attempts = attempts + 1, last_status = $2, last_error = $3,
                    next_attempt_at = CASE WHEN $4::interval IS NULL THEN 'infinity' ELSE now() + $4::interval END
                WHERE id = $1
                """,
                row,
                status,
                error[:500],
                retry_in,
            )
            await conn.execute(
                "INSERT INTO webhook_attempts (event_row, status, error, duration_ms) VALUES ($1, $2, $3, $4)",
                row,
                status,
                error[:500],
                duration_ms,
            )

    async def release(self, rows: list[int]) -> None:
        """Give back claimed events that were not delivered (this process is stopping)."""
        await self._pool.execute(
            "UPDATE webhook_events SET next_attempt_at = now() WHERE id = ANY($1) AND delivered_at IS NULL "
            "AND next_attempt_at < 'infinity'",
            rows,
        )

    async def next_due(self) -> datetime.datetime | None:
        due: datetime.datetime | None = await self._pool.fetchval(
            "SELECT min(next_attempt_at) FROM webhook_events "
            "WHERE delivered_at IS NULL AND next_attempt_at < 'infinity'"
        )
        return due


def _json(value: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(value) if isinstance(value, str) else value
    return decoded
