"""Ringback: what a visitor hears from the server while agents are being rung.

The tone is encoded to Opus once per process and its packets are replayed into the visitor's leg, so
ringing costs one small send every 20 ms and no encoding. The cadence is the North American one
(440 Hz + 480 Hz, two seconds on, four off; ITU-T E.180 lists it), recognisable far beyond it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import numpy as np
from aiortc.rtp import RtpPacket

from media import opus

_ON_SECONDS = 2.0
_OFF_SECONDS = 4.0
_PACKET_SECONDS = opus.FRAME_SAMPLES / opus.SAMPLE_RATE


@functools.cache
def ringback_packets() -> tuple[bytes, ...]:
    """One cadence of ringback (6 s) as 20 ms Opus packets."""
    t = np.arange(int(_ON_SECONDS * opus.SAMPLE_RATE)) / opus.SAMPLE_RATE
    tone = 0.5 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t))
    # 10 ms ramps at both ends so the tone does not click.
    ramp = int(0.01 * opus.SAMPLE_RATE)
    envelope = np.ones_like(tone)
    envelope[:ramp] = np.linspace(0, 1, ramp)
    envelope[-ramp:] = np.linspace(1, 0, ramp)
    on = (tone * envelope * 0.2 * 32767).astype(np.int16)
    off = np.zeros(int(_OFF_SECONDS * opus.SAMPLE_RATE), dtype=np.int16)
    return tuple(opus.encode(np.concatenate([on, off])))


class RingbackPlayer:
    """Plays ringback into ``send`` in real time until :meth:`close`."""

    def __init__(self, send: Callable[[object, RtpPacket], None]) -> None:
        self._send = send
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ringback")

    def stop(self) -> None:
        """Stop sending now (the task finishes on its own; :meth:`close` waits for it)."""
        if self._task is not None:
            self._task.cancel()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        packets = ringback_packets()
        start = time.monotonic()
        index = 0
        while True:
            payload = packets[index % len(packets)]
            packet = RtpPacket(
                payload_type=0,
                sequence_number=index % 65536,
                timestamp=(index * opus.FRAME_SAMPLES) % (1 << 32),
                ssrc=0,
                payload=payload,
            )
            self._send(self, packet)
            index += 1
            # Pace against the start time, not the previous wake-up, so timing errors do not add up.
            delay = start + index * _PACKET_SECONDS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                # Far behind (a stalled loop): skip ahead rather than send a burst.
                start -= delay
