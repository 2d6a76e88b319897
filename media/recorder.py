"""The call recorder: the Opus packets the bridge forwards, remuxed (never decoded or re-encoded)
into one Ogg file with one Opus stream per party (stream 0: visitor, stream 1: agent).

Timing: each party's packets are placed on the call's timeline by their RTP timestamps, from an
anchor found by arrival time. The anchor settles over the party's first two seconds: its packets are
held meanwhile, and the one that arrived least delayed fixes it (a first packet that arrived late, in
the burst after a stall, would otherwise shift the whole party). Silence (no packets) and loss
(missing packets) become gaps on that party's stream, so the two parties stay aligned however either
one is received.

Threads: the bridge's tap only appends ``(recorder, party, payload, pts)`` to a batch, which goes to the
worker every ``BATCH_SECONDS`` (one thread hand-off per batch, not per packet: per packet, waking the
worker and handing the GIL back and forth cost more than the muxing). A backlog of ``QUEUE_SIZE``
packets not yet muxed drops the next and counts them: recording never slows the call. One worker
thread per process does all PyAV muxing and writing, for every recording, so the event loop never
blocks on it.

The sink is a byte sink handed in by the caller (storage's encrypting writer): this module never
sees a key or a path.
"""

from __future__ import annotations

import asyncio
import fractions
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import av
import structlog

from media.opus import packet_samples

log = structlog.get_logger(__name__)

RECORDING_FAILED = "recording.failed"
VISITOR, AGENT = 0, 1
_CLOCK = 48000
_TIME_BASE = fractions.Fraction(1, _CLOCK)
#: How far (in samples) a party's RTP clock may disagree with arrival times before it is re-anchored.
MAX_SKEW = _CLOCK  # one second: more than any jitter buffer a browser runs
_PRE_SKIP = 312  # the encoder delay WebRTC's Opus uses (RFC 7845 section 4.2 suggests 80 ms max)
QUEUE_SIZE = 20_000  # packets handed over and not yet muxed: about 100 calls' worth of one second
#: How long a tapped packet may wait to be handed to the worker, with every other packet tapped meanwhile.
BATCH_SECONDS = 0.05
#: Packets held until the sink is attached (its file opens after the call's row is written, which can
#: wait seconds behind a burst of other calls' writes): 10 s of both parties, at most ~0.5 MiB.
_MAX_PENDING = 2000
#: How long (in samples of arrival time from a party's first packet) its anchor settles. A first packet
#: that waited (a stall of up to MAX_SKEW: longer is a re-anchor) arrives in a burst with the packets
#: that waited with it, and the next one, on time, shows by how much: within 20 ms, or 400 ms if the
#: party is silent (Opus DTX). Two seconds leave room for that and for a path's jitter to show its least
#: delay; longer would hold more of each call's start in memory (and lose it in a crash).
SETTLING = 2 * _CLOCK
_MAX_SETTLING = 200  # packets of one party held while its anchor settles: 2 s of 10 ms packets
# Ogg pages are closed every 200 ms, so a crash loses little; the I/O buffer is small for the same
# reason: what PyAV muxes reaches the sink (and the encrypted file) within a fraction of a second.
# FFmpeg interleaves the two tracks, holding one track's packets until the other has packets as late:
# by default up to 10 s, so while one party sent nothing (DTX, a muted or stalled sender) the other's
# audio stayed in memory and out of the file. ``max_interleave_delta`` bounds that wait at MAX_SKEW.
_MUX_OPTIONS = {"page_duration": "200000", "max_interleave_delta": str(1_000_000 * MAX_SKEW // _CLOCK)}
_IO_BUFFER = 1024


class ByteSink(Protocol):
    def write(self, data: bytes, /) -> object: ...

    def close(self) -> None: ...


def opus_head(channels: int = 2) -> bytes:
    """The OpusHead identification header Ogg needs in each stream's extradata (RFC 7845 section 5.1)."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, _PRE_SKIP, _CLOCK, 0, 0)


@dataclass(frozen=True)
class RecordingResult:
    duration_ms: int
    packets: int
    dropped: int
    late: int
    before_start: int
    error: str | None


class _Party:
    """One party's placement on the timeline.

    Packets are placed by RTP time (so jitter does not smear them and gaps stay gaps), from an anchor
    found by arrival time. A packet's arrival minus its RTP position is the anchor it implies, later
    by however long it was delayed: the earliest one implied is the best. So while the anchor settles
    (:meth:`hold`: ``SETTLING`` of arrival time from the first packet) packets are only held, and the
    anchor moves earlier with every packet implying an earlier one; :meth:`settle` then gives them
    their places. The sender chooses its timestamps, so they are trusted only near the truth: what is
    held must agree on the anchor within ``MAX_SKEW`` (so each is placed at most that long before its
    arrival, never after it), and a packet that would widen that ends the settling and is placed as
    any later one.

    Once settled (:meth:`place`), a packet whose RTP position is more than ``MAX_SKEW`` away from its
    arrival (a sender restart, a clock jump, a hostile peer) re-anchors the party at its arrival, just
    after what is already placed. A sender faster than real time (a flood: ten seconds of audio a
    second) would push what is placed ever further ahead, so a packet that even re-anchored would sit
    more than ``MAX_SKEW`` ahead of its arrival has no place (None): it is dropped. The timeline
    therefore never runs ahead of the call's real length by more than that.
    """

    def __init__(self) -> None:
        self.anchor: int | None = None  # timeline position of RTP position 0
        self.newest_ts = 0  # RTP timestamp of the newest packet (32-bit)
        self.newest = 0  # the same, counted from the first packet without 32-bit wraps
        self.last_pts = -1
        self.end = 0  # timeline position just after the latest packet
        self.settling_until: int | None = None  # while the anchor settles: the arrival that ends it
        self._held: list[tuple[int, bytes]] = []  # (RTP position, payload) while the anchor settles
        self._latest = 0  # the latest anchor a held packet implies

    def hold(self, rtp_timestamp: int, arrival: int, payload: bytes) -> bool:
        """Hold a packet while the anchor settles (True). False when the anchor is settled, or when this
        packet ends the settling (its window is over, the held list is full, or its anchor disagrees
        with the held packets' by more than ``MAX_SKEW``): :meth:`settle`, then :meth:`place` it."""
        if self.anchor is None:
            self.anchor = self._latest = arrival
            self.newest_ts = rtp_timestamp
            self.settling_until = arrival + SETTLING
            self._held.append((0, payload))
            return True
        if self.settling_until is None or arrival >= self.settling_until or len(self._held) >= _MAX_SETTLING:
            return False
        delta, position = self._position(rtp_timestamp)
        implied = arrival - position
        earliest, latest = min(self.anchor, implied), max(self._latest, implied)
        if latest - earliest > MAX_SKEW:
            return False
        self.anchor, self._latest = earliest, latest
        if delta > 0:
            self.newest_ts, self.newest = rtp_timestamp, position
        self._held.append((position, payload))
        return True

    def settle(self) -> list[tuple[bytes, int]]:
        """End the settling: the held packets, each with its pts, in order (none if not settling)."""
        if self.settling_until is None or self.anchor is None:
            return []
        anchor, held = self.anchor, self._held
        self.settling_until, self._held = None, []
        return sorted(((payload, anchor + position) for position, payload in held), key=lambda item: item[1])

    def place(self, rtp_timestamp: int, arrival: int) -> int | None:
        """The pts of a packet once the anchor is settled (of a first packet: its arrival, at once)."""
        if self.anchor is None:
            self.anchor = arrival
            self.newest_ts = rtp_timestamp
            return arrival
        delta, position = self._position(rtp_timestamp)
        pts = self.anchor + position
        if abs(pts - arrival) > MAX_SKEW:
            # A new run starts with this packet, at its arrival (never over what is placed already).
            pts = max(arrival, self.end)
            if pts - arrival > MAX_SKEW:
                return None  # what is placed already runs that far ahead: the sender is too fast
            self.newest_ts, self.newest = rtp_timestamp, position
            self.anchor = pts - position
        elif delta > 0:
            self.newest_ts, self.newest = rtp_timestamp, position
        return pts

    def _position(self, rtp_timestamp: int) -> tuple[int, int]:
        """How far the timestamp is from the newest (negative: reordered), and its RTP position."""
        delta = (rtp_timestamp - self.newest_ts) % (1 << 32)
        if delta >= 1 << 31:
            delta -= 1 << 32  # older than the newest: reordered
        return delta, self.newest + delta


class Recorder:
    """Records one call: :meth:`start` when the parties are connected, :meth:`tap` every packet,
    :meth:`close` at the end. The sink may be attached after the start (opening the file takes a
    database round trip): packets tapped before it are held, up to a few seconds' worth. Each party's
    own first packets wait (``SETTLING``) for its anchor to settle, see :class:`_Party`."""

    def __init__(self, worker: MuxWorker, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sink: ByteSink | None = None
        self._pending: list[tuple[Recorder, int, bytes, int]] = []
        self._worker = worker
        self._parties = (_Party(), _Party())
        self._start: float | None = None
        self._closing = False
        self.dropped = 0
        self.late = 0
        #: Packets placed before the recording's start: said before the answer, read after it (they
        #: waited in a socket while the server was busy), and not part of the call.
        self.before_start = 0
        self.packets = 0
        # Used by the worker thread only.
        self._container: Any = None
        self._streams: list[Any] = []
        self._error: str | None = None

    def start(self) -> None:
        self._start = self._clock()

    def attach(self, sink: ByteSink) -> None:
        """Give the recording its sink; held packets go to the worker first, in order."""
        self._sink = sink
        pending, self._pending = self._pending, []
        for item in pending:
            self._enqueue(item)

    def _enqueue(self, item: tuple[Recorder, int, bytes, int]) -> None:
        if self._worker.put(item):
            self.packets += 1
        else:
            self.dropped += 1

    def tap(self, party: int, rtp_timestamp: int, payload: bytes) -> None:
        """Record one packet of ``party`` (VISITOR or AGENT). Never blocks."""
        if self._start is None or self._closing or not payload:
            return
        arrival = round((self._clock() - self._start) * _CLOCK)
        for index, settling in enumerate(self._parties):
            # Whichever party's packet shows a window is over ends it: a party gone silent is not held.
            if settling.settling_until is not None and arrival >= settling.settling_until:
                self._settle(index)
        state = self._parties[party]
        if state.hold(rtp_timestamp, arrival, payload):
            return
        self._settle(party)
        pts = state.place(rtp_timestamp, arrival)
        if pts is None:
            self.dropped += 1  # faster than real time (a flood): no room on the timeline
            return
        self._emit(party, payload, pts)

    def _settle(self, party: int) -> None:
        for payload, pts in self._parties[party].settle():
            self._emit(party, payload, pts)

    def _emit(self, party: int, payload: bytes, pts: int) -> None:
        state = self._parties[party]
        if pts < 0:
            self.before_start += 1
            return
        if pts <= state.last_pts:
            # A duplicate, or too late for its place: Ogg positions only rise.
            self.late += 1
            return
        state.last_pts = pts
        state.end = max(state.end, pts + packet_samples(payload))
        item = (self, party, payload, pts)
        if self._sink is not None:
            self._enqueue(item)
        elif len(self._pending) < _MAX_PENDING:
            self._pending.append(item)
        else:
            self.dropped += 1

    async def close(self) -> RecordingResult:
        """Finish the file (the sink gets its final bytes and is closed) and report. Without a sink
        (it never came) there is nothing to finish."""
        self._closing = True
        for party in (VISITOR, AGENT):
            self._settle(party)  # what is still held while an anchor settles
        self._pending.clear()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._worker.finish(self, done)
        await done
        duration = max(p.end for p in self._parties)
        return RecordingResult(
            duration_ms=duration * 1000 // _CLOCK,
            packets=self.packets,
            dropped=self.dropped,
            late=self.late,
            before_start=self.before_start,
            error=self._error,
        )

    # --- in the worker thread -----------------------------------------------------------------------

    def _mux(self, party: int, payload: bytes, pts: int) -> None:
        if self._error is not None:
            self.dropped += 1
            return
        try:
            if self._container is None:
                self._open()
            packet = av.Packet(payload)
            packet.stream = self._streams[party]
            packet.pts = packet.dts = pts
            packet.time_base = _TIME_BASE
            packet.duration = packet_samples(payload)
            self._container.mux(packet)
        except Exception as exc:  # PyAV raises its own errors; a bad packet must not end the call
            self._fail(exc)

    def _finish(self) -> None:
        if self._sink is None:
            return
        try:
            # After a failure nothing more is written (the muxer would flush into a broken sink):
            # the file ends where it failed and reads back as truncated.
            if self._error is None:
                if self._container is None:
                    self._open()  # an empty recording is still a valid (empty) file
                self._container.close()
        except Exception as exc:
            self._fail(exc)
        try:
            self._sink.close()
        except Exception as exc:
            self._fail(exc)

    def _open(self) -> None:
        assert self._sink is not None
        self._container = av.open(
            _WriteOnly(self._sink), mode="w", format="ogg", options=_MUX_OPTIONS, buffer_size=_IO_BUFFER
        )
        for _ in (VISITOR, AGENT):
            stream = self._container.add_stream("libopus", rate=_CLOCK)
            stream.codec_context.layout = "stereo"
            stream.codec_context.extradata = opus_head()
            stream.time_base = _TIME_BASE
            self._streams.append(stream)

    def _fail(self, exc: Exception) -> None:
        self._error = f"{type(exc).__name__}: {exc}"
        log.error(RECORDING_FAILED, error=self._error)


class _WriteOnly:
    """Hides everything but ``write`` from PyAV, so it muxes for a non-seekable stream."""

    def __init__(self, sink: ByteSink) -> None:
        self.write: Callable[[bytes], object] = sink.write


class MuxWorker:
    """The one thread that muxes and writes every recording of the process. The event loop's side
    (:meth:`put`, :meth:`finish`) batches what it hands over; the worker takes a batch at a time."""

    def __init__(self, size: int = QUEUE_SIZE) -> None:
        self._size = size
        self._queue: queue.SimpleQueue[_Batch | _Finish | None] = queue.SimpleQueue()
        self._batch: _Batch = []
        self._flush_timer: asyncio.TimerHandle | None = None
        self._backlog = 0  # packets handed over and not yet muxed
        self._backlog_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="recorder-mux", daemon=True)
        self._thread.start()

    def put(self, item: tuple[Recorder, int, bytes, int]) -> bool:
        """Queue one packet (from the event loop); False if the backlog is full and it was dropped."""
        if self._backlog + len(self._batch) >= self._size:
            return False
        self._batch.append(item)
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(BATCH_SECONDS, self._flush)
        return True

    async def finish(self, recorder: Recorder, done: asyncio.Future[None]) -> None:
        """Queue a recording's end, after every packet queued before it."""
        self._flush()
        self._queue.put((recorder, done))

    def close(self) -> None:
        self._flush()
        self._queue.put(None)
        self._thread.join()

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        batch, self._batch = self._batch, []
        if batch:
            with self._backlog_lock:
                self._backlog += len(batch)
            self._queue.put(batch)

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            self._do(work)
            del work  # not held while waiting for the next: an ended recording would stay alive meanwhile

    def _do(self, work: _Batch | _Finish) -> None:
        if isinstance(work, list):
            for recorder, party, payload, pts in work:
                try:
                    recorder._mux(party, payload, pts)
                except Exception:  # never let one recording stop the thread that serves them all
                    log.exception(RECORDING_FAILED)
            with self._backlog_lock:
                self._backlog -= len(work)
        else:
            recorder, done = work
            try:
                recorder._finish()
            except Exception:
                log.exception(RECORDING_FAILED)
            finally:
                done.get_loop().call_soon_threadsafe(_resolve, done)


_Batch = list[tuple[Recorder, int, bytes, int]]
_Finish = tuple[Recorder, asyncio.Future[None]]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
