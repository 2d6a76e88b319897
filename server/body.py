"""Reading JSON request bodies: one field at a time, each with a clear error naming it.

Every REST handler that takes a body reads it through :class:`Body`, so that a wrong type, a value
out of range or an unknown field gets a 400 that says what was wrong, and nothing is half applied.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from aiohttp import web

from server.errors import ApiError

MAX_BODY = 16 * 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ().-]{3,30}$")


def bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


async def read(request: web.Request, allowed: frozenset[str] | None = None) -> Body:
    """The request's JSON object; with ``allowed``, any other field is refused."""
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "send a JSON body (Content-Type: application/json)")
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too_large", f"the body is larger than {MAX_BODY} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise bad("the body must be a JSON object")
    if problem := unstorable_text(value):
        raise bad(f"{problem} in the body")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise bad(f"unknown field {unknown[0]!r}; fields are {', '.join(sorted(allowed))}")
    return Body(value)


def unstorable_text(value: Any, depth: int = 0) -> str | None:
    """What is wrong with text Postgres cannot store in ``value`` (a NUL character, half of a UTF-16
    surrogate pair), anywhere inside it; None when nothing is."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a text holds a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a text is not valid Unicode (a lone surrogate)"
    elif isinstance(value, dict) and depth < 32:
        for key, item in value.items():
            problem = unstorable_text(key, depth + 1) or unstorable_text(item, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list) and depth < 32:
        for item in value:
            if problem := unstorable_text(item, depth + 1):
                return problem
    return None


class Body:
    """A JSON object's fields, read with their types checked."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def text(self, name: str, max_chars: int, *, required: bool = True, strip: bool = True) -> str | None:
        value = self.values.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise bad(f"field {name!r} is required")
            return None
        if not isinstance(value, str):
            raise bad(f"field {name!r} must be a string")
        if strip:
            value = value.strip()
        if len(value) > max_chars:
            raise bad(f"field {name!r} is longer than {max_chars} characters")
        return value

    def required_text(self, name: str, max_chars: int) -> str:
        value = self.text(name, max_chars)
        assert value is not None
        return value

    def email(self, name: str, *, required: bool = True) -> str | None:
        value = self.text(name, 320, required=required)
        if value is not None and not _EMAIL.match(value):
            raise bad(f"field {name!r} is not an email address")
        return value

    def phone(self, name: str, *, required: bool = True) -> str | None:
        value = self.text(name, 32, required=required)
        if value is not None and (not _PHONE.match(value) or sum(c.isdigit() for c in value) < 3):
            raise bad(f"field {name!r} is not a phone number (digits, spaces, + ( ) . -)")
        return value

    def integer(self, name: str, low: int, high: int, *, required: bool = True) -> int | None:
        value = self.values.get(name)
        if value is None:
            if required:
                raise bad(f"field {name!r} is required")
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise bad(f"field {name!r} must be a whole number from {low} to {high}")
        return value

    def boolean(self, name: str) -> bool:
        value = self.values.get(name)
        if not isinstance(value, bool):
            raise bad(f"field {name!r} must be true or false")
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.values.get(name)
        if value not in choices:
            raise bad(f"field {name!r} must be one of {', '.join(choices)}")
        return str(value)

    def ids(self, name: str, max_items: int = 500) -> list[uuid.UUID]:
        value = self.values.get(name, [])
        if not isinstance(value, list) or len(value) > max_items:
            raise bad(f"field {name!r} must be a list of at most {max_items} ids")
        return [_uuid(name, item) for item in value]

    def optional_id(self, name: str) -> uuid.UUID | None:
        value = self.values.get(name)
        return None if value is None else _uuid(name, value)

    def texts(self, name: str, max_items: int, max_chars: int) -> list[str]:
        value = self.values.get(name)
        if (
            not isinstance(value, list)
            or len(value) > max_items
            or not all(isinstance(item, str) and 0 < len(item) <= max_chars for item in value)
        ):
            raise bad(f"field {name!r} must be a list of at most {max_items} strings of 1 to {max_chars} characters")
        return list(value)


def _uuid(name: str, value: Any) -> uuid.UUID:
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise bad(f"field {name!r} must hold ids (UUIDs)")
