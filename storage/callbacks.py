"""Callback requests: visitors who could not be answered (closed, waited too long) leave their
details; agents see them in a list and mark them done."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from storage import webhooks
from storage.calls import restricted_subject

REASONS = ("closed", "max_wait", "no_agent", "visitor")


@dataclass(frozen=True)
class CallbackRequest:
    id: uuid.UUID
    organisation_id: uuid.UUID
    button_id: uuid.UUID | None
    call_id: uuid.UUID | None
    name: str | None
    email: str | None
    phone: str | None
    note: str | None
    reason: str
    state: str
    created_at: datetime.datetime
    done_at: datetime.datetime | None
    done_by: uuid.UUID | None
    #: its caller restricted processing: kept, but shown and sent nowhere (docs/privacy.md)
    restricted: bool = False


_COLUMNS = (
    "id, organisation_id, button_id, call_id, name, email, phone, note, reason, state, created_at, done_at, done_by, "
    "restricted"
)


def callback_data(callback: CallbackRequest) -> dict[str, Any]:
    return {
        "callback": {
            "id": str(callback.id),
            "button_id": str(callback.button_id) if callback.button_id else None,
            "call_id": str(callback.call_id) if callback.call_id else None,
            "name": callback.name,
            "email": callback.email,
            "phone": callback.phone,
            "note": callback.note,
            "reason": callback.reason,
            "created_at": callback.created_at.isoformat(),
        }
    }


class Callbacks:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def create(
        self,
        organisation_id: uuid.UUID,
        *,
        button_id: uuid.UUID | None,
        call_id: uuid.UUID | None,
        name: str | None,
        email: str | None,
        phone: str | None,
        note: str | None,
        reason: str,
    ) -> CallbackRequest:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                INSERT INTO callback_requests
                    (organisation_id, button_id, call_id, name, email, phone, note, reason, restricted)
                VALUES ($1, $2, (SELECT id FROM calls WHERE organisation_id = $1 AND id = $3), $4, $5, $6, $7, $8,
                        {restricted_subject("$1", "$5", "$6")})
                RETURNING {_COLUMNS}
                """,
                organisation_id,
                button_id,
                call_id,
                name,
                email.strip().lower() if email else email,  # one caller however typed, as calls store it
                phone,
                note,
                reason,
            )
            callback = CallbackRequest(**dict(row))
            if not callback.restricted:  # a restricted person's request is kept, and sent nowhere
                # After its call's events, when it has a call.
                await webhooks.emit(
                    conn,
                    organisation_id,
                    "callback.requested",
                    callback.call_id or callback.id,
                    callback_data(callback),
                )
        return callback

    async def all(
        self, organisation_id: uuid.UUID, state: str | None = None, limit: int = 200
    ) -> list[CallbackRequest]:
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM callback_requests
            WHERE organisation_id = $1 AND ($2::text IS NULL OR state = $2) AND NOT restricted
            ORDER BY created_at DESC, id DESC LIMIT $3
            """,
            organisation_id,
            state,
            limit,
        )
        return [CallbackRequest(**dict(r)) for r in rows]

    async def get(self, organisation_id: uuid.UUID, callback_id: uuid.UUID) -> CallbackRequest | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM callback_requests WHERE organisation_id = $1 AND id = $2",
            organisation_id,
            callback_id,
        )
        return None if row is None else CallbackRequest(**dict(row))

    async def mark_done(
        self, organisation_id: uuid.UUID, callback_id: uuid.UUID, user_id: uuid.UUID
    ) -> CallbackRequest | None:
        row = await self._pool.fetchrow(
            f"""
            UPDATE callback_requests
            SET state = 'done', done_at = COALESCE(done_at, now()), done_by = COALESCE(done_by, $3)
            WHERE organisation_id = $1 AND id = $2 RETURNING {_COLUMNS}
            """,
            organisation_id,
            callback_id,
            user_id,
        )
        return None if row is None else CallbackRequest(**dict(row))
