"""Call buttons: what a website embeds, who answers it, when, and how it looks."""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

DEFAULT_FORM = {"name": "off", "email": "off", "phone": "off"}


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
    strategy: str = "ring_all"
    max_queue_wait_s: int = 300
    wrap_up_s: int = 0
    opening_hours: dict[str, list[list[str]]] | None = None
    time_zone: str = "UTC"
    closed_message: str = "We are closed right now. Leave your details and we will call you back."
    form_fields: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FORM))
    language: str = "en"
    colour: str = "#1a7f4b"
    position: str = "bottom-right"
    #: Rings every agent of the organisation (no agents or teams listed); False: only those listed,
    #: which is nobody once every listed one was deleted.
    routes_to_all: bool = True
    #: Clips a call or callback request may carry (0: none), and the largest one, in MB.
    clips_per_call: int = 20
    clip_max_mb: int = 100


#: The settings an admin may change, with the column each is stored in.
SETTINGS = (
    "name",
    "allowed_origins",
    "ring_timeout_s",
    "recording_enabled",
    "recording_notice",
    "strategy",
    "max_queue_wait_s",
    "wrap_up_s",
    "opening_hours",
    "time_zone",
    "closed_message",
    "form_fields",
    "language",
    "colour",
    "position",
    "clips_per_call",
    "clip_max_mb",
)
_JSON = frozenset({"opening_hours", "form_fields"})


def new_public_key() -> str:
    """A button key: public (it sits in every page that embeds the button) but unguessable."""
    return "cb_" + secrets.token_urlsafe(18)


_COLUMNS = "id, organisation_id, public_key, routes_to_all, " + ", ".join(SETTINGS)


def _button(row: Any) -> Button:
    values = dict(row)
    values["allowed_origins"] = tuple(values["allowed_origins"])
    for name in _JSON:
        if isinstance(values[name], str):
            values[name] = json.loads(values[name])
    return Button(**values)


def _stored(name: str, value: Any) -> Any:
    if name in _JSON and value is not None:
        return json.dumps(value)
    if name == "allowed_origins":
        return list(value)
    return value


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
        **settings: Any,
    ) -> Button:
        """A new button; any setting of ``SETTINGS`` may be given, the rest take their defaults."""
        values: dict[str, Any] = {
            "name": name,
            "allowed_origins": allowed_origins,
            "ring_timeout_s": ring_timeout_s,
            "recording_enabled": recording_enabled,
        }
        if recording_notice is not None:
            values["recording_notice"] = recording_notice
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown button setting {sorted(unknown)[0]}")
        values.update(settings)
        names = list(values)
        placeholders = ", ".join(f"${i + 3}" + ("::jsonb" if n in _JSON else "") for i, n in enumerate(names))
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO buttons (organisation_id, public_key, {", ".join(names)})
            VALUES ($1, $2, {placeholders})
            RETURNING {_COLUMNS}
            """,
            organisation_id,
            new_public_key(),
            *(_stored(n, values[n]) for n in names),
        )
        return _button(row)

    async def update(self, organisation_id: uuid.UUID, button_id: uuid.UUID, changes: dict[str, Any]) -> Button | None:
        """Change some settings; None when the organisation has no such button."""
        unknown = set(changes) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown button setting {sorted(unknown)[0]}")
        if not changes:
            return await self.get(organisation_id, button_id)
        names = list(changes)
        assignments = ", ".join(f"{n} = ${i + 3}" + ("::jsonb" if n in _JSON else "") for i, n in enumerate(names))
        row = await self._pool.fetchrow(
            f"UPDATE buttons SET {assignments} WHERE organisation_id = $1 AND id = $2 RETURNING {_COLUMNS}",
            organisation_id,
            button_id,
            *(_stored(n, changes[n]) for n in names),
        )
        return None if row is None else _button(row)

    async def delete(self, organisation_id: uuid.UUID, button_id: uuid.UUID) -> bool:
        status = await self._pool.execute(
            "DELETE FROM buttons WHERE organisation_id = $1 AND id = $2", organisation_id, button_id
        )
        return bool(status == "DELETE 1")

    async def get(self, organisation_id: uuid.UUID, button_id: uuid.UUID) -> Button | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM buttons WHERE organisation_id = $1 AND id = $2", organisation_id, button_id
        )
        return None if row is None else _button(row)

    async def by_public_key(self, public_key: str) -> Button | None:
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM buttons WHERE public_key = $1", public_key)
        return None if row is None else _button(row)

    async def all(self, organisation_id: uuid.UUID) -> list[Button]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM buttons WHERE organisation_id = $1 ORDER BY created_at, id",
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

    async def targets(
        self, organisation_id: uuid.UUID, button_id: uuid.UUID
    ) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """The agents and teams a button routes to (both empty: every agent of the organisation)."""
        rows = await self._pool.fetch(
            """
            SELECT t.user_id, t.team_id FROM button_targets t JOIN buttons b ON b.id = t.button_id
            WHERE b.organisation_id = $1 AND t.button_id = $2
            """,
            organisation_id,
            button_id,
        )
        return [r["user_id"] for r in rows if r["user_id"]], [r["team_id"] for r in rows if r["team_id"]]

    async def set_targets(
        self, organisation_id: uuid.UUID, button_id: uuid.UUID, users: list[uuid.UUID], teams: list[uuid.UUID]
    ) -> bool:
        """Replace whom the button routes to; every id must be of the organisation. False when not."""
        async with self._pool.acquire() as conn, conn.transaction():
            owned = await conn.fetchval(
                """
                SELECT (SELECT count(*) FROM buttons WHERE organisation_id = $1 AND id = $2) = 1
                   AND (SELECT count(*) FROM users WHERE organisation_id = $1 AND id = ANY($3)) = cardinality($3)
                   AND (SELECT count(*) FROM teams WHERE organisation_id = $1 AND id = ANY($4)) = cardinality($4)
                """,
                organisation_id,
                button_id,
                list(dict.fromkeys(users)),
                list(dict.fromkeys(teams)),
            )
            if not owned:
                return False
            await conn.execute("DELETE FROM button_targets WHERE button_id = $1", button_id)
            await conn.execute(
                "UPDATE buttons SET routes_to_all = $2 WHERE id = $1", button_id, not users and not teams
            )
            await conn.executemany(
                "INSERT INTO button_targets (button_id, user_id, team_id) VALUES ($1, $2, $3)",
                [(button_id, user, None) for user in dict.fromkeys(users)]
                + [(button_id, None, team) for team in dict.fromkeys(teams)],
            )
        return True

    async def eligible_agents(self, organisation_id: uuid.UUID, button_id: uuid.UUID) -> frozenset[uuid.UUID] | None:
        """The users a button may ring (listed, or members of listed teams); None: everyone.

        A button whose listed agents and teams were all deleted rings nobody, not everybody.
        """
        async with self._pool.acquire() as conn:
            routes_to_all = await conn.fetchval(
                "SELECT routes_to_all FROM buttons WHERE organisation_id = $1 AND id = $2", organisation_id, button_id
            )
            if routes_to_all is None or routes_to_all:
                return None
            rows = await conn.fetch(
                """
                SELECT t.user_id AS id FROM button_targets t WHERE t.button_id = $1 AND t.user_id IS NOT NULL
                UNION
                SELECT m.user_id FROM button_targets t JOIN team_members m ON m.team_id = t.team_id
                WHERE t.button_id = $1
                """,
                button_id,
            )
        return frozenset(r["id"] for r in rows)
