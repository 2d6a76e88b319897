"""Rate limits and caps against abuse (SECURITY.md: signalling limits and call-attempt abuse).

Token buckets keyed by client address or button, with bounded memory: the least recently used keys
are forgotten first, which only ever makes a limit more lenient, never stricter.

Login attempts reach whichever node the load balancer picks, so in a cluster they are counted in
Redis, shared by every node (:class:`SharedLimiter`): a guesser spreading attempts over ten nodes
gets no more than over one. While Redis is away each node counts on its own again.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import time
from collections.abc import Hashable
from typing import Any

import structlog

from server.cluster import PREFIX

log = structlog.get_logger(__name__)

LIMITS_LOCAL = "limits.counted_locally"
LIMITS_SHARED = "limits.counted_in_redis"
#: After Redis failed to answer, how long each node counts on its own before trying it again.
SHARED_RETRY_SECONDS = 10.0

# A visitor socket is opened at the click; one that asks for no call by then is closed.
VISITOR_CALL_DEADLINE_SECONDS = 30.0
WIDGET_POSTS_PER_MINUTE = 10.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class KeyedLimiter:
    """One token bucket per key, for at most ``max_keys`` keys."""

    def __init__(self, per_minute: float, burst: float, max_keys: int = 100_000) -> None:
        self._rate = per_minute / 60
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: collections.OrderedDict[Hashable, TokenBucket] = collections.OrderedDict()

    def allow(self, key: Hashable) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.allow()


# The generic cell rate algorithm (a token bucket kept as one time): KEYS[1] holds the moment (ms, on
# Redis's clock, so that nodes' clocks do not matter) at which the bucket is full again. ARGV: ms a
# token takes to come back, and the burst. 1 if allowed (and counted), 0 if not.
_GCRA = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) * 1000 + math.floor(tonumber(now_s[2]) / 1000)
local interval = tonumber(ARGV[1])
local full = tonumber(redis.call('GET', KEYS[1]) or now)
if full < now then full = now end
local after = full + interval
if after - now > interval * tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], after, 'PX', after - now)
return 1
"""


class SharedLimiter:
    """A :class:`KeyedLimiter` counted in Redis, shared by every node of a cluster; ``local`` counts
    while Redis does not answer (and for ``SHARED_RETRY_SECONDS`` after). Keys are stored as HMACs
    under ``secret``: Redis never holds an address or an email."""

    def __init__(
        self, redis: Any, name: str, per_minute: float, burst: float, secret: bytes, local: KeyedLimiter
    ) -> None:
        self._script = redis.register_script(_GCRA)
        self._name = name
        self._interval_ms = max(1, round(60_000 / per_minute))
        self._burst = burst
        self._secret = secret
        self.local = local
        self._away = False  # Redis did not answer the last time it was asked
        self._local_until = 0.0

    async def allow(self, key: str) -> bool:
        if time.monotonic() < self._local_until:
            return self.local.allow(key)
        digest = hmac.new(self._secret, f"{self._name}\0{key}".encode(), hashlib.sha256).hexdigest()
        try:
            allowed = await self._script(
                keys=[f"{PREFIX}limit:{self._name}:{digest}"], args=[self._interval_ms, self._burst]
            )
        except Exception as exc:  # redis-py's errors, a timeout: Redis is away
            if not self._away:
                self._away = True
                log.warning(LIMITS_LOCAL, limit=self._name, error=f"{type(exc).__name__}: {exc}")
            self._local_until = time.monotonic() + SHARED_RETRY_SECONDS
            return self.local.allow(key)
        if self._away:
            self._away = False
            log.info(LIMITS_SHARED, limit=self._name)
        return bool(allowed)


class Counter:
    """Open things per key (sockets per address), with a cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._counts: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> bool:
        count = self._counts.get(key, 0)
        if count >= self.cap:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: Hashable) -> None:
        count = self._counts.get(key, 0) - 1
        if count <= 0:
            self._counts.pop(key, None)
        else:
            self._counts[key] = count


class Limits:
    """The limits of one server process, those per address or account counted with every node of
    the cluster once :meth:`share` is called. Call attempts are limited per visitor address and per
    button (per minute, with bursts of half that), so that one script cannot keep every agent ringing.
    """

    def __init__(
        self,
        *,
        calls_per_address: float,
        calls_per_button: float,
        visitor_sockets_per_address: int,
        logins_per_address: float = 30.0,
        logins_per_account: float = 5.0,
    ) -> None:
        self.calls_per_address = KeyedLimiter(calls_per_address, max(1.0, calls_per_address / 2))
        self.calls_per_button = KeyedLimiter(calls_per_button, max(1.0, calls_per_button / 2))
        self.visitor_sockets = Counter(visitor_sockets_per_address)
        self.visitor_call_deadline = VISITOR_CALL_DEADLINE_SECONDS
        # Login attempts a minute, in bursts of as many: from one address, and for one email from one address.
        self.logins_per_address = KeyedLimiter(logins_per_address, max(1.0, logins_per_address))
        self.logins_per_account = KeyedLimiter(logins_per_account, max(1.0, logins_per_account))
        self._logins_per_minute = (logins_per_address, logins_per_account)
        self._shared_logins: tuple[SharedLimiter, SharedLimiter] | None = None
        #: Callback requests and ratings a visitor address may send.
        self.widget_posts = KeyedLimiter(WIDGET_POSTS_PER_MINUTE, WIDGET_POSTS_PER_MINUTE)
        self._calls_per_address = calls_per_address
        self._shared_calls: SharedLimiter | None = None
        self._shared_widget_posts: SharedLimiter | None = None

    def share(self, redis: Any, secret: bytes) -> None:
        """Count what is limited per address or account in ``redis``, with every node of the cluster:
        login attempts, visitors' call attempts and widget posts. (A button's calls are all placed by
        its organisation's home, and sockets open per address are counted where they are served.)"""
        per_address, per_account = self._logins_per_minute
        self._shared_logins = (
            SharedLimiter(redis, "login_address", per_address, max(1.0, per_address), secret, self.logins_per_address),
            SharedLimiter(redis, "login_account", per_account, max(1.0, per_account), secret, self.logins_per_account),
        )
        calls = self._calls_per_address
        self._shared_calls = SharedLimiter(
            redis, "call_address", calls, max(1.0, calls / 2), secret, self.calls_per_address
        )
        self._shared_widget_posts = SharedLimiter(
            redis, "widget_address", WIDGET_POSTS_PER_MINUTE, WIDGET_POSTS_PER_MINUTE, secret, self.widget_posts
        )

    async def allow_call(self, address: str) -> bool:
        """Whether a visitor at ``address`` may start a call (and count it)."""
        if self._shared_calls is None:
            return self.calls_per_address.allow(address)
        return await self._shared_calls.allow(address)

    async def allow_widget_post(self, address: str) -> bool:
        """Whether a visitor at ``address`` may post a callback request or a rating (and count it)."""
        if self._shared_widget_posts is None:
            return self.widget_posts.allow(address)
        return await self._shared_widget_posts.allow(address)

    async def allow_login(self, address: str, email: str) -> bool:
        """Whether a login attempt from ``address`` for ``email`` may be tried (and count it)."""
        account = f"{address}\0{email.strip().lower()}"
        if self._shared_logins is None:
            return self.logins_per_address.allow(address) and self.logins_per_account.allow(account)
        by_address, by_account = self._shared_logins
        return await by_address.allow(address) and await by_account.allow(account)
