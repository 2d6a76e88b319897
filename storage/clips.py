"""Clips: files a caller sends to support (photos, videos, documents), stored like recordings.

An upload arrives in chunks, in order, and may resume after a dropped connection from the last byte
received. While it arrives it is encrypted as written into a temporary file under a key that lives
only in this process's memory; when complete it is decrypted in memory, checked by content and
cleaned of location and device metadata (``clean``, media/clips.py), then written encrypted under
a fresh data key kept in the key store, like a recording's. Plaintext never touches disk. An
upload refused, abandoned or cut off by a restart leaves nothing behind.

Files: ``<root>/<organisation id>/clips/<clip id>.cbclip`` (and ``.upload`` while uploading).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from storage import webhooks
from storage.crypto_stream import IKM_SIZE, SEGMENT_SIZE, decrypt_segments
from storage.keys import Keyring
from storage.recordings import EncryptedFile

CLIP_SUFFIX = ".cbclip"
UPLOAD_SUFFIX = ".upload"
#: Clips one call, or one callback request, may carry.
MAX_CLIPS = 20
#: The largest upload accepted at all (the per-kind limits are checked on the content).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024
#: An upload nobody added to for this long is dropped.
UPLOAD_IDLE_SECONDS = 3600.0


class ClipError(Exception):
    """A clip cannot be accepted or read; ``code`` is machine-readable, the message says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Cleaned(Protocol):
    kind: str
    media_type: str
    extension: str
    data: bytes
    removed: tuple[str, ...]


def clip_associated_data(clip_id: uuid.UUID) -> bytes:
    """What binds a clip's file to its id (the streaming AEAD's associated data)."""
    return b"callbutton clip\x00" + clip_id.bytes


def _upload_associated_data(clip_id: uuid.UUID) -> bytes:
    return b"callbutton clip upload\x00" + clip_id.bytes


@dataclass(frozen=True)
class ClipRecord:
    id: uuid.UUID
    organisation_id: uuid.UUID
    call_id: uuid.UUID | None
    callback_id: uuid.UUID | None
    state: str
    name: str | None
    declared_type: str | None
    declared_size: int
    kind: str | None
    media_type: str | None
    byte_size: int | None
    created_at: datetime.datetime
    ready_at: datetime.datetime | None


_COLUMNS = (
    "id, organisation_id, call_id, callback_id, state, name, declared_type, declared_size, kind, media_type, "
    "byte_size, created_at, ready_at"
)


def _record(row: Any) -> ClipRecord:
    return ClipRecord(**dict(row))


def clip_data(record: ClipRecord) -> dict[str, Any]:
    """A clip as webhook receivers see it: what it is, never its content or name."""
    return {
        "clip": {
            "id": str(record.id),
            "call_id": str(record.call_id) if record.call_id else None,
            "callback_id": str(record.callback_id) if record.callback_id else None,
            "kind": record.kind,
            "media_type": record.media_type,
            "byte_size": record.byte_size,
            "ready_at": record.ready_at.isoformat() if record.ready_at else None,
        }
    }


class _Upload:
    """An upload in progress in this process."""

    def __init__(self, record: ClipRecord, sink: EncryptedFile, ikm: bytes) -> None:
        self.record = record
        self.sink = sink
        self.ikm = ikm
        self.received = 0
        self.lock = asyncio.Lock()
        self.touched = time.monotonic()


@dataclass(frozen=True)
class DestroyedClips:
    records: list[ClipRecord]
    keys: list[uuid.UUID]


class ClipStore:
    """Clip files under one root folder, and the rows describing them."""

    def __init__(
        self,
        pool: Any,
        keyring: Keyring,
        root: Path,
        clean: Callable[[bytes, str | None], Cleaned] | None = None,
        *,
        node: str | None = None,
    ) -> None:
        """``clean`` checks and cleans an uploaded file (media/clips.py); without it this store only
        reads and deletes (the purge's). ``node`` is the server process taking uploads here."""
        self._pool = pool
        self._node = node
        self.keyring = keyring
        self.root = root.resolve()
        self._clean = clean
        self._uploads: dict[uuid.UUID, _Upload] = {}

    def path(self, organisation_id: uuid.UUID, clip_id: uuid.UUID) -> Path:
        return self.root / str(organisation_id) / "clips" / f"{clip_id}{CLIP_SUFFIX}"

    def _upload_path(self, organisation_id: uuid.UUID, clip_id: uuid.UUID) -> Path:
        return self.root / str(organisation_id) / "clips" / f"{clip_id}{UPLOAD_SUFFIX}"

    # --- uploading -----------------------------------------------------------------------------------

    async def open_upload(
        self,
        organisation_id: uuid.UUID,
        *,
        call_id: uuid.UUID | None,
        callback_id: uuid.UUID | None,
        name: str | None,
        size: int,
        declared_type: str | None,
        max_clips: int = MAX_CLIPS,
        max_bytes: int = MAX_UPLOAD_BYTES,
    ) -> ClipRecord:
        """Start an upload; ``max_clips`` and ``max_bytes`` are the button's limits."""
        max_bytes = min(max_bytes, MAX_UPLOAD_BYTES)
        if max_clips <= 0:
            raise ClipError("clips_off", "this call button does not take clips")
        if not 0 < size <= max_bytes:
            raise ClipError("too_large", f"a clip is at most {max_bytes // (1024 * 1024)} MB here")
        clip_id = uuid.uuid4()
        row = await self._pool.fetchrow(
            f"""
            INSERT INTO clips (id, organisation_id, call_id, callback_id, state, name, declared_type, declared_size,
                               node)
            SELECT $1, $2, $3, $4, 'uploading', $5, $6, $7, $9
            WHERE (SELECT count(*) FROM clips WHERE organisation_id = $2 AND state <> 'deleted'
                   AND (call_id = $3 OR callback_id = $4)) < $8
            RETURNING {_COLUMNS}
            """,
            clip_id,
            organisation_id,
            call_id,
            callback_id,
            name,
            declared_type,
            size,
            max_clips,
            self._node,
        )
        if row is None:
            raise ClipError("too_many", f"at most {max_clips} clips can be sent with one call or request here")
        record = _record(row)
        ikm = os.urandom(IKM_SIZE)  # this upload's own key, in memory only: a crash leaves nothing readable
        sink = await asyncio.to_thread(
            EncryptedFile, self._upload_path(organisation_id, clip_id), ikm, _upload_associated_data(clip_id)
        )
        self._uploads[clip_id] = _Upload(record, sink, ikm)
        return record

    def received(self, clip_id: uuid.UUID) -> int | None:
        """How many bytes of an upload in progress arrived (None: no such upload here)."""
        upload = self._uploads.get(clip_id)
        return None if upload is None else upload.received

    async def append(self, organisation_id: uuid.UUID, clip_id: uuid.UUID, offset: int, data: bytes) -> int:
        """Add ``data`` at ``offset``, which must be what arrived so far (a resumed upload asks first)."""
        upload = self._upload(organisation_id, clip_id)
        async with upload.lock:
            if offset != upload.received:
                raise ClipError("wrong_offset", f"the upload has {upload.received} bytes; send from there")
            if upload.received + len(data) > upload.record.declared_size:
                raise ClipError("too_large", f"the clip was announced as {upload.record.declared_size} bytes")
            await asyncio.to_thread(upload.sink.write, data)
            upload.received += len(data)
            upload.touched = time.monotonic()
            return upload.received

    async def complete(self, organisation_id: uuid.UUID, clip_id: uuid.UUID) -> ClipRecord:
        """Check and clean the whole clip, and store it. A refused clip leaves nothing behind."""
        upload = self._upload(organisation_id, clip_id)
        async with upload.lock:
            if upload.received != upload.record.declared_size:
                raise ClipError(
                    "incomplete", f"{upload.received} of {upload.record.declared_size} bytes arrived; send the rest"
                )
            self._uploads.pop(clip_id, None)
            try:
                plaintext = await asyncio.to_thread(self._read_upload, upload)
            finally:
                await self._drop_upload_file(upload)
            try:
                if self._clean is None:
                    raise RuntimeError("this clip store does not take uploads")
                cleaned = await asyncio.to_thread(self._clean, plaintext, upload.record.declared_type)
            except Exception as exc:
                await self._pool.execute("DELETE FROM clips WHERE id = $1", clip_id)
                code = "refused" if type(exc).__name__ == "ClipRejected" else "unreadable"
                message = str(exc) if code == "refused" else "the file could not be read"
                raise ClipError(code, message) from None
            return await self._store(upload.record, cleaned)

    def _upload(self, organisation_id: uuid.UUID, clip_id: uuid.UUID) -> _Upload:
        upload = self._uploads.get(clip_id)
        if upload is None or upload.record.organisation_id != organisation_id:
            raise ClipError("no_upload", "no such upload in progress (it completed, expired, or the server restarted)")
        return upload

    def _read_upload(self, upload: _Upload) -> bytes:
        upload.sink.close()
        with open(upload.sink.path, "rb") as source:
            return b"".join(
                decrypt_segments(
                    source, upload.ikm, _upload_associated_data(upload.record.id), segment_size=SEGMENT_SIZE
                )
            )

    async def _drop_upload_file(self, upload: _Upload) -> None:
        def drop() -> None:
            upload.sink.closed = True
            upload.sink._file.close()
            upload.sink.path.unlink(missing_ok=True)

        await asyncio.to_thread(drop)

    async def _store(self, record: ClipRecord, cleaned: Cleaned) -> ClipRecord:
        organisation_id, clip_id = record.organisation_id, record.id
        key = await self.keyring.new_data_key(organisation_id, clip_id)
        path = self.path(organisation_id, clip_id)
        try:
            sink = await asyncio.to_thread(EncryptedFile, path, key.ikm, clip_associated_data(clip_id))
            await asyncio.to_thread(_write_all, sink, cleaned.data)
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    f"""
                    UPDATE clips SET state = 'ready', kind = $2, media_type = $3, byte_size = $4,
                                     ciphertext_sha256 = $5, removed = $6, ready_at = now()
                    WHERE id = $1 AND state = 'uploading' RETURNING {_COLUMNS}
                    """,
                    clip_id,
                    cleaned.kind,
                    cleaned.media_type,
                    sink.size,
                    sink.sha256,
                    list(cleaned.removed),
                )
                if row is None:
                    raise ClipError("no_upload", "the clip's call or request is gone")
                stored = _record(row)
                subject = stored.call_id or stored.callback_id
                assert subject is not None  # a clip has one or the other (a CHECK)
                await webhooks.emit(conn, organisation_id, "clip.received", subject, clip_data(stored))
        except BaseException:
            await asyncio.shield(self.keyring.destroy(organisation_id, [clip_id]))
            await asyncio.to_thread(path.unlink, missing_ok=True)
            await self._pool.execute("DELETE FROM clips WHERE id = $1 AND state = 'uploading'", clip_id)
            raise
        return stored

    async def abandon(self, organisation_id: uuid.UUID, clip_id: uuid.UUID) -> bool:
        """The caller cancelled an upload: its file and row go (it no longer counts to the limit)."""
        upload = self._uploads.get(clip_id)
        if upload is None or upload.record.organisation_id != organisation_id:
            return False
        async with upload.lock:
            self._uploads.pop(clip_id, None)
            await self._drop_upload_file(upload)
            await self._pool.execute("DELETE FROM clips WHERE id = $1 AND state = 'uploading'", clip_id)
        return True

    async def expire_uploads(self) -> int:
        """Drop uploads idle for longer than :data:`UPLOAD_IDLE_SECONDS`."""
        stale = [u for u in self._uploads.values() if time.monotonic() - u.touched > UPLOAD_IDLE_SECONDS]
        for upload in stale:
            self._uploads.pop(upload.record.id, None)
            await self._drop_upload_file(upload)
            await self._pool.execute("DELETE FROM clips WHERE id = $1 AND state = 'uploading'", upload.record.id)
        return len(stale)

    async def discard_interrupted(self, live_nodes: Collection[str] | None = None) -> int:
        """Uploads a previous process left (their key died with it): rows and files go (run at start).
        With ``live_nodes`` (a cluster), only those of this node's previous life and of dead nodes."""
        rows = await self._pool.fetch(
            """
            DELETE FROM clips WHERE state = 'uploading'
              AND ($1::text[] IS NULL OR node IS NULL OR node = $2 OR NOT node = ANY($1::text[]))
            RETURNING id, organisation_id
            """,
            None if live_nodes is None else [n for n in live_nodes if n != self._node],
            self._node,
        )
        for row in rows:
            await asyncio.to_thread(self._upload_path(row["organisation_id"], row["id"]).unlink, missing_ok=True)
        return len(rows)

    # --- reading -------------------------------------------------------------------------------------

    async def get(self, organisation_id: uuid.UUID, clip_id: uuid.UUID) -> ClipRecord | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM clips WHERE organisation_id = $1 AND id = $2", organisation_id, clip_id
        )
        return None if row is None else _record(row)

    async def of(
        self,
        organisation_id: uuid.UUID,
        *,
        call_ids: Sequence[uuid.UUID] = (),
        callback_ids: Sequence[uuid.UUID] = (),
    ) -> list[ClipRecord]:
        """The ready clips of these calls and callback requests, oldest first (one query)."""
        rows = await self._pool.fetch(
            f"""SELECT {_COLUMNS} FROM clips WHERE organisation_id = $1 AND state = 'ready'
            AND (call_id = ANY($2::uuid[]) OR callback_id = ANY($3::uuid[])) ORDER BY ready_at, id""",
            organisation_id,
            list(call_ids),
            list(callback_ids),
        )
        return [_record(r) for r in rows]

    async def read(self, record: ClipRecord) -> bytes:
        """The clip's content, decrypted (in memory)."""
        if record.state != "ready":
            raise ClipError("deleted" if record.state == "deleted" else "not_ready", "this clip cannot be read")
        ikm = await self.keyring.data_key(record.organisation_id, record.id)

        def decrypt() -> bytes:
            with open(self.path(record.organisation_id, record.id), "rb") as source:
                return b"".join(
                    decrypt_segments(source, ikm, clip_associated_data(record.id), segment_size=SEGMENT_SIZE)
                )

        return await asyncio.to_thread(decrypt)

    # --- deleting ------------------------------------------------------------------------------------

    async def destroy(self, organisation_id: uuid.UUID, clip_ids: Sequence[uuid.UUID]) -> DestroyedClips:
        """Delete ready clips for good: keys destroyed in the key store first, then rows marked
        ``deleted``, then files removed (as for recordings)."""
        async with self._pool.acquire() as conn, conn.transaction():
            candidates = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM clips WHERE organisation_id = $1 AND id = ANY($2::uuid[]) AND state = 'ready' "
                    "FOR UPDATE",
                    organisation_id,
                    list(clip_ids),
                )
            ]
            if not candidates:
                return DestroyedClips([], [])
            keys = await self.keyring.destroy(organisation_id, candidates)
            rows = await conn.fetch(
                f"UPDATE clips SET state = 'deleted', deleted_at = now(), name = NULL WHERE id = ANY($1::uuid[]) "
                f"RETURNING {_COLUMNS}",
                candidates,
            )
        records = [_record(r) for r in rows]

        def unlink() -> None:
            for record in records:
                self.path(organisation_id, record.id).unlink(missing_ok=True)

        await asyncio.to_thread(unlink)
        return DestroyedClips(records, keys)


def _write_all(sink: EncryptedFile, data: bytes) -> None:
    with memoryview(data) as view:
        for start in range(0, len(view), 64 * 1024):
            sink.write(bytes(view[start : start + 64 * 1024]))
    sink.close()


__all__ = ["ClipError", "ClipRecord", "ClipStore", "DestroyedClips", "clip_associated_data", "clip_data"]
