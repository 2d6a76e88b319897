"""Encoding PCM to Opus packets once, so that generated audio costs nothing per call."""

from __future__ import annotations

import fractions

import av
import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960  # 20 ms, the packet time WebRTC endpoints use for Opus


def encode(pcm: npt.NDArray[np.int16], bitrate: int = 32000) -> list[bytes]:
    """Encode mono 48 kHz PCM into 20 ms Opus packets (a short final frame is padded with silence)."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = SAMPLE_RATE
    codec.layout = "mono"
    codec.format = "s16"
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, SAMPLE_RATE)
    codec.options = {"application": "voip"}
    remainder = len(pcm) % FRAME_SAMPLES
    if remainder:
        pcm = np.concatenate([pcm, np.zeros(FRAME_SAMPLES - remainder, dtype=np.int16)])
    packets: list[bytes] = []
    for index in range(0, len(pcm), FRAME_SAMPLES):
        frame = av.AudioFrame.from_ndarray(
            pcm[index : index + FRAME_SAMPLES].reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = index
        frame.time_base = codec.time_base
        packets.extend(bytes(p) for p in codec.encode(frame))
    packets.extend(bytes(p) for p in codec.encode(None))
    return packets
