"""Writing RTP packets onto a sender's stream below aiortc's track machinery (one of the places below
aiortc's public API, beside ``media.aiortc_seam``; the same pins and ``tests/test_aiortc_seam.py``
cover it)."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensions, RtpPacket
from av.frame import Frame

from media.aiortc_seam import ntp_time, run_now


class PlaceholderTrack(MediaStreamTrack):
    """Occupies a sender's track slot so that aiortc negotiates sendrecv and runs the sender's RTCP.

    Nothing is ever pulled from it: packets are written below the track machinery by RtpOutlet.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._ended = asyncio.Event()

    async def recv(self) -> Frame:
        await self._ended.wait()
        raise MediaStreamError

    def stop(self) -> None:
        self._ended.set()
        super().stop()


class RtpOutlet:
    """Writes RTP packets onto a sender's stream, as that sender would have.

    The caller sets sequence number, timestamp, payload type and marker; the outlet sets the sender's
    SSRC and MID, serialises with the header-extension ids negotiated on that transport, protects with
    SRTP and sends. It also feeds the sender's counters so that aiortc's sender reports stay true
    (RFC 3550 section 6.4.1: packet and octet counts, and the NTP/RTP timestamp pair).
    """

    def __init__(self, sender: RTCRtpSender, mid: str | None) -> None:
        self._sender = sender
        self._transport = sender.transport
        self._ssrc: int = sender._ssrc
        self._mid = mid
        self._ids: tuple[int | None, int | None] | None = None  # (mid, audio level) as last negotiated
        self._mid_element: bytes | None = None  # the mid's one-byte-header element, b"" without one

    @property
    def ssrc(self) -> int:
        return self._ssrc

    @property
    def connected(self) -> bool:
        """Whether the sender's DTLS transport is connected (SRTP keys agreed): packets can go."""
        return bool(self._transport._state is DtlsState.CONNECTED)

    def send_now(self, packet: RtpPacket) -> None:
        """Send ``packet`` (modified in place) without a coroutine where it can be (:meth:`send_direct`),
        else through aiortc's transport, started at once (:func:`run_now`: on every transport aioice has,
        that path sends without waiting). Raises ConnectionError when the leg is down."""
        if not self.send_direct(packet):
            run_now(self.send(packet, direct=False), raising=True)

    async def send(self, packet: RtpPacket, *, direct: bool = True) -> None:
        """Send ``packet`` (modified in place). Raises ConnectionError when the leg is down. Not
        ``direct``: always through aiortc's transport (whose send a synthetic peer may have wrapped)."""
        if not (direct and self.send_direct(packet)):
            await self._transport._send_rtp(self._serialize(packet))
            self._count(packet)

    def send_direct(self, packet: RtpPacket) -> bool:
        """Send ``packet`` (modified in place) at once, without a coroutine, when it can be: connected,
        on a pair whose socket has a direct send (host sockets, see ``_bound_send_buffer``). False,
        with nothing sent, when it cannot (:meth:`send` then takes aiortc's path)."""
        # What the DTLS transport's _send_rtp does (protect, then aioice's send on the nominated pair),
        # without its four coroutines a packet.
        dtls: Any = self._transport
        pair = dtls.transport._connection._nominated.get(1)
        send_now = getattr(pair.protocol, "send_now", None) if pair is not None else None
        if send_now is None or dtls._state is not DtlsState.CONNECTED:
            return False
        protected = dtls._tx_srtp.protect(self._serialize(packet))
        send_now(protected, pair.remote_addr)
        dtls._RTCDtlsTransport__tx_bytes += len(protected)
        dtls._RTCDtlsTransport__tx_packets += 1
        self._count(packet)
        return True

    def _count(self, packet: RtpPacket) -> None:
        sender: Any = self._sender
        sender._RTCRtpSender__ntp_timestamp = ntp_time()
        sender._RTCRtpSender__rtp_timestamp = packet.timestamp
        sender._RTCRtpSender__octet_count += len(packet.payload)
        sender._RTCRtpSender__packet_count += 1

    def _serialize(self, packet: RtpPacket) -> bytes:
        """What aiortc's ``packet.serialize`` makes of ``packet`` with this sender's SSRC and MID and its
        audio level, as negotiated on this transport, byte for byte, without building its header
        extension objects (a quarter of a forwarded packet's cost went to serialising). Header
        extensions with an id or a length a one-byte header cannot carry take aiortc's own path."""
        extensions_map: Any = self._transport._rtp_header_extensions_map
        ids = extensions_map._HeaderExtensionsMap__ids
        negotiated = (ids.mid, ids.audio_level)
        if negotiated != self._ids:
            self._ids, self._mid_element = negotiated, _one_byte_mid(self._mid, ids.mid)
        level = packet.extensions.audio_level
        level_id = negotiated[1] if level is not None else None
        if self._mid_element is None or (level_id is not None and level_id > 14):
            packet.ssrc = self._ssrc
            packet.csrc = []
            packet.padding_size = 0
            extensions = HeaderExtensions()
            extensions.mid = self._mid
            extensions.audio_level = level
            packet.extensions = extensions
            return packet.serialize(extensions_map)
        elements = self._mid_element
        if level is not None and level_id:
            elements += bytes((level_id << 4, (0x80 if level[0] else 0) | (level[1] & 0x7F)))
        first = (packet.marker << 7) | packet.payload_type
        if not elements:
            return _HEADER.pack(0x80, first, packet.sequence_number, packet.timestamp, self._ssrc) + packet.payload
        elements += bytes(-len(elements) % 4)
        return (
            _HEADER.pack(0x90, first, packet.sequence_number, packet.timestamp, self._ssrc)
            + _EXTENSION.pack(0xBEDE, len(elements) >> 2)
            + elements
            + packet.payload
        )


#: An RTP fixed header (RFC 3550 section 5.1) and the header of its extension block (RFC 8285 section 4.2).
_HEADER = struct.Struct("!BBHLL")
_EXTENSION = struct.Struct("!HH")


def _one_byte_mid(mid: str | None, mid_id: int | None) -> bytes | None:
    """The MID's element in a one-byte header extension block (empty when it is not sent); None when
    a one-byte header cannot carry it (RFC 8285 section 4.2: ids 1-14, 1-16 bytes)."""
    if mid is None or not mid_id:
        return b""
    value = mid.encode("utf8")
    if mid_id > 14 or not 1 <= len(value) <= 16:
        return None
    return bytes(((mid_id << 4) | (len(value) - 1),)) + value
