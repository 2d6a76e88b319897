"""One WebRTC leg: the server's end of a peer connection with a visitor or an agent.

The server always answers: the browser (or a synthetic peer) offers one audio section with its ICE
candidates gathered, and the leg answers with Opus as the only codec. Audio arriving on the leg is
delivered, packet by packet, to whatever :attr:`Leg.inbound` currently points at (the bridge sets it),
as long as the peer keeps to about real time (:mod:`media.policer`); audio leaving the leg goes through
its :class:`OutgoingStream`, which keeps one continuous RTP stream whatever source feeds it (ringback,
then the other party). Every queue below the leg is bounded (:mod:`media.aiortc_seam`): whatever its
peer sends, a leg's memory does not grow.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, OperationError
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from media.aiortc_discard import discard_queued_rtp
from media.aiortc_outlet import PlaceholderTrack, RtpOutlet
from media.aiortc_release import connection_objects, release_later
from media.aiortc_seam import (
    Drops,
    bound_ice_queues,
    bound_remote_ssrcs,
    check_version,
    deliver_rtp_on_arrival,
    intercept_rtp,
    share_certificate,
    shrink_receive_buffers,
    skip_idle_rtp,
)
from media.policer import RatePolicer
from media.rtp_stream import OutgoingStream
from media.sdp import SdpError, check_offer

log = structlog.get_logger(__name__)

LEG_STATE = "leg.state"
LEG_ANSWER_FAILED = "leg.answer_failed"
LEG_CLOSED = "leg.closed"
LEG_OVER_RATE = "leg.over_rate"
OPUS_CLOCK_RATE = 48000

InboundHandler = Callable[[RtpPacket], None]


class LegState(enum.Enum):
    NEW = "new"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


_TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.NEW: frozenset({LegState.CONNECTING, LegState.FAILED, LegState.CLOSED}),
    LegState.CONNECTING: frozenset({LegState.CONNECTED, LegState.FAILED, LegState.CLOSED}),
    LegState.CONNECTED: frozenset({LegState.FAILED, LegState.CLOSED}),
    LegState.FAILED: frozenset({LegState.CLOSED}),
    LegState.CLOSED: frozenset(),
}


@dataclass(frozen=True)
class IceSettings:
    """ICE servers for the server's own agent (URLs; TURN credentials come later)."""

    servers: Sequence[str] = ()

    def rtc_configuration(self) -> RTCConfiguration:
        # An empty list, never None: with None aiortc uses a public STUN server, which stalls every
        # answer by 5 s where it resolves but does not reply.
        return RTCConfiguration(iceServers=[RTCIceServer(urls=url) for url in self.servers])


@dataclass
class LegCounters:
    packets_in: int = 0
    packets_out: int = 0
    send_failures: int = 0
    #: received packets dropped for arriving faster than real time (media/policer.py)
    packets_over_rate: int = 0
    #: received packets discarded unread when the leg's audio started going somewhere new
    packets_stale: int = 0


class Leg:
    """The server end of one peer connection. Create, :meth:`answer`, then :meth:`close`."""

    def __init__(self, role: str, ice: IceSettings) -> None:
        check_version()
        self.role = role
        self.state = LegState.NEW
        #: Where packets received on this leg go (None: dropped). The bridge sets it.
        self.inbound: InboundHandler | None = None
        #: Told of every state change.
        self.on_state: Callable[[Leg, LegState], None] | None = None
        self.counters = LegCounters()
        #: what the bounded queues below aiortc dropped (media/aiortc_seam.py)
        self.drops = Drops()
        self._policer = RatePolicer(OPUS_CLOCK_RATE)
        self._ice = ice
        self._pc: RTCPeerConnection | None = None
        self._outgoing: OutgoingStream | None = None
        self._placeholder = PlaceholderTrack()
        #: the connection's own aiortc and aioice objects, taken once its sockets exist (closing it
        #: forgets them): what Leg.close releases
        self._owned: list[object] = []
        self._closing = False
        self._log = log.bind(leg=role)
        self.connected = asyncio.Event()

    def bind(self, **context: str) -> None:
        """Add context (``call_id``, ``agent_id``) to this leg's log lines."""
        self._log = self._log.bind(**context)

    async def answer(self, offer_sdp: str) -> str:
        """Accept the peer's offer and return our answer (with all our candidates).

        Raises :class:`SdpError` for an unusable offer; the leg is then closed.
        """
        if self._pc is not None:
            raise SdpError("this leg has already been negotiated")
        try:
            return await self._answer(offer_sdp)
        except SdpError:
            await self.close()
            raise
        except Exception as exc:
            # aiortc trips over SDP that check_offer let through: refuse the offer, keep the server.
            self._log.warning(LEG_ANSWER_FAILED, error=type(exc).__name__)
            await self.close()
            raise SdpError("the SDP offer could not be answered") from None
        except BaseException:
            await self.close()
            raise

    async def _answer(self, offer_sdp: str) -> str:
        check_offer(offer_sdp)
        pc = self._pc = RTCPeerConnection(self._ice.rtc_configuration())
        share_certificate(pc)
        pc.on("connectionstatechange", self._connection_state_changed)
        # The transceiver exists before the offer is applied so that its codec preferences take part
        # in the negotiation: Opus only, whatever order the offer lists codecs in, because the
        # bridge forwards Opus packets and labels them with the first negotiated payload type.
        transceiver = pc.addTransceiver(self._placeholder, direction="sendrecv")
        capabilities = RTCRtpReceiver.getCapabilities("audio")
        assert capabilities is not None
        transceiver.setCodecPreferences([c for c in capabilities.codecs if c.mimeType.lower() == "audio/opus"])
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except (ValueError, InvalidAccessError, OperationError) as exc:
            # aiortc's own validation (e.g. BUNDLE, DTLS roles): its messages describe the SDP,
            # never secrets, so they are safe to pass on.
            detail = f": {exc}" if str(exc) else ""
            raise SdpError(f"the SDP offer was refused{detail}") from None
        intercept_rtp(transceiver.receiver, self._received, OPUS_CLOCK_RATE)
        bound_remote_ssrcs(transceiver.receiver, self.drops)
        await pc.setLocalDescription(await pc.createAnswer())
        shrink_receive_buffers(pc)
        bound_ice_queues(pc, self.drops)
        deliver_rtp_on_arrival(pc, self.drops)  # before skip_idle_rtp, which must see datagrams first
        skip_idle_rtp(pc, transceiver.receiver, lambda: self.inbound is not None, self.drops)
        self._owned = connection_objects(pc)
        local = pc.localDescription
        answer = SessionDescription.parse(local.sdp)
        codecs = answer.media[0].rtp.codecs
        if not codecs or codecs[0].payloadType is None:
            raise SdpError("no codec in common: the offer must include opus/48000/2")
        self._outgoing = OutgoingStream(
            RtpOutlet(transceiver.sender, transceiver.mid),
            payload_type=codecs[0].payloadType,
            clock_rate=OPUS_CLOCK_RATE,
        )
        self._set_state(LegState.CONNECTING)
        return str(local.sdp)

    def send(self, source: object, packet: RtpPacket) -> None:
        """Send ``packet`` from ``source`` to this leg's peer, at once; dropped unless connected."""
        if self.state is not LegState.CONNECTED or self._outgoing is None:
            return
        try:
            self._outgoing.send(source, packet)
        except ConnectionError:
            self.counters.send_failures += 1
        else:
            self.counters.packets_out += 1

    def discard_queued(self) -> None:
        """Drop the audio that has reached this leg and is not read yet (see
        :func:`media.aiortc_discard.discard_queued_rtp`): call when its audio starts going to someone
        new, who must hear nothing said before."""
        if self._pc is not None and self.state is not LegState.CLOSED:
            self.counters.packets_stale += discard_queued_rtp(self._pc)

    async def close(self) -> None:
        """Close the leg (its state may already say CLOSED: aiortc closes a connection whose peer
        closed it), then free its connection's objects (:func:`media.aiortc_release.release_later`)."""
        if self._closing:
            return
        self._closing = True
        self.inbound = None
        self._set_state(LegState.CLOSED)
        # What was told of the state (closures over the call or the agent) and the other leg of the
        # call (a source of this one's stream) would hold this leg in reference cycles.
        self.on_state = None
        self._outgoing = None
        self._placeholder.stop()
        if self._pc is not None:
            owned = self._owned or connection_objects(self._pc)
            await self._pc.close()
            release_later(owned)

    def _received(self, packet: RtpPacket) -> None:
        self.counters.packets_in += 1
        if not self._policer.admit(packet.payload):
            if self.counters.packets_over_rate == 0:
                self._log.warning(LEG_OVER_RATE)
            self.counters.packets_over_rate += 1
            return
        handler = self.inbound
        if handler is not None:
            handler(packet)

    def _connection_state_changed(self) -> None:
        assert self._pc is not None
        mapped = {
            "connected": LegState.CONNECTED,
            "failed": LegState.FAILED,
            "closed": LegState.CLOSED,
        }.get(self._pc.connectionState)
        if mapped is not None and mapped is not self.state:
            self._set_state(mapped)

    def _set_state(self, state: LegState) -> None:
        if state not in _TRANSITIONS[self.state]:
            self._log.debug(LEG_STATE, ignored=f"{self.state.value} -> {state.value}")
            return
        self._log.info(LEG_STATE, transition=f"{self.state.value} -> {state.value}")
        self.state = state
        if state is LegState.CONNECTED:
            self.connected.set()
        elif state is LegState.CLOSED:
            counters, drops = self.counters, self.drops
            self._log.info(
                LEG_CLOSED,
                packets_in=counters.packets_in,
                packets_out=counters.packets_out,
                send_failures=counters.send_failures,
                packets_over_rate=counters.packets_over_rate,
                packets_stale=counters.packets_stale,
                datagrams_dropped=drops.datagrams,
                sends_dropped=drops.sends,
                ssrcs_forgotten=drops.ssrcs,
                idle_skipped=drops.idle,
            )
        if self.on_state is not None:
            self.on_state(self, state)
