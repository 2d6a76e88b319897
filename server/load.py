"""How busy the event loop is, so that a process near its limit refuses new calls rather than
degrading every call it carries.

One server process forwards every call's packets on one thread, the event loop's. Past what that
loop can do, every call's audio waits: packets pile up in the sockets, first audio slows, recordings
lose their ends. How close it is shows in its utilisation: the share of wall time it was not idle,
waiting in ``select`` for the next datagram or message (what Node.js calls event loop utilisation).
Unlike the thread's CPU time, it counts the time the loop wanted a CPU and had none (a container's CPU
quota, a busy machine); unlike the lag of a timer, it rises before the loop is past its limit.

asyncio's loop is timed around its selector (:class:`IdleMeter`). uvloop (``CALLBUTTON_EVENT_LOOP``)
has none to time: there the loop's thread is measured by the kernel's scheduler accounting
(:class:`ThreadMeter`: time on a CPU plus time runnable and waiting for one), which counts the same
except the time the loop waits for the GIL while another thread of the process (the recorder's) holds
it; that thread's work is small beside the loop's (docs/benchmarks.md).

``CALLBUTTON_MAX_LOOP_BUSY`` sets the utilisation, averaged over the last ``WINDOW`` seconds, past which
a visitor's call is refused (``unavailable``, "every line is busy just now"); calls in progress,
queued or ringing are never touched. A setup burst lasts about a second, so a burst alone does not
trip it.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from server.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

NO_SELECTOR = "load.no_selector"

TICK = 0.5  # seconds between samples
WINDOW = 5.0  # seconds the utilisation is averaged over


class IdleMeter:
    """Seconds an event loop has waited in ``select`` with nothing to do. Times asyncio's selector
    event loop's private ``_selector`` (the same on every Python this runs on); one meter a loop,
    shared by everything that reads it (servers in one process, as in tests) and never taken off."""

    _meters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, IdleMeter] = weakref.WeakKeyDictionary()

    def __init__(self, selector: Any) -> None:
        self.idle = 0.0
        select = selector.select

        def timed_select(timeout: float | None = None) -> Any:
            began = time.perf_counter()
            try:
                return select(timeout)
            finally:
                self.idle += time.perf_counter() - began

        selector.select = timed_select

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> IdleMeter | None:
        """The loop's meter; None for a loop without a selector (uvloop, Windows' proactor)."""
        meter = cls._meters.get(loop)
        if meter is None:
            selector = getattr(loop, "_selector", None)
            if selector is None or not callable(getattr(selector, "select", None)):
                return None
            meter = cls._meters[loop] = cls(selector)
        return meter


class ThreadMeter:
    """Seconds the calling thread has been on a CPU or waiting on a run queue for one, from
    ``/proc/thread-self/schedstat`` (Linux; CONFIG_SCHED_INFO). Read it on the loop's own thread."""

    PATH = Path("/proc/thread-self/schedstat")

    @classmethod
    def available(cls) -> bool:
        try:
            cls.busy()
        except (OSError, ValueError, IndexError):
            return False
        return True

    @classmethod
    def busy(cls) -> float:
        running, waiting = cls.PATH.read_text().split()[:2]
        return (int(running) + int(waiting)) / 1e9


class LoopLoad:
    """The running event loop's utilisation over the last ``WINDOW`` seconds (:meth:`start` on it)."""

    def __init__(self, limit: float = 0.0) -> None:
        #: The utilisation past which new calls are refused; 0: never.
        self.limit = limit
        self.window = WINDOW
        self._samples: collections.deque[tuple[float, float]] = collections.deque()  # (wall, busy) seconds
        self._first: tuple[float, float] | None = None
        self._idle = 0.0
        self._busy: Callable[[], float] | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> float:
        """Seconds the loop has waited with nothing to do, since it was first measured (as of the
        last sample; never less than an earlier reading)."""
        return self._idle

    @property
    def utilisation(self) -> float:
        """The share of the window the loop was not idle (0.0 until two samples are taken)."""
        if len(self._samples) < 2:
            return 0.0
        (wall0, busy0), (wall1, busy1) = self._samples[0], self._samples[-1]
        if wall1 <= wall0:
            return 0.0
        return min(1.0, max(0.0, (busy1 - busy0) / (wall1 - wall0)))

    @property
    def overloaded(self) -> bool:
        return bool(self.limit) and self.utilisation >= self.limit

    def sample(self) -> None:
        """Take a sample (on the loop's thread)."""
        if self._busy is None:
            return
        now = time.perf_counter()
        self._samples.append((now, self._busy()))
        if self._first is None:
            self._first = self._samples[-1]
        (wall0, busy0), (wall1, busy1) = self._first, self._samples[-1]
        self._idle = max(self._idle, (wall1 - wall0) - (busy1 - busy0))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    def start(self) -> None:
        meter = IdleMeter.of(asyncio.get_running_loop())
        if meter is not None:
            self._busy = lambda: time.perf_counter() - meter.idle
        elif ThreadMeter.available():
            self._busy = ThreadMeter.busy
        else:
            log.warning(NO_SELECTOR, detail="event loop utilisation unmeasured; CALLBUTTON_MAX_LOOP_BUSY has no effect")
            return
        self.sample()
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            self.sample()
