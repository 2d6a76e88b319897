"""A peer flooding RTP cannot grow the server's memory without bound, nor take the other calls'
audio (SECURITY.md, Media: every queue is bounded; aiortc's receiver queues are not).

The server runs in a process of its own (``callbutton serve``, as in production), so that its memory
is measured alone and whole: VmRSS counts what C libraries allocate (libsrtp's per-SSRC streams,
PyAV, OpenSSL), which tracemalloc does not see, and none of the test's own peers. The peers are real
aiortc peers in the test process; the flooding one sends its pre-encoded Opus through aiortc's own
sender, so every packet is valid SRTP on the negotiated stream and reaches the bridge and the
recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RtpPacket, is_rtcp

from media import opus
from media.aiortc_seam import MAX_REMOTE_SSRCS, RECEIVE_QUEUE, SEND_BUFFER, pin_host_addresses
from media.leg import IceSettings, Leg
from media.policer import BURST, RATE, RatePolicer
from media.recorder import MAX_SKEW, _Party
from media.synthetic import OpusLoopTrack, tone_loop
from storage.db import Database
from storage.keys import Keyring
from storage.recordings import RecordingRecord, RecordingStore
from tests.conftest import Tenant, answered_call_for, make_tenant
from tests.peers import Agent, Visitor
from tests.run_keys import MASTER_KEY
from tests.test_call import wait_for_row
from tests.test_recording_crash import ServerProcess

FRAME = opus.FRAME_SAMPLES
FLOOD_SPEED = 10  # times the packet rate of a normal Opus stream (50 packets a second)
FLOOD_SECONDS = 10.0
#: The bound on the server's memory growth (VmRSS) during the flood and the 2 s after it. What a flood
#: can fill is bounded below it (docs/media.md, "Bounded"): the ICE receive queue (256 datagrams a leg),
#: the sockets' send buffers (64 KiB each), the recorder's queue (shared by every call, about 5 MiB
#: if it ever filled) and the Ogg muxer's pages (about 2 s of a party's audio). Measured: about
#: 0.1 MiB; before those bounds, 25 MiB (the muxer held the flooding party's pages, which ran ever
#: further ahead of the other party's).
RSS_GROWTH_BOUND = 8 * 1024 * 1024
#: (visitor tone, agent tone) of each call: all different, so a crossed call would be heard.
TONES = ((440.0, 880.0), (550.0, 990.0), (660.0, 1100.0))


def rss(pid: int) -> int:
    """The resident memory of process ``pid``, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@contextlib.asynccontextmanager
async def sampling(pid: int, every: float = 0.2) -> AsyncIterator[list[int]]:
    """The resident memory of process ``pid``, sampled every ``every`` seconds while in the block."""
    samples: list[int] = []

    async def sample() -> None:
        while True:
            samples.append(rss(pid))
            await asyncio.sleep(every)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    samples.append(rss(pid))


@pytest.fixture
async def server_process(migrated: str, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update(
        {
            "CALLBUTTON_DATABASE_URL": migrated,
            "CALLBUTTON_DATA_DIR": str(tmp_path),
            "CALLBUTTON_PORT": "0",
            "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1",
            "CALLBUTTON_MASTER_KEY": MASTER_KEY.to_text(),
            "CALLBUTTON_LOG_FORMAT": "json",
            "CALLBUTTON_PURGE_INTERVAL": "0",
            "CALLBUTTON_DRAIN_TIMEOUT": "1",
            # Every call of this test comes from 127.0.0.1.
            "CALLBUTTON_CALL_RATE_PER_ADDRESS": "600",
        }
    )
    # The peers are in this process, which starts no server of its own to pin their ICE addresses.
    pin_host_addresses(["127.0.0.1"])
    server = ServerProcess(env)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Call:
    tenant: Tenant
    visitor: Visitor
    agent: Agent
    call_id: str
    visitor_tone: float
    agent_tone: float

    async def both_hear(self, timeout: float = 10.0) -> None:
        """Each party hears the other's tone, in audio received from now on."""
        for peer in (self.visitor, self.agent):
            if peer.sink is not None:
                peer.sink._frames.clear()
        await asyncio.gather(
            self.visitor.hears(self.agent_tone, timeout=timeout), self.agent.hears(self.visitor_tone, timeout=timeout)
        )

    async def close(self) -> None:
        await self.visitor.close()
        await self.agent.close()


async def rtp_packets(pc: RTCPeerConnection | None, direction: str) -> int:
    """RTP packets ``pc`` has sent (``outbound-rtp``) or received (``inbound-rtp``) so far."""
    assert pc is not None
    report = await pc.getStats()
    field = "packetsSent" if direction == "outbound-rtp" else "packetsReceived"
    return sum(getattr(stats, field) for stats in report.values() if stats.type == direction)


async def finished_recording(store: RecordingStore, tenant: Tenant, call_id: str) -> RecordingRecord:
    for _ in range(200):
        (record,) = await store.for_call(tenant.organisation_id, uuid.UUID(call_id)) or (None,)
        if record is not None and record.state != "recording":
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"the recording of call {call_id} did not finish")


async def test_a_peer_flooding_rtp_grows_no_memory_and_takes_no_other_calls_audio(
    server_process: ServerProcess, database: Database, tmp_path: Path
) -> None:
    server = server_process
    calls: list[Call] = []
    try:
        for visitor_tone, agent_tone in TONES:
            (tenant,) = await make_tenant(database, recording=True)
            visitor, agent, call_id = await answered_call_for(
                server.url,
                tenant,
                visitor_tone=visitor_tone,
                agent_tone=agent_tone,
            )
            calls.append(Call(tenant, visitor, agent, call_id, visitor_tone, agent_tone))
        await asyncio.gather(*(call.both_hear(timeout=15) for call in calls))
        flooding, others = calls[0], calls[1:]
        assert flooding.visitor.pc is not None
        track = flooding.visitor.pc.getSenders()[0].track
        assert isinstance(track, OpusLoopTrack)

        # The server's memory settled with its three calls: the baseline.
        await asyncio.sleep(1.0)
        baseline_samples = []
        for _ in range(5):
            baseline_samples.append(rss(server.pid))
            await asyncio.sleep(0.2)
        baseline = statistics.median(baseline_samples)

        sent_before = await rtp_packets(flooding.visitor.pc, "outbound-rtp")
        received_before = await rtp_packets(flooding.agent.pc, "inbound-rtp")
        async with sampling(server.pid) as samples:
            flood_started = time.monotonic()
            track.pace(FLOOD_SPEED)
            # The other calls keep their audio while the flood goes on: checked twice within it.
            for _ in range(2):
                await asyncio.sleep(2.0)
                await asyncio.gather(*(call.both_hear() for call in others))
            await asyncio.sleep(max(0.0, flood_started + FLOOD_SECONDS - time.monotonic()))
            track.pace(1)
            flood_seconds = time.monotonic() - flood_started
            sent = await rtp_packets(flooding.visitor.pc, "outbound-rtp") - sent_before
            received = await rtp_packets(flooding.agent.pc, "inbound-rtp") - received_before
            await asyncio.sleep(2.0)  # whatever the flood left queued is still counted

        growth = max(samples) - baseline
        print(
            f"\nflood: {sent} packets in {flood_seconds:.1f} s ({sent / flood_seconds:.0f}/s), agent received "
            f"{received}; server RSS baseline {baseline / 2**20:.1f} MiB, peak {max(samples) / 2**20:.1f} MiB, "
            f"growth {growth / 2**20:.2f} MiB (bound {RSS_GROWTH_BOUND / 2**20:.0f} MiB)"
        )
        # The flood really was one: at least half the rate asked for, on a busy machine.
        assert sent >= FLOOD_SPEED * 50 * FLOOD_SECONDS / 2, sent
        assert growth < RSS_GROWTH_BOUND, f"server memory grew {growth / 2**20:.1f} MiB during the flood"
        # The server forwarded about real time's worth of the flood to the agent and dropped the rest:
        # at most the policer's rate and burst (media/policer.py), with 10% slack; the call went on.
        assert 25 * flood_seconds <= received <= 1.1 * 50 * (RATE * flood_seconds + BURST), (received, sent)

        # Afterwards every call has its audio, the flooding one included.
        await asyncio.gather(*(call.both_hear() for call in calls))

        for call in calls:
            await call.visitor.send({"type": "hangup"})
            await call.agent.expect("call_state", call_id=call.call_id, state="ended")
    finally:
        for call in calls:
            await call.close()

    # The flooding call's recording holds the call's real length, not ten times it, and every
    # recording is complete.
    store = RecordingStore(database.pool, Keyring(database.keystore_pool, MASTER_KEY), tmp_path / "recordings")
    for call in calls:
        row = await wait_for_row(database, call.tenant, call.call_id, "ended")
        assert row.answered_at is not None and row.ended_at is not None
        talk = (row.ended_at - row.answered_at).total_seconds()
        record = await finished_recording(store, call.tenant, call.call_id)
        assert record.state == "complete"
        assert record.duration_ms is not None and record.duration_ms / 1000 <= talk + 1.5, (record.duration_ms, talk)

    # The flooding visitor's leg dropped the excess and counted it; the other legs dropped nothing
    # (each leg logs its counters as it closes).
    await server.stop()
    closed = {
        event["call_id"]: event
        for event in server.events
        if event.get("event") == "leg.closed" and event.get("leg") == "visitor"
    }
    assert closed[flooding.call_id]["packets_over_rate"] > sent / 2
    for call in others:
        assert closed[call.call_id]["packets_over_rate"] < sent / 100  # none, barring a stalled peer


def test_the_recorder_keeps_a_fast_sender_to_real_time() -> None:
    """Ten seconds of audio a second from one party: its stream on the timeline keeps to real time
    (no more than MAX_SKEW ahead), so the Ogg muxer never holds its pages waiting for the other party."""
    visitor = _Party()
    placed = dropped = 0
    for index in range(FLOOD_SPEED * 50 * 5):  # 5 s of flood, timestamps 20 ms apart
        arrival = index * FRAME // FLOOD_SPEED
        pts = visitor.place(index * FRAME, arrival)
        if pts is None:
            dropped += 1
            continue
        placed += 1
        assert pts - arrival <= MAX_SKEW
        visitor.end = max(visitor.end, pts + FRAME)
    assert visitor.end <= 5 * opus.SAMPLE_RATE + MAX_SKEW + FRAME
    assert placed <= 5 * 50 + MAX_SKEW // FRAME + 1 and dropped >= 0.8 * FLOOD_SPEED * 50 * 5


def test_the_policer_passes_real_time_and_a_burst_and_drops_the_rest() -> None:
    now = [0.0]
    policer = RatePolicer(opus.SAMPLE_RATE, clock=lambda: now[0])
    packet = tone_loop(440.0)[0]
    # A burst (the path held packets, then delivered them at once) passes whole.
    assert all(policer.admit(packet) for _ in range(int(BURST * 50)))
    assert not policer.admit(packet)
    # Then real time passes; ten times real time passes about an eighth of its packets.
    admitted = 0
    for _ in range(FLOOD_SPEED * 50 * 10):
        now[0] += 0.02 / FLOOD_SPEED
        admitted += policer.admit(packet)
    assert abs(admitted - RATE * 50 * 10) <= 2
    # A packet claiming no audio is still charged 10 ms.
    assert sum(policer.admit(b"") for _ in range(1000)) <= 2


@pytest.fixture
async def connected_leg() -> AsyncIterator[tuple[RTCPeerConnection, OpusLoopTrack, Leg]]:
    """A server leg and a real aiortc peer sending it a tone."""
    pin_host_addresses(["127.0.0.1"])
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    track = OpusLoopTrack.of_tone(440)
    pc.addTrack(track)
    leg = Leg("visitor", IceSettings())
    try:
        await pc.setLocalDescription(await pc.createOffer())
        answer = await leg.answer(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await asyncio.wait_for(leg.connected.wait(), 10)

        def nowhere(packet: RtpPacket) -> None:
            pass

        leg.inbound = nowhere  # a leg in a call (an idle one reads one packet in IDLE_SAMPLE)
        yield pc, track, leg
    finally:
        await leg.close()
        await pc.close()


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def test_a_peer_inventing_ssrcs_cannot_grow_a_legs_state(
    connected_leg: tuple[RTCPeerConnection, OpusLoopTrack, Leg],
) -> None:
    """Each SSRC a peer invents would cost a libsrtp stream, a routing entry and receive statistics,
    none of them ever freed; the leg keeps MAX_REMOTE_SSRCS and forgets the least recently seen."""
    pc, track, leg = connected_leg
    await wait_until(lambda: leg.counters.packets_in > 10, 10, "audio from the peer")
    dtls: Any = pc.getSenders()[0].transport
    send_rtp = dtls._send_rtp
    ssrcs = itertools.count(1_000_000)
    churning = True

    async def churn(data: bytes) -> None:
        # Below aiortc's sender, before SRTP: each packet valid, each from an SSRC never seen.
        if churning and not is_rtcp(data):
            data = data[:8] + next(ssrcs).to_bytes(4, "big") + data[12:]
        await send_rtp(data)

    dtls._send_rtp = churn
    track.pace(FLOOD_SPEED)
    await wait_until(lambda: leg.drops.ssrcs >= 1000, 15, "1000 SSRCs forgotten")
    churning = False
    track.pace(1)

    assert leg._pc is not None
    receiver = leg._pc.getTransceivers()[0].receiver
    server_dtls: Any = receiver.transport
    # The SSRC the peer announced in its offer stays routed, besides the ones last seen.
    assert len(server_dtls._rtp_router.ssrc_table) <= MAX_REMOTE_SSRCS + 1
    assert len(receiver._RTCRtpReceiver__remote_streams) <= MAX_REMOTE_SSRCS  # type: ignore[attr-defined]
    with pytest.raises(pylibsrtp.Error):
        server_dtls._rx_srtp._session.remove_stream(1_000_000)  # libsrtp's stream for it is gone too
    # The peer's own stream still gets through (again, if it was forgotten meanwhile).
    before = leg.counters.packets_in
    await wait_until(lambda: leg.counters.packets_in > before + 50, 10, "audio after the churn")


async def test_a_legs_receive_queue_and_send_buffer_are_bounded(
    connected_leg: tuple[RTCPeerConnection, OpusLoopTrack, Leg], monkeypatch: pytest.MonkeyPatch
) -> None:
    pc, _, leg = connected_leg
    assert leg._pc is not None
    connection: Any = leg._pc.getTransceivers()[0].receiver.transport.transport._connection
    # A starved event loop: datagrams keep arriving and nothing reads them (the socket's protocol
    # hands each one to the connection as it arrives).
    for _ in range(RECEIVE_QUEUE + 1000):
        connection.data_received(b"\x80" + bytes(99), 1)
    assert connection._queue.qsize() <= RECEIVE_QUEUE
    assert leg.drops.datagrams >= 1000
    before = leg.counters.packets_in
    await wait_until(lambda: leg.counters.packets_in > before + 10, 10, "audio once the loop runs again")

    # A socket whose send buffer is full (the kernel refuses more): what the leg sends is dropped.
    (pair,) = connection._nominated.values()
    monkeypatch.setattr(pair.protocol.transport, "get_write_buffer_size", lambda: SEND_BUFFER)
    for sequence in range(100):
        packet = RtpPacket(payload_type=0, sequence_number=sequence, timestamp=sequence * FRAME, ssrc=1)
        packet.payload = tone_loop(880.0)[sequence % 50]
        leg.send(pc, packet)
    assert leg.drops.sends >= 100
