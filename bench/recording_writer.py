"""Recording encryption throughput: the streaming writer against raw AES-GCM, same data, same run.

The writer cuts 4 KiB segments, derives a nonce per segment and hands each ciphertext to its sink;
raw AES-GCM encrypts the same bytes in 64 KiB calls with one key and no framing, the ceiling.

    .venv/bin/python bench/recording_writer.py

Prints throughput of each (median of several rounds) and the ratio writer / raw. Target: the
writer at >= 1 GB/s per core.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.crypto_stream import EncryptingWriter
from storage.keys import recording_associated_data
from storage.recordings import EncryptedFile


class _Discard:
    def write(self, data: bytes) -> None:
        pass


def _raw(chunks: list[bytes]) -> None:
    aead, nonce = AESGCM(os.urandom(32)), os.urandom(12)
    for chunk in chunks:
        aead.encrypt(nonce, chunk, None)


def _writer(chunks: list[bytes]) -> None:
    writer = EncryptingWriter(_Discard(), os.urandom(32), b"benchmark")
    for chunk in chunks:
        writer.write(chunk)
    writer.close()


def _file(chunks: list[bytes]) -> None:
    """What the recorder writes through: the writer, SHA-256 of the ciphertext, and the file."""
    with tempfile.TemporaryDirectory() as folder:
        recording_id = uuid.uuid4()
        sink = EncryptedFile(Path(folder) / "bench.cbrec", os.urandom(32), recording_associated_data(recording_id))
        for chunk in chunks:
            sink.write(chunk)
        sink.close()


def throughput(run: Callable[[list[bytes]], None], chunks: list[bytes], rounds: int) -> float:
    size = sum(len(c) for c in chunks)
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        run(chunks)
        results.append(size / (time.perf_counter() - started))
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="data per round")
    parser.add_argument("--chunk", type=int, default=65536, help="bytes per write")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    data = os.urandom(args.mib * 1024 * 1024)
    chunks = [data[i : i + args.chunk] for i in range(0, len(data), args.chunk)]
    raw = throughput(_raw, chunks, args.rounds)
    writer = throughput(_writer, chunks, args.rounds)
    to_file = throughput(_file, chunks, args.rounds)
    print(f"{args.mib} MiB in {args.chunk}-byte writes, median of {args.rounds} rounds:")
    print(f"  raw AES-GCM      {raw / 1e9:6.2f} GB/s")
    print(f"  streaming writer {writer / 1e9:6.2f} GB/s")
    print(f"  recording file   {to_file / 1e9:6.2f} GB/s  (writer + SHA-256 + file, fsync at close)")
    print(f"  ratio file / raw: {to_file / raw:.3f}")
    verdict = "met" if writer >= 1e9 else "NOT met"
    print(f"  ratio writer / raw: {writer / raw:.3f}   (target, writer >= 1 GB/s: {verdict})")


if __name__ == "__main__":
    main()
