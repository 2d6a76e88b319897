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

    async def inbound(packet: RtpPacket) -> None:
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


async def test_streams_are_spread_over_the_frame_and_catch_up_after_a_late_tick() -> None:
    loop = asyncio.get_running_loop()
    pacer = pacer_module.Pacer(loop)
    ticks: dict[int, list[int]] = {0: [], 1: []}  # the tick each packet of each stream went on

    class Outlet:
        connected = True

        def __init__(self, index: int) -> None:
            self.index = index

        def send_direct(self, packet: RtpPacket) -> bool:
            ticks[self.index].append(pacer._tick_index)
            return True

    streams = [
        pacer_module.PacedStream(Outlet(i), 111, tone_loop(440.0), random.Random(i), direct=True)  # type: ignore[arg-type]
        for i in (0, 1)
    ]
    for stream in streams:
        pacer.add(stream)
    try:
        await asyncio.sleep(0.3)
        # The two streams sit on different ticks of the frame: never sent on the same one.
        assert ticks[0] and ticks[1] and not set(ticks[0]) & set(ticks[1])
        assert max(Counter(ticks[0]).values()) == 1  # one packet a tick in real time
        # The loop held for 0.1 s (five frames): the stream's next tick sends what fell due, at
        # most MAX_CATCH_UP packets, and the rest on the tick after.
        before = len(ticks[0])
        blocked_until = loop.time() + 0.1
        while loop.time() < blocked_until:
            pass
        await asyncio.sleep(3 * pacer_module.FRAME)
        per_tick = Counter(ticks[0][before:])
        assert max(per_tick.values()) == pacer_module.MAX_CATCH_UP, per_tick
    finally:
        for stream in streams:
            pacer.remove(stream)
    assert pacer._handle is None
