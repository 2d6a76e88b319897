"""Every place callbutton reaches below aiortc's public API, in one module (and three beside it: the
outlet that writes RTP onto a sender's stream, media/aiortc_outlet.py, the discarding of what a leg's
sockets hold unread, media/aiortc_discard.py, and the freeing of a closed connection,
media/aiortc_release.py).

aiortc's receive path always decodes (a jitter buffer and a decoder thread per receiver) and its send
path wants a track to pull frames or packets from (one task wake-up per packet). The bridge works a
level lower: it takes each RTP packet as the DTLS transport hands it to the receiver, and writes RTP
packets straight into the other leg's DTLS transport. That needs names aiortc does not promise to keep,
so the versions are pinned exactly in ``pyproject.toml`` and ``tests/test_aiortc_seam.py`` checks each
name used here: when an upgrade moves one, that test fails before any call does.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aioice.ice
import aiortc
import pylibsrtp
import structlog
from aiortc import RTCPeerConnection
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint
from aiortc.rtcdtlstransport import State as DtlsState
from aiortc.rtcrtpparameters import RTCRtpReceiveParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RtpPacket, is_rtcp
from OpenSSL import SSL

AIORTC_VERSION = "1.16.0"
RTP_HANDLER_FAILED = "rtp.handler_failed"

log = structlog.get_logger(__name__)

#: Seconds from the NTP epoch (1900) to the Unix epoch (1970).
_NTP_TO_UNIX = 2_208_988_800


def ntp_time() -> int:
    """aiortc's ``clock.current_ntp_time()`` (64-bit NTP time), from ``time.time()``: aiortc builds a
    timezone-aware datetime and subtracts another, a few microseconds per packet sent."""
    now = time.time() + _NTP_TO_UNIX
    seconds = int(now)
    return (seconds << 32) | int((now - seconds) * (1 << 32))


def ntp_ms() -> int:
    """aiortc's ``clock.current_ms()`` (milliseconds since 1900), from ``time.time()``."""
    return int((time.time() + _NTP_TO_UNIX) * 1000)


RtpHandler = Callable[[RtpPacket], None]

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


#: How long the server's legs share one DTLS certificate (aiortc makes them valid for 30 days).
CERTIFICATE_SECONDS = 24 * 3600.0


class _SharedCertificate(RTCCertificate):
    """A certificate for many connections: its fingerprints computed once, and one OpenSSL context
    for each list of SRTP profiles (an ``SSL_CTX`` is meant to be shared by connections; its session
    cache is off, as each connection's own context made it irrelevant before)."""

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key, cert)
        self.made = time.monotonic()
        self._fingerprints = super().getFingerprints()
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        key = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(key)
        if context is None:
            context = self._contexts[key] = super()._create_ssl_context(srtp_profiles)
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return context


_shared: list[_SharedCertificate] = []


def share_certificate(pc: RTCPeerConnection) -> None:
    """Give ``pc`` this process's certificate for the day instead of the one it made itself.

    Per connection, aiortc makes a key and a certificate, computes three fingerprints of it twice,
    and builds an OpenSSL context for its handshake: 0.6 ms of a leg's ~3 ms answer, spent again for
    every leg (a 50-call burst answers 50 at once). Each handshake still agrees its own keys
    (ephemeral ECDHE); the certificate only names this server, which every visitor sees alike.
    Call before the connection makes its transports (``addTransceiver``, ``setRemoteDescription``).
    """
    if not _shared or time.monotonic() - _shared[0].made > CERTIFICATE_SECONDS:
        made = RTCCertificate.generateCertificate()
        _shared[:] = [_SharedCertificate(made._key, made._cert)]
    pc._RTCPeerConnection__certificates = [_shared[0]]  # type: ignore[attr-defined]


@dataclass
class Drops:
    """What the bounded paths below aiortc dropped on one peer connection (for the leg's counters)."""

    #: datagrams received while the ICE connection's queue was full
    datagrams: int = 0
    #: datagrams not sent because the socket's send buffer was full
    sends: int = 0
    #: remote SSRCs forgotten to keep at most MAX_REMOTE_SSRCS
    ssrcs: int = 0
    #: RTP datagrams dropped on arrival because the leg's audio went nowhere (not a loss)
    idle: int = 0
    #: RTP datagrams handled as they arrived (deliver_rtp_on_arrival), not queued for aiortc's DTLS task
    direct: int = 0


def intercept_rtp(receiver: RTCRtpReceiver, handler: RtpHandler, clock_rate: int) -> None:
    """Hand every RTP packet routed to ``receiver`` to ``handler`` instead of its jitter buffer.

    The packet is still counted in the receiver's per-SSRC statistics, from which aiortc's RTCP task
    builds receiver reports (RFC 3550 section 6.4.2), so the remote end keeps seeing loss and jitter.
    Nothing reaches a decoder: the receiver starts no decoder thread, and the track's queue stays empty.
    ``handler`` runs synchronously: a packet that arrives on a socket (:func:`deliver_rtp_on_arrival`)
    is handled without a coroutine; one that takes aiortc's own path, inside its coroutine.
    """
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]

    def handle_now(packet: RtpPacket) -> None:
        stats = streams.get(packet.ssrc)
        if stats is None:
            stats = streams[packet.ssrc] = StreamStatistics(clock_rate)
        stats.add(packet)
        handler(packet)

    async def handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
        handle_now(packet)

    receiver._handle_rtp_packet = handle_rtp_packet  # type: ignore[method-assign]
    receiver.callbutton_handle_now = handle_now  # type: ignore[attr-defined]
    receiver.receive = functools.partial(_receive_without_decoder, receiver)  # type: ignore[method-assign]


async def _receive_without_decoder(receiver: RTCRtpReceiver, parameters: RTCRtpReceiveParameters) -> None:
    """``RTCRtpReceiver.receive`` without the decoder thread, which :func:`intercept_rtp` leaves unfed.

    aiortc starts a thread a receiver, when its connection connects, and joins it when it closes.
    Starting one made the event loop wait for the new thread to be scheduled and take the GIL: up
    to 40-50 ms on a busy core (a 50-call burst, docs/benchmarks.md), and each thread holds a stack.
    The rest is aiortc's: the codecs and RTX map, registration with the transport, the RTCP task.
    """
    mangled: Any = receiver
    if mangled._RTCRtpReceiver__started:
        return
    for codec in parameters.codecs:
        mangled._RTCRtpReceiver__codecs[codec.payloadType] = codec
    for encoding in parameters.encodings:
        if encoding.rtx:
            mangled._RTCRtpReceiver__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc
    mangled._RTCRtpReceiver__transport._register_rtp_receiver(receiver, parameters)
    mangled._RTCRtpReceiver__rtcp_task = asyncio.ensure_future(receiver._run_rtcp())
    mangled._RTCRtpReceiver__started = True


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


#: Datagrams an ICE connection holds for its DTLS transport to read. aioice queues every datagram that
#: is not STUN on an unbounded ``asyncio.Queue``, whoever sent it; it fills when datagrams come faster
#: than the event loop gets round to them. 256 is five seconds of one audio stream, at most 512 KiB of
#: 2 KiB datagrams.
RECEIVE_QUEUE = 256
#: Bytes a socket holds unsent. asyncio keeps a datagram the kernel refuses (a full send buffer) on an
#: unbounded deque, and aioice ignores the ``pause_writing`` it is told. Audio that cannot be sent now
#: is better dropped: the receiver conceals loss, not lateness.
SEND_BUFFER = 64 * 1024
#: Remote SSRCs a peer connection keeps state for. A peer sends one SSRC per stream (and reports from
#: one more); each new SSRC it invents costs a libsrtp stream, a routing entry and receive statistics,
#: which nothing in aiortc or libsrtp ever frees. Beyond this the least recently seen is forgotten.
MAX_REMOTE_SSRCS = 8


def bound_ice_queues(pc: RTCPeerConnection, drops: Drops) -> None:
    """Bound ``pc``'s ICE receive queue and its sockets' send buffers, dropping and counting the
    excess in ``drops`` (call once gathering is done, so that every socket exists)."""
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        _bound_receive_queue(connection, drops)
        for protocol in connection._protocols:
            transport = getattr(protocol, "transport", None)
            # Host candidates' sockets; TURN relays have a transport of their own, without a buffer.
            if transport is not None and hasattr(transport, "get_write_buffer_size"):
                _bound_send_buffer(protocol, transport, drops)


def _bound_receive_queue(connection: Any, drops: Drops) -> None:
    queue: asyncio.Queue[tuple[bytes, int] | None] = connection._queue

    def data_received(data: bytes, component: int) -> None:
        if queue.qsize() >= RECEIVE_QUEUE:
            drops.datagrams += 1
            return
        queue.put_nowait((data, component))

    connection.data_received = data_received


#: While a leg's audio goes nowhere (an available agent's standing leg, a ringing visitor's leg), one
#: RTP datagram in this many is still read through (decrypted, counted, policed, dropped); the rest are
#: dropped as they arrive. Every 0.5 s is often enough for libsrtp's rollover counter, which needs
#: fewer than 2^15 packets between two it decrypts, and the sampled packet keeps the policer honest.
IDLE_SAMPLE = 25


@dataclass(frozen=True)
class _Header:
    """What aiortc's receive statistics read of a packet (``StreamStatistics.add``)."""

    sequence_number: int
    timestamp: int


def skip_idle_rtp(pc: RTCPeerConnection, receiver: RTCRtpReceiver, wanted: Callable[[], bool], drops: Drops) -> None:
    """Drop RTP datagrams on arrival at ``pc``'s ICE sockets while ``wanted()`` is false, but one in
    IDLE_SAMPLE (call once gathering is done, so that every socket exists).

    An idle leg otherwise costs 60% of a forwarding one (decryption, parsing, routing, the queue and
    the DTLS task's wake-ups: 0.3% of a core each, measured by bench/bridge_cpu.py's ``idle`` mode).
    A dropped datagram is still counted in ``receiver``'s statistics from its clear header, when its
    SSRC is one already authenticated and it follows the newest sequence number closely, so that the
    receiver reports the peer gets do not show the skipped packets as lost (an off-path sender could
    only skew those reports of an idle leg). RTCP, STUN and DTLS are untouched.
    """
    streams: dict[int, StreamStatistics] = receiver._RTCRtpReceiver__remote_streams  # type: ignore[attr-defined]
    seen = 0

    def skipped(data: bytes) -> bool:
        nonlocal seen
        if len(data) < 12 or wanted() or not is_rtp(data):
            return False
        seen += 1
        if not seen % IDLE_SAMPLE:
            return False
        drops.idle += 1
        stats = streams.get(int.from_bytes(data[8:12], "big"))
        sequence = int.from_bytes(data[2:4], "big")
        if stats is not None and stats.max_seq is not None and 0 < (sequence - stats.max_seq) % 65536 < 100:
            stats.add(_Header(sequence, int.from_bytes(data[4:8], "big")))  # type: ignore[arg-type]
        return True

    for transceiver in pc.getTransceivers():
        # Each socket's protocol, before aioice tries the datagram as STUN (RTP never is: RFC 7983).
        for protocol in transceiver.receiver.transport.transport._connection._protocols:
            protocol.datagram_received = _unless(skipped, protocol.datagram_received)  # type: ignore[method-assign,assignment]


def deliver_rtp_on_arrival(pc: RTCPeerConnection, drops: Drops) -> None:
    """Handle each RTP datagram as ``pc``'s ICE socket receives it: decrypt, parse and hand it to its
    receiver there and then (call once gathering is done, so that every socket exists).

    aioice tries every datagram as STUN (RTP fails, with an exception) and queues it on an
    ``asyncio.Queue``, from which the DTLS transport's task takes it: a failed parse, a queue hop and a
    task wake-up per packet, a tenth of a forwarded packet's cost. Here RTP skips all three. The rest
    (STUN, DTLS, RTCP), and RTP while anything is queued before it (order is kept) or before the DTLS
    handshake has made the SRTP session, still takes aioice's and aiortc's own path.

    The receiver's handler (:func:`intercept_rtp`) runs at once, without a coroutine; a receiver
    without one has aiortc's coroutine run at once (:func:`run_now`).
    """
    for transceiver in pc.getTransceivers():
        dtls: Any = transceiver.receiver.transport
        connection = dtls.transport._connection
        queue: asyncio.Queue[tuple[bytes, int] | None] = connection._queue

        def on_arrival(data: bytes, dtls: Any = dtls, queue: asyncio.Queue[Any] = queue) -> bool:
            srtp = dtls._rx_srtp
            if srtp is None or dtls._state is not DtlsState.CONNECTED or not is_rtp(data) or not queue.empty():
                return False
            drops.direct += 1
            dtls._RTCDtlsTransport__rx_bytes += len(data)
            dtls._RTCDtlsTransport__rx_packets += 1
            try:
                packet = RtpPacket.parse(srtp.unprotect(data), dtls._rtp_header_extensions_map)
            except (pylibsrtp.Error, ValueError):
                return True  # as aiortc does: not authentic, or not RTP after all
            receiver = dtls._rtp_router.route_rtp(packet)
            if receiver is None:
                return True
            handle_now = getattr(receiver, "callbutton_handle_now", None)
            if handle_now is None:
                run_now(receiver._handle_rtp_packet(packet, arrival_time_ms=ntp_ms()))
                return True
            try:
                handle_now(packet)
            except Exception:
                log.exception(RTP_HANDLER_FAILED)
            return True

        for protocol in connection._protocols:
            protocol.datagram_received = _unless(on_arrival, protocol.datagram_received)


def run_now(coroutine: Coroutine[Any, Any, None], *, raising: bool = False) -> None:
    """Run ``coroutine`` up to its first wait now; if it waits, go on as each future it awaits is done.
    What it raises is logged, or with ``raising`` raised here when it raises before its first wait."""
    try:
        awaited = coroutine.send(None)
    except StopIteration:
        return  # (nearly always: nothing below the handlers and sends waits)
    except Exception:
        if raising:
            raise
        log.exception(RTP_HANDLER_FAILED)
        return

    def step(_: object = None) -> None:
        try:
            resume_after(coroutine.send(None))
        except StopIteration:
            return
        except Exception:
            log.exception(RTP_HANDLER_FAILED)

    def resume_after(awaited: Any) -> None:
        if awaited is None:  # a bare yield (asyncio.sleep(0)): the next turn of the loop
            asyncio.get_running_loop().call_soon(step)
        else:
            awaited._asyncio_future_blocking = False
            awaited.add_done_callback(step)

    resume_after(awaited)


def _unless(skipped: Callable[[bytes], bool], receive: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    def datagram_received(data: Any, addr: Any) -> None:
        if not skipped(data):
            receive(data, addr)

    return datagram_received


def is_rtp(data: bytes) -> bool:
    """RTP or SRTP, as opposed to STUN, DTLS or RTCP (RFC 7983 section 7; RFC 5761 section 4)."""
    return len(data) >= 2 and 128 <= data[0] <= 191 and not is_rtcp(data)


def _bound_send_buffer(protocol: Any, transport: Any, drops: Drops) -> None:
    send_data = protocol.send_data

    async def bounded_send_data(data: bytes, addr: tuple[str, int]) -> None:
        if transport.get_write_buffer_size() >= SEND_BUFFER:
            drops.sends += 1
            return
        await send_data(data, addr)

    def send_now(data: bytes, addr: tuple[str, int]) -> None:
        """bounded_send_data without a coroutine (aioice's send_data is the ``sendto`` alone)."""
        if transport.get_write_buffer_size() >= SEND_BUFFER:
            drops.sends += 1
            return
        transport.sendto(data, addr)

    protocol.send_data = bounded_send_data
    protocol.send_now = send_now


def bound_remote_ssrcs(receiver: RTCRtpReceiver, drops: Drops) -> None:
    """Keep state for at most MAX_REMOTE_SSRCS remote SSRCs on ``receiver``'s transport (call before
    its DTLS handshake): its SRTP receive session, once made, is wrapped to forget the least recently
    seen SSRC when a new one authenticates, everywhere aiortc keeps one (libsrtp's stream, the RTP
    router's table, the receiver's statistics and sender-report times)."""
    dtls: Any = receiver.transport
    setup_srtp = dtls._setup_srtp
    router = dtls._rtp_router
    receiver_any: Any = receiver
    streams: dict[int, StreamStatistics] = receiver_any._RTCRtpReceiver__remote_streams
    lsr: dict[int, int] = receiver_any._RTCRtpReceiver__lsr
    lsr_time: dict[int, float] = receiver_any._RTCRtpReceiver__lsr_time

    def forget(ssrc: int) -> None:
        drops.ssrcs += 1
        for table in (router.ssrc_table, streams, lsr, lsr_time):
            table.pop(ssrc, None)

    def bounded_setup_srtp() -> None:
        setup_srtp()
        if dtls._rx_srtp is not None:
            dtls._rx_srtp = _BoundedSrtpSession(dtls._rx_srtp, forget)

    dtls._setup_srtp = bounded_setup_srtp


class _BoundedSrtpSession:
    """An SRTP receive session that keeps streams for at most MAX_REMOTE_SSRCS SSRCs.

    libsrtp clones a stream from its template for each SSRC whose first packet authenticates (RFC 3711
    section 3.2.3: the replay list and rollover counter are per SSRC) and frees none until the session
    ends; so does aiortc's routing. Only authenticated packets are seen here: an off-path sender cannot
    make this forget anything."""

    def __init__(self, session: pylibsrtp.Session, forget: Callable[[int], None]) -> None:
        self._session = session
        self._forget = forget
        self._seen: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._last: int | None = None

    def unprotect(self, data: bytes) -> bytes:
        plain: bytes = self._session.unprotect(data)
        self._saw(int.from_bytes(plain[8:12], "big"))  # RTP: the SSRC after 8 header bytes
        return plain

    def unprotect_rtcp(self, data: bytes) -> bytes:
        plain: bytes = self._session.unprotect_rtcp(data)
        self._saw(int.from_bytes(plain[4:8], "big"))  # RTCP: the first packet's sender SSRC
        return plain

    def _saw(self, ssrc: int) -> None:
        if ssrc == self._last:
            return
        self._last = ssrc
        if ssrc in self._seen:
            self._seen.move_to_end(ssrc)
            return
        self._seen[ssrc] = None
        if len(self._seen) > MAX_REMOTE_SSRCS:
            oldest, _ = self._seen.popitem(last=False)
            with contextlib.suppress(pylibsrtp.Error):
                self._session.remove_stream(oldest)
            self._forget(oldest)
