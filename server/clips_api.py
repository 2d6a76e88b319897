"""Clips over HTTP: the widget uploads them in resumable chunks; agents and admins view them.

A visitor may send clips with its call (the ``clip_token`` of its ``call_state`` messages) or with
its callback request (the ``clip_token`` of the request's answer). Tokens are HMACs of the call's
or request's id under a key derived from the master key: nothing to store, nothing to guess.

Upload: ``POST /api/v1/widget/{key}/clips`` announces name, size and type and gets an id; the bytes
go in order with ``PUT .../clips/{id}?offset=N`` (at most ``CHUNK_BYTES`` each); after a dropped
connection ``GET .../clips/{id}`` says how many arrived, and the upload goes on from there;
``POST .../clips/{id}/complete`` checks the content (by what it is, never by its name), strips
location and device metadata, and stores it encrypted (storage/clips.py), or refuses it saying why.
"""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web

from media.clips import clean
from server import body
from server.api import actor, current_session, path_uuid
from server.appkeys import CLIP_TOKENS, CLIPS, DATABASE, ROSTER, SWITCHBOARD
from server.clients import client_address
from server.cliptokens import ClipTokens, clip_json
from server.errors import ApiError
from server.messages import ClipNotice
from server.playback import NO_STORE, _byte_range, _resolve
from server.widget_api import _admit, _button_for, _cors, _error
from storage.accounts import Session
from storage.clips import ClipError, ClipRecord, ClipStore

CHUNK_BYTES = 1024 * 1024
_CREATE_FIELDS = frozenset({"call_id", "callback_id", "token", "name", "size", "type"})
_STATUS = {
    "clips_off": 403,
    "too_large": 413,
    "too_many": 409,
    "wrong_offset": 409,
    "incomplete": 409,
    "no_upload": 404,
    "refused": 415,
    "unreadable": 415,
}


def _clip_error(error: ClipError) -> ApiError:
    return ApiError(_STATUS.get(error.code, 400), error.code, str(error))


# --- the widget ------------------------------------------------------------------------------------


async def _visitor_clip(request: web.Request) -> tuple[ClipRecord, dict[str, str]]:
    """The path's clip, for a visitor holding its call's or request's token (404 otherwise: an
    id alone says nothing)."""
    headers = _cors(request.headers.get("Origin"))
    button = await _button_for(request)
    record = await request.app[CLIPS].get(button.organisation_id, path_uuid(request, "id", "clip"))
    if record is None or not request.app[CLIP_TOKENS].allows(request.headers.get("X-Clip-Token"), record):
        raise ApiError(404, "not_found", "no such clip")
    return record, headers


async def create_clip(request: web.Request) -> web.Response:
    """``POST /api/v1/widget/{key}/clips``: announce a clip (``size`` in bytes, ``name``, ``type``)
    for ``call_id`` or ``callback_id`` with its ``token``."""
    headers = _cors(request.headers.get("Origin"))
    try:
        await _admit(request)
        button = await _button_for(request)
        data = await body.read(request, _CREATE_FIELDS)
        call_id, callback_id = data.optional_id("call_id"), data.optional_id("callback_id")
        if (call_id is None) == (callback_id is None):
            raise body.bad("send the clip with a 'call_id' or a 'callback_id'")
        token = data.required_text("token", 100)
        tokens = request.app[CLIP_TOKENS]
        expected = tokens.for_call(call_id) if call_id is not None else tokens.for_callback(callback_id)  # type: ignore[arg-type]
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise ApiError(404, "not_found", "no such call or callback request")
        database = request.app[DATABASE]
        if call_id is not None:
            live = request.app[SWITCHBOARD].calls.get(call_id)
            if live is not None and live.call.organisation_id == button.organisation_id:
                await live.call.flush()  # a clip sent in a call's first moments finds its row stored
                known = True
            else:
                known = await database.calls.get(button.organisation_id, call_id) is not None
        else:
            known = await database.callbacks.get(button.organisation_id, callback_id) is not None  # type: ignore[arg-type]
        if not known:
            raise ApiError(404, "not_found", "no such call or callback request")
        await request.app[CLIPS].expire_uploads()
        size = data.integer("size", 1, 2**40)
        assert size is not None
        try:
            record = await request.app[CLIPS].open_upload(
                button.organisation_id,
                call_id=call_id,
                callback_id=callback_id,
                name=data.text("name", 255, required=False),
                size=size,
                declared_type=data.text("type", 100, required=False),
                max_clips=button.clips_per_call,
                max_bytes=button.clip_max_mb * 1024 * 1024,
            )
        except ClipError as exc:
            raise _clip_error(exc) from None
    except ApiError as exc:
        return _error(exc, headers)
    return web.json_response(
        {"clip": {"id": str(record.id), "received": 0, "size": record.declared_size, "chunk_bytes": CHUNK_BYTES}},
        status=201,
        headers=headers,
    )


async def upload_chunk(request: web.Request) -> web.Response:
    """``PUT /api/v1/widget/{key}/clips/{id}?offset=N``: the next bytes of the clip."""
    headers = _cors(request.headers.get("Origin"))
    try:
        record, headers = await _visitor_clip(request)
        try:
            offset = int(request.query.get("offset", ""))
        except ValueError:
            raise body.bad("give the chunk's 'offset' (the bytes already received)") from None
        if request.content_length is not None and request.content_length > CHUNK_BYTES:
            raise ApiError(413, "too_large", f"a chunk is at most {CHUNK_BYTES} bytes")
        chunk = await request.content.read(CHUNK_BYTES + 1)
        while len(chunk) <= CHUNK_BYTES and (more := await request.content.read(CHUNK_BYTES + 1 - len(chunk))):
            chunk += more
        if len(chunk) > CHUNK_BYTES:
            raise ApiError(413, "too_large", f"a chunk is at most {CHUNK_BYTES} bytes")
        if not chunk:
            raise body.bad("the chunk is empty")
        try:
            received = await request.app[CLIPS].append(record.organisation_id, record.id, offset, chunk)
        except ClipError as exc:
            raise _clip_error(exc) from None
    except ApiError as exc:
        return _error(exc, headers)
    return web.json_response({"clip": {"id": str(record.id), "received": received}}, headers=headers)


async def upload_status(request: web.Request) -> web.Response:
    """``GET /api/v1/widget/{key}/clips/{id}``: how far the upload got (to resume), or its result."""
    headers = _cors(request.headers.get("Origin"))
    try:
        record, headers = await _visitor_clip(request)
    except ApiError as exc:
        return _error(exc, headers)
    received = request.app[CLIPS].received(record.id)
    return web.json_response(
        {
            "clip": {
                "id": str(record.id),
                "state": record.state,
                "size": record.declared_size,
                "received": received
                if received is not None
                else (record.declared_size if record.state == "ready" else 0),
            }
        },
        headers=headers,
    )


async def cancel_upload(request: web.Request) -> web.Response:
    """``DELETE /api/v1/widget/{key}/clips/{id}``: the visitor cancelled an upload in progress."""
    headers = _cors(request.headers.get("Origin"))
    try:
        record, headers = await _visitor_clip(request)
        if not await request.app[CLIPS].abandon(record.organisation_id, record.id):
            raise ApiError(409, "not_uploading", "this clip is not being uploaded (it was sent, or is gone)")
    except ApiError as exc:
        return _error(exc, headers)
    return web.Response(status=204, headers=headers)


async def complete_clip(request: web.Request) -> web.Response:
    """``POST /api/v1/widget/{key}/clips/{id}/complete``: check, clean and store the whole clip."""
    headers = _cors(request.headers.get("Origin"))
    try:
        record, headers = await _visitor_clip(request)
        try:
            stored = await request.app[CLIPS].complete(record.organisation_id, record.id)
        except ClipError as exc:
            raise _clip_error(exc) from None
    except ApiError as exc:
        return _error(exc, headers)
    await _tell(request, stored)
    return web.json_response(
        {
            "clip": {
                "id": str(stored.id),
                "kind": stored.kind,
                "media_type": stored.media_type,
                "byte_size": stored.byte_size,
            }
        },
        headers=headers,
    )


async def _tell(request: web.Request, record: ClipRecord) -> None:
    """The agent of the call sees the clip arrive; a callback request's clip, every agent (unless
    its caller restricted processing)."""
    notice = ClipNotice(clip=clip_json(record))
    if record.call_id is not None:
        live = request.app[SWITCHBOARD].calls.get(record.call_id)
        if live is not None and live.agent is not None:
            live.agent.send(notice)
        return
    callback = await request.app[DATABASE].callbacks.get(record.organisation_id, record.callback_id)  # type: ignore[arg-type]
    if callback is None or callback.restricted:
        return
    for agent in request.app[ROSTER].of(record.organisation_id):
        agent.send(notice)


async def preflight(request: web.Request) -> web.Response:
    headers = _cors(request.headers.get("Origin"))
    headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, DELETE"
    headers["Access-Control-Allow-Headers"] = "Content-Type, X-Clip-Token"
    headers["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=headers)


# --- agents and admins -----------------------------------------------------------------------------


async def _staff_clip(request: web.Request) -> tuple[Session, ClipRecord]:
    """The path's clip, for an admin of its organisation, the agent who answered its call, or (a
    callback request's clip) any agent of the organisation. 404 for everyone else, logged in or not."""
    try:
        session = await current_session(request)
    except ApiError:
        raise ApiError(404, "not_found", "no such clip") from None  # an id alone says nothing
    record = await request.app[CLIPS].get(session.user.organisation_id, path_uuid(request, "id", "clip"))
    if record is None or record.state == "uploading":
        raise ApiError(404, "not_found", "no such clip")
    if session.user.role != "admin" and record.call_id is not None:
        call = await request.app[DATABASE].calls.get(record.organisation_id, record.call_id)
        live = request.app[SWITCHBOARD].calls.get(record.call_id)
        answering = live.agent.user_id if live is not None and live.agent is not None else None
        if (call is None or call.agent_id != session.user.id) and answering != session.user.id:
            raise ApiError(404, "not_found", "no such clip")
    return session, record


async def get_clip(request: web.Request) -> web.Response:
    _, record = await _staff_clip(request)
    return web.json_response({"clip": {**clip_json(record), "state": record.state}}, headers=NO_STORE)


async def clip_content(request: web.Request) -> web.Response:
    """The clip itself (decrypted), shown in the page or saved; every view is audited."""
    session, record = await _staff_clip(request)
    if record.state == "deleted":
        raise ApiError(410, "deleted", "this clip was deleted")
    database = request.app[DATABASE]
    owner = (
        await database.calls.get(record.organisation_id, record.call_id)
        if record.call_id
        else await database.callbacks.get(record.organisation_id, record.callback_id)  # type: ignore[arg-type]
    )
    if owner is not None and owner.restricted:
        raise ApiError(409, "restricted", "the caller restricted the processing of their data: it cannot be shown")
    etag = f'"{record.id.hex}"'
    wanted = _byte_range(request, etag)
    if wanted is None or not wanted[0] or int(wanted[0]) == 0:
        # One entry per view: what a player asks for later (seeking) is the same viewing.
        await database.audit.add(
            organisation_id=record.organisation_id,
            actor_id=actor(session),
            action="clip.view",
            object_type="clip",
            object_id=record.id,
            address=client_address(request),
            user_agent=request.headers.get("User-Agent"),
        )
    data = await request.app[CLIPS].read(record)
    extension = (record.media_type or "").split("/")[-1].replace("jpeg", "jpg")
    disposition = "attachment" if "download" in request.query or record.kind == "document" else "inline"
    headers = {
        **NO_STORE,
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Content-Disposition": f'{disposition}; filename="clip-{record.id}.{extension}"',
        # What a caller sent is shown, never run.
        "Content-Security-Policy": "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
        "X-Content-Type-Options": "nosniff",
    }
    status = 200
    if wanted is not None:  # a video player seeking (an MP4's index may be at its end)
        start, end = _resolve(wanted, len(data))
        if start > end or start >= len(data):
            return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data, status = data[start : end + 1], 206
    return web.Response(
        body=data, status=status, content_type=record.media_type or "application/octet-stream", headers=headers
    )


def cleaner(data: bytes, declared_type: str | None) -> Any:
    """media.clips.clean, as the clip store calls it."""
    return clean(data, declared_type=declared_type)


def add_routes(app: web.Application, store: ClipStore, tokens: ClipTokens) -> None:
    app[CLIPS] = store
    app[CLIP_TOKENS] = tokens
    app.router.add_post("/api/v1/widget/{key}/clips", create_clip)
    app.router.add_route("OPTIONS", "/api/v1/widget/{key}/clips", preflight)
    app.router.add_put("/api/v1/widget/{key}/clips/{id}", upload_chunk)
    app.router.add_get("/api/v1/widget/{key}/clips/{id}", upload_status)
    app.router.add_delete("/api/v1/widget/{key}/clips/{id}", cancel_upload)
    app.router.add_route("OPTIONS", "/api/v1/widget/{key}/clips/{id}", preflight)
    app.router.add_post("/api/v1/widget/{key}/clips/{id}/complete", complete_clip)
    app.router.add_route("OPTIONS", "/api/v1/widget/{key}/clips/{id}/complete", preflight)
    app.router.add_get("/api/v1/clips/{id}", get_clip)
    app.router.add_get("/api/v1/clips/{id}/content", clip_content)


__all__ = ["ClipTokens", "add_routes", "cleaner"]
