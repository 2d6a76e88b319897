"""Teams of agents, which buttons can route to."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg


class DuplicateTeam(Exception):
    """An organisation's team names are unique."""


@dataclass(frozen=True)
class Team:
    id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
    members: tuple[uuid.UUID, ...]


class Teams:
    def __init__(self, pool: Any) -> None:
        self._pool = pool

    async def all(self, organisation_id: uuid.UUID) -> list[Team]:
        rows = await self._pool.fetch(
            """
            SELECT t.id, t.organisation_id, t.name,
                   COALESCE(array_agg(m.user_id ORDER BY m.user_id) FILTER (WHERE m.user_id IS NOT NULL), '{}')
                       AS members
            FROM teams t LEFT JOIN team_members m ON m.team_id = t.id
            WHERE t.organisation_id = $1 GROUP BY t.id ORDER BY t.name
            """,
            organisation_id,
        )
        return [Team(r["id"], r["organisation_id"], r["name"], tuple(r["members"])) for r in rows]

    async def get(self, organisation_id: uuid.UUID, team_id: uuid.UUID) -> Team | None:
        return next((t for t in await self.all(organisation_id) if t.id == team_id), None)

    async def create(self, organisation_id: uuid.UUID, name: str) -> Team:
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO teams (organisation_id, name) VALUES ($1, $2) RETURNING id, organisation_id, name",
                organisation_id,
                name,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateTeam(name) from None
        return Team(row["id"], row["organisation_id"], row["name"], ())

    async def rename(self, organisation_id: uuid.UUID, team_id: uuid.UUID, name: str) -> Team | None:
        try:
            status = await self._pool.execute(
                "UPDATE teams SET name = $3 WHERE organisation_id = $1 AND id = $2", organisation_id, team_id, name
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateTeam(name) from None
        return await self.get(organisation_id, team_id) if status == "UPDATE 1" else None

    async def set_members(self, organisation_id: uuid.UUID, team_id: uuid.UUID, members: list[uuid.UUID]) -> bool:
        """Replace the members; every one must be a user of the organisation. False when not."""
        members = list(dict.fromkeys(members).keys())
        async with self._pool.acquire() as conn, conn.transaction():
            owned = await conn.fetchval(
                """
                SELECT (SELECT count(*) FROM teams WHERE organisation_id = $1 AND id = $2) = 1
                   AND (SELECT count(*) FROM users WHERE organisation_id = $1 AND id = ANY($3)) = cardinality($3)
                """,
                organisation_id,
                team_id,
                members,
            )
            if not owned:
                return False
            await conn.execute("DELETE FROM team_members WHERE team_id = $1", team_id)
            await conn.executemany(
                "INSERT INTO team_members (team_id, user_id) VALUES ($1, $2)", [(team_id, member) for member in members]
            )
        return True

    async def delete(self, organisation_id: uuid.UUID, team_id: uuid.UUID) -> bool:
        status = await self._pool.execute(
            "DELETE FROM teams WHERE organisation_id = $1 AND id = $2", organisation_id, team_id
        )
        return bool(status == "DELETE 1")
