"""Discarding the audio a leg's sockets and queues hold unread, when its audio starts going somewhere
new (one of the places below aiortc's and aioice's public API, beside ``media.aiortc_seam``: the same
pins and ``tests/test_aiortc_seam.py`` cover it)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

from aiortc import RTCPeerConnection

from media.aiortc_seam import DATAGRAM_BUFFER, is_rtp

#: Datagrams read from one socket's kernel buffer at most, to discard it: more than the default
#: receive buffer (208 KiB) holds of the smallest datagrams' kernel footprint (about 768 bytes each).
DISCARD_READS = 512


def discard_queued_rtp(pc: RTCPeerConnection) -> int:
    """Drop the RTP datagrams that have reached ``pc``'s ICE sockets but are not read yet, and return
    how many. Everything else queued (STUN, DTLS, RTCP) is kept, in order.

    Two places hold them: aioice's receive queue (datagrams the event loop has read) and the sockets'
    kernel buffers (datagrams it has not got round to), which are read here without waiting: a host
    candidate's socket, and a TURN relay's socket to its TURN server (UDP or TCP; over TLS, what the
    TLS layer has buffered cannot be read past it and stays). When the loop is behind, both hold audio
    that was sent seconds ago; a leg whose audio starts going somewhere new discards it, so that
    nobody hears what was said before they were connected.
    """
    dropped = 0
    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        queue: asyncio.Queue[tuple[bytes, int] | None] = connection._queue
        kept = []
        while not queue.empty():
            item = queue.get_nowait()
            if item is not None and is_rtp(item[0]):
                dropped += 1
            else:
                kept.append(item)
        for item in kept:
            queue.put_nowait(item)
        for protocol in connection._protocols:
            transport = getattr(protocol, "transport", None)
            relay = getattr(transport, "_TurnTransport__inner_protocol", None)
            if relay is None:
                dropped += _discard_datagrams(protocol, protocol)
            elif relay.receiver is not None:
                # The relay's client unwraps what its socket holds (ChannelData, Data indications) and
                # hands it to the ICE socket's protocol: in between, RTP is dropped.
                passing = _RtpDropper(relay.receiver)
                relay.receiver = passing
                try:
                    if isinstance(relay, asyncio.DatagramProtocol):
                        _discard_datagrams(relay, relay)
                    else:
                        _discard_stream(relay)
                finally:
                    relay.receiver = passing.receiver
                dropped += passing.dropped
    return dropped


def _discard_datagrams(protocol: Any, receiver: Any) -> int:
    """Read ``protocol``'s socket without waiting, handing ``receiver`` all but RTP; how many RTP
    datagrams were dropped."""
    dropped = 0
    with _socket_of(getattr(protocol, "transport", None)) as sock:
        if sock is None:
            return 0
        # At most what a receive buffer holds: a peer flooding its leg's port must not keep the event
        # loop here (asyncio itself reads one datagram per wake-up).
        for _ in range(DISCARD_READS):
            try:
                data, addr = sock.recvfrom(DATAGRAM_BUFFER)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                receiver.error_received(exc)  # (an ICMP error, say: the next datagram is read)
                continue
            if is_rtp(data):
                dropped += 1
            else:
                receiver.datagram_received(data, addr)
    return dropped


def _discard_stream(relay: Any) -> None:
    """Read a TURN-over-TCP relay's socket without waiting, into its client (which frames it)."""
    with _socket_of(relay.transport) as sock:
        if sock is None:
            return  # TURN over TLS: the TLS layer reads the socket
        for _ in range(DISCARD_READS):
            try:
                data = sock.recv(DATAGRAM_BUFFER)
            except OSError:  # nothing more now (BlockingIOError), or an error the loop meets next
                return
            if not data:
                return  # the end: the loop reads it again (a closed stream stays readable)
            relay.data_received(data)


@contextlib.contextmanager
def _socket_of(transport: Any) -> Iterator[socket.socket | None]:
    """The socket under ``transport``, to read without waiting: asyncio's own (``_sock``); for
    uvloop's transports, whose socket object only stands for libuv's, a duplicate of its descriptor
    (the same kernel socket, closed after); None for a transport with no socket of its own (TLS)."""
    own = getattr(transport, "_sock", None)
    if own is not None or transport is None or hasattr(transport, "_ssl_protocol"):
        yield own
        return
    stand_in = transport.get_extra_info("socket")
    if stand_in is None or type(stand_in).__module__.split(".")[0] != "uvloop":
        yield None
        return
    duplicate = socket.socket(stand_in.family, stand_in.type, fileno=os.dup(stand_in.fileno()))
    try:
        duplicate.setblocking(False)
        yield duplicate
    finally:
        duplicate.close()


class _RtpDropper:
    """Stands for a TURN client's receiver while its socket is discarded: passes on all but RTP."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.dropped = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if is_rtp(data):
            self.dropped += 1
        else:
            self.receiver.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.receiver.error_received(exc)
