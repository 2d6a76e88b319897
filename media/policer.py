"""Policing a leg's incoming audio to the pace of real time.

A peer chooses how fast it sends. Whatever it sends the bridge forwards at once to the other party and
the recorder writes, so a peer sending ten seconds of audio a second would make the agent's browser,
the recording and the server's CPU do ten times the work. Every packet is therefore charged the
audio it carries (from its Opus TOC byte) against a token bucket that fills at a little more than
real time (RFC 2697's single-rate policer, counted in samples rather than bytes): what exceeds it is
dropped and counted. Nothing waits, nothing is queued.

The bucket holds two seconds, so a legitimate burst (packets held up on the path, then delivered
together) passes whole; its fill rate of 1.25 times real time leaves room for clock drift and for
catching up after such a burst. A packet is charged at least 10 ms, so that packets claiming tiny
frames (or none) cannot outnumber real-time audio more than twofold.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from media.opus import packet_samples

#: Seconds of audio a second the bucket fills by: real time, with room for drift and catching up.
RATE = 1.25
#: Seconds of audio the bucket holds: the largest burst that passes whole.
BURST = 2.0
_MIN_CHARGE_SECONDS = 0.01


class RatePolicer:
    """Admits the packets of one incoming stream while they keep to about real time."""

    def __init__(
        self,
        clock_rate: int,
        *,
        rate: float = RATE,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fill = rate * clock_rate  # samples a second
        self._capacity = burst * clock_rate
        self._min_charge = round(_MIN_CHARGE_SECONDS * clock_rate)
        self._tokens = self._capacity
        self._clock = clock
        self._last: float | None = None

    def admit(self, payload: bytes) -> bool:
        """Whether the packet carrying ``payload`` (Opus) may pass; the caller drops and counts the rest."""
        now = self._clock()
        if self._last is not None:
            self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._fill)
        self._last = now
        cost = max(packet_samples(payload), self._min_charge)
        if cost > self._tokens:
            return False
        self._tokens -= cost
        return True
