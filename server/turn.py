"""TURN credentials for browsers: time-limited, signed with the secret the TURN server shares.

The scheme is the TURN REST API (draft-uberti-behave-turn-rest-00, section 2.2), which coturn checks
with ``use-auth-secret``: the username is ``<expiry unix time>:<id>`` and the password is
base64(HMAC-SHA1(secret, username)). Nothing is stored or sent to the TURN server: it recomputes the
password from the username and refuses a username whose time has passed. coturn checks the time
when an allocation is made, not at its refreshes (tests/test_turn.py shows both): the TTL bounds how
long credentials can open relays, not how long a call lasts, and it must cover every allocation a
socket's peer connections make, ICE restarts included.

The ``id`` part shows up in the TURN server's logs, so it names no one: for an agent it is a keyed
digest of the user's id (stable, so an operator holding the secret can tell which agent a relay
served, and nobody else can), for a visitor one of the button's id (the only thing known of them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from server.config import ConfigError, Settings, check_turn_secret, read_secret_file


@dataclass(frozen=True)
class TurnCredentials:
    """Hands out credentials for ``urls``, valid for ``ttl`` seconds from when they are made."""

    urls: tuple[str, ...]
    secret: bytes = field(repr=False)
    ttl: int

    def ice_server(self, kind: str, subject: uuid.UUID, *, now: float | None = None) -> dict[str, Any]:
        """An ``RTCIceServer`` for one socket: ``kind`` is ``agent`` (``subject`` the user's id) or
        ``visitor`` (``subject`` the button's id)."""
        expiry = int(time.time() if now is None else now) + self.ttl
        username = f"{expiry}:{self.pseudonym(kind, subject)}"
        return {"urls": list(self.urls), "username": username, "credential": self.password(username)}

    def password(self, username: str) -> str:
        """What the TURN server expects with ``username`` (coturn: ``use-auth-secret``)."""
        return base64.b64encode(hmac.new(self.secret, username.encode(), hashlib.sha1).digest()).decode()

    def pseudonym(self, kind: str, subject: uuid.UUID) -> str:
        digest = hmac.new(self.secret, b"callbutton turn id\x00" + kind.encode() + b"\x00" + subject.bytes, "sha256")
        return f"{kind}-{digest.hexdigest()[:16]}"


def load(settings: Settings) -> TurnCredentials | None:
    """The configured TURN credentials (reading the secret's file), or None without TURN URLs."""
    if not settings.turn_urls:
        return None
    if settings.turn_secret:
        secret = check_turn_secret(settings.turn_secret, "CALLBUTTON_TURN_SECRET")
    elif settings.turn_secret_file is not None:
        text = read_secret_file(settings.turn_secret_file, "CALLBUTTON_TURN_SECRET_FILE")
        secret = check_turn_secret(text, "CALLBUTTON_TURN_SECRET_FILE")
    else:
        raise ConfigError(
            "CALLBUTTON_TURN_URLS needs CALLBUTTON_TURN_SECRET_FILE (the TURN server's static-auth-secret)"
        )
    return TurnCredentials(urls=settings.turn_urls, secret=secret.encode(), ttl=settings.turn_ttl)


TURN = web.AppKey("turn", TurnCredentials)
