"""A synthetic party's WebRTC connection, cheap enough that one process runs many.

Sending: its tone is encoded to Opus once per frequency (cached) and the packets looped by the event
loop's pacer (``loadtest.pacer``: one timer for every party, below aiortc's sender), so no encoder and
no task runs per call. Receiving: RTP packets are taken before aiortc's jitter buffer and decoder
(media.aiortc_seam.intercept_rtp), so nothing is decoded by default;
only the packets the checks need are kept and decoded (the first ones after an answer, to time the
first audio; a short window mid-call, to prove which tone arrives).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import numpy.typing as npt
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket
from aiortc.sdp import SessionDescription

from loadtest.pacer import PacedStream, pacer
from loadtest.quality import tone_share
from media import opus
from media.aiortc_outlet import PlaceholderTrack, RtpOutlet
from media.aiortc_seam import (
    Drops,
    bound_ice_queues,
    deliver_rtp_on_arrival,
    impair_outgoing,
    intercept_rtp,
    shrink_receive_buffers,
)
from media.synthetic import tone_loop

FIRST_AUDIO_SHARE = 0.5  # a packet is "the partner's audio" when half its power is the partner's tone
_MAX_FIRST_AUDIO_PACKETS = 250  # five seconds of looking
_WINDOW_PACKETS = 30  # 0.6 s of audio for the tone check
#: What the bounded queues below aiortc dropped, for every peer of this process: datagrams the
#: generator itself lost (a full receive queue, a full send buffer), not the server.
DROPS = Drops()


@dataclass
class Impairment:
    loss: float = 0.0  # 0..1
    delay: float = 0.0  # seconds
    jitter: float = 0.0  # seconds

    @property
    def active(self) -> bool:
        return self.loss > 0 or self.delay > 0 or self.jitter > 0


@dataclass
class Reception:
    """What one party received, as measured by the party."""

    packets: int = 0
    first_packet_at: float | None = None
    first_audio_at: float | None = None  # first packet carrying the partner's tone, after ``listen_from``
    window: list[bytes] = field(default_factory=list)
    expected: int = 0
    highest_seq: int | None = None
    jitter: float = 0.0  # RFC 3550 interarrival jitter, in seconds
    _last_transit: float | None = None
    _seq_cycles: int = 0
    _base_seq: int | None = None
    _marked_packets: int = 0
    _marked_expected: int = 0

    def mark(self) -> None:
        """Start counting a new call on a connection that carries several (an agent's standing leg)."""
        self._marked_packets, self._marked_expected = self.packets, self.expected

    @property
    def call_packets(self) -> int:
        return self.packets - self._marked_packets

    @property
    def lost(self) -> int:
        return max(0, (self.expected - self._marked_expected) - self.call_packets)

    @property
    def loss_percent(self) -> float:
        expected = self.expected - self._marked_expected
        return 100.0 * self.lost / expected if expected > 0 else 0.0

    def count(self, packet: RtpPacket, arrival: float) -> None:
        """Sequence accounting and jitter (RFC 3550 appendix A.1 and A.8)."""
        self.packets += 1
        seq = packet.sequence_number
        if self._base_seq is None:
            self._base_seq = self.highest_seq = seq
        else:
            assert self.highest_seq is not None
            delta = (seq - self.highest_seq) % 65536
            if 0 < delta < 32768:
                if seq < self.highest_seq:
                    self._seq_cycles += 65536
                self.highest_seq = seq
        assert self.highest_seq is not None
        self.expected = self._seq_cycles + self.highest_seq - self._base_seq + 1
        transit = arrival - packet.timestamp / opus.SAMPLE_RATE
        if self._last_transit is not None:
            self.jitter += (abs(transit - self._last_transit) - self.jitter) / 16
        self._last_transit = transit


class LoadPeer:
    """One synthetic party's peer connection: sends ``send_tone``, listens for ``expect_tone``."""

    def __init__(
        self,
        *,
        send_tone: float,
        expect_tone: float,
        ice_servers: list[dict[str, Any]],
        impairment: Impairment,
        rng: random.Random,
    ) -> None:
        servers = [RTCIceServer(**server) for server in ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.expect_tone = expect_tone
        self.reception = Reception()
        # Sent by the loop's pacer (loadtest.pacer) once the answer has come; aiortc pulls nothing.
        self._track = PlaceholderTrack()
        self._sender = self.pc.addTrack(self._track)
        self._tone = tone_loop(send_tone)
        self._stream: PacedStream | None = None
        self._impairment = impairment
        self._rng = rng
        self._listen_from: float | None = None
        self._searched = 0
        self._window_from: float | None = None
        self._decoder: Any = None
        self._first_audio = asyncio.Event()
        self._window_full = asyncio.Event()

    async def offer(self) -> str:
        """Our offer with every candidate (the server takes no trickled ones)."""
        await self.pc.setLocalDescription(await self.pc.createOffer())
        shrink_receive_buffers(self.pc)
        bound_ice_queues(self.pc, DROPS)  # also gives host sockets the direct send the pacer uses
        deliver_rtp_on_arrival(self.pc, DROPS)
        receiver = self.pc.getTransceivers()[0].receiver
        intercept_rtp(receiver, self._received, opus.SAMPLE_RATE)
        if self._impairment.active:
            impair_outgoing(
                self._sender,
                loss=self._impairment.loss,
                delay=self._impairment.delay,
                jitter=self._impairment.jitter,
                rng=self._rng,
            )
        return str(self.pc.localDescription.sdp)

    async def answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        codecs = [c for c in SessionDescription.parse(sdp).media[0].rtp.codecs if c.name.lower() == "opus"]
        if not codecs or codecs[0].payloadType is None:
            raise ValueError("the answer has no Opus")
        transceiver = self.pc.getTransceivers()[0]
        self._stream = PacedStream(
            RtpOutlet(self._sender, transceiver.mid),
            codecs[0].payloadType,
            self._tone,
            self._rng,
            direct=not self._impairment.active,  # an impaired peer's packets go through impair_outgoing
        )
        pacer().add(self._stream)

    def next_call(self, *, send_tone: float, expect_tone: float) -> None:
        """Reuse this connection for another call (an agent's standing leg): new tones, fresh checks."""
        self._tone = tone_loop(send_tone)
        if self._stream is not None:
            self._stream.switch(self._tone)
        self.expect_tone = expect_tone
        self._listen_from = None
        self._window_from = None
        self._searched = 0
        self.reception.first_audio_at = None
        self.reception.mark()
        self.reception.window.clear()
        self._first_audio.clear()
        self._window_full.clear()

    def listen_for_partner(self, since: float) -> None:
        """From ``since`` on, look for the first packet carrying the partner's tone."""
        self._listen_from = since

    def capture_window(self, since: float) -> None:
        """Keep ~0.6 s of packets from ``since`` on, for :meth:`heard`."""
        self._window_from = since
        self.reception.window.clear()
        self._window_full.clear()

    async def wait_first_audio(self, within: float) -> float | None:
        try:
            await asyncio.wait_for(self._first_audio.wait(), within)
        except TimeoutError:
            return None
        return self.reception.first_audio_at

    async def wait_window(self, within: float) -> bool:
        try:
            await asyncio.wait_for(self._window_full.wait(), within)
        except TimeoutError:
            return False
        return True

    def heard(self) -> tuple[float, float]:
        """(share of the window's power at the partner's tone, the window's dominant frequency)."""
        from loadtest.quality import dominant

        samples = self._decode(self.reception.window)
        return tone_share(samples, self.expect_tone), dominant(samples) or 0.0

    async def stats(self) -> dict[str, float | None]:
        """Round-trip time from RTCP (what our sender's reports say), if known."""
        report = await self.pc.getStats()
        for entry in report.values():
            if getattr(entry, "type", None) == "remote-inbound-rtp" and getattr(entry, "roundTripTime", None):
                return {"rtt_ms": round(float(entry.roundTripTime) * 1000, 1)}
        return {"rtt_ms": None}

    async def close(self) -> None:
        if self._stream is not None:
            pacer().remove(self._stream)
            self._stream.stop()
        self._track.stop()
        await self.pc.close()

    def _received(self, packet: RtpPacket) -> None:
        now = time.monotonic()
        reception = self.reception
        reception.count(packet, now)
        if reception.first_packet_at is None:
            reception.first_packet_at = now
        if (
            self._listen_from is not None
            and reception.first_audio_at is None
            and now >= self._listen_from
            and self._searched < _MAX_FIRST_AUDIO_PACKETS
        ):
            self._searched += 1
            if tone_share(self._decode([packet.payload]), self.expect_tone, width=60) >= FIRST_AUDIO_SHARE:
                reception.first_audio_at = now
                self._first_audio.set()
        if self._window_from is not None and now >= self._window_from and not self._window_full.is_set():
            reception.window.append(packet.payload)
            if len(reception.window) >= _WINDOW_PACKETS:
                self._window_full.set()

    def _decode(self, payloads: list[bytes]) -> npt.NDArray[np.int16]:
        if self._decoder is None:
            self._decoder = av.CodecContext.create("opus", "r")
        pieces = []
        for payload in payloads:
            try:
                frames = self._decoder.decode(av.Packet(payload))
            except av.FFmpegError:
                continue
            for frame in frames:
                pcm = frame.to_ndarray()
                mono = pcm[0] if pcm.ndim == 2 else pcm
                if mono.dtype.kind == "f":
                    mono = np.clip(mono * 32767, -32768, 32767)
                pieces.append(mono.astype(np.int16))
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int16)
