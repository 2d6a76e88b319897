"""Reading what the recorder writes: an Ogg file with one Opus stream per party.

Everything here works on plaintext in memory (the caller decrypts it): the parties' audio placed on
the call's timeline, the file's duration, the stereo rendering played to admins (visitor left, agent
right), and the longest prefix of a cut file that is whole Ogg pages (for recovery after a crash).
"""

from __future__ import annotations

import fractions
import io
import struct
from dataclasses import dataclass

import av
import numpy as np
import numpy.typing as npt

from media import opus
from media.recorder import AGENT, VISITOR

_RATE = opus.SAMPLE_RATE


class RecordingFormatError(Exception):
    """The plaintext is not a recording this server wrote."""


@dataclass(frozen=True)
class Tracks:
    """Each party's audio as mono 16-bit PCM at 48 kHz on the call's timeline (same length)."""

    visitor: npt.NDArray[np.int16]
    agent: npt.NDArray[np.int16]

    @property
    def duration_seconds(self) -> float:
        return len(self.visitor) / _RATE


def decode_tracks(plaintext: bytes) -> Tracks:
    """Decode both parties, each sample placed at its position on the timeline (gaps are silence)."""
    try:
        container = av.open(io.BytesIO(plaintext), mode="r", format="ogg")
    except av.FFmpegError as exc:
        raise RecordingFormatError(f"not an Ogg recording: {exc}") from None
    with container:
        streams = list(container.streams.audio)
        if len(streams) != 2:
            raise RecordingFormatError(f"a recording has 2 audio streams, this one has {len(streams)}")
        pieces: list[list[tuple[int, npt.NDArray[np.int16]]]] = [[], []]
        resamplers = [av.AudioResampler(format="s16", layout="mono", rate=_RATE) for _ in streams]
        skips = [_pre_skip(stream) for stream in streams]
        try:
            for packet in container.demux(*streams):
                index = packet.stream.index
                for frame in packet.decode():
                    if not isinstance(frame, av.AudioFrame) or frame.pts is None:
                        continue
                    start = int(frame.pts) - skips[index]
                    for out in resamplers[index].resample(frame):
                        pieces[index].append((start, out.to_ndarray().reshape(-1).astype(np.int16)))
                        start += out.samples
        except av.FFmpegError as exc:
            raise RecordingFormatError(f"the recording could not be decoded: {exc}") from None
    length = max((start + len(samples) for track in pieces for start, samples in track), default=0)
    tracks = []
    for track in pieces:
        pcm = np.zeros(length, dtype=np.int16)
        for start, samples in track:
            begin = max(0, start)
            pcm[begin : start + len(samples)] = samples[begin - start :]
        tracks.append(pcm)
    return Tracks(visitor=tracks[VISITOR], agent=tracks[AGENT])


def duration_seconds(plaintext: bytes) -> float:
    """How long the recording lasts (to its last decoded sample)."""
    return decode_tracks(plaintext).duration_seconds


def render_stereo(plaintext: bytes, bitrate: int = 64000) -> bytes:
    """The recording as one stereo Ogg/Opus file a browser plays: visitor left, agent right."""
    tracks = decode_tracks(plaintext)
    stereo = np.stack([tracks.visitor, tracks.agent], axis=1)  # (samples, 2)
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=_RATE)
        stream.bit_rate = bitrate
        stream.layout = "stereo"
        time_base = fractions.Fraction(1, _RATE)
        for index in range(0, len(stereo), opus.FRAME_SAMPLES):
            chunk = stereo[index : index + opus.FRAME_SAMPLES]
            if len(chunk) < opus.FRAME_SAMPLES:
                chunk = np.concatenate([chunk, np.zeros((opus.FRAME_SAMPLES - len(chunk), 2), dtype=np.int16)])
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="stereo")
            frame.sample_rate = _RATE
            frame.pts = index
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


def whole_pages(data: bytes) -> int:
    """The length of the longest prefix of ``data`` made of complete Ogg pages (RFC 3533 section 6)."""
    position = 0
    while position + 27 <= len(data):
        if data[position : position + 4] != b"OggS":
            break
        segments = data[position + 26]
        header = 27 + segments
        if position + header > len(data):
            break
        body = sum(data[position + 27 : position + header])
        if position + header + body > len(data):
            break
        position += header + body
    return position


def _pre_skip(stream: av.audio.stream.AudioStream) -> int:
    """Samples to drop from the stream's start, from its OpusHead (RFC 7845 section 5.1)."""
    extradata = stream.codec_context.extradata or b""
    if len(extradata) >= 12 and extradata.startswith(b"OpusHead"):
        return int(struct.unpack_from("<H", extradata, 10)[0])
    return 0
