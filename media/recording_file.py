"""Reading what the recorder writes: an Ogg file with one Opus stream per party.

Everything here works on plaintext in memory (the caller decrypts it): the parties' audio placed on
the call's timeline, the file's duration, the stereo WAV played to admins (visitor left, agent right)
produced range by range, and the longest prefix of a cut file that is whole Ogg pages (for recovery
after a crash).
"""

from __future__ import annotations

import bisect
import io
import struct
from collections.abc import Iterator
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
    wav = StereoWav(plaintext)
    stereo = np.frombuffer(b"".join(wav.chunks(StereoWav.HEADER, wav.size - 1)), dtype=np.int16).reshape(-1, 2)
    return Tracks(visitor=stereo[:, VISITOR].copy(), agent=stereo[:, AGENT].copy())


def duration_seconds(plaintext: bytes) -> float:
    """How long the recording lasts (to the end of its last packet; nothing is decoded)."""
    return StereoWav(plaintext).duration_seconds


class StereoWav:
    """The recording as a stereo WAV file (16-bit, 48 kHz; visitor left, agent right), of which any
    byte range is produced on demand by decoding only the packets it needs.

    WAV because its size and layout follow from the duration alone: a browser can seek by byte
    range, every range is produced independently, and the same bytes come out every time. Only the
    compressed packets are held (indexed once); decoded audio is made a second at a time.
    """

    HEADER = 44
    _PREROLL = 3840  # 80 ms decoded before a range so the decoder has settled (RFC 7845 section 4.6)
    _CHUNK = _RATE  # samples per produced chunk: one second, 192 KB

    def __init__(self, plaintext: bytes) -> None:
        self._packets: list[list[tuple[int, bytes]]] = [[], []]
        self._extradata: list[bytes] = [b"", b""]
        try:
            container = av.open(io.BytesIO(plaintext), mode="r", format="ogg")
        except av.FFmpegError as exc:
            raise RecordingFormatError(f"not an Ogg recording: {exc}") from None
        with container:
            streams = list(container.streams.audio)
            if len(streams) != 2:
                raise RecordingFormatError(f"a recording has 2 audio streams, this one has {len(streams)}")
            skips = [_pre_skip(stream) for stream in streams]
            self._extradata = [bytes(stream.codec_context.extradata or b"") for stream in streams]
            try:
                for packet in container.demux(*streams):
                    if packet.pts is None or packet.size == 0:
                        continue
                    index = packet.stream.index
                    self._packets[index].append((int(packet.pts) - skips[index], bytes(packet)))
            except av.FFmpegError as exc:
                raise RecordingFormatError(f"the recording could not be read: {exc}") from None
        self._starts = [[pts for pts, _ in track] for track in self._packets]
        self.samples = max(
            (pts + opus.packet_samples(data) for track in self._packets for pts, data in track[-1:]), default=0
        )
        self.size = self.HEADER + self.samples * 4

    @property
    def duration_seconds(self) -> float:
        return self.samples / _RATE

    def header(self) -> bytes:
        data_size = self.samples * 4
        return (
            b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 2, _RATE, _RATE * 4, 4, 16)
            + b"data" + struct.pack("<I", data_size)
        )  # fmt: skip

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` (inclusive) of the file, in pieces of about a second."""
        if start < self.HEADER:
            yield self.header()[start : end + 1]
            start = self.HEADER
        end = min(end, self.size - 1)
        if start > end:
            return
        low, high = start - self.HEADER, end - self.HEADER + 1  # byte offsets in the sample data
        first, last = low // 4, (high + 3) // 4
        # Each second of the timeline is decoded on its own, by fresh decoders started 80 ms before
        # it: a sample's value depends only on where it is, never on where a range began, so ranges
        # fetched separately join into exactly the bytes of the whole file.
        for window in range(first - first % self._CHUNK, last, self._CHUNK):
            upto = min(window + self._CHUNK, self.samples)
            stereo = np.zeros((upto - window, 2), dtype=np.int16)
            for track in (VISITOR, AGENT):
                self._decoder(track, window).fill(stereo[:, track], window)
            offset = window * 4
            yield stereo.tobytes()[max(low - offset, 0) : high - offset]

    def _decoder(self, track: int, first_sample: int) -> _TrackDecoder:
        starts = self._starts[track]
        index = max(0, bisect.bisect_right(starts, first_sample - self._PREROLL) - 1)
        return _TrackDecoder(self._packets[track], index, self._extradata[track])


class _TrackDecoder:
    """Decodes one party's packets forward from a position, handing out samples by timeline window."""

    def __init__(self, packets: list[tuple[int, bytes]], index: int, extradata: bytes) -> None:
        self._packets = packets
        self._index = index
        self._codec = av.CodecContext.create("opus", "r")
        self._codec.extradata = extradata
        self._decoded: list[tuple[int, npt.NDArray[np.int16]]] = []

    def fill(self, out: npt.NDArray[np.int16], window: int) -> None:
        """Write this party's samples for ``[window, window + len(out))`` into ``out``."""
        end = window + len(out)
        while self._index < len(self._packets) and self._packets[self._index][0] < end:
            pts, data = self._packets[self._index]
            self._index += 1
            try:
                frames = self._codec.decode(av.Packet(data))
            except av.FFmpegError:
                continue  # a damaged packet is a moment of silence, not a failed playback
            for frame in frames:
                pcm = frame.to_ndarray()
                mono = pcm[0] if pcm.ndim == 2 else pcm
                if mono.dtype.kind == "f":
                    mono = np.clip(mono * 32767, -32768, 32767)
                self._decoded.append((pts, mono.astype(np.int16)))
                pts += len(mono)
        keep = []
        for pts, samples in self._decoded:
            lo, hi = max(pts, window), min(pts + len(samples), end)
            if lo < hi:
                out[lo - window : hi - window] = samples[lo - pts : hi - pts]
            if pts + len(samples) > end:
                keep.append((pts, samples))
        self._decoded = keep


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
