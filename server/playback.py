"""Recordings over HTTP, for admins: listing, playback (a stereo rendering, seekable) and download.

Every playback and download request is written to the audit log (who, which recording, when, from
where). Responses are ``Cache-Control: no-store``. Decrypted audio exists only in memory: a bounded
cache of stereo renderings (so that a browser's range requests do not decrypt and render again)
whose entries expire after a few minutes; nothing decrypted is written to disk.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
import uuid
from typing import Any

from aiohttp import web

from media.recording_file import RecordingFormatError, render_stereo, whole_pages
from server.api import current_session
from server.appkeys import DATABASE, RECORDINGS
from server.errors import ApiError
from storage.accounts import Session
from storage.crypto_stream import StreamError
from storage.recordings import RecordingRecord, RecordingStore, read_plaintext

CACHE_BYTES = 64 * 1024 * 1024
CACHE_SECONDS = 300.0
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
NO_STORE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class Renderings:
    """Stereo renderings in memory, least recently used out first, each for a few minutes at most."""

    def __init__(self, max_bytes: int = CACHE_BYTES, ttl: float = CACHE_SECONDS) -> None:
        self._max_bytes = max_bytes
        self._ttl = ttl
        self._entries: collections.OrderedDict[uuid.UUID, tuple[float, bytes]] = collections.OrderedDict()
        self._bytes = 0
        # Renderings in progress: concurrent requests for one recording (a browser's parallel range
        # requests) wait for the same one.
        self._pending: dict[uuid.UUID, asyncio.Task[bytes]] = {}

    async def get(self, store: RecordingStore, record: RecordingRecord) -> bytes:
        self._expire()
        entry = self._entries.get(record.id)
        if entry is not None:
            self._entries.move_to_end(record.id)
            return entry[1]
        task = self._pending.get(record.id)
        if task is None:
            task = self._pending[record.id] = asyncio.create_task(self._render(store, record))
            task.add_done_callback(lambda _: self._pending.pop(record.id, None))
        return await asyncio.shield(task)

    async def _render(self, store: RecordingStore, record: RecordingRecord) -> bytes:
        plaintext = await _plaintext(store, record)
        try:
            rendering = await asyncio.to_thread(render_stereo, plaintext)
        except RecordingFormatError as exc:
            raise ApiError(500, "unplayable", f"the recording cannot be rendered: {exc}") from None
        self._put(record.id, rendering)
        return rendering

    def _put(self, key: uuid.UUID, data: bytes) -> None:
        if len(data) > self._max_bytes:
            return
        self._entries[key] = (time.monotonic() + self._ttl, data)
        self._bytes += len(data)
        while self._bytes > self._max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._bytes -= len(evicted)

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (deadline, _) in self._entries.items() if deadline <= now]:
            self._bytes -= len(self._entries.pop(key)[1])


RENDERINGS = web.AppKey("renderings", Renderings)


async def _plaintext(store: RecordingStore, record: RecordingRecord) -> bytes:
    if record.state == "recording":
        raise ApiError(409, "recording", "the call is still being recorded")
    if record.state == "deleted":
        raise ApiError(410, "deleted", "this recording was deleted")
    key = await store.key(record)
    path = store.path(record.organisation_id, record.id)
    truncated = record.state == "truncated"
    try:
        plaintext = await asyncio.to_thread(read_plaintext, path, key, record.id, allow_truncated=truncated)
    except FileNotFoundError:
        raise ApiError(500, "missing", "the recording's file is missing") from None
    except StreamError as exc:
        raise ApiError(500, "damaged", f"the recording does not decrypt: {exc}") from None
    return plaintext[: whole_pages(plaintext)] if truncated else plaintext


async def _admin(request: web.Request) -> Session:
    session = await current_session(request)
    if session.user.role != "admin":
        raise ApiError(403, "forbidden", "only admins can list and play recordings")
    return session


async def _recording(request: web.Request, session: Session) -> RecordingRecord:
    try:
        recording_id = uuid.UUID(request.match_info["recording_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such recording") from None
    # Scoped by the caller's organisation: another organisation's recording is simply not found.
    record = await request.app[RECORDINGS].get(session.user.organisation_id, recording_id)
    if record is None:
        raise ApiError(404, "not_found", "no such recording")
    return record


def _json(record: RecordingRecord) -> dict[str, Any]:
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
        actor_id=session.user.id,
        address=request.remote,
        user_agent=request.headers.get("User-Agent"),
    )


async def list_recordings(request: web.Request) -> web.Response:
    session = await _admin(request)
    records = await request.app[RECORDINGS].recent(session.user.organisation_id)
    return web.json_response({"recordings": [_json(r) for r in records]}, headers=NO_STORE)


async def get_recording(request: web.Request) -> web.Response:
    session = await _admin(request)
    return web.json_response({"recording": _json(await _recording(request, session))}, headers=NO_STORE)


async def play(request: web.Request) -> web.Response:
    """The stereo rendering (visitor left, agent right), with byte ranges for seeking."""
    session = await _admin(request)
    record = await _recording(request, session)
    data = await request.app[RENDERINGS].get(request.app[RECORDINGS], record)
    await _audit(request, session, record, "recording.play")
    return _ranged(request, data, "audio/ogg")


async def download(request: web.Request) -> web.Response:
    """The original two-channel file, decrypted (stream 0 visitor, stream 1 agent)."""
    session = await _admin(request)
    record = await _recording(request, session)
    plaintext = await _plaintext(request.app[RECORDINGS], record)
    await _audit(request, session, record, "recording.download")
    headers = {
        **NO_STORE,
        # Built from our own UUID only: nothing user-supplied reaches the header.
        "Content-Disposition": f'attachment; filename="recording-{record.id}.ogg"',
    }
    return web.Response(body=plaintext, content_type="audio/ogg", headers=headers)


def _ranged(request: web.Request, data: bytes, content_type: str) -> web.Response:
    size = len(data)
    headers = {**NO_STORE, "Accept-Ranges": "bytes"}
    header = request.headers.get("Range")
    if header is None:
        return web.Response(body=data, content_type=content_type, headers=headers)
    match = _RANGE.match(header.strip())
    if match is None or (not match[1] and not match[2]):
        # Several ranges, or another unit: the whole body is a valid answer (RFC 9110 section 14.2).
        return web.Response(body=data, content_type=content_type, headers=headers)
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]), size - 1) if match[2] else size - 1
    else:
        start, end = max(0, size - int(match[2])), size - 1
    if start >= size or end < start:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return web.Response(status=206, body=data[start : end + 1], content_type=content_type, headers=headers)


def add_routes(app: web.Application) -> None:
    app[RENDERINGS] = Renderings()
    app.router.add_get("/api/v1/recordings", list_recordings)
    app.router.add_get("/api/v1/recordings/{recording_id}", get_recording)
    app.router.add_get("/api/v1/recordings/{recording_id}/audio", play)
    app.router.add_get("/api/v1/recordings/{recording_id}/file", download)
