"""Recordings over HTTP, for admins: listing, playback (a stereo rendering, seekable) and download.

Every playback and download request is written to the audit log (who, which recording, when, from
where) before anything is sent. Responses are ``Cache-Control: no-store``. Playback streams a stereo
WAV produced a second at a time for exactly the byte range asked for, so a long recording costs
neither a long wait nor much memory; the decrypted compressed audio of recently played recordings is
kept in memory (bounded, a few minutes) so that a browser's range requests do not decrypt it again.
Nothing decrypted is written to disk.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from media.recording_file import RecordingFormatError, StereoWav, whole_pages
from server.api import actor, path_uuid, require_admin
from server.appkeys import DATABASE, RECORDINGS
from server.clients import client_address
from server.errors import ApiError
from storage.accounts import Session
from storage.crypto_stream import StreamError
from storage.recordings import RecordingRecord, RecordingStore, read_plaintext

CACHE_BYTES = 64 * 1024 * 1024
CACHE_SECONDS = 300.0
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class Renderings:
    """Recordings ready to play (decrypted compressed audio, indexed), in memory: least recently used
    out first, each for a few minutes at most. Concurrent requests for one recording share the work."""

    def __init__(self, max_bytes: int = CACHE_BYTES, ttl: float = CACHE_SECONDS) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._entries: collections.OrderedDict[uuid.UUID, tuple[float, int, StereoWav]] = collections.OrderedDict()
        self._bytes = 0
        self._pending: dict[uuid.UUID, asyncio.Task[StereoWav]] = {}
        self._builds = asyncio.Semaphore(2)  # decrypting and indexing run in threads; at most two at once

    async def get(self, store: RecordingStore, record: RecordingRecord) -> StereoWav:
        self._expire()
        entry = self._entries.get(record.id)
        if entry is not None:
            self._entries.move_to_end(record.id)
            return entry[2]
        task = self._pending.get(record.id)
        if task is None:
            task = self._pending[record.id] = asyncio.create_task(self._build(store, record))
            task.add_done_callback(lambda _: self._pending.pop(record.id, None))
        return await asyncio.shield(task)

    async def _build(self, store: RecordingStore, record: RecordingRecord) -> StereoWav:
        async with self._builds:
            plaintext = await _plaintext(store, record)
            try:
                wav = await asyncio.to_thread(StereoWav, plaintext)
            except RecordingFormatError as exc:
                raise ApiError(500, "unplayable", f"the recording cannot be played: {exc}") from None
        self._put(record.id, len(plaintext), wav)
        return wav

    def forget(self, key: uuid.UUID) -> None:
        """Drop a recording's rendering (it was deleted)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def _put(self, key: uuid.UUID, size: int, wav: StereoWav) -> None:
        if size > self._max_bytes:
            return
        self._entries[key] = (time.monotonic() + self._ttl, size, wav)
        self._bytes += size
        while self._bytes > self._max_bytes:
            _, (_, evicted, _) = self._entries.popitem(last=False)
            self._bytes -= evicted

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _, _) in self._entries.items() if deadline <= now]:
            self._bytes -= self._entries.pop(key)[1]


RENDERINGS = web.AppKey("renderings", Renderings)


def _playable(record: RecordingRecord) -> None:
    """Refuse a recording that cannot be heard (before anything is audited as heard)."""
    if record.state == "recording":
        raise ApiError(409, "recording", "the call is still being recorded")
    if record.state == "deleted":
        raise ApiError(410, "deleted", "this recording was deleted")


async def _plaintext(store: RecordingStore, record: RecordingRecord) -> bytes:
    _playable(record)
    key = await store.key(record)
    path = store.path(record.organisation_id, record.id)
    # A recording cut short by a crash plays up to its last complete segment (run `recording recover`
    # to make it complete); a final segment that fails to authenticate is damage, never accepted.
    truncated = record.state == "truncated"
    try:
        plaintext = await asyncio.to_thread(read_plaintext, path, key, record.id, allow_truncated=truncated)
    except FileNotFoundError:
        raise ApiError(500, "missing", "the recording's file is missing") from None
    except StreamError as exc:
        raise ApiError(500, "damaged", f"the recording does not decrypt: {exc}") from None
    return plaintext[: whole_pages(plaintext)] if truncated else plaintext


async def _recording(request: web.Request, session: Session) -> RecordingRecord:
    recording_id = path_uuid(request, "recording_id", "recording")
    # Scoped by the caller's organisation: another organisation's recording is simply not found.
    record = await request.app[RECORDINGS].get(session.user.organisation_id, recording_id)
    if record is None:
        raise ApiError(404, "not_found", "no such recording")
    call = await request.app[DATABASE].calls.get(record.organisation_id, record.call_id)
    if call is not None and call.restricted and request.method != "DELETE":
        raise ApiError(409, "restricted", "the caller restricted the processing of their data: it cannot be played")
    return record


def recording_json(record: RecordingRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "call_id": str(record.call_id),
        "state": record.state,
        "started_at": record.started_at.isoformat(),
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "duration_ms": record.duration_ms,
        "byte_size": record.byte_size,
        "container": record.container,
        "codec": record.codec,
        "audio_url": f"/api/v1/recordings/{record.id}/audio",
        "file_url": f"/api/v1/recordings/{record.id}/file",
    }


async def _audit(request: web.Request, session: Session, record: RecordingRecord, action: str) -> None:
    await request.app[DATABASE].audit.add(
        organisation_id=record.organisation_id,
        action=action,
        object_type="recording",
        object_id=record.id,
        actor_id=actor(session),
        address=client_address(request),
        user_agent=request.headers.get("User-Agent"),
    )


async def list_recordings(request: web.Request) -> web.Response:
    session = await require_admin(request)
    records = await request.app[RECORDINGS].recent(session.user.organisation_id)
    return web.json_response({"recordings": [recording_json(r) for r in records]}, headers=NO_STORE)


async def get_recording(request: web.Request) -> web.Response:
    session = await require_admin(request)
    return web.json_response({"recording": recording_json(await _recording(request, session))}, headers=NO_STORE)


async def play(request: web.Request) -> web.StreamResponse:
    """The stereo rendering (visitor left, agent right) as WAV, with byte ranges for seeking."""
    session = await require_admin(request)
    record = await _recording(request, session)
    _playable(record)
    wav = await request.app[RENDERINGS].get(request.app[RECORDINGS], record)
    etag = f'"{record.id.hex}-{(record.ciphertext_sha256 or b"").hex()[:16]}"'
    headers = {**NO_STORE, "Accept-Ranges": "bytes", "ETag": etag, "Content-Type": "audio/wav"}
    start, end, status = 0, wav.size - 1, 200
    wanted = _byte_range(request, etag)
    if wanted is not None:
        start, end = _resolve(wanted, wav.size)
        if start > end:
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{wav.size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{wav.size}"
    if request.method == "GET" and start == 0:
        # One entry per playback: what a player asks for later (seeking) is the same listening.
        await _audit(request, session, record, "recording.play")
    headers["Content-Length"] = str(end - start + 1)
    response = web.StreamResponse(status=status, headers=headers)
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    chunks: Iterator[bytes] = wav.chunks(start, end)
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            await response.write(chunk)
        await response.write_eof()
    except ConnectionResetError:
        pass  # the player went away (seeking, closing the page): nothing more to send
    return response


def _byte_range(request: web.Request, etag: str) -> tuple[str, str] | None:
    """The single byte range asked for, if it applies (RFC 9110 sections 14.2 and 13.1.5)."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and if_range != etag:
        return None  # the client's copy is of another rendering: send the whole
    match = _RANGE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        return None  # several ranges or another unit: the whole body is a valid answer
    return match[1], match[2]


def _resolve(wanted: tuple[str, str], size: int) -> tuple[int, int]:
    first, last = wanted
    if first:
        return int(first), min(int(last), size - 1) if last else size - 1
    return max(0, size - int(last)), size - 1


async def download(request: web.Request) -> web.Response:
    """The original two-channel file, decrypted (stream 0 visitor, stream 1 agent)."""
    session = await require_admin(request)
    record = await _recording(request, session)
    _playable(record)
    if request.method == "HEAD":
        return web.Response(headers={**NO_STORE, "Content-Type": "audio/ogg"})
    await _audit(request, session, record, "recording.download")
    plaintext = await _plaintext(request.app[RECORDINGS], record)
    headers = {
        **NO_STORE,
        # Built from our own UUID only: nothing user-supplied reaches the header.
        "Content-Disposition": f'attachment; filename="recording-{record.id}.ogg"',
    }
    return web.Response(body=plaintext, content_type="audio/ogg", headers=headers)


async def delete(request: web.Request) -> web.Response:
    """Delete a recording for good: its key is destroyed (so every copy, backups included, is
    unreadable) and its file removed; the call keeps its row and says a recording was deleted."""
    session = await require_admin(request)
    record = await _recording(request, session)
    if record.state == "recording":
        raise ApiError(409, "recording", "the call is still being recorded; delete it once the call has ended")
    database = request.app[DATABASE]
    if await database.retention.call_held(record.organisation_id, record.call_id):
        raise ApiError(409, "held", "a legal hold covers this call: lift it before deleting its recording")
    started = datetime.datetime.now(datetime.UTC)
    destroyed = await request.app[RECORDINGS].destroy(record.organisation_id, [record.id])
    if not destroyed.records:
        raise ApiError(410, "deleted", "this recording was deleted already")
    receipt = await database.retention.write_receipt(
        record.organisation_id,
        kind="recording",
        requested_by=actor(session),
        started_at=started,
        counts={"recordings": 1},
        destroyed_keys={"data_keys": [str(k) for k in destroyed.keys]},
    )
    await _audit(request, session, record, "recording.delete")
    return web.json_response(
        {"recording": recording_json(destroyed.records[0]), "receipt": receipt.document()}, headers=NO_STORE
    )


def add_routes(app: web.Application) -> None:
    app[RENDERINGS] = renderings = Renderings()

    def forget(recording_ids: list[uuid.UUID]) -> None:  # deleted by anyone: a purge, an erasure
        for recording_id in recording_ids:
            renderings.forget(recording_id)

    app[RECORDINGS].on_destroyed.append(forget)
    app.router.add_get("/api/v1/recordings", list_recordings)
    app.router.add_get("/api/v1/recordings/{recording_id}", get_recording)
    app.router.add_delete("/api/v1/recordings/{recording_id}", delete)
    app.router.add_get("/api/v1/recordings/{recording_id}/audio", play)
    app.router.add_get("/api/v1/recordings/{recording_id}/file", download)
