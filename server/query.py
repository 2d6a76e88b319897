"""Reading query strings: each parameter checked, with a 400 naming it when it is wrong; and the
opaque cursors of keyset pages."""

from __future__ import annotations

import base64
import datetime
import uuid
import zoneinfo
from typing import Any

from aiohttp import web

from server import hours
from server.body import bad


class Query:
    def __init__(self, request: web.Request, allowed: frozenset[str]) -> None:
        self._values = request.query
        unknown = sorted(set(self._values) - allowed)
        if unknown:
            raise bad(f"unknown parameter {unknown[0]!r}; parameters are {', '.join(sorted(allowed))}")

    def text(self, name: str, max_chars: int) -> str | None:
        value = self._values.get(name)
        if value is None or not value.strip():
            return None
        if len(value) > max_chars:
            raise bad(f"parameter {name!r} is longer than {max_chars} characters")
        return value.strip()

    def moment(self, name: str, *, end_of_day: bool = False, zone: str = "UTC") -> datetime.datetime | None:
        """A date (``2026-11-28``: its start in ``zone``, or with ``end_of_day`` the next day's
        start) or an ISO 8601 time; a time without a zone is in UTC."""
        value = self.text(name, 40)
        if value is None:
            return None
        try:
            if len(value) == 10:
                day = datetime.date.fromisoformat(value)
                if end_of_day:
                    day += datetime.timedelta(days=1)
                return datetime.datetime.combine(day, datetime.time(), zoneinfo.ZoneInfo(zone))
            parsed = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise bad(f"parameter {name!r} must be a date (2026-11-28) or a time (2026-11-28T09:30:00Z)") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)

    def ident(self, name: str) -> uuid.UUID | None:
        value = self.text(name, 40)
        if value is None:
            return None
        try:
            return uuid.UUID(value)
        except ValueError:
            raise bad(f"parameter {name!r} must be an id (a UUID)") from None

    def choice(self, name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
        value = self.text(name, 40)
        if value is None:
            return default
        if value not in choices:
            raise bad(f"parameter {name!r} must be one of {', '.join(choices)}")
        return value

    def boolean(self, name: str) -> bool | None:
        value = self.choice(name, ("true", "false"))
        return None if value is None else value == "true"

    def integer(self, name: str, low: int, high: int, default: int | None = None) -> int | None:
        value = self.text(name, 20)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise bad(f"parameter {name!r} must be a whole number from {low} to {high}")
        return number

    def time_zone(self, name: str) -> str:
        value = self.text(name, 64) or "UTC"
        try:
            hours.check(None, value)
            zoneinfo.ZoneInfo(value)
        except (hours.HoursError, zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise bad(f"parameter {name!r} must be a time zone such as Europe/Paris") from None
        return value


def encode_cursor(*parts: Any) -> str:
    text = "|".join(p.isoformat() if isinstance(p, datetime.datetime) else str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(value: str | None, count: int) -> list[str] | None:
    """The parts of a cursor made by :func:`encode_cursor`; a 400 for anything else."""
    if value is None:
        return None
    try:
        parts = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().split("|")
    except (ValueError, UnicodeDecodeError):
        parts = []
    if len(parts) != count:
        raise bad("parameter 'cursor' is not one this server gave")
    return parts
