"""Every place callbutton reaches below aiortc's public API, in one module.

aiortc's receive path always decodes (a jitter buffer and a decoder thread per receiver) and its send
path wants a track to pull frames or packets from (one task wake-up per packet). The bridge works a
level lower: it takes each RTP packet as the DTLS transport hands it to the receiver, and writes RTP
packets straight into the other leg's DTLS transport. That needs names aiortc does not promise to keep,
so the versions are pinned exactly in ``pyproject.toml`` and ``tests/test_aiortc_seam.py`` checks each
name used here: when an upgrade moves one, that test fails before any call does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aioice.ice
import aiortc
from aiortc import RTCPeerConnection, clock
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensions, RtpPacket, is_rtcp

AIORTC_VERSION = "1.16.0"

RtpHandler = Callable[[RtpPacket], Awaitable[None]]

_original_get_host_addresses = aioice.ice.get_host_addresses


def check_version() -> None:
    """Refuse to run on an aiortc this module was not written and tested against."""
    if aiortc.__version__ != AIORTC_VERSION:
        raise RuntimeError(f"media.aiortc_seam is written for aiortc {AIORTC_VERSION}, found {aiortc.__version__}")


def pin_host_addresses(addresses: Sequence[str]) -> None:
    """Make ICE gather host candidates on exactly ``addresses`` (all interfaces when empty).

    aioice enumerates interfaces itself and skips 127.0.0.1 and ::1, so on a loopback-only network
    (tests, a single-machine demo) it gathers nothing unless told. The setting is process-wide, as
    aioice reads a module-level function; every leg in a process shares its host addresses.
    """
    pinned = [str(ipaddress.ip_address(a)) for a in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if not pinned:
            return _original_get_host_addresses(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        return [
            a
            for a in pinned
            if (use_ipv4 and ipaddress.ip_address(a).version == 4)
            or (use_ipv6 and ipaddress.ip_address(a).version == 6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses


def intercept_rtp(receiver: RTCRtpReceiver, handler: RtpHandler, clock_rate: int) -> None:
    """Hand every RTP packet routed to ``receiver`` to ``handler`` instead of its jitter buffer.

    The packet is still counted in the receiver's per-SSRC statistics, from which aiortc's RTCP task
    builds receiver reports (RFC 3550 section 6.4.2), so the remote end keeps seeing loss and jitter.
    Nothing reaches the decoder: its thread idles and the track's queue stays empty.
    """
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(clock_rate)
        stats.add(packet)
        await handler(packet)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]


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

    @property
    def ssrc(self) -> int:
        return self._ssrc

    async def send(self, packet: RtpPacket) -> None:
        """Send ``packet`` (modified in place). Raises ConnectionError when the leg is down."""
        packet.ssrc = self._ssrc
        packet.csrc = []
        packet.padding_size = 0
        extensions = HeaderExtensions()
        extensions.mid = self._mid
        extensions.audio_level = packet.extensions.audio_level
        packet.extensions = extensions
        data = packet.serialize(self._transport._rtp_header_extensions_map)
        await self._transport._send_rtp(data)
        sender: Any = self._sender
        sender._RTCRtpSender__ntp_timestamp = clock.current_ntp_time()
        sender._RTCRtpSender__rtp_timestamp = packet.timestamp
        sender._RTCRtpSender__octet_count += len(packet.payload)
        sender._RTCRtpSender__packet_count += 1


def impair_outgoing(sender: RTCRtpSender, *, loss: float, delay: float, jitter: float, rng: random.Random) -> None:
    """Make ``sender``'s transport lose and delay outgoing RTP like a bad network (for synthetic
    peers only): each packet is dropped with probability ``loss``, else sent after ``delay`` plus a
    uniform ``-jitter..+jitter`` seconds (so packets may be reordered). RTCP goes out untouched."""
    transport = sender.transport
    send = transport._send_rtp
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    async def later(data: bytes, wait: float) -> None:
        await asyncio.sleep(wait)
        with contextlib.suppress(ConnectionError):
            await send(data)

    async def impaired(data: bytes) -> None:
        if is_rtcp(data):
            await send(data)
            return
        if rng.random() < loss:
            return
        wait = max(0.0, delay + rng.uniform(-jitter, jitter))
        if wait <= 0:
            await send(data)
            return
        task = loop.create_task(later(data, wait))
        pending.add(task)
        task.add_done_callback(pending.discard)

    transport._send_rtp = impaired  # type: ignore[method-assign]


#: Bytes read per datagram. asyncio reads each one with ``recvfrom(max_size)``, 256 KiB by default:
#: every packet allocates 256 KiB and shrinks it, which costs CPU and, through the fragmentation it
#: leaves, memory. No RTP, RTCP, STUN or DTLS datagram here comes near the path MTU.
DATAGRAM_BUFFER = 2048


def shrink_receive_buffers(pc: RTCPeerConnection) -> None:
    """Read ``pc``'s ICE sockets with a datagram-sized buffer (call once gathering is done)."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            transport = getattr(protocol, "transport", None)
            if transport is not None and hasattr(transport, "max_size"):
                transport.max_size = DATAGRAM_BUFFER
