"""Streaming AEAD in Tink's AES-GCM-HKDF streaming format, implemented with ``cryptography``.

Why this format: it is a published, analysed construction (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO 2015: the segmented
"STREAM" scheme), interoperable with every Tink implementation, and it fits recordings: the file is
written segment by segment as audio arrives, each segment authenticated on its own, the last one
marked, so a reader detects tampering, reordering, splicing and truncation, and a crash leaves every
complete segment readable.

Layout (``S`` = ciphertext segment size, ``K`` = derived key size, 16-byte GCM tags)::

    header   = header_length (1 byte, = 1 + K + 7) || salt (K bytes) || nonce_prefix (7 bytes)
    segment0 = AES-GCM(key, nonce(0, last?), plaintext[0 : S - header_length - 16])
    segment_i = AES-GCM(key, nonce(i, last?), next S - 16 bytes of plaintext)
    key      = HKDF-SHA256(ikm, salt, info=associated_data, length=K)
    nonce(i, last) = nonce_prefix || uint32_be(i) || (0x01 if last else 0x00)

Every segment but the last is full; the last holds 0 to its full size (0 only when the whole
plaintext is empty). The associated data is bound through the key derivation, not stored: a file
opened with the wrong associated data (another recording's id) fails to authenticate.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
DERIVED_KEY_SIZE = 32
IKM_SIZE = 32
# 4 KiB segments: a crash loses at most the segment being filled (held back until more data shows it
# is not the last), about a quarter to half a second of two-channel Opus.
SEGMENT_SIZE = 4096
HEADER_SIZE = 1 + DERIVED_KEY_SIZE + NONCE_PREFIX_SIZE


class Sink(Protocol):
    def write(self, data: bytes, /) -> object: ...


class StreamError(Exception):
    """A ciphertext is not a valid stream for this key and associated data; the message says how."""


class TruncatedError(StreamError):
    """Every segment present authenticates, but the final segment is missing (a crash, a cut copy).

    ``plaintext_bytes`` and ``segments`` say how much survived.
    """

    def __init__(self, message: str, *, segments: int, plaintext_bytes: int) -> None:
        super().__init__(message)
        self.segments = segments
        self.plaintext_bytes = plaintext_bytes


def _check_parameters(ikm: bytes, segment_size: int) -> None:
    if len(ikm) < DERIVED_KEY_SIZE:
        raise ValueError(f"the key must have at least {DERIVED_KEY_SIZE} bytes")
    if segment_size <= HEADER_SIZE + TAG_SIZE + 1 or segment_size > 2**31:
        raise ValueError(f"segment size {segment_size} is out of range")


def _derive(ikm: bytes, salt: bytes, associated_data: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=DERIVED_KEY_SIZE, salt=salt, info=associated_data).derive(ikm)
    return AESGCM(key)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= 2**32:
        raise StreamError("the stream has more than 2^32 segments")
    return prefix + struct.pack(">I?", index, last)


def first_segment_plaintext(segment_size: int = SEGMENT_SIZE) -> int:
    return segment_size - HEADER_SIZE - TAG_SIZE


class EncryptingWriter:
    """Encrypts what is written to it into ``sink`` as it comes, one segment at a time.

    The sink only ever receives ciphertext: the header at once, then each segment once it is known
    not to be the last. :meth:`close` writes the final segment; a stream never closed (a crash)
    reads back as :class:`TruncatedError` with every complete segment intact.
    """

    def __init__(self, sink: Sink, ikm: bytes, associated_data: bytes, *, segment_size: int = SEGMENT_SIZE) -> None:
        _check_parameters(ikm, segment_size)
        salt = os.urandom(DERIVED_KEY_SIZE)
        self._prefix = os.urandom(NONCE_PREFIX_SIZE)
        self._aead = _derive(ikm, salt, associated_data)
        self._sink = sink
        self._segment_size = segment_size
        self._index = 0
        self._buffer = bytearray()
        self._closed = False
        self._failed = False
        self.ciphertext_bytes = HEADER_SIZE
        sink.write(bytes([HEADER_SIZE]) + salt + self._prefix)

    @property
    def _capacity(self) -> int:
        """Plaintext bytes the current segment holds."""
        full = self._segment_size - TAG_SIZE
        return full - HEADER_SIZE if self._index == 0 else full

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._check_usable()
        self._buffer += data
        # Keep a full segment back until more data shows it is not the last. Segments are cut from a
        # view and the buffer shortened once, not once per segment.
        offset = 0
        try:
            with memoryview(self._buffer) as view:
                while len(self._buffer) - offset > self._capacity:
                    capacity = self._capacity
                    self._emit(view[offset : offset + capacity], last=False)
                    offset += capacity
        except BaseException:
            # The sink failed with a segment half-handled: its nonce may be spent. Nothing more may be
            # written to this stream (a retry would encrypt other data under a used nonce).
            self._failed = True
            raise
        if offset:
            del self._buffer[:offset]

    def close(self) -> None:
        if self._closed:
            return
        self._check_usable()
        try:
            self._emit(bytes(self._buffer), last=True)
        except BaseException:
            self._failed = True
            raise
        self._buffer.clear()
        self._closed = True

    def _check_usable(self) -> None:
        if self._closed:
            raise ValueError("write to a closed stream")
        if self._failed:
            raise StreamError("an earlier write to this stream failed; it cannot be continued")

    def _emit(self, plaintext: bytes | memoryview, *, last: bool) -> None:
        segment = self._aead.encrypt(_nonce(self._prefix, self._index, last), plaintext, None)
        self._sink.write(segment)
        self.ciphertext_bytes += len(segment)
        self._index += 1


def decrypt_segments(
    source: BinaryIO,
    ikm: bytes,
    associated_data: bytes,
    *,
    segment_size: int = SEGMENT_SIZE,
    torn_tail: bool = False,
) -> Iterator[bytes]:
    """Yield the plaintext of each segment of ``source`` in order, each authenticated before it is
    yielded. Raises :class:`StreamError` on any tampering, :class:`TruncatedError` (after yielding
    every intact segment) when the final segment is missing.

    With ``torn_tail`` (recovery after a crash), a last segment shorter than a full one that does
    not authenticate is taken for a write cut short, and reported as truncation rather than
    tampering.
    """
    _check_parameters(ikm, segment_size)
    header = source.read(HEADER_SIZE)
    if len(header) == 0:
        raise StreamError("the file is empty: it has no header")
    if header[0] != HEADER_SIZE:
        raise StreamError("the file does not start with an AES-GCM-HKDF streaming header")
    if len(header) < HEADER_SIZE:
        raise _truncated(0, 0, "the file ends inside its header")
    aead = _derive(ikm, header[1 : 1 + DERIVED_KEY_SIZE], associated_data)
    prefix = header[1 + DERIVED_KEY_SIZE :]
    index = 0
    plaintext_bytes = 0
    size = segment_size - HEADER_SIZE
    segment = source.read(size)
    while True:
        # A segment is the last exactly when nothing follows it.
        following = source.read(segment_size) if len(segment) == size else b""
        last = not following
        if len(segment) < TAG_SIZE:
            raise _truncated(index, plaintext_bytes, "the file ends inside a segment")
        try:
            plaintext = aead.decrypt(_nonce(prefix, index, last), segment, None)
        except InvalidTag:
            if last:
                # Either tampered, or a non-final segment that is now last because the file was cut
                # at a segment boundary.
                try:
                    plaintext = aead.decrypt(_nonce(prefix, index, False), segment, None)
                except InvalidTag:
                    pass
                else:
                    yield plaintext
                    plaintext_bytes += len(plaintext)
                    raise _truncated(index + 1, plaintext_bytes, "the final segment is missing") from None
                if torn_tail and len(segment) < size:
                    raise _truncated(index, plaintext_bytes, "the file ends inside a segment") from None
            raise StreamError(
                f"segment {index} does not authenticate: the file was altered, its segments reordered "
                "or spliced, or it is opened with the wrong key or recording id"
            ) from None
        yield plaintext
        plaintext_bytes += len(plaintext)
        if last:
            return
        index += 1
        segment = following
        size = segment_size


def _truncated(segments: int, plaintext_bytes: int, why: str) -> TruncatedError:
    return TruncatedError(
        f"{why}: {segments} complete segment(s), {plaintext_bytes} bytes of plaintext survive",
        segments=segments,
        plaintext_bytes=plaintext_bytes,
    )


def decrypt(data: bytes, ikm: bytes, associated_data: bytes, *, segment_size: int = SEGMENT_SIZE) -> bytes:
    """The whole plaintext of ``data`` (for tests and small files)."""
    import io

    return b"".join(decrypt_segments(io.BytesIO(data), ikm, associated_data, segment_size=segment_size))
