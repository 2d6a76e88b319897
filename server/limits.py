"""Rate limits and caps against abuse (SECURITY.md: signalling limits and call-attempt abuse).

Token buckets keyed by client address or button, with bounded memory: the least recently used keys
are forgotten first, which only ever makes a limit more lenient, never stricter.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Hashable

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
    """The limits of one server process. Call attempts are limited per visitor address and per
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
        #: Callback requests and ratings a visitor address may send.
        self.widget_posts = KeyedLimiter(WIDGET_POSTS_PER_MINUTE, WIDGET_POSTS_PER_MINUTE)
