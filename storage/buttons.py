"""Call buttons: what a website embeds, and which origins may use it."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Button:
    id: uuid.UUID
    organisation_id: uuid.UUID
    public_key: str
    name: str
    allowed_origins: tuple[str, ...]
    ring_timeout_s: int | None
    recording_enabled: bool = False
    recording_notice: str = "This call is recorded."


def new_public_key() -> str:
    """A button key: public (it sits in every page that embeds the button) but unguessable."""
    return "cb_" + secrets.token_urlsafe(18)


_COLUMNS = "id, organisation_id, public_key, name, allowed_origins, ring_timeout_s, recording_enabled, recording_notice"


def _button(row: Any) -> Button:
    return Button(
        id=row["id"],
        organisation_id=row["organisation_id"],
        public_key=row["public_key"],
        name=row["name"],
        allowed_origins=tuple(row["allowed_origins"]),
        ring_timeout_s=row["ring_timeout_s"],
        recording_enabled=row["recording_enabled"],
        recording_notice=row["recording_notice"],
    )


class Buttons:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def create(
        self,
        organisation_id: uuid.UUID,
        *,
        name: str,
        allowed_origins: list[str],
        ring_timeout_s: int | None = None,
        recording_enabled: bool = False,
        recording_notice: str | None = None,
    ) -> Button:
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO buttons (organisation_id, public_key, name, allowed_origins, ring_timeout_s,
                                 recording_enabled, recording_notice)
            VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, 'This call is recorded.'))
            RETURNING {_COLUMNS}
            """,
            organisation_id,
            new_public_key(),
            name,
            allowed_origins,
            ring_timeout_s,
            recording_enabled,
            recording_notice,
        )
        return _button(row)

    async def by_public_key(self, public_key: str) -> Button | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM buttons WHERE public_key = $1", public_key)
        return None if row is None else _button(row)

    async def list(self, organisation_id: uuid.UUID) -> list[Button]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM buttons WHERE organisation_id = $1 ORDER BY created_at",
            organisation_id,
        )
        return [_button(r) for r in rows]

    async def allow_origin(self, organisation_id: uuid.UUID, button_id: uuid.UUID, origin: str) -> Button:
        """Add ``origin`` to the button's allowlist (no-op when present); return the button."""
        row = await self._pool.fetchrow(
            f"""
            UPDATE buttons
            SET allowed_origins = CASE WHEN $3 = ANY(allowed_origins) THEN allowed_origins
                                       ELSE array_append(allowed_origins, $3) END
            WHERE organisation_id = $1 AND id = $2
            RETURNING {_COLUMNS}
            """,
            organisation_id,
            button_id,
            origin,
        )
        if row is None:
            raise LookupError(f"no button {button_id}")
        return _button(row)
