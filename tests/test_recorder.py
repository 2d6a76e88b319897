"""The recorder's timeline: parties stay aligned through silence, loss, reordering, 32-bit wraps and a
stall at the start of a party, and a sender's timestamps cannot stretch the recording beyond the call
(SECURITY.md: bounded memory). Packets are fed with a controlled clock (the arrival times of a real
call), not in real time."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading

import numpy as np
import pytest

from loadtest.checks import check_recording
from loadtest.runner import CallResult
from media import opus
from media.recorder import _MAX_SETTLING, AGENT, MAX_SKEW, SETTLING, VISITOR, MuxWorker, Recorder, _Party
from media.recording_file import RecordingFormatError, StereoWav, decode_tracks
from media.synthetic import dominant_frequency, tone

FRAME = opus.FRAME_SAMPLES
PACKET = FRAME / opus.SAMPLE_RATE  # seconds
STALL = 0.9  # seconds: what the soak run saw one party's track shifted by


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True


def recording(worker: MuxWorker) -> tuple[Clock, Sink, Recorder]:
    """A recorder on a clock of the test's own, writing into a sink in memory, started."""
    clock, sink = Clock(), Sink()
    recorder = Recorder(worker, clock=clock)
    recorder.attach(sink)
    recorder.start()
    return clock, sink, recorder


def speech(frequency: float, silent: float, seconds: float) -> list[bytes]:
    """Opus packets of ``silent`` seconds of silence, then a tone, ``seconds`` in all."""
    pcm = np.concatenate(
        [np.zeros(round(silent * opus.SAMPLE_RATE), dtype=np.int16), tone(frequency, seconds - silent)]
    )
    return opus.encode(pcm)


def onset(samples: np.ndarray) -> float:
    """When a track's tone starts (seconds into the recording): its first loud 5 ms."""
    window = opus.SAMPLE_RATE // 200
    frames = samples[: len(samples) // window * window].astype(float).reshape(-1, window)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 1000)
    assert len(loud), "no tone in the track"
    return float(loud[0] * window / opus.SAMPLE_RATE)


def test_placement_follows_rtp_time_and_survives_wraps() -> None:
    party = _Party()
    assert party.place(1000, arrival=500) == 500
    assert party.place(1000 + FRAME, arrival=500 + FRAME + 37) == 500 + FRAME  # jitter does not move it
    assert party.place(1000 + 5 * FRAME, arrival=500 + 5 * FRAME) == 500 + 5 * FRAME  # loss leaves a gap
    assert party.place(1000 + 3 * FRAME, arrival=500 + 5 * FRAME + 10) == 500 + 3 * FRAME  # late, in its place
    wrap = _Party()
    start = 2**32 - 2 * FRAME
    assert wrap.place(start, arrival=0) == 0
    assert wrap.place((start + 4 * FRAME) % 2**32, arrival=4 * FRAME) == 4 * FRAME  # across the 32-bit wrap


def test_a_sender_jumping_its_timestamps_is_re_anchored_at_arrival() -> None:
    party = _Party()
    party.place(0, arrival=0)
    party.end = FRAME
    # 2^31 - 1 s ahead in one step (a hostile or broken sender): placed at arrival, not 12 hours on.
    pts = party.place(2**31 - 48000, arrival=FRAME)
    assert pts == FRAME
    assert party.place(2**31 - 48000 + FRAME, arrival=2 * FRAME) == 2 * FRAME  # and continues from there
    party.end = 3 * FRAME
    # A restart (timestamps back to near 0): after what is already placed, at arrival.
    assert party.place(5, arrival=3 * FRAME + 10) == 3 * FRAME + 10
    # Small jitter is never mistaken for a jump.
    assert party.place(5 + FRAME, arrival=4 * FRAME + MAX_SKEW // 2) == 4 * FRAME + 10


def test_the_anchor_settles_on_the_least_delayed_packet() -> None:
    party = _Party()
    stalled = round(STALL / PACKET)  # packets sent during the stall (the first sent at 7 samples)
    burst = 7 + stalled * FRAME + 100  # when they arrive, together
    for index in range(stalled):
        assert party.hold(index * FRAME, arrival=burst, payload=b"x")
    assert party.anchor == burst - (stalled - 1) * FRAME  # each packet of the burst moved it earlier
    assert party.hold(stalled * FRAME, arrival=7 + stalled * FRAME, payload=b"x")  # the first on time
    assert party.anchor == 7
    assert party.hold((stalled + 1) * FRAME, arrival=7 + (stalled + 1) * FRAME + 500, payload=b"x")  # jitter
    assert party.hold(2**32 - FRAME, arrival=burst + 10, payload=b"x")  # reordered, from before the first
    assert party.anchor == 7
    # A jump (more than MAX_SKEW from what is held) ends the settling: it is placed as any later packet.
    jump = (stalled + 2) * FRAME + 2 * MAX_SKEW
    assert not party.hold(jump, arrival=7 + (stalled + 2) * FRAME, payload=b"x")
    assert party.anchor == 7
    placed = [pts for _, pts in party.settle()]
    assert placed == [7 + (index - 1) * FRAME for index in range(stalled + 3)]  # in order, from -1
    assert party.settle() == [] and not party.hold(0, arrival=burst + FRAME, payload=b"x")  # settled
    assert party.place((stalled + 2) * FRAME, arrival=7 + (stalled + 2) * FRAME) == 7 + (stalled + 2) * FRAME

    # The window ends by arrival time, or when the held list is full.
    timed = _Party()
    assert timed.hold(0, arrival=100, payload=b"x")
    assert not timed.hold(SETTLING // FRAME * FRAME, arrival=100 + SETTLING, payload=b"x")
    full = _Party()  # 2.5 ms packets, the shortest Opus has
    assert all(full.hold(index * 120, arrival=index * 120, payload=b"x") for index in range(_MAX_SETTLING))
    assert not full.hold(_MAX_SETTLING * 120, arrival=_MAX_SETTLING * 120, payload=b"x")


@pytest.fixture
def worker() -> MuxWorker:
    return MuxWorker()


async def test_silence_and_loss_keep_the_parties_aligned(worker: MuxWorker) -> None:
    """The visitor speaks 1 s, is silent 1 s (no packets: DTX), speaks again, losing every tenth
    packet; the agent speaks throughout, its packets arriving in bursts of five (a congested path).
    The visitor's second burst must sit 2 s after the first, and the agent's audio be whole."""
    clock, sink, recorder = recording(worker)
    visitor = opus.encode(tone(440, 3.0))
    agent = opus.encode(tone(880, 3.0))
    visitor_ts, agent_ts = 7777, 2**32 - 10 * FRAME  # the agent's clock wraps during the call
    for index in range(150):  # 3 s of 20 ms packets
        clock.now += 0.02
        silent = 50 <= index < 100
        lost = index >= 100 and index % 10 == 0
        if not silent and not lost:
            # Delivered up to 30 ms late, which must not move the packet.
            clock.now += 0.03 if index % 7 == 0 else 0
            recorder.tap(VISITOR, (visitor_ts + index * FRAME) % 2**32, visitor[index])
            clock.now -= 0.03 if index % 7 == 0 else 0
        if index % 5 == 4:  # the agent's last five packets arrive together, now
            for burst in range(index - 4, index + 1):
                recorder.tap(AGENT, (agent_ts + burst * FRAME) % 2**32, agent[burst])
    result = await recorder.close()
    assert sink.closed and result.error is None
    assert (result.dropped, result.late) == (0, 0)

    tracks = decode_tracks(bytes(sink.data))
    # The agent is anchored at its first arrival, which came in a burst 80 ms late.
    assert abs(tracks.duration_seconds - 3.0) < 0.1
    second = opus.SAMPLE_RATE
    rms = [
        float(np.sqrt(np.mean(tracks.visitor[i * second // 10 : (i + 1) * second // 10].astype(float) ** 2)))
        for i in range(30)
    ]
    # Speech in the first second, silence in the second (allowing 100 ms for the codec's tail),
    # speech again from 2.0 s: the gap stayed a gap and nothing slid.
    assert min(rms[1:9]) > 1000 and max(rms[12:19]) < 100 and min(rms[21:29]) > 500
    assert abs((dominant_frequency(tracks.agent[: 3 * second]) or 0) - 880) < 15
    agent_rms = [
        float(np.sqrt(np.mean(tracks.agent[i * second // 10 : (i + 1) * second // 10].astype(float) ** 2)))
        for i in range(1, 29)
    ]
    assert min(agent_rms) > 1000  # bursts placed by their timestamps: no holes, no pile-ups

    # The same timeline as a stereo WAV: length, header, and the same audio in any byte range.
    wav = StereoWav(bytes(sink.data))
    assert wav.samples == len(tracks.visitor) and wav.size == 44 + 4 * wav.samples
    whole = b"".join(wav.chunks(0, wav.size - 1))
    assert whole[:4] == b"RIFF" and len(whole) == wav.size
    assert b"".join(wav.chunks(1000, 5000)) == b"".join(wav.chunks(1000, 5000))  # deterministic
    middle = np.frombuffer(b"".join(wav.chunks(44 + 4 * 96000, 44 + 4 * 120000 - 1)), dtype=np.int16).reshape(-1, 2)
    assert abs((dominant_frequency(middle[:, 0]) or 0) - 440) < 15  # visitor left
    assert abs((dominant_frequency(middle[:, 1]) or 0) - 880) < 15  # agent right


async def test_one_party_talking_alone_reaches_the_file_within_a_second(worker: MuxWorker) -> None:
    """FFmpeg's muxer interleaves the two tracks, holding one track's packets until the other's
    catch up: by default for up to 10 s, so while one party sent nothing (DTX, a muted or stalled
    sender) nothing of the other reached the file, and a crash would have lost it. The recorder
    bounds that wait at MAX_SKEW (one second)."""
    clock, sink, recorder = recording(worker)
    packets = opus.encode(tone(440, 6.0))
    for index, packet in enumerate(packets):
        clock.now += PACKET
        recorder.tap(VISITOR, index * FRAME, packet)
    # 6 s of the visitor alone: 2 s wait for the anchor to settle, then all but the last second
    # reach the file (the worker muxes in its own thread: give it a moment).
    for _ in range(100):
        try:
            heard = decode_tracks(bytes(sink.data)).visitor
        except RecordingFormatError:  # nothing but the headers yet
            heard = np.zeros(0)
        if len(heard) >= 2.8 * opus.SAMPLE_RATE:
            break
        await asyncio.sleep(0.05)
    assert len(heard) >= 2.8 * opus.SAMPLE_RATE, f"{len(heard) / opus.SAMPLE_RATE:.2f} s of 6 s in the file"
    assert not sink.closed
    result = await recorder.close()
    assert result.packets == len(packets) and abs(result.duration_ms - 6000) < 50


async def test_hostile_timestamps_cannot_stretch_the_recording(worker: MuxWorker) -> None:
    clock, sink, recorder = recording(worker)
    packets = opus.encode(tone(440, 1.0))
    timestamp = 0
    for index in range(50):
        clock.now += 0.02
        # Every fifth packet claims to be 12 hours later (the largest forward step a 32-bit clock allows).
        timestamp = (timestamp + (2**31 - 1 if index % 5 == 4 else FRAME)) % 2**32
        recorder.tap(VISITOR, timestamp, packets[index])
    result = await recorder.close()
    assert result.duration_ms <= 1100  # one second of call, one second of recording
    assert StereoWav(bytes(sink.data)).duration_seconds < 1.1


async def test_a_failing_sink_ends_the_file_without_breaking_the_worker(worker: MuxWorker) -> None:
    class FullDisk(Sink):
        def write(self, data: bytes) -> None:
            if len(self.data) > 2000:
                raise OSError(28, "No space left on device")
            super().write(data)

    clock = Clock()
    broken = FullDisk()
    recorder = Recorder(worker, clock=clock)
    recorder.attach(broken)
    recorder.start()
    for index, packet in enumerate(opus.encode(tone(440, 2.0))):
        clock.now += 0.02
        recorder.tap(VISITOR, index * FRAME, packet)
    result = await recorder.close()
    assert result.error is not None and "No space left" in result.error and broken.closed
    # The shared worker thread still serves other recordings.
    healthy = Sink()
    other = Recorder(worker, clock=clock)
    other.attach(healthy)
    other.start()
    other.tap(AGENT, 0, opus.encode(tone(880, 0.1))[0])
    assert (await other.close()).error is None and healthy.data.startswith(b"OggS")


async def test_a_worker_that_falls_behind_costs_packets_not_the_call() -> None:
    """A worker stalled on its disk: past its backlog, packets are dropped at once and counted (the
    tap never waits), and once the disk is back the recording ends as a valid file."""
    worker = MuxWorker(size=100)
    disk_back = threading.Event()

    class StalledDisk(Sink):
        def write(self, data: bytes) -> None:
            disk_back.wait(30)
            super().write(data)

    clock, sink = Clock(), StalledDisk()
    recorder = Recorder(worker, clock=clock)
    recorder.attach(sink)
    recorder.start()
    packets = opus.encode(tone(440, 6.0))
    try:
        for index, packet in enumerate(packets):
            clock.now += PACKET
            recorder.tap(VISITOR, index * FRAME, packet)
            if index % 10 == 0:
                await asyncio.sleep(0.001)  # the event loop runs: batches go to the worker
        assert recorder.dropped >= len(packets) - 150, (recorder.packets, recorder.dropped)
    finally:
        disk_back.set()
    result = await recorder.close()
    worker.close()
    assert result.packets + result.dropped == len(packets) and result.packets <= 150
    assert result.error is None and sink.closed
    assert decode_tracks(bytes(sink.data)).visitor.size > 0


async def test_wav_ranges_join_into_exactly_the_whole_file(worker: MuxWorker) -> None:
    clock, sink, recorder = recording(worker)
    for index, packet in enumerate(opus.encode(tone(440, 3.0))):
        clock.now += 0.02
        recorder.tap(VISITOR, index * FRAME, packet)
    await recorder.close()
    wav = StereoWav(bytes(sink.data))
    whole = b"".join(wav.chunks(0, wav.size - 1))
    # What a browser does: a first range, then seeks.
    cuts = [0, 37, 44, 99_999, 192_003, 400_000, wav.size]
    joined = b"".join(b"".join(wav.chunks(a, b - 1)) for a, b in itertools.pairwise(cuts))
    assert joined == whole
    assert b"".join(wav.chunks(wav.size - 10, wav.size + 100)) == whole[-10:]


async def test_a_party_whose_first_packets_arrive_late_stays_aligned(worker: MuxWorker) -> None:
    """The agent's first 0.9 s of packets arrive together as it ends (its sender, or its path, stalled),
    the rest on time; both parties start a tone 1.5 s into the call. The agent's anchor settles on its
    on-time packets: the two tones start together, not 0.9 s apart, and the recording is no longer."""
    clock, sink, recorder = recording(worker)
    visitor, agent = speech(440, 1.5, 4.0), speech(880, 1.5, 4.0)
    stalled = round(STALL / PACKET)
    for index in range(200):  # 4 s
        clock.now += PACKET
        # Delivered up to 30 ms late now and then, which must not move either party.
        jitter = 0.03 if index % 7 == 3 else 0.0
        clock.now += jitter
        recorder.tap(VISITOR, 1000 + index * FRAME, visitor[index])
        if index >= stalled:  # the stall is over: what it held arrives now, then each packet on time
            for late in range(index + 1) if index == stalled else (index,):
                recorder.tap(AGENT, (2**32 - 3 * FRAME + late * FRAME) % 2**32, agent[late])
        clock.now -= jitter
    result = await recorder.close()
    assert (result.error, result.dropped, result.late) == (None, 0, 0)

    tracks = decode_tracks(bytes(sink.data))
    print(f"\nonsets: visitor {onset(tracks.visitor):.3f} s, agent {onset(tracks.agent):.3f} s")
    assert abs(onset(tracks.agent) - onset(tracks.visitor)) < 0.04
    assert abs(onset(tracks.visitor) - 1.5) < 0.04
    assert abs(tracks.duration_seconds - 4.0) < 0.05 and abs(result.duration_ms - 4000) < 50


async def test_what_was_said_before_the_answer_and_read_after_it_is_not_recorded(worker: MuxWorker) -> None:
    """The agent's standing leg sends all along; at the answer 0.28 s of its packets still wait in the
    socket (the server was busy) and are read in one go, then the rest on time. What was said before the
    answer has no place in the recording: counted as before the start, not as late, and the agent's
    audio starts at 0 s, where the answer was."""
    clock, sink, recorder = recording(worker)
    agent = opus.encode(tone(880, 2.0))
    waiting = 15  # packets sent from 0.28 s before the answer up to it
    clock.now += PACKET
    for index in range(waiting):
        recorder.tap(AGENT, 7000 + index * FRAME, agent[index])
    for index in range(waiting, 100):
        clock.now = 100.0 + (index - waiting + 1) * PACKET  # sent (and read) on time
        recorder.tap(AGENT, 7000 + index * FRAME, agent[index])
    result = await recorder.close()
    assert (result.error, result.dropped, result.late, result.before_start) == (None, 0, 0, waiting - 1)
    tracks = decode_tracks(bytes(sink.data))
    assert onset(tracks.agent) < 0.03
    assert abs(tracks.duration_seconds - (100 - waiting + 1) * PACKET) < 0.03


async def test_a_stall_mid_call_moves_nothing(worker: MuxWorker) -> None:
    """Once a party's anchor is settled, packets that waited 0.9 s (from 1.0 s into the call) and then
    arrive together are placed where they were sent: the agent's tone, starting during the stall,
    starts with the visitor's."""
    clock, sink, recorder = recording(worker)
    visitor, agent = speech(440, 1.5, 4.0), speech(880, 1.5, 4.0)
    first, last = round(1.0 / PACKET), round((1.0 + STALL) / PACKET)
    for index in range(200):
        clock.now += PACKET
        recorder.tap(VISITOR, index * FRAME, visitor[index])
        for late in range(first, index + 1) if index == last else () if first <= index < last else (index,):
            recorder.tap(AGENT, 99 + late * FRAME, agent[late])
    result = await recorder.close()
    assert (result.error, result.dropped, result.late) == (None, 0, 0)
    tracks = decode_tracks(bytes(sink.data))
    assert abs(onset(tracks.agent) - onset(tracks.visitor)) < 0.04
    assert abs(tracks.duration_seconds - 4.0) < 0.05


async def test_a_stall_at_the_start_does_not_lengthen_the_recording(worker: MuxWorker) -> None:
    """The server stalls for 0.9 s as the call starts: both parties' first packets wait, and arrive
    together. A call of 3 s is a recording of 3 s, both parties where they spoke, not 3.9 s."""
    clock, sink, recorder = recording(worker)
    visitor, agent = speech(440, 1.0, 3.0), speech(880, 2.0, 3.0)
    stalled = round(STALL / PACKET)
    for index in range(150):
        clock.now += PACKET
        for late in range(index + 1) if index == stalled else (index,) if index > stalled else ():
            recorder.tap(VISITOR, 5555 + late * FRAME, visitor[late])
            recorder.tap(AGENT, 2**31 + late * FRAME, agent[late])
    result = await recorder.close()
    assert (result.error, result.dropped, result.late) == (None, 0, 0)

    tracks = decode_tracks(bytes(sink.data))
    print(f"\nrecording {tracks.duration_seconds:.3f} s of a 3 s call")
    assert abs(tracks.duration_seconds - 3.0) < 0.05 and abs(result.duration_ms - 3000) < 50
    assert abs(onset(tracks.visitor) - 1.0) < 0.04 and abs(onset(tracks.agent) - 2.0) < 0.04


async def test_a_file_that_opens_seconds_late_loses_nothing(worker: MuxWorker) -> None:
    """The file opens once the call's row is written, which can wait seconds behind other calls'
    writes (at 128 calls at once, 9-16 s, when the recorder held 2.5 s): what the recorder takes
    meanwhile is held and written, each packet in its place, once the file is there."""
    clock = Clock()
    recorder = Recorder(worker, clock=clock)
    recorder.start()
    visitor, agent = opus.encode(tone(440, 9.0)), opus.encode(tone(880, 9.0))
    for index, (heard, said) in enumerate(zip(visitor, agent, strict=True)):
        clock.now += PACKET
        recorder.tap(VISITOR, index * FRAME, heard)
        recorder.tap(AGENT, index * FRAME, said)
    sink = Sink()
    recorder.attach(sink)
    result = await recorder.close()
    assert (result.dropped, result.late, result.packets) == (0, 0, 2 * len(visitor))
    tracks = decode_tracks(bytes(sink.data))
    assert abs(tracks.duration_seconds - 9.0) < 0.05
    assert abs(onset(tracks.visitor) - onset(tracks.agent)) < 0.01
    assert abs((dominant_frequency(tracks.visitor[-opus.SAMPLE_RATE :]) or 0) - 440) < 15


async def test_held_packets_wait_no_longer_than_the_window(worker: MuxWorker) -> None:
    """A party gone silent within its window is settled by the other's packets after it, and a call
    shorter than the window is recorded whole at its close."""
    clock, _, recorder = recording(worker)
    visitor, agent = opus.encode(tone(440, 0.5)), opus.encode(tone(880, 3.0))
    for index in range(150):
        clock.now += PACKET
        if index < 25:
            recorder.tap(VISITOR, index * FRAME, visitor[index])
        recorder.tap(AGENT, index * FRAME, agent[index])
        if index == 100:  # 2.02 s: both parties' windows (from their first packets, at 0.02 s) are over
            assert recorder.packets == 25 + 101
    result = await recorder.close()
    assert result.packets == 25 + 150 and abs(result.duration_ms - 3000) < 50

    short = Recorder(worker, clock=clock)
    short_sink = Sink()
    short.attach(short_sink)
    short.start()
    for index, packet in enumerate(opus.encode(tone(440, 1.0))[:50]):
        clock.now += PACKET
        short.tap(VISITOR, index * FRAME, packet)
    assert short.packets == 0  # all held: the anchor is still settling
    result = await short.close()
    assert result.packets == 50 and abs(result.duration_ms - 1000) < 50
    tracks = decode_tracks(bytes(short_sink.data))
    assert abs((dominant_frequency(tracks.visitor[: opus.SAMPLE_RATE]) or 0) - 440) < 15


async def test_a_flood_from_the_first_packet_is_kept_to_real_time(worker: MuxWorker) -> None:
    """Ten seconds of audio a second from a party's first packet, while its anchor settles: what is held
    is placed no later than it arrived, and the recording still keeps to real time."""
    clock, sink, recorder = recording(worker)
    packets = opus.encode(tone(440, 1.0))
    for index in range(10 * 50 * 5):  # 5 s of flood
        clock.now += PACKET / 10
        recorder.tap(VISITOR, index * FRAME, packets[index % 50])
    result = await recorder.close()
    assert result.error is None
    assert result.duration_ms <= 5000 + 1000 * MAX_SKEW // opus.SAMPLE_RATE + 20
    assert result.packets <= 5 * 50 + MAX_SKEW // FRAME + 1 and result.dropped + result.late >= 0.8 * 10 * 50 * 5
    assert StereoWav(bytes(sink.data)).duration_seconds <= 6.02


async def test_the_load_testers_check_holds_a_recording_to_the_talk_time_the_server_stored(worker: MuxWorker) -> None:
    """2 s of both parties' tones: as long as a call the server says lasted 2.2 s, not one of 3 s, and
    the failure says what was recorded and where each party is heard."""
    clock, sink, recorder = recording(worker)
    visitor, agent = opus.encode(tone(440, 2.0)), opus.encode(tone(880, 2.0))
    for index in range(100):
        clock.now += PACKET
        recorder.tap(VISITOR, index * FRAME, visitor[index])
        recorder.tap(AGENT, 5000 + index * FRAME, agent[index])
    await recorder.close()
    result = CallResult(index=0, visitor_tone=440.0, agent_tone=880.0)
    result.talk_seconds = 2.9  # the load tester's clock: the server took its time with the accept
    check_recording(result, bytes(sink.data), 2.2)
    assert result.ok, result.details
    check_recording(result, bytes(sink.data), 3.0)
    assert result.failures == ["check:recording_duration"]
    detail = result.details["check:recording_duration"]
    assert detail.startswith("2.01 s recorded for 3.00 s of talk (2.9 s at the load tester)"), detail
    assert "visitor heard from 0.01 to 2.01 s, agent from 0.01 to 2.01 s" in detail, detail


async def test_the_load_testers_check_finds_gaps_beyond_the_loss_it_injected(worker: MuxWorker) -> None:
    """A recording that lost every tenth packet of the agent's (the server's recorder behind) has the
    right tones and length, and fails for its gaps, unless the load tester dropped that many itself."""
    clock, sink, recorder = recording(worker)
    visitor, agent = opus.encode(tone(440, 3.0)), opus.encode(tone(880, 3.0))
    for index in range(150):
        clock.now += PACKET
        recorder.tap(VISITOR, index * FRAME, visitor[index])
        if index % 10 != 5:
            recorder.tap(AGENT, index * FRAME, agent[index])
    await recorder.close()
    result = CallResult(index=0, visitor_tone=440.0, agent_tone=880.0)
    check_recording(result, bytes(sink.data), 3.0)
    assert result.failures == ["check:recording_gaps"]
    detail = result.details["check:recording_gaps"]
    visitor_missing, agent_missing = (float(share) for share in re.findall(r"([\d.]+)% of the \w+'s sound", detail))
    assert visitor_missing < 1 and 8 <= agent_missing <= 11, detail
    for allowed, failures in ((0.1, []), (None, [])):
        result = CallResult(index=0, visitor_tone=440.0, agent_tone=880.0)
        check_recording(result, bytes(sink.data), 3.0, allowed)
        assert result.failures == failures, result.details
