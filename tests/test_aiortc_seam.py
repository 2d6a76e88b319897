"""The seam below aiortc's public API (media/aiortc_seam.py): every private name it uses, and what it
must achieve, checked against the pinned aiortc. When an upgrade moves something, these fail first."""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import inspect
import itertools
import random
import socket
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aioice.ice
import aiortc
import pytest
import uvloop
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, clock
from aiortc.rtcdtlstransport import RTCDtlsTransport, RtpRouter
from aiortc.rtcicetransport import RTCIceTransport
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver, StreamStatistics
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from media import aiortc_discard, aiortc_seam
from media.aiortc_outlet import RtpOutlet
from media.aiortc_seam import AIORTC_VERSION, check_version, pin_host_addresses
from media.bridge import Bridge
from media.leg import IceSettings, Leg, LegState
from media.synthetic import AudioSink, OpusLoopTrack, dominant_frequency


def test_pinned_version_and_private_names() -> None:
    assert aiortc.__version__ == AIORTC_VERSION
    check_version()
    assert callable(aioice.ice.get_host_addresses)
    # Names the seam reads or writes on aiortc objects.
    assert "_handle_rtp_packet" in vars(RTCRtpReceiver)
    assert "_send_rtp" in vars(RTCDtlsTransport)
    source = RTCRtpReceiver.__init__.__code__.co_names
    assert "_RTCRtpReceiver__remote_streams" in source
    sender_names = RTCRtpSender.__init__.__code__.co_names
    for name in ("__ntp_timestamp", "__rtp_timestamp", "__octet_count", "__packet_count"):
        assert f"_RTCRtpSender{name}" in sender_names, name
    # The sender's RTCP task reads those counters to build sender reports.
    assert "_RTCRtpSender__packet_count" in RTCRtpSender._run_rtcp.__code__.co_names
    # The bounds below aiortc (media/aiortc_seam.py: bound_ice_queues, bound_remote_ssrcs).
    connection_names = aioice.ice.Connection.__init__.__code__.co_names
    assert "_queue" in connection_names and "_protocols" in connection_names
    assert "data_received" in vars(aioice.ice.Connection)
    assert "send_data" in vars(aioice.ice.StunProtocol)
    assert "_setup_srtp" in vars(RTCDtlsTransport)
    dtls_names = RTCDtlsTransport.__init__.__code__.co_names
    assert "_rx_srtp" in dtls_names and "_rtp_router" in dtls_names
    assert "ssrc_table" in RtpRouter.__init__.__code__.co_names
    for name in ("_RTCRtpReceiver__lsr", "_RTCRtpReceiver__lsr_time"):
        assert name in source, name
    # discard_queued_rtp reads a host socket's datagrams itself, as asyncio's transport would.
    assert "_sock" in asyncio.selector_events._SelectorTransport.__init__.__code__.co_names
    assert "_sock.recvfrom" in inspect.getsource(asyncio.selector_events._SelectorDatagramTransport._read_ready)
    assert "datagram_received" in vars(aioice.ice.StunProtocol)
    # deliver_rtp_on_arrival does for RTP what the DTLS transport's receive task does.
    assert {"_rtp_header_extensions_map", "_RTCDtlsTransport__rx_bytes", "_RTCDtlsTransport__rx_packets"} <= set(
        dtls_names
    )
    assert "self._rx_srtp.unprotect(data)" in inspect.getsource(RTCDtlsTransport._recv_next)
    handle_rtp = inspect.getsource(RTCDtlsTransport._handle_rtp_data)
    assert "RtpPacket.parse(data, self._rtp_header_extensions_map)" in handle_rtp
    assert "self._rtp_router.route_rtp(packet)" in handle_rtp
    assert "receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)" in handle_rtp
    # RtpOutlet sends as _send_rtp would: protect, then the nominated pair's protocol's sendto.
    send_rtp = inspect.getsource(RTCDtlsTransport._send_rtp)
    assert "self._tx_srtp.protect(data)" in send_rtp and "await self.transport._send(data)" in send_rtp
    assert {"_RTCDtlsTransport__tx_bytes", "_RTCDtlsTransport__tx_packets", "_state"} <= set(dtls_names)
    assert "self._send = self._connection.send" in inspect.getsource(RTCIceTransport)
    assert "self._nominated.get(component)" in inspect.getsource(aioice.ice.Connection.sendto)
    assert "active_pair.protocol.send_data(data, active_pair.remote_addr)" in inspect.getsource(
        aioice.ice.Connection.sendto
    )
    assert inspect.getsource(aioice.ice.StunProtocol.send_data).strip().endswith("self.transport.sendto(data, addr)")
    # intercept_rtp's receive() is aiortc's without the decoder thread: every statement of aiortc's.
    receive = inspect.getsource(RTCRtpReceiver.receive)
    assert [line.strip() for line in receive.splitlines() if line.strip().startswith("self.")] == [
        "self.__codecs[codec.payloadType] = codec",
        "self.__rtx_ssrc[encoding.rtx.ssrc] = encoding.ssrc",
        "self.__decoder_thread = threading.Thread(",
        "self.__decoder_queue,",
        "self._track._queue,",
        "self.__decoder_error,",
        "self.__decoder_thread.start()",
        "self.__transport._register_rtp_receiver(self, parameters)",
        "self.__rtcp_task = asyncio.ensure_future(self._run_rtcp())",
        "self.__started = True",
    ]
    # share_certificate replaces the certificate list that the connection gives its DTLS transports,
    # whose handshakes take their context and fingerprints from it.
    assert "_RTCPeerConnection__certificates" in RTCPeerConnection.__init__.__code__.co_names
    assert "self.__certificates" in inspect.getsource(RTCPeerConnection._RTCPeerConnection__createDtlsTransport)  # type: ignore[attr-defined]
    assert "self.__local_certificate._create_ssl_context(" in inspect.getsource(RTCDtlsTransport.start)
    assert "self.__local_certificate.getFingerprints()" in inspect.getsource(RTCDtlsTransport.getLocalParameters)
    # skip_idle_rtp counts what it drops in the receiver's statistics from the clear header.
    assert "max_seq" in StreamStatistics.__init__.__code__.co_names
    assert {"sequence_number", "timestamp"} <= set(StreamStatistics.add.__code__.co_names)


def test_check_version_refuses_another_aiortc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "9.9.9")
    with pytest.raises(RuntimeError, match=r"written for aiortc 1\.16\.0, found 9\.9\.9"):
        check_version()


async def test_pinned_host_addresses_are_the_only_candidates() -> None:
    pin_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    candidates = [line for line in pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")]
    await pc.close()
    assert candidates and all(" 127.0.0.1 " in line for line in candidates)
    pin_host_addresses([])
    assert aioice.ice.get_host_addresses(True, True) == aiortc_seam._original_get_host_addresses(True, True)
    pin_host_addresses(["127.0.0.1"])


class Peer:
    def __init__(self, tone: float) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(OpusLoopTrack.of_tone(tone))
        self.sink: AudioSink | None = None
        self.pc.on("track", self._track)

    def _track(self, track: aiortc.MediaStreamTrack) -> None:
        self.sink = AudioSink(track)

    async def connect(self, leg: Leg) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        answer = await leg.answer(self.pc.localDescription.sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(leg.connected.wait(), 10)


@contextlib.asynccontextmanager
async def bridged_pair() -> AsyncIterator[tuple[Peer, Peer, Leg, Leg, Bridge]]:
    """Peers of 440 and 880 Hz, each with its leg, the legs bridged (on the running loop)."""
    pin_host_addresses(["127.0.0.1"])
    a, b = Peer(440), Peer(880)
    leg_a, leg_b = Leg("visitor", IceSettings()), Leg("agent", IceSettings())
    bridge = Bridge(leg_a)
    try:
        await a.connect(leg_a)
        await b.connect(leg_b)
        bridge.connect(leg_b)
        yield a, b, leg_a, leg_b, bridge
    finally:
        await bridge.close()
        for closable in (leg_a, leg_b, a.pc, b.pc):
            await closable.close()
        for peer in (a, b):
            if peer.sink is not None:
                await peer.sink.close()


@pytest.fixture
async def bridged() -> AsyncIterator[tuple[Peer, Peer, Leg, Leg, Bridge]]:
    async with bridged_pair() as pair:
        yield pair


async def stats_of(pc: RTCPeerConnection, kind: str) -> list[object]:
    report = await pc.getStats()
    return [s for s in report.values() if getattr(s, "type", None) == kind]


async def test_bridge_forwards_without_decoding_and_keeps_rtcp_true(
    bridged: tuple[Peer, Peer, Leg, Leg, Bridge],
) -> None:
    await forwards_without_decoding_and_keeps_rtcp_true(*bridged)


def test_the_media_path_is_the_same_on_uvloop() -> None:
    """CALLBUTTON_EVENT_LOOP=uvloop: packets handled as they arrive and sent straight to the socket,
    RTCP true, audio both ways; and a socket's unread datagrams discarded (uvloop's transports keep
    their socket to libuv: the seam reads a duplicate of its descriptor)."""

    async def scenario() -> None:
        async with bridged_pair() as pair:
            await forwards_without_decoding_and_keeps_rtcp_true(*pair)
        await discards_unread_datagrams()

    uvloop.run(scenario())


async def test_a_sockets_unread_datagrams_are_discarded_but_rtp_only() -> None:
    await discards_unread_datagrams()


async def discards_unread_datagrams() -> None:
    """RTP waiting in a socket's kernel buffer is dropped unread; anything else (STUN) is handed on."""
    received: list[bytes] = []

    class Receiving(asyncio.DatagramProtocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport  # (as aioice's protocol keeps it)

        def datagram_received(self, data: bytes, addr: Any) -> None:
            received.append(data)

    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        Receiving, local_addr=("127.0.0.1", 0)
    )
    try:
        rtp, stun = b"\x80\x6f" + bytes(98), b"\x00\x01" + bytes(18)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for data in (rtp, stun, rtp, rtp):  # sent without yielding: the loop has read none of them
                sender.sendto(data, transport.get_extra_info("sockname"))
        time.sleep(0.05)  # noqa: ASYNC251 - (loopback delivers at once; the loop must not run meanwhile)
        assert aiortc_discard._discard_datagrams(protocol, protocol) == 3
        assert received == [stun]
    finally:
        transport.close()


async def forwards_without_decoding_and_keeps_rtcp_true(a: Peer, b: Peer, leg_a: Leg, leg_b: Leg, _: Bridge) -> None:
    # Both legs have the process's certificate (share_certificate) and one OpenSSL context.
    transports = [leg._pc.getTransceivers()[0].sender.transport for leg in (leg_a, leg_b) if leg._pc is not None]
    assert len({t.getLocalParameters().fingerprints[0].value for t in transports}) == 1
    assert transports[0]._ssl.get_context() is transports[1]._ssl.get_context()
    # Count what still takes aiortc's own send path (RTCP does; forwarded RTP need not).
    through_aiortc = {leg: 0 for leg in (leg_a, leg_b)}
    for leg in (leg_a, leg_b):
        assert leg._pc is not None
        dtls: Any = leg._pc.getTransceivers()[0].sender.transport
        send_rtp = dtls._send_rtp

        async def counted(data: bytes, leg: Leg = leg, send_rtp: Any = send_rtp) -> None:
            through_aiortc[leg] += 1
            await send_rtp(data)

        dtls._send_rtp = counted
    sent_before = {leg: leg.counters.packets_out for leg in (leg_a, leg_b)}
    await asyncio.sleep(3)  # long enough for a few RTCP intervals (0.5 to 1.5 s each)
    for leg in (leg_a, leg_b):
        assert leg.counters.packets_out - sent_before[leg] > 100
        assert through_aiortc[leg] < 10, "forwarded RTP went through aiortc's send coroutines"
        (transport,) = await stats_of(leg._pc, "transport")  # type: ignore[arg-type]
        assert transport.packetsSent >= leg.counters.packets_out  # type: ignore[attr-defined]
    assert a.sink is not None and b.sink is not None
    assert abs((dominant_frequency(a.sink.samples()) or 0) - 880) < 15
    assert abs((dominant_frequency(b.sink.samples()) or 0) - 440) < 15

    # Nothing went to aiortc's jitter buffer and decoder on the server side, and the packets were
    # handled as they arrived, not queued for the DTLS transport's task.
    for leg in (leg_a, leg_b):
        assert leg.counters.packets_in > 100
        assert leg.drops.direct >= 0.9 * leg.counters.packets_in, (leg.drops, leg.counters)
        assert leg._pc is not None
        receiver = leg._pc.getTransceivers()[0].receiver
        assert receiver.track._queue.qsize() == 0
        assert receiver._RTCRtpReceiver__decoder_thread is None  # type: ignore[attr-defined]

    # Receiver reports from the server reach each peer's sender (remote-inbound-rtp) ...
    for peer in (a, b):
        (remote_inbound,) = await stats_of(peer.pc, "remote-inbound-rtp")
        assert remote_inbound.packetsReceived > 50  # type: ignore[attr-defined]
        # ... and the server's sender reports count the forwarded packets (remote-outbound-rtp).
        (remote_outbound,) = await stats_of(peer.pc, "remote-outbound-rtp")
        assert remote_outbound.packetsSent > 50  # type: ignore[attr-defined]


async def test_forwarded_stream_is_continuous_across_a_source_switch(
    bridged: tuple[Peer, Peer, Leg, Leg, Bridge],
) -> None:
    a, _, leg_a, _, first = bridged
    await asyncio.sleep(1)
    # The visitor's leg switches to another agent's audio: what the visitor receives must stay one
    # stream (one SSRC, no sequence jump that the receiver would count as loss).
    c = Peer(660)
    leg_c = Leg("agent", IceSettings())
    try:
        await c.connect(leg_c)
        await first.close()
        bridge = Bridge(leg_a)
        bridge.connect(leg_c)
        await asyncio.sleep(0.5)
        assert a.sink is not None
        a.sink._frames.clear()
        await asyncio.sleep(1.5)
        assert abs((dominant_frequency(a.sink.samples()) or 0) - 660) < 15
        (inbound,) = await stats_of(a.pc, "inbound-rtp")
        assert inbound.packetsLost <= 2  # type: ignore[attr-defined]
        await bridge.close()
    finally:
        await leg_c.close()
        await c.pc.close()
        if c.sink is not None:
            await c.sink.close()
    assert leg_c.state is LegState.CLOSED


async def test_an_idle_leg_drops_audio_on_arrival_reports_none_lost_and_forwards_at_once() -> None:
    """A leg whose audio goes nowhere (an available agent's standing leg) reads one RTP packet in
    IDLE_SAMPLE and drops the rest as they arrive; its receiver reports still count them, and audio
    goes through in full as soon as it has somewhere to go."""
    pin_host_addresses(["127.0.0.1"])
    peer = Peer(440)
    leg = Leg("agent", IceSettings())
    try:
        await peer.connect(leg)
        await asyncio.sleep(3)  # about 150 packets, and a few RTCP intervals
        assert leg.drops.idle > 100
        assert 0 < leg.counters.packets_in <= leg.drops.idle // (aiortc_seam.IDLE_SAMPLE - 1) + 2
        # The server's receiver reports (every 0.5-1.5 s, later on a loaded machine) count the
        # dropped packets as received: nothing lost.
        for _ in range(30):
            (remote_inbound,) = await stats_of(peer.pc, "remote-inbound-rtp")
            if remote_inbound.packetsReceived > 100:  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.2)
        assert remote_inbound.packetsReceived > 100  # type: ignore[attr-defined]
        assert remote_inbound.packetsLost <= 2  # type: ignore[attr-defined]
        assert remote_inbound.fractionLost == 0  # type: ignore[attr-defined]

        received: list[int] = []

        def collect(packet: RtpPacket) -> None:
            received.append(packet.sequence_number)

        idle_before = leg.drops.idle
        leg.inbound = collect
        await asyncio.sleep(1)
        assert leg.drops.idle == idle_before
        assert len(received) >= 45
        assert all((b - a) % 65536 == 1 for a, b in itertools.pairwise(received))
    finally:
        await leg.close()
        await peer.pc.close()


async def test_a_coroutine_run_now_that_waits_is_carried_on_as_its_futures_complete() -> None:
    """What runs at once (aiortc's handler of a packet handled on arrival, a send through aiortc's
    transport) and waits must still finish, in order; one that fails is logged without stopping the
    next, or, asked to, raises what it raised before its first wait (a send's ConnectionError)."""
    steps: list[str] = []
    gate = asyncio.get_running_loop().create_future()

    async def waits() -> None:
        steps.append("started")
        await gate
        await asyncio.sleep(0)
        steps.append("finished")

    async def fails() -> None:
        raise ConnectionError("down")

    aiortc_seam.run_now(waits())
    assert steps == ["started"]
    aiortc_seam.run_now(fails())  # logged
    with pytest.raises(ConnectionError, match="down"):
        aiortc_seam.run_now(fails(), raising=True)
    gate.set_result(None)
    for _ in range(10):
        await asyncio.sleep(0)
    assert steps == ["started", "finished"]


def test_ntp_clock_agrees_with_aiortcs() -> None:
    """The seam's cheaper NTP clock (sender reports pair it with RTP timestamps) reads as aiortc's."""
    before = clock.current_ntp_time()
    ours = aiortc_seam.ntp_time()
    after = clock.current_ntp_time()
    assert before <= ours <= after + (1 << 32) // 1000  # within a millisecond
    assert abs(aiortc_seam.ntp_ms() - clock.current_ms()) <= 2


def test_outlet_serialises_as_aiortc_does() -> None:
    """RtpOutlet writes the header itself: byte for byte what aiortc's serialize makes, for every MID and
    audio-level id a negotiation can give (ids beyond a one-byte header's take aiortc's own path)."""
    rng = random.Random(7)
    mid_uri, level_uri = "urn:ietf:params:rtp-hdrext:sdes:mid", "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
    cases = itertools.product((None, 1, 9, 14, 15), (None, 1, 2, 14, 15), (None, "0", "audio", "a" * 16, "a" * 17))
    for mid_id, level_id, mid in cases:
        extensions_map = HeaderExtensionsMap()
        extensions_map.configure(
            RTCRtpParameters(
                headerExtensions=[
                    RTCRtpHeaderExtensionParameters(id=i, uri=uri)
                    for i, uri in ((mid_id, mid_uri), (level_id, level_uri))
                    if i is not None
                ]
            )
        )
        sender: Any = SimpleNamespace(
            transport=SimpleNamespace(_rtp_header_extensions_map=extensions_map), _ssrc=rng.getrandbits(32)
        )
        outlet = RtpOutlet(sender, mid)
        for level in (None, (True, 127), (False, 5), (True, 0)):
            fields = {
                "payload_type": rng.randrange(96, 128),
                "marker": rng.randrange(2),
                "sequence_number": rng.getrandbits(16),
                "timestamp": rng.getrandbits(32),
                "payload": rng.randbytes(rng.randrange(1, 200)),
            }
            ours, theirs = RtpPacket(**fields), RtpPacket(**fields)
            ours.extensions.audio_level = level
            theirs.ssrc = sender._ssrc
            theirs.extensions.mid = mid
            theirs.extensions.audio_level = level
            assert outlet._serialize(ours) == theirs.serialize(extensions_map), (mid_id, level_id, mid, level)
