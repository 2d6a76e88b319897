"""The recorder's timeline: parties stay aligned through silence, loss, reordering and 32-bit wraps,
and a sender's timestamps cannot stretch the recording beyond the call (SECURITY.md: bounded memory).
Packets are fed with a controlled clock (the arrival times of a real call), not in real time."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from media import opus
from media.recorder import AGENT, MAX_SKEW, VISITOR, MuxWorker, Recorder, _Party
from media.recording_file import StereoWav, decode_tracks
from media.synthetic import dominant_frequency, tone

FRAME = opus.FRAME_SAMPLES


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


@pytest.fixture
def worker() -> MuxWorker:
    return MuxWorker()


async def test_silence_and_loss_keep_the_parties_aligned(worker: MuxWorker) -> None:
    """The visitor speaks 1 s, is silent 1 s (no packets: DTX), speaks again, losing every tenth
    packet; the agent speaks throughout, its packets arriving in bursts of five (a congested path).
    The visitor's second burst must sit 2 s after the first, and the agent's audio be whole."""
    clock = Clock()
    sink = Sink()
    recorder = Recorder(worker, clock=clock)
    recorder.attach(sink)
    recorder.start()
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


async def test_hostile_timestamps_cannot_stretch_the_recording(worker: MuxWorker) -> None:
    clock = Clock()
    sink = Sink()
    recorder = Recorder(worker, clock=clock)
    recorder.attach(sink)
    recorder.start()
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


async def test_wav_ranges_join_into_exactly_the_whole_file(worker: MuxWorker) -> None:
    clock = Clock()
    sink = Sink()
    recorder = Recorder(worker, clock=clock)
    recorder.attach(sink)
    recorder.start()
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
