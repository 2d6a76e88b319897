"""Synthetic call parties: tones in, tones detected out. Used by the tests and the load tester.

Sending is cheap: a tone is encoded to Opus once and its packets are replayed, paced in real time,
through aiortc's sender as pre-encoded ``av.Packet`` objects (no encoder runs per call). Receiving
decodes (aiortc always does), and :func:`dominant_frequency` tells which tone arrived.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import functools
import time

import av
import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from media import opus

_TIME_BASE = fractions.Fraction(1, opus.SAMPLE_RATE)
_PACKET_SECONDS = opus.FRAME_SAMPLES / opus.SAMPLE_RATE


@functools.cache
def tone_loop(frequency: float) -> tuple[bytes, ...]:
    """One second of ``frequency`` as Opus packets that loop without a seam.

    Encoding exactly one second and looping it clicks at every turn: the first packets carry the
    encoder's start-up (its look-ahead and ramp), the last ones the signal 6.5 ms short of the end.
    So two seconds are encoded and the second one kept: it starts and ends in the encoder's steady
    state, and for an integer frequency it holds whole periods, so its end runs on into its start.
    """
    packets_per_second = opus.SAMPLE_RATE // opus.FRAME_SAMPLES
    return tuple(opus.encode(tone(frequency, 2.0))[packets_per_second : 2 * packets_per_second])


def tone(frequency: float, seconds: float, amplitude: float = 0.3) -> npt.NDArray[np.int16]:
    """A sine tone as mono 48 kHz PCM."""
    t = np.arange(int(seconds * opus.SAMPLE_RATE)) / opus.SAMPLE_RATE
    return (np.sin(2 * np.pi * frequency * t) * amplitude * 32767).astype(np.int16)


class OpusLoopTrack(MediaStreamTrack):
    """An audio track that loops pre-encoded Opus packets in real time (or ``speed`` times faster:
    a flooding peer, for tests)."""

    kind = "audio"

    def __init__(self, packets: list[bytes]) -> None:
        super().__init__()
        if not packets:
            raise ValueError("OpusLoopTrack needs at least one packet")
        self._packets = packets
        self._index = 0
        self._start: float | None = None
        self._speed = 1.0

    def pace(self, speed: float) -> None:
        """Send ``speed`` times as many packets a second as real time, from the next one on. Their
        timestamps still advance 20 ms each: a peer at speed 10 sends ten seconds of audio a second."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        if self._start is not None:
            # The packets still to come are scheduled from now, at the new speed.
            self._start = time.monotonic() - self._index * _PACKET_SECONDS / speed
        self._speed = speed

    def switch(self, packets: list[bytes]) -> None:
        """Loop other packets from the next one on (a synthetic agent's new call, a new tone)."""
        if not packets:
            raise ValueError("OpusLoopTrack needs at least one packet")
        self._packets = packets

    @classmethod
    def of_tone(cls, frequency: float) -> OpusLoopTrack:
        return cls(list(tone_loop(frequency)))

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        delay = self._start + self._index * _PACKET_SECONDS / self._speed - time.monotonic()
        # Sleep even when behind (zero): a sender catching up must not hold the event loop.
        await asyncio.sleep(max(delay, 0.0))
        packet = av.Packet(self._packets[self._index % len(self._packets)])
        packet.pts = self._index * opus.FRAME_SAMPLES
        packet.time_base = _TIME_BASE
        self._index += 1
        return packet


class AudioSink:
    """Reads a received audio track and keeps its last ``seconds`` as mono PCM."""

    def __init__(self, track: MediaStreamTrack, seconds: float = 2.0) -> None:
        self._frames: collections.deque[npt.NDArray[np.int16]] = collections.deque(maxlen=max(1, int(seconds * 50)))
        self.frames_received = 0
        self._task = asyncio.create_task(self._run(track), name="audio-sink")

    async def _run(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                samples = frame.to_ndarray()
                channels = len(frame.layout.channels)
                # Packed s16: one row of interleaved samples; keep the first channel.
                mono = samples.reshape(-1, channels)[:, 0] if channels > 1 else samples.reshape(-1)
                self._frames.append(mono.astype(np.int16))
                self.frames_received += 1
        except MediaStreamError:
            pass

    def samples(self) -> npt.NDArray[np.int16]:
        if not self._frames:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(self._frames))

    async def close(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


def dominant_frequency(samples: npt.NDArray[np.int16], rate: int = opus.SAMPLE_RATE) -> float | None:
    """The frequency carrying most energy, or None when the signal is (near) silent."""
    if len(samples) < rate // 10:
        return None
    data = samples.astype(np.float64)
    if np.sqrt(np.mean(data**2)) < 100:  # about -50 dBFS: silence or comfort noise
        return None
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(data), 1 / rate)[int(np.argmax(spectrum))])


def band_share(
    samples: npt.NDArray[np.int16], frequency: float, width: float = 15.0, rate: int = opus.SAMPLE_RATE
) -> float:
    """The share (0 to 1) of the signal's power within ``width`` Hz of ``frequency``."""
    if len(samples) < rate // 10:
        return 0.0
    data = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(data * np.hanning(len(data)))) ** 2
    power[0] = 0
    total = float(power.sum())
    if total == 0:
        return 0.0
    frequencies = np.fft.rfftfreq(len(data), 1 / rate)
    return float(power[np.abs(frequencies - frequency) <= width].sum()) / total
