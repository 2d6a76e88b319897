"""Every synthetic party's tone, sent from one timer per event loop through ``RtpOutlet``.

aiortc's sender runs a task per track that awaits the track for each packet: a timer, a future and
a handful of coroutines a packet. At 50 packets a second and two parties a call, that made the load
generator spend more CPU per call than the server it measured (docs/benchmarks.md, "The load
generator"), and run short of CPU at about 60 calls a process. Here one timer ticks every
:data:`TICK`; each stream belongs to one of the ticks of a 20 ms frame, in turn, so that the
streams' packets are spread over the frame as independent callers' are rather than sent in one
burst, and on its tick sends what is due: one packet in real time, more (up to
:data:`MAX_CATCH_UP`) to catch up after a late tick, as a real-time sender does.

The stream writes the RTP header itself (the answer's payload type, a sequence number and a
timestamp of its own, from random starts) and ``RtpOutlet`` protects and sends it on the connection
and feeds the sender's counters, so aiortc's RTCP sender reports stay true. The sender's track is a
``PlaceholderTrack``: aiortc negotiates sendrecv and runs RTCP, and pulls nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import weakref
from collections.abc import Sequence

import structlog
from aiortc.rtp import RtpPacket

from media import opus
from media.aiortc_outlet import RtpOutlet

log = structlog.get_logger(__name__)

STREAM_FAILED = "loadtest.stream_failed"

FRAME = opus.FRAME_SAMPLES / opus.SAMPLE_RATE  # 20 ms
SLOTS = 4
TICK = FRAME / SLOTS
MAX_CATCH_UP = 5  # packets one stream sends on one tick when behind


class PacedStream:
    """One party's outgoing audio: ``packets`` (Opus) looped in real time from the moment its
    connection is up. ``direct``: sent at once (``RtpOutlet.send_direct``) where it can be; else,
    and where it cannot (a relayed candidate), through aiortc's transport, which a peer that impairs
    its network (``impair_outgoing``) needs."""

    def __init__(
        self, outlet: RtpOutlet, payload_type: int, packets: Sequence[bytes], rng: random.Random, *, direct: bool
    ) -> None:
        if not packets:
            raise ValueError("a paced stream needs at least one packet")
        self._outlet = outlet
        self._payload_type = payload_type
        self._packets = packets
        self._direct = direct
        self._sequence = rng.randrange(1 << 16)
        self._timestamp = rng.randrange(1 << 32)
        self._index = 0
        self._marker = 1  # the first packet of a talkspurt (RFC 3551 section 4.1): a call's first
        self._due: float | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.sent = 0

    def switch(self, packets: Sequence[bytes]) -> None:
        """Loop other packets from the next one on (a new call on an agent's standing leg)."""
        if not packets:
            raise ValueError("a paced stream needs at least one packet")
        self._packets = packets
        self._marker = 1

    def tick(self, now: float, scheduled: float) -> None:
        """Send what is due by ``now`` (loop time), on the tick that was due at ``scheduled``."""
        if not self._outlet.connected:
            return
        if self._due is None:
            self._due = scheduled  # on the ticks' own grid, which they keep or come late to
        sent = 0
        # Half a tick of slack: a tick a little early or late against this stream's first one sends
        # its one packet, not none on one tick and two on the next.
        while self._due <= now + TICK / 2 and sent < MAX_CATCH_UP:
            packet = RtpPacket(
                payload_type=self._payload_type,
                marker=self._marker,
                sequence_number=self._sequence,
                timestamp=self._timestamp,
                payload=self._packets[self._index % len(self._packets)],
            )
            if not (self._direct and self._outlet.send_direct(packet)):
                task = asyncio.get_running_loop().create_task(self._send(packet))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._timestamp = (self._timestamp + opus.FRAME_SAMPLES) & 0xFFFFFFFF
            self._index += 1
            self._marker = 0
            self._due += FRAME
            sent += 1
        self.sent += sent

    async def _send(self, packet: RtpPacket) -> None:
        with contextlib.suppress(ConnectionError):  # the connection went down: as aiortc's sender
            await self._outlet.send(packet, direct=self._direct)

    def stop(self) -> None:
        for task in self._pending:
            task.cancel()


class Pacer:
    """The timer of one event loop's streams; it runs while it has any. (It keeps no reference to
    its loop: the table of pacers holds loops weakly.)"""

    def __init__(self) -> None:
        self._slots: list[list[PacedStream]] = [[] for _ in range(SLOTS)]
        self._placed = 0
        self._tick_index = 0
        self._next = 0.0
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None

    def add(self, stream: PacedStream) -> None:
        self._slots[self._placed % SLOTS].append(stream)
        self._placed += 1
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time()
            self._handle = loop.call_soon(self._tick)

    def remove(self, stream: PacedStream) -> None:
        for slot in self._slots:
            if stream in slot:
                slot.remove(stream)
        if not any(self._slots) and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now, scheduled = loop.time(), self._next
        self._next = max(self._next + TICK, now)
        self._handle = loop.call_at(self._next, self._tick)
        slot = self._slots[self._tick_index % SLOTS]
        self._tick_index += 1
        for stream in list(slot):
            try:
                stream.tick(now, scheduled)
            except Exception:
                # A bug in one stream silences that one, said once; the others go on.
                log.exception(STREAM_FAILED)
                self.remove(stream)
                stream.stop()


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def pacer() -> Pacer:
    """The running event loop's pacer."""
    loop = asyncio.get_running_loop()
    found = _pacers.get(loop)
    if found is None:
        found = _pacers[loop] = Pacer()
    return found
