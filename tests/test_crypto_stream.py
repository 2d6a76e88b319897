"""The streaming AEAD (storage/crypto_stream.py): byte-compatible with Tink both ways, and every kind
of tampering rejected with a clear error."""

from __future__ import annotations

import io
import os

import pytest
import tink
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

from storage.crypto_stream import (
    HEADER_SIZE,
    SEGMENT_SIZE,
    TAG_SIZE,
    EncryptingWriter,
    StreamError,
    TruncatedError,
    decrypt,
    decrypt_segments,
    first_segment_plaintext,
)

streaming_aead.register()

FIRST = first_segment_plaintext()
LENGTHS = [0, 1, FIRST - 1, FIRST, FIRST + 1, 3 * 1024 * 1024 + 7]


def tink_primitive(ikm: bytes) -> streaming_aead.StreamingAead:
    """Tink's own AES-GCM-HKDF streaming primitive over the same key material."""
    key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(version=0, key_value=ikm)
    key.params.derived_key_size = 32
    key.params.hkdf_hash_type = common_pb2.SHA256
    key.params.ciphertext_segment_size = SEGMENT_SIZE
    keyset = tink_pb2.Keyset(primary_key_id=1)
    entry = keyset.key.add()
    entry.key_data.type_url = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"
    entry.key_data.value = key.SerializeToString()
    entry.key_data.key_material_type = tink_pb2.KeyData.SYMMETRIC
    entry.status = tink_pb2.ENABLED
    entry.key_id = 1
    entry.output_prefix_type = tink_pb2.RAW
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    return handle.primitive(streaming_aead.StreamingAead)


def encrypt(data: bytes, ikm: bytes, aad: bytes, chunk: int = 1000) -> bytes:
    out = io.BytesIO()
    writer = EncryptingWriter(out, ikm, aad)
    for index in range(0, len(data), chunk):
        writer.write(data[index : index + chunk])
    writer.close()
    return out.getvalue()


class _KeepOpen(io.BytesIO):
    def close(self) -> None:  # Tink closes its destination; keep the bytes readable
        pass


@pytest.mark.parametrize("length", LENGTHS)
def test_tink_reads_what_we_write(length: int) -> None:
    ikm, aad, data = os.urandom(32), b"recording 1", os.urandom(length)
    ciphertext = encrypt(data, ikm, aad)
    with tink_primitive(ikm).new_decrypting_stream(io.BytesIO(ciphertext), aad) as stream:
        assert stream.read() == data


@pytest.mark.parametrize("length", LENGTHS)
def test_we_read_what_tink_writes(length: int) -> None:
    ikm, aad, data = os.urandom(32), b"recording 1", os.urandom(length)
    sink = _KeepOpen()
    with tink_primitive(ikm).new_encrypting_stream(sink, aad) as stream:
        stream.write(data)
    assert decrypt(sink.getvalue(), ikm, aad) == data


def segments(ciphertext: bytes) -> list[bytes]:
    first = SEGMENT_SIZE - HEADER_SIZE
    parts = [ciphertext[HEADER_SIZE : first + HEADER_SIZE]]
    rest = ciphertext[first + HEADER_SIZE :]
    parts += [rest[i : i + SEGMENT_SIZE] for i in range(0, len(rest), SEGMENT_SIZE)]
    return parts


def test_tampering_is_rejected_with_clear_errors() -> None:
    ikm, aad = os.urandom(32), b"recording 1"
    data = os.urandom(5 * SEGMENT_SIZE + 100)
    ciphertext = encrypt(data, ikm, aad)
    header = ciphertext[:HEADER_SIZE]
    parts = segments(ciphertext)
    assert len(parts) == 6 and all(len(p) == SEGMENT_SIZE for p in parts[1:-1])

    flipped = bytearray(ciphertext)
    flipped[HEADER_SIZE + 2 * SEGMENT_SIZE] ^= 1
    other = segments(encrypt(os.urandom(len(data)), ikm, aad))
    cases = {
        "a flipped bit": bytes(flipped),
        "two segments reordered": header + parts[0] + parts[2] + parts[1] + b"".join(parts[3:]),
        "a segment from another recording": header + parts[0] + other[1] + b"".join(parts[2:]),
        "bytes appended after the final segment": ciphertext + os.urandom(100),
        "a segment appended after the final one": ciphertext + parts[1],
        "a header from another file": encrypt(b"x", ikm, aad)[:HEADER_SIZE] + b"".join(parts),
    }
    for what, bad in cases.items():
        with pytest.raises(StreamError, match="does not authenticate") as raised:
            decrypt(bad, ikm, aad)
        assert not isinstance(raised.value, TruncatedError), what
    with pytest.raises(StreamError, match="does not authenticate"):
        decrypt(ciphertext, os.urandom(32), aad)  # wrong key
    with pytest.raises(StreamError, match="wrong key or recording id"):
        decrypt(ciphertext, ikm, b"recording 2")  # another recording's id
    with pytest.raises(StreamError, match="empty"):
        decrypt(b"", ikm, aad)
    with pytest.raises(StreamError, match="header"):
        decrypt(b"\x00" * 100, ikm, aad)


def test_truncation_at_a_segment_boundary_says_what_survived() -> None:
    ikm, aad = os.urandom(32), b"recording 1"
    data = os.urandom(5 * SEGMENT_SIZE + 100)
    ciphertext = encrypt(data, ikm, aad)
    cut = HEADER_SIZE + sum(len(p) for p in segments(ciphertext)[:3])
    with pytest.raises(TruncatedError) as truncated:
        decrypt(ciphertext[:cut], ikm, aad)
    survived = FIRST + 2 * (SEGMENT_SIZE - TAG_SIZE)
    assert (truncated.value.segments, truncated.value.plaintext_bytes) == (3, survived)


def test_a_stream_never_closed_reads_as_truncated() -> None:
    """What a crash leaves: the header and every segment known not to be the last."""
    ikm, aad = os.urandom(32), b"recording 1"
    sink = io.BytesIO()
    writer = EncryptingWriter(sink, ikm, aad)
    data = os.urandom(3 * SEGMENT_SIZE)
    writer.write(data)  # no close()
    with pytest.raises(TruncatedError) as truncated:
        decrypt(sink.getvalue(), ikm, aad)
    # Every full segment followed by more data was written; only the last partial one is held back.
    assert truncated.value.plaintext_bytes == FIRST + 2 * (SEGMENT_SIZE - TAG_SIZE)
    assert data.startswith(b"".join(_readable_prefix(sink.getvalue(), ikm, aad)))


def _readable_prefix(ciphertext: bytes, ikm: bytes, aad: bytes) -> list[bytes]:
    from storage.crypto_stream import decrypt_segments

    out = []
    try:
        for plaintext in decrypt_segments(io.BytesIO(ciphertext), ikm, aad):
            out.append(plaintext)
    except TruncatedError:
        pass
    return out


def test_a_writer_whose_sink_failed_refuses_to_go_on() -> None:
    """Retrying after a failed write would encrypt other data under a nonce already used."""

    class Flaky:
        def __init__(self) -> None:
            self.writes = 0

        def write(self, data: bytes) -> None:
            self.writes += 1
            if self.writes == 3:
                raise OSError(28, "No space left on device")

    writer = EncryptingWriter(Flaky(), os.urandom(32), b"aad")
    with pytest.raises(OSError):
        writer.write(os.urandom(4 * SEGMENT_SIZE))
    with pytest.raises(StreamError, match="earlier write to this stream failed"):
        writer.write(b"more")
    with pytest.raises(StreamError, match="earlier write to this stream failed"):
        writer.close()


def test_a_segment_cut_mid_write_is_damage_unless_recovering() -> None:
    ikm, aad = os.urandom(32), b"recording 1"
    ciphertext = encrypt(os.urandom(3 * SEGMENT_SIZE), ikm, aad)
    torn = ciphertext[: HEADER_SIZE + len(segments(ciphertext)[0]) + 1000]  # the second segment half written
    with pytest.raises(StreamError, match="does not authenticate") as strict:
        decrypt(torn, ikm, aad)
    assert not isinstance(strict.value, TruncatedError)
    recovered = []
    with pytest.raises(TruncatedError, match="ends inside a segment") as truncated:
        for plaintext in decrypt_segments(io.BytesIO(torn), ikm, aad, torn_tail=True):
            recovered.append(plaintext)
    assert truncated.value.segments == 1 and len(b"".join(recovered)) == FIRST
    with pytest.raises(TruncatedError, match="inside its header"):
        decrypt(ciphertext[:20], ikm, aad)
