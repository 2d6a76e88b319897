"""A small migration runner for the SQL files in ``storage/schema``.

Why not yoyo or alembic: both drive the database through a synchronous DB-API driver (psycopg), which
would be a second Postgres driver beside asyncpg for about sixty lines of logic. The runner here:
applies ``NNNN_name.sql`` files in order, each in its own transaction; records them in
``schema_migrations`` with a checksum; refuses to start when an applied file has been edited or the
database is newer than the code; and holds an advisory lock so that several workers starting at once
apply each migration exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import structlog

log = structlog.get_logger(__name__)

MIGRATION_APPLIED = "db.migration_applied"
_LOCK_KEY = 0x63616C6C  # "call": any constant shared by every process of this application
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(Exception):
    """The database schema does not match the migrations shipped with this code."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(folder: str = "schema") -> list[Migration]:
    """The migrations shipped in this package (``schema``: the main database; ``keystore_schema``:
    the key store), in version order."""
    found = []
    for entry in (resources.files("storage") / folder).iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must run 1..n without gaps, found {versions}")
    return found


async def migrate(conn: Any, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every pending migration; return the ones applied now."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        applied = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        known = {m.version for m in migrations}
        newer = sorted(v for v in applied if v not in known)
        if newer:
            raise MigrationError(
                f"the database has migration {newer[-1]} which this code does not know: "
                "it was migrated by a newer release"
            )
        done = []
        for m in migrations:
            row = applied.get(m.version)
            if row is not None:
                if row["checksum"] != m.checksum:
                    raise MigrationError(
                        f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            async with conn.transaction():
                await conn.execute(m.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    m.version,
                    m.name,
                    m.checksum,
                )
            log.info(MIGRATION_APPLIED, version=m.version, name=m.name)
            done.append(m)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def pending(conn: Any, migrations: list[Migration] | None = None) -> list[Migration]:
    """Migrations not yet applied (for readiness checks)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    applied = set()
    if exists:
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    return [m for m in (load_migrations() if migrations is None else migrations) if m.version not in applied]
