"""One continuous outgoing RTP stream fed by sources that come and go.

A leg's peer must see a single well-formed stream (RFC 3550 section 5.1): sequence numbers that
advance by one per packet, timestamps that advance with media time, one SSRC. Its sources change during
a call (ringback, then the agent; later, an agent after a transfer), each with its own SSRC, sequence
and timestamp spaces. The stream maps each source onto its own numbering by an offset fixed when the
source starts: gaps and reordering within a source survive the mapping (so the receiver still sees
loss), and a switch continues where the previous source stopped, the timestamp advanced by the
wall-clock time in between and the marker bit set, as for the first packet after silence
(RFC 3551 section 4.1).
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol

from aiortc.rtp import RtpPacket

_SEQ_MOD = 1 << 16
_TS_MOD = 1 << 32
_FRAME = 960  # one 20 ms Opus frame at 48 kHz: the least a switch may advance the timestamp


class Outlet(Protocol):
    def send_now(self, packet: RtpPacket) -> None: ...


class OutgoingStream:
    """Rewrites packets from any source into one stream and hands them to an outlet."""

    def __init__(self, outlet: Outlet, payload_type: int, clock_rate: int) -> None:
        self._outlet = outlet
        self._payload_type = payload_type
        self._clock_rate = clock_rate
        # Random initial values (RFC 3550 section 5.1); the sequence number in the lower half, as
        # aiortc and libwebrtc do, so that SRTP's rollover counter estimate starts safely.
        self._last_seq = secrets.randbelow(_SEQ_MOD // 2)
        self._last_ts = secrets.randbelow(_TS_MOD)
        self._last_time: float | None = None
        self._source: tuple[object, int] | None = None
        self._seq_offset = 0
        self._ts_offset = 0

    def send(self, source: object, packet: RtpPacket) -> None:
        key = (source, packet.ssrc)
        now = time.monotonic()
        marker = packet.marker
        if key != self._source:
            self._source = key
            elapsed = _FRAME
            if self._last_time is not None:
                elapsed = max(_FRAME, round((now - self._last_time) * self._clock_rate))
            self._seq_offset = (self._last_seq + 1 - packet.sequence_number) % _SEQ_MOD
            self._ts_offset = (self._last_ts + elapsed - packet.timestamp) % _TS_MOD
            marker = 1
        seq = (packet.sequence_number + self._seq_offset) % _SEQ_MOD
        ts = (packet.timestamp + self._ts_offset) % _TS_MOD
        if _seq_newer(seq, self._last_seq):
            self._last_seq = seq
            self._last_ts = ts
        self._last_time = now
        packet.sequence_number = seq
        packet.timestamp = ts
        packet.payload_type = self._payload_type
        packet.marker = marker
        self._outlet.send_now(packet)


def _seq_newer(a: int, b: int) -> bool:
    """True when sequence number ``a`` comes after ``b`` (RFC 1982 serial arithmetic)."""
    return a != b and ((a - b) % _SEQ_MOD) < _SEQ_MOD // 2
