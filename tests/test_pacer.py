"""The load generator's pacer (loadtest/pacer.py): a synthetic party's audio, sent below aiortc's
sender, reaches a server leg as one continuous stream, switches tone without a seam, keeps RTCP
true, and leaves no timer behind."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from typing import Any

from aiortc.rtp import RtpPacket

from loadtest import pacer as pacer_module
from loadtest.peer import Impairment, LoadPeer
from media.leg import IceSettings, Leg
from media.synthetic import tone_loop
from tests.test_aiortc_seam import stats_of


async def test_paced_audio_is_one_continuous_stream_across_a_switch_with_true_sender_reports() -> None:
    peer = LoadPeer(send_tone=440.0, expect_tone=880.0, ice_servers=[], impairment=Impairment(), rng=random.Random(3))
    leg = Leg("visitor", IceSettings())
    received: list[RtpPacket] = []
    arrived = asyncio.Event()

    def inbound(packet: RtpPacket) -> None:
        received.append(packet)
        arrived.set()

    leg.inbound = inbound
    try:
        offer = await peer.offer()
        # Count what takes aiortc's own send path (its RTCP does; paced RTP need not).
        dtls: Any = peer.pc.getTransceivers()[0].sender.transport
        send_rtp, through_aiortc = dtls._send_rtp, []

        async def counted(data: bytes) -> None:
            through_aiortc.append(data)
            await send_rtp(data)

        dtls._send_rtp = counted
        await peer.answer(await leg.answer(offer))
        await asyncio.wait_for(leg.connected.wait(), 10)

        async def packets(count: int) -> None:
            while len(received) < count:
                arrived.clear()
                await arrived.wait()

        await asyncio.wait_for(packets(60), 10)
        peer.next_call(send_tone=660.0, expect_tone=880.0)
        switched_at = len(received)
        await asyncio.wait_for(packets(switched_at + 60), 10)
        await asyncio.sleep(1.5)  # a sender report or two (every 0.5 to 1.5 s)

        assert len({p.ssrc for p in received}) == 1
        for earlier, later in itertools.pairwise(received):
            assert later.sequence_number == (earlier.sequence_number + 1) & 0xFFFF
            assert later.timestamp == (earlier.timestamp + 960) & 0xFFFFFFFF
        first, second = set(tone_loop(440.0)), set(tone_loop(660.0))
        assert all(p.payload in first for p in received[: switched_at - 2])
        assert all(p.payload in second for p in received[switched_at + 2 :])
        assert all(p.payload_type == received[0].payload_type for p in received)
        # The marker bit starts each call's audio (a new talkspurt: the first packet, if the leg saw
        # it, and the first of the new tone), and only that.
        markers = [index for index, p in enumerate(received) if p.marker]
        assert markers in ([0, markers[-1]], [markers[-1]]) and abs(markers[-1] - switched_at) <= 2, markers
        rtp = [d for d in through_aiortc if not 192 <= d[1] <= 223]
        assert len(rtp) < 5, "paced RTP went through aiortc's send coroutines"
        # The leg hears the sender's reports, which count what the pacer sent.
        assert leg._pc is not None
        (remote_outbound,) = await stats_of(leg._pc, "remote-outbound-rtp")
        assert remote_outbound.packetsSent >= len(received) - 100  # type: ignore[attr-defined]
    finally:
        await peer.close()
        await leg.close()
    # The pacer's timer stops with its last stream.
    assert pacer_module.pacer()._handle is None


class FakeOutlet:
    """Records the tick each packet went out on; ``failing`` raises instead (a bug in a stream)."""

    connected = True

    def __init__(self, pacer: pacer_module.Pacer, *, failing: bool = False) -> None:
        self.pacer = pacer
        self.failing = failing
        self.ticks: list[int] = []

    def send_direct(self, packet: RtpPacket) -> bool:
        if self.failing:
            raise RuntimeError("a bug in this stream")
        self.ticks.append(self.pacer._tick_index)
        return True


def paced(pacer: pacer_module.Pacer, outlet: FakeOutlet, seed: int) -> pacer_module.PacedStream:
    stream = pacer_module.PacedStream(outlet, 111, tone_loop(440.0), random.Random(seed), direct=True)  # type: ignore[arg-type]
    pacer.add(stream)
    return stream


async def test_streams_are_spread_over_the_frame_and_catch_up_after_a_late_tick() -> None:
    loop = asyncio.get_running_loop()
    pacer = pacer_module.Pacer()
    outlets = [FakeOutlet(pacer) for _ in range(3)]
    streams = [paced(pacer, outlets[0], 0), paced(pacer, outlets[1], 1)]
    try:
        await asyncio.sleep(0.1)
        streams.append(paced(pacer, outlets[2], 2))  # one joins the pacer while it runs
        await asyncio.sleep(0.3)
        # The streams sit on different ticks of the frame: never sent on the same one.
        assert all(outlet.ticks for outlet in outlets)
        assert not set(outlets[0].ticks) & set(outlets[1].ticks)
        # Each of its slot's ticks sends the stream's packet: none is skipped (a gap of two frames)
        # to be made up by two on the next. (Two on one tick are a late tick catching up.)
        for outlet in outlets:
            gaps = {later - earlier for earlier, later in itertools.pairwise(outlet.ticks)}
            assert gaps <= {0, pacer_module.SLOTS}, gaps
        # The loop held for 0.1 s (five frames): the stream's next tick sends what fell due, at
        # most MAX_CATCH_UP packets, and the rest on the tick after.
        before = len(outlets[0].ticks)
        blocked_until = loop.time() + 0.1
        while loop.time() < blocked_until:
            pass
        await asyncio.sleep(3 * pacer_module.FRAME)
        per_tick = Counter(outlets[0].ticks[before:])
        assert max(per_tick.values()) == pacer_module.MAX_CATCH_UP, per_tick
    finally:
        for stream in streams:
            pacer.remove(stream)
    assert pacer._handle is None


async def test_a_stream_that_fails_is_dropped_and_the_others_go_on() -> None:
    pacer = pacer_module.Pacer()
    # Five streams on four ticks: the first and the fifth share one.
    outlets = [FakeOutlet(pacer, failing=index == 0) for index in range(5)]
    streams = [paced(pacer, outlet, index) for index, outlet in enumerate(outlets)]
    try:
        await asyncio.sleep(0.2)
        assert streams[0] not in pacer._slots[0] and streams[4] in pacer._slots[0]
        assert len(outlets[4].ticks) >= 5  # sent after the one before it on its tick failed
    finally:
        for stream in streams:
            pacer.remove(stream)
    assert pacer._handle is None
