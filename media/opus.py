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


def packet_samples(packet: bytes) -> int:
    """Samples (at 48 kHz) an Opus packet holds, from its TOC byte (RFC 6716 section 3.1)."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:  # SILK: 10, 20, 40, 60 ms
        frame = (480, 960, 1920, 2880)[config & 3]
    elif config < 16:  # hybrid: 10, 20 ms
        frame = (480, 960)[config & 1]
    else:  # CELT: 2.5, 5, 10, 20 ms
        frame = (120, 240, 480, 960)[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = packet[1] & 0x3F if len(packet) > 1 else 0
    return min(frame * frames, 5760)  # at most 120 ms per packet
