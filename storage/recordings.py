"""Recording files (encrypted as written) and the ``recordings`` table.

A recording is one file, ``<root>/<organisation id>/<recording id>.cbrec``, named only from ids the
server generated (never from user input): the streaming AEAD's header and segments, nothing else.
The plaintext (an Ogg file) exists only in memory, segment by segment.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from storage import webhooks
from storage.crypto_stream import SEGMENT_SIZE, EncryptingWriter, StreamError, TruncatedError, decrypt_segments
from storage.keys import DataKey, Keyring, recording_associated_data

SUFFIX = ".cbrec"
FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 0.2


class RecordingError(Exception):
    """A recording cannot be read or written; the message says why."""


@dataclass(frozen=True)
class RecordingRecord:
    id: uuid.UUID
    organisation_id: uuid.UUID
    call_id: uuid.UUID
    state: str
    started_at: datetime.datetime
    ended_at: datetime.datetime | None
    duration_ms: int | None
    byte_size: int | None
    ciphertext_sha256: bytes | None
    container: str
    codec: str


class EncryptedFile:
    """A byte sink that encrypts into a new file as it is written (the recorder's sink).

    Ciphertext reaches the operating system in writes of up to 64 KiB, and at least every 200 ms
    while data keeps coming (the recorder closes an Ogg page every 200 ms), so a killed process
    leaves every segment older than that on disk. ``close`` writes the final segment and syncs.
    Used from one thread at a time (the recorder's worker).
    """

    def __init__(self, path: Path, ikm: bytes, associated_data: bytes) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.closed = False
        self._out = _Ciphertext()
        self._flushed_at = time.monotonic()
        self._failed = False
        self._file = open(path, "xb", buffering=0)
        try:
            self._writer = EncryptingWriter(self._out, ikm, associated_data)
        except BaseException:
            self._file.close()
            raise

    def write(self, data: bytes) -> int:
        """Plaintext in."""
        if self._failed:
            raise RecordingError(f"writing {self.path.name} failed earlier; the file ends there")
        self._writer.write(data)
        if len(self._out.pending) >= FLUSH_BYTES or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self._flush()
        return len(data)

    def close(self) -> None:
        """Write the final segment and sync. The file is closed even when that fails (it then reads
        back as truncated)."""
        if self.closed:
            return
        self.closed = True
        try:
            if not self._failed:
                self._writer.close()
                self._flush()
                os.fsync(self._file.fileno())
        finally:
            self._file.close()

    @property
    def size(self) -> int:
        """Bytes of ciphertext so far."""
        return self._out.size

    @property
    def sha256(self) -> bytes:
        return self._out.digest.digest()

    def _flush(self) -> None:
        try:
            with memoryview(self._out.pending) as view:
                written = 0
                while written < len(view):
                    written += self._file.write(view[written:]) or 0
        except BaseException:
            # Part of it may be on disk: writing it again would corrupt the file. It ends here.
            self._failed = True
            raise
        self._out.pending.clear()
        self._flushed_at = time.monotonic()


class _Ciphertext:
    """The encrypting writer's sink inside an :class:`EncryptedFile`: the ciphertext not yet written
    to the file, the digest and the size of all of it. (It refers to nothing: were it to refer back to
    its file, every recording would leave a reference cycle for the collector.)"""

    def __init__(self) -> None:
        self.pending = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.pending += data
        self.digest.update(data)
        self.size += len(data)


@dataclass(frozen=True)
class Destroyed:
    """What :meth:`RecordingStore.destroy` deleted: the recordings, and whose data keys it destroyed."""

    records: list[RecordingRecord]
    keys: list[uuid.UUID]


class RecordingStore:
    """Recording files under one root folder, and the rows describing them."""

    def __init__(self, pool: Any, keyring: Keyring, root: Path) -> None:
        self._pool = pool
        self.keyring = keyring
        self.root = root.resolve()
        #: called with the ids of recordings just destroyed (the player's cache drops them)
        self.on_destroyed: list[Callable[[list[uuid.UUID]], None]] = []

    def path(self, organisation_id: uuid.UUID, recording_id: uuid.UUID) -> Path:
        return self.root / str(organisation_id) / f"{recording_id}{SUFFIX}"

    async def begin(
        self, *, organisation_id: uuid.UUID, call_id: uuid.UUID, started_at: datetime.datetime
    ) -> tuple[uuid.UUID, EncryptedFile]:
        """A new recording: a fresh data key (stored in the key store), its open file, and its row
        (state ``recording``). The key and the file come first and are destroyed again if the row
        cannot be stored, so no row points at a file or key that never existed."""
        recording_id = uuid.uuid4()
        path = self.path(organisation_id, recording_id)
        key: DataKey = await self.keyring.new_data_key(organisation_id, recording_id)
        sink: EncryptedFile | None = None
        try:
            sink = await asyncio.to_thread(EncryptedFile, path, key.ikm, recording_associated_data(recording_id))
            await self._pool.execute(
                """
                INSERT INTO recordings (id, organisation_id, call_id, state, started_at)
                VALUES ($1, $2, $3, 'recording', $4)
                """,
                recording_id,
                organisation_id,
                call_id,
                started_at,
            )
        except BaseException:
            if sink is not None:
                sink.closed = True  # nothing to finish: the file goes
                await asyncio.to_thread(_discard, sink)
            await asyncio.shield(self.keyring.destroy(organisation_id, [recording_id]))
            raise
        return recording_id, sink

    async def finish(
        self,
        *,
        organisation_id: uuid.UUID,
        recording_id: uuid.UUID,
        ended_at: datetime.datetime,
        duration_ms: int,
        sink: EncryptedFile,
        state: str = "complete",
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"""
                UPDATE recordings
                SET state = $3, ended_at = $4, duration_ms = $5, byte_size = $6, ciphertext_sha256 = $7
                WHERE organisation_id = $1 AND id = $2 AND state = 'recording'
                RETURNING {_COLUMNS}
                """,
                organisation_id,
                recording_id,
                state,
                ended_at,
                duration_ms,
                sink.size,
                sink.sha256,
            )
            if row is not None:
                record = _record(row)
                await webhooks.emit(conn, organisation_id, "recording.ready", record.call_id, recording_data(record))

    async def delete(self, organisation_id: uuid.UUID, recording_id: uuid.UUID) -> RecordingRecord | None:
        """Delete a finished recording for good (see :meth:`destroy`). None when there is no such
        recording, or it is still being written."""
        destroyed = await self.destroy(organisation_id, [recording_id])
        return destroyed.records[0] if destroyed.records else None

    async def destroy(
        self, organisation_id: uuid.UUID, recording_ids: Sequence[uuid.UUID], *, notify: bool = True
    ) -> Destroyed:
        """Delete finished recordings for good: their data keys are destroyed in the key store
        (every copy of the files, backups of the main database included, becomes unreadable), then
        the rows say ``deleted`` (so that a call's history says a recording existed) and
        ``recording.deleted`` is queued when ``notify``, then the files are removed. Recordings
        still being written, or deleted already, are left alone. A crash between the steps leaves
        a keyless recording, which the next deletion finishes."""
        async with self._pool.acquire() as conn, conn.transaction():
            candidates = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM recordings WHERE organisation_id = $1 AND id = ANY($2::uuid[]) "
                    "AND state IN ('complete', 'truncated') FOR UPDATE",
                    organisation_id,
                    list(recording_ids),
                )
            ]
            if not candidates:
                return Destroyed([], [])
            keys = await self.keyring.destroy(organisation_id, candidates)
            rows = await conn.fetch(
                f"""
                UPDATE recordings SET state = 'deleted', deleted_at = now()
                WHERE organisation_id = $1 AND id = ANY($2::uuid[])
                RETURNING {_COLUMNS}
                """,
                organisation_id,
                candidates,
            )
            records = [_record(r) for r in rows]
            if notify:
                await webhooks.emit_many(
                    conn, organisation_id, "recording.deleted", [(r.call_id, recording_data(r)) for r in records]
                )
        await asyncio.to_thread(self._unlink, organisation_id, [r.id for r in records])
        for listener in self.on_destroyed:
            listener([r.id for r in records])
        return Destroyed(records, keys)

    def _unlink(self, organisation_id: uuid.UUID, recording_ids: Sequence[uuid.UUID]) -> None:
        for recording_id in recording_ids:
            self.path(organisation_id, recording_id).unlink(missing_ok=True)

    async def mark_interrupted(
        self, node: str | None = None, live_nodes: Collection[str] | None = None, *, own: bool = True
    ) -> list[RecordingRecord]:
        """Recordings left ``recording`` by a process that died: now ``truncated`` (run at start).
        In a cluster (``live_nodes``), those of calls ``node`` carried in its previous life or a dead
        node carried (a recording is made by the node carrying its call)."""
        mine = node if own else None
        others = None if live_nodes is None else [n for n in live_nodes if n != mine]
        rows = await self._pool.fetch(
            f"""
            UPDATE recordings SET state = 'truncated' WHERE state = 'recording'
              AND ($1::text[] IS NULL OR EXISTS (
                    SELECT 1 FROM calls c WHERE c.id = recordings.call_id
                      AND (c.node IS NULL OR c.node = $2 OR NOT c.node = ANY($1::text[]))))
            RETURNING {_COLUMNS}
            """,
            others,
            mine,
        )
        return [_record(r) for r in rows]

    async def unrecovered(
        self, node: str | None = None, live_nodes: Collection[str] | None = None
    ) -> list[RecordingRecord]:
        """Recordings marked truncated by a node reaping a dead one (its files were then still the
        dead node's) and never recovered since: of calls ``node`` or a dead node carried."""
        others = None if live_nodes is None else [n for n in live_nodes if n != node]
        rows = await self._pool.fetch(
            f"""
            SELECT {_COLUMNS} FROM recordings
            WHERE state = 'truncated' AND byte_size IS NULL
              AND EXISTS (SELECT 1 FROM calls c WHERE c.id = recordings.call_id
                          AND (c.node IS NULL OR c.node = $2 OR $1::text[] IS NULL OR NOT c.node = ANY($1::text[])))
            """,
            others,
            node,
        )
        return [_record(r) for r in rows]

    async def get(self, organisation_id: uuid.UUID, recording_id: uuid.UUID) -> RecordingRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM recordings WHERE organisation_id = $1 AND id = $2", organisation_id, recording_id
        )
        return None if row is None else _record(row)

    async def find(self, recording_id: uuid.UUID) -> RecordingRecord | None:
        """A recording by id alone, for operators' CLI commands (not for tenant-facing code)."""
        row = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM recordings WHERE id = $1", recording_id)
        return None if row is None else _record(row)

    async def recent(self, organisation_id: uuid.UUID, limit: int = 100) -> list[RecordingRecord]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM recordings WHERE organisation_id = $1 AND state <> 'deleted' "
            # a restricted caller's recordings are kept, and listed nowhere
            "AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = recordings.call_id AND c.restricted) "
            "ORDER BY started_at DESC, id DESC LIMIT $2",
            organisation_id,
            limit,
        )
        return [_record(r) for r in rows]

    async def for_call(self, organisation_id: uuid.UUID, call_id: uuid.UUID) -> list[RecordingRecord]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM recordings WHERE organisation_id = $1 AND call_id = $2 ORDER BY started_at",
            organisation_id,
            call_id,
        )
        return [_record(r) for r in rows]

    async def set_recovered(
        self, recording: RecordingRecord, *, duration_ms: int, byte_size: int, sha256: bytes
    ) -> None:
        await self._pool.execute(
            """
            UPDATE recordings SET state = 'truncated', duration_ms = $3::integer, byte_size = $4,
                                  ciphertext_sha256 = $5,
                                  ended_at = COALESCE(ended_at, started_at + $3::integer * interval '1 millisecond')
            WHERE organisation_id = $1 AND id = $2
            """,
            recording.organisation_id,
            recording.id,
            duration_ms,
            byte_size,
            sha256,
        )

    async def key(self, recording: RecordingRecord) -> bytes:
        return await self.keyring.data_key(recording.organisation_id, recording.id)


def recording_data(record: RecordingRecord) -> dict[str, Any]:
    return {
        "recording": {
            "id": str(record.id),
            "call_id": str(record.call_id),
            "state": record.state,
            "started_at": record.started_at.isoformat(),
            "ended_at": record.ended_at.isoformat() if record.ended_at else None,
            "duration_ms": record.duration_ms,
        }
    }


_COLUMNS = (
    "id, organisation_id, call_id, state, started_at, ended_at, duration_ms, byte_size, ciphertext_sha256, "
    "container, codec"
)


def _discard(sink: EncryptedFile) -> None:
    sink._file.close()
    sink.path.unlink(missing_ok=True)


def _record(row: Any) -> RecordingRecord:
    return RecordingRecord(**dict(row))


def read_plaintext(
    path: Path, ikm: bytes, recording_id: uuid.UUID, *, allow_truncated: bool = False, torn_tail: bool = False
) -> bytes:
    """The whole decrypted file, in memory. Raises :class:`StreamError`; a truncated file raises
    :class:`TruncatedError` unless ``allow_truncated``, which returns what survived. ``torn_tail``
    (recovery only) also takes a last segment cut short mid-write for truncation, not tampering."""
    with open(path, "rb") as source:
        return b"".join(
            _segments(source, ikm, recording_id, allow_truncated=allow_truncated or torn_tail, torn_tail=torn_tail)
        )


def _segments(
    source: BinaryIO, ikm: bytes, recording_id: uuid.UUID, *, allow_truncated: bool, torn_tail: bool
) -> Iterator[bytes]:
    try:
        yield from decrypt_segments(
            source, ikm, recording_associated_data(recording_id), segment_size=SEGMENT_SIZE, torn_tail=torn_tail
        )
    except TruncatedError:
        if not allow_truncated:
            raise


def rewrite_complete(path: Path, plaintext: bytes, ikm: bytes, recording_id: uuid.UUID) -> tuple[int, bytes]:
    """Replace ``path`` with a complete encryption of ``plaintext`` (after a recovery); return the new
    size and SHA-256. Written beside it and renamed over it, so a crash leaves one or the other."""
    temporary = path.with_suffix(".recovering")
    buffer = io.BytesIO()
    writer = EncryptingWriter(buffer, ikm, recording_associated_data(recording_id))
    writer.write(plaintext)
    writer.close()
    data = buffer.getvalue()
    with open(temporary, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    return len(data), hashlib.sha256(data).digest()


__all__ = ["RecordingError", "RecordingStore", "StreamError", "TruncatedError"]
