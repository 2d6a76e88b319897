"""Passwords and sessions.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended option) in a
thread, since one hash takes tens of milliseconds of CPU. Sessions are 128-bit random tokens carried in
a cookie; the database keeps only their HMAC-SHA256 under the session secret, so that a copy of the
sessions table (a backup, a read-only leak) opens no session, and changing the secret ends every
session at once. A session ends after an idle timeout, after an absolute lifetime, at logout, or when
its user is disabled.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import secrets
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from server import logs
from server.config import ConfigError, Settings, check_session_secret, read_secret_file
from storage.accounts import Accounts, Session, User

log = structlog.get_logger(__name__)

_hasher = PasswordHasher()
# Verified when the email matches no user, so that a login takes as long either way (no user
# enumeration by timing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

# argon2-cffi's default costs 64 MiB of memory per hash: a storm of logins (a shift starting, a load
# test, an attacker) must not multiply that by the thread pool's size.
_HASHING_AT_ONCE = 2
_hashing: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class PasswordPolicyError(ValueError):
    pass


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def _slots() -> asyncio.Semaphore:
    """The running loop's hashing slots (a semaphore belongs to one event loop)."""
    loop = asyncio.get_running_loop()
    slots = _hashing.get(loop)
    if slots is None:
        slots = _hashing[loop] = asyncio.Semaphore(_HASHING_AT_ONCE)
    return slots


async def hash_password(password: str) -> str:
    async with _slots():
        return await asyncio.to_thread(_hasher.hash, password)


async def _verify_in_thread(password_hash: str, password: str) -> bool:
    async with _slots():
        return await asyncio.to_thread(_verify, password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token(secret: bytes) -> tuple[str, bytes]:
    """A session token for the cookie and the digest the database keeps."""
    token = secrets.token_urlsafe(16)  # 128 bits
    return token, token_digest(token, secret)


def token_digest(token: str, secret: bytes) -> bytes:
    """What the database keeps of a session token: its HMAC-SHA256 under the session secret."""
    return hmac.new(secret, token.encode(), hashlib.sha256).digest()


_DERIVATION_PURPOSE = "session token digests"


def session_secret(settings: Settings, derive: Callable[[str], bytes]) -> bytes:
    """The session secret: configured (the variable or its file), or in development derived from the
    master key with ``derive`` (``Keyring.derive``), so that a development server needs no further
    file and keeps its sessions across restarts. Production refuses to start without one configured
    (``Settings.validate``), so that it can be changed without touching the master key."""
    if settings.session_secret:
        return check_session_secret(settings.session_secret, "CALLBUTTON_SESSION_SECRET").encode()
    if settings.session_secret_file is not None:
        text = read_secret_file(settings.session_secret_file, "CALLBUTTON_SESSION_SECRET_FILE")
        return check_session_secret(text, "CALLBUTTON_SESSION_SECRET_FILE").encode()
    if settings.production:
        raise ConfigError("production mode needs a session secret: set CALLBUTTON_SESSION_SECRET_FILE")
    return derive(_DERIVATION_PURPOSE)


@dataclass(frozen=True)
class CookiePolicy:
    """The session cookie's name and attributes for the origin the app is served at.

    ``__Host-`` requires Secure, which browsers honour on https and on loopback http (a potentially
    trustworthy origin). On plain http elsewhere (not a supported deployment) the cookie drops both.
    """

    name: str
    secure: bool

    @classmethod
    def for_origin(cls, origin: str) -> CookiePolicy:
        from urllib.parse import urlsplit

        parts = urlsplit(origin)
        trustworthy = parts.scheme == "https" or parts.hostname in ("localhost", "127.0.0.1", "::1")
        if trustworthy:
            return cls(name="__Host-callbutton_session", secure=True)
        return cls(name="callbutton_session", secure=False)

    def set(self, response: web.StreamResponse, token: str, max_age: float) -> None:
        response.set_cookie(
            self.name,
            token,
            max_age=int(max_age),
            path="/",
            secure=self.secure,
            httponly=True,
            samesite="Strict",
        )

    def clear(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.name, path="/", secure=self.secure, httponly=True, samesite="Strict")


class Sessions:
    """Login, session lookup and logout over the accounts repository."""

    def __init__(self, accounts: Accounts, *, idle_timeout: float, max_age: float, secret: bytes) -> None:
        self._accounts = accounts
        self.idle_timeout = datetime.timedelta(seconds=idle_timeout)
        self.max_age = max_age
        self._secret = secret

    def _key(self) -> bytes:
        return self._secret

    async def login(self, email: str, password: str) -> tuple[str | None, User | None]:
        """A new session token and its user for valid credentials, in the same time either way.

        On failure the token is None, and the user is the account the email named, if any (for the
        organisation's audit log; the caller must not tell the client which it was).
        """
        user = await self._accounts.user_by_email(email)
        password_hash = user.password_hash if user is not None else _DUMMY_HASH
        valid = await _verify_in_thread(password_hash, password)
        if user is None or not valid or user.disabled:
            log.info(logs.LOGIN_FAILED)
            return None, user
        if _hasher.check_needs_rehash(user.password_hash):
            await self._accounts.set_password_hash(user.id, await hash_password(password))
        token, digest = new_token(self._key())
        expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.max_age)
        await self._accounts.create_session(digest, user, expires)
        log.info(logs.LOGIN, user_id=str(user.id), org_id=str(user.organisation_id))
        return token, user

    async def lookup(self, token: str | None) -> Session | None:
        if not token or len(token) > 64:
            return None
        return await self._accounts.session(token_digest(token, self._key()), self.idle_timeout)

    async def logout(self, token: str) -> None:
        await self._accounts.delete_session(token_digest(token, self._key()))
