"""The event loop's utilisation (server/load.py), measured on the real loop: idle, kept busy, and
idle again; on asyncio's loop (its selector timed) and on uvloop's (its thread's scheduler accounting)."""

from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from server import load
from server.load import LoopLoad, ThreadMeter


async def keep_busy(seconds: float, share: float = 0.9) -> None:
    """Hold the event loop's thread ``share`` of the time, computing (as too many calls would)."""
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        while time.perf_counter() < now + 0.05 * share:
            pass
        await asyncio.sleep(0.05 * (1 - share))


@pytest.fixture(autouse=True)
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(load, "WINDOW", 1.0)
    monkeypatch.setattr(load, "TICK", 0.1)


async def test_utilisation_follows_what_the_loop_does() -> None:
    await utilisation_follows_what_the_loop_does()


def test_utilisation_follows_what_uvloop_does() -> None:
    assert ThreadMeter.available()
    uvloop.run(utilisation_follows_what_the_loop_does())


async def utilisation_follows_what_the_loop_does() -> None:
    meter = LoopLoad(limit=0.7)
    meter.start()
    try:
        await asyncio.sleep(1.2)
        assert meter.utilisation < 0.3 and not meter.overloaded
        await keep_busy(1.5)
        assert meter.utilisation > 0.75 and meter.overloaded
        assert meter.idle > 1.0  # (the first, idle second)
        await asyncio.sleep(1.3)  # the busy second has left the window
        assert meter.utilisation < 0.3 and not meter.overloaded
    finally:
        await meter.stop()


async def test_no_limit_never_refuses_and_meters_share_the_loop() -> None:
    unlimited, other = LoopLoad(limit=0.0), LoopLoad(limit=0.5)
    unlimited.start()
    other.start()
    await other.stop()  # one server stopping leaves another's measure intact
    try:
        await keep_busy(1.3)
        assert unlimited.utilisation > 0.75 and not unlimited.overloaded
        await asyncio.sleep(1.3)  # its waits still timed: idle again
        assert unlimited.utilisation < 0.3
    finally:
        await unlimited.stop()
