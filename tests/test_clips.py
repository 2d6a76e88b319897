"""Clips end to end: a caller's photos and videos reach the agent live, cleaned of where and with
what they were taken, stored encrypted; uploads resume; bad files are refused and leave nothing;
other organisations see nothing; retention and erasure take clips with them."""

from __future__ import annotations

import datetime
import io
import json
import uuid
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Any

import aiohttp
import av
import numpy
import pytest
from PIL import Image

from server.app import Running
from server.appkeys import CLIPS, RECORDINGS
from storage.db import Database
from storage.retention import Purger, Subject
from storage.subjects import Subjects
from tests.conftest import VISITOR_ORIGIN, Tenant, answered_call_for, login_cookie, make_admin, make_tenant
from tests.test_routing import call_api

GPS = 0x8825


def photo_with_location() -> tuple[bytes, bytes]:
    """A JPEG carrying GPS coordinates, a camera serial and make/model; and its pixels."""
    image = Image.new("RGB", (64, 48))
    for x in range(64):
        for y in range(48):
            image.putpixel((x, y), (x * 4, y * 5, (x + y) * 2))
    exif = Image.Exif()
    exif[0x010F] = "Phonemaker"  # make
    exif[0x0110] = "Phone 12"  # model
    exif[0xA431] = "SERIAL-123456"  # body serial number
    exif.get_ifd(GPS).update({1: "N", 2: (51.0, 30.0, 26.0), 3: "W", 4: (0.0, 7.0, 39.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, quality=90)
    data = out.getvalue()
    return data, Image.open(io.BytesIO(data)).tobytes()


def short_webm() -> bytes:
    """One second of VP8 video in WebM, with a location in its metadata."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        container.metadata["location"] = "+51.5074-000.1278/"
        stream = container.add_stream("libvpx", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(numpy.full((48, 64, 3), index * 20, dtype="uint8"), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


class Uploader:
    """The widget's side of a clip upload, over HTTP."""

    def __init__(self, server: Running, tenant: Tenant) -> None:
        self.base = f"{server.url}/api/v1/widget/{tenant.button_key}/clips"
        self.headers = {"Origin": VISITOR_ORIGIN}

    async def request(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as http, http.request(method, url, **kwargs) as response:
            body = await response.json() if response.content_type == "application/json" else None
            return response.status, body

    async def start(self, owner: dict[str, str], data: bytes, name: str, type_: str | None) -> tuple[int, Any]:
        return await self.request(
            "POST", self.base, headers=self.headers, json={**owner, "name": name, "size": len(data), "type": type_}
        )

    async def put(self, clip_id: str, token: str, offset: int, chunk: bytes) -> tuple[int, Any]:
        return await self.request(
            "PUT",
            f"{self.base}/{clip_id}?offset={offset}",
            data=chunk,
            headers={**self.headers, "X-Clip-Token": token, "Content-Type": "application/octet-stream"},
        )

    async def status(self, clip_id: str, token: str) -> tuple[int, Any]:
        return await self.request("GET", f"{self.base}/{clip_id}", headers={**self.headers, "X-Clip-Token": token})

    async def complete(self, clip_id: str, token: str) -> tuple[int, Any]:
        return await self.request(
            "POST", f"{self.base}/{clip_id}/complete", headers={**self.headers, "X-Clip-Token": token}
        )

    async def send(
        self, owner: dict[str, str], data: bytes, name: str, type_: str | None = None, chunk: int = 4096
    ) -> tuple[int, Any]:
        status, body = await self.start(owner, data, name, type_)
        if status != 201:
            return status, body
        clip_id = body["clip"]["id"]
        for offset in range(0, len(data), chunk):
            status, body = await self.put(clip_id, owner["token"], offset, data[offset : offset + chunk])
            assert status == 200, body
        return await self.complete(clip_id, owner["token"])


async def callback_owner(server: Running, tenant: Tenant, email: str = "ada@example.test") -> dict[str, str]:
    """A callback request from the widget, and the token that lets its visitor send clips with it."""
    status, body = await call_api(
        "POST",
        f"{server.url}/api/v1/widget/{tenant.button_key}/callbacks",
        origin=VISITOR_ORIGIN,
        json={"email": email, "note": "see the photo"},
    )
    assert status == 201, body
    return {"callback_id": body["callback"]["id"], "token": body["callback"]["clip_token"]}


def stored_files(server: Running, tenant: Tenant) -> list[Path]:
    folder = server.runner.app[CLIPS].root / str(tenant.organisation_id) / "clips"
    return sorted(folder.iterdir()) if folder.exists() else []


async def test_a_photo_and_a_video_sent_in_a_call_reach_the_agent_cleaned(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    visitor, agent, call_id = await answered_call_for(
        server.url,
        tenant,
    )
    try:
        token = visitor.messages("call_state")[-1]["clip_token"]
        owner = {"call_id": call_id, "token": token}
        uploader = Uploader(server, tenant)
        photo, pixels = photo_with_location()
        status, body = await uploader.send(owner, photo, "IMG_0001.JPG", "image/jpeg")
        assert status == 200, body
        assert body["clip"]["kind"] == "image" and body["clip"]["media_type"] == "image/jpeg"
        notice = await agent.expect("clip", timeout=1.0)
        assert notice["clip"]["id"] == body["clip"]["id"] and notice["clip"]["call_id"] == call_id
        video = short_webm()
        status, body = await uploader.send(owner, video, "screen.webm", "video/webm", chunk=1 << 20)
        assert status == 200, body
        await agent.wait_for(lambda m: m["type"] == "clip" and m["clip"]["kind"] == "video", 1.0, "the video")
        clips = [m["clip"] for m in agent.messages("clip")]
        assert [c["kind"] for c in clips] == ["image", "video"]

        # What the agent fetches: the photo without location, serial, make or model, same pixels.
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{server.url}{clips[0]['content_url']}", headers={"Cookie": agent.cookie}) as response:
                assert response.status == 200 and response.content_type == "image/jpeg"
                assert "sandbox" in response.headers["Content-Security-Policy"]
                stored_photo = await response.read()
            async with http.get(f"{server.url}{clips[1]['content_url']}", headers={"Cookie": agent.cookie}) as response:
                assert response.status == 200 and response.content_type == "video/webm"
                stored_video = await response.read()
        image = Image.open(io.BytesIO(stored_photo))
        exif = image.getexif()
        assert GPS not in exif and not exif.get_ifd(GPS)
        assert 0x010F not in exif and 0x0110 not in exif and b"SERIAL-123456" not in stored_photo
        assert image.tobytes() == pixels
        with av.open(io.BytesIO(stored_video)) as container:
            assert "location" not in container.metadata
            assert sum(1 for _ in container.demux(video=0)) >= 10
        assert b"51.5074" not in stored_video

        # On disk: ciphertext only, no plaintext left from the uploads.
        files = stored_files(server, tenant)
        assert [f.suffix for f in files] == [".cbclip", ".cbclip"]
        for file in files:
            raw = file.read_bytes()
            assert b"Phonemaker" not in raw and b"webm" not in raw and b"JFIF" not in raw

        # Every view is audited; the admin's call page lists them.
        views = await database.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE organisation_id = $1 AND action = 'clip.view'", tenant.organisation_id
        )
        assert views == 2
        email, password = await make_admin(database, tenant.organisation_id)
        cookie = await login_cookie(server.url, email, password)
        status, body = await call_api("GET", f"{server.url}/api/v1/calls/{call_id}", cookie=cookie)
        assert status == 200 and [c["kind"] for c in body["clips"]] == ["image", "video"]
    finally:
        await visitor.close()
        await agent.close()


async def test_an_interrupted_upload_resumes_to_the_same_result(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    uploader = Uploader(server, tenant)
    photo, _ = photo_with_location()
    owner = await callback_owner(server, tenant)
    status, straight = await uploader.send(owner, photo, "a.jpg", "image/jpeg")
    assert status == 200, straight

    status, body = await uploader.start(owner, photo, "a.jpg", "image/jpeg")
    assert status == 201
    clip_id, half = body["clip"]["id"], len(photo) // 2
    status, _ = await uploader.put(clip_id, owner["token"], 0, photo[:half])
    assert status == 200
    # The connection drops; the widget asks where it got to, and goes on from there.
    status, body = await uploader.status(clip_id, owner["token"])
    assert (status, body["clip"]["received"], body["clip"]["state"]) == (200, half, "uploading")
    status, body = await uploader.put(clip_id, owner["token"], 0, photo[:10])  # a stale retry of the first chunk
    assert (status, body["error"]) == (409, "wrong_offset") and str(half) in body["message"]
    status, body = await uploader.complete(clip_id, owner["token"])  # too early
    assert (status, body["error"]) == (409, "incomplete")
    status, _ = await uploader.put(clip_id, owner["token"], half, photo[half:])
    assert status == 200
    status, resumed = await uploader.complete(clip_id, owner["token"])
    assert status == 200, resumed
    # Agents see a callback request's clips on their list.
    agent_cookie = await login_cookie(server.url, tenant.agent_email, tenant.agent_password)
    status, body = await call_api("GET", f"{server.url}/api/v1/callbacks", cookie=agent_cookie)
    (listed,) = [c for c in body["callbacks"] if c["id"] == owner["callback_id"]]
    assert sorted(c["id"] for c in listed["clips"]) == sorted([straight["clip"]["id"], resumed["clip"]["id"]])
    # A player may ask for byte ranges; the parts join into the whole, and one viewing is one entry.
    url = f"{server.url}{listed['clips'][0]['content_url']}"
    parts = []
    async with aiohttp.ClientSession() as http:
        for wanted in ("bytes=0-99", "bytes=100-"):
            async with http.get(url, headers={"Cookie": agent_cookie, "Range": wanted}) as response:
                assert response.status == 206 and response.headers["Accept-Ranges"] == "bytes"
                parts.append(await response.read())
        async with http.get(url, headers={"Cookie": agent_cookie}) as response:
            whole = await response.read()
        async with http.get(url, headers={"Cookie": agent_cookie, "Range": "bytes=999999-"}) as response:
            assert response.status == 416
    assert b"".join(parts) == whole and len(parts[0]) == 100
    views = await database.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'clip.view' AND object_id = $1",
        uuid.UUID(listed["clips"][0]["id"]),
    )
    assert views == 2  # the range from 0, and the whole

    store = server.runner.app[CLIPS]
    first = await store.get(tenant.organisation_id, uuid.UUID(straight["clip"]["id"]))
    second = await store.get(tenant.organisation_id, uuid.UUID(resumed["clip"]["id"]))
    assert first is not None and second is not None
    assert await store.read(first) == await store.read(second)


@pytest.mark.parametrize(
    ("data", "name", "type_", "status", "message"),
    [
        (b"hello, this is just text\n" * 10, "notes.txt", "text/plain", 415, "JPEG or PNG"),
        (b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n", "photo.jpg", "image/jpeg", 415, "says it is"),
        (None, "holiday.jpg", "image/jpeg", 415, "also"),  # a JPEG with a ZIP after it
    ],
)
async def test_bad_files_are_refused_clearly_and_leave_nothing(
    server: Running, database: Database, data: bytes | None, name: str, type_: str, status: int, message: str
) -> None:
    (tenant,) = await make_tenant(database)
    if data is None:
        zipped = io.BytesIO()
        with zipfile.ZipFile(zipped, "w") as archive:
            archive.writestr("run.sh", "echo hi")
        data = photo_with_location()[0] + zipped.getvalue()
    owner = await callback_owner(server, tenant)
    got, body = await Uploader(server, tenant).send(owner, data, name, type_)
    assert got == status and message in body["message"], body
    assert stored_files(server, tenant) == []
    assert not await database.pool.fetchval(
        "SELECT count(*) FROM clips WHERE organisation_id = $1", tenant.organisation_id
    )


async def test_oversized_and_tokenless_uploads_are_refused(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    uploader = Uploader(server, tenant)
    owner = await callback_owner(server, tenant)
    status, body = await uploader.request(
        "POST", uploader.base, headers=uploader.headers, json={**owner, "size": 200 * 1024 * 1024, "name": "big.mp4"}
    )
    assert (status, body["error"]) == (413, "too_large") and "100 MB" in body["message"]
    status, body = await uploader.request(
        "POST", uploader.base, headers=uploader.headers, json={**owner, "token": "x" * 32, "size": 10}
    )
    assert status == 404
    status, body = await uploader.start(owner, b"x" * 10, "x", None)
    assert status == 201
    clip_id = body["clip"]["id"]
    status, body = await uploader.put(clip_id, "wrong", 0, b"x" * 10)
    assert status == 404
    # Cancelled: the upload goes, file and row, and no longer counts.
    status, _ = await uploader.put(clip_id, owner["token"], 0, b"x" * 5)
    assert status == 200 and stored_files(server, tenant)
    headers = {**uploader.headers, "X-Clip-Token": owner["token"]}
    status, _ = await uploader.request("DELETE", f"{uploader.base}/{clip_id}", headers=headers)
    assert status == 204
    assert stored_files(server, tenant) == []
    assert not await database.pool.fetchval("SELECT count(*) FROM clips WHERE id = $1", uuid.UUID(clip_id))
    status, body = await uploader.request("DELETE", f"{uploader.base}/{clip_id}", headers=headers)
    assert status == 404


async def test_clips_are_nobody_elses(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    (other,) = await make_tenant(database)
    owner = await callback_owner(server, tenant)
    status, body = await Uploader(server, tenant).send(owner, photo_with_location()[0], "a.jpg", "image/jpeg")
    assert status == 200
    clip_id = body["clip"]["id"]
    email, password = await make_admin(database, other.organisation_id)
    stranger = await login_cookie(server.url, email, password)
    for suffix in ("", "/content"):
        status, _ = await call_api("GET", f"{server.url}/api/v1/clips/{clip_id}{suffix}", cookie=stranger)
        assert status == 404
        status, _ = await call_api("GET", f"{server.url}/api/v1/clips/{clip_id}{suffix}")
        assert status == 404
    # Another organisation's button cannot reach it either, even with the token.
    status, _ = await Uploader(server, other).status(clip_id, owner["token"])
    assert status == 404
    assert not await database.pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'clip.view' AND object_id = $1", uuid.UUID(clip_id)
    )


async def test_retention_and_erasure_take_clips_with_them(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    store = server.runner.app[CLIPS]
    uploader = Uploader(server, tenant)
    photo = photo_with_location()[0]
    await database.webhooks.create(org, url="https://crm.example/hook", events=["clip.received"], description=None)
    ada = await callback_owner(server, tenant, "ada@example.test")
    bob = await callback_owner(server, tenant, "bob@example.test")
    ada_clip = (await uploader.send(ada, photo, "a.jpg", "image/jpeg"))[1]["clip"]["id"]
    bob_clip = (await uploader.send(bob, photo, "b.jpg", "image/jpeg"))[1]["clip"]["id"]

    # Receivers are told a clip arrived: what it is, not its name or content.
    sent = await database.pool.fetch(
        "SELECT payload FROM webhook_events WHERE organisation_id = $1 AND kind = 'clip.received'", org
    )
    assert sorted(json.loads(r["payload"])["clip"]["id"] for r in sent) == sorted([ada_clip, bob_clip])
    assert all("a.jpg" not in r["payload"] and "b.jpg" not in r["payload"] for r in sent)

    # Export: the person's clips, decrypted, and nobody else's.
    recordings = server.runner.app[RECORDINGS]
    subjects = Subjects(database.pool, recordings)
    archive_bytes, counts = await subjects.export(org, Subject.of("ada@example.test", None), None)
    archive = zipfile.ZipFile(io.BytesIO(archive_bytes))
    data = json.loads(archive.read("data.json"))
    (request,) = data["callback_requests"]
    assert [c["id"] for c in request["clips"]] == [ada_clip] and counts["clips"] == 1
    assert archive.read(request["clips"][0]["file"]) == await store.read(await store.get(org, uuid.UUID(ada_clip)))
    assert bob_clip not in json.dumps(data)

    # Erasure: Ada's clip, its file and its key go; Bob's stays.
    receipt = await subjects.erase(org, Subject.of("ada@example.test", None), None)
    assert receipt.counts["clips"] == 1 and ada_clip in receipt.destroyed_keys["data_keys"]
    assert not store.path(org, uuid.UUID(ada_clip)).exists()
    assert not await database.keystore_pool.fetchval(
        "SELECT count(*) FROM data_keys WHERE recording_id = $1", uuid.UUID(ada_clip)
    )
    assert store.path(org, uuid.UUID(bob_clip)).exists()

    # Retention: 91 days on, Bob's clip is past the default 90 days and goes; its key with it.
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=91)
    (report,) = await Purger(database.pool, recordings, clock=lambda: later).run(organisation_id=org, dry_run=True)
    assert report.counts["clips"] == 1
    await database.retention.set_policy(org, {"callbacks": 365}, None)  # the request itself stays
    (report,) = await Purger(database.pool, recordings, clock=lambda: later).run(organisation_id=org)
    assert report.counts["clips"] == 1 and report.receipt is not None
    assert not store.path(org, uuid.UUID(bob_clip)).exists()
    assert not await database.keystore_pool.fetchval(
        "SELECT count(*) FROM data_keys WHERE recording_id = $1", uuid.UUID(bob_clip)
    )
    record = await store.get(org, uuid.UUID(bob_clip))
    assert record is not None and record.state == "deleted"


async def test_each_button_sets_how_many_clips_and_how_large(server: Running, database: Database) -> None:
    (small,) = await make_tenant(database, clips_per_call=1, clip_max_mb=1)
    status, body = await call_api("GET", f"{server.url}/api/v1/widget/{small.button_key}", origin=VISITOR_ORIGIN)
    assert body["button"]["clips"] == {"enabled": True, "per_call": 1, "max_mb": 1}
    uploader = Uploader(server, small)
    owner = await callback_owner(server, small)
    status, body = await uploader.start(owner, b"x" * (2 * 1024 * 1024), "big.jpg", "image/jpeg")
    assert (status, body["error"]) == (413, "too_large") and "1 MB" in body["message"]
    status, _ = await uploader.send(owner, photo_with_location()[0], "a.jpg", "image/jpeg")
    assert status == 200
    status, body = await uploader.start(owner, photo_with_location()[0], "b.jpg", "image/jpeg")
    assert (status, body["error"]) == (409, "too_many") and "at most 1" in body["message"]

    (closed,) = await make_tenant(database, clips_per_call=0)
    status, body = await call_api("GET", f"{server.url}/api/v1/widget/{closed.button_key}", origin=VISITOR_ORIGIN)
    assert body["button"]["clips"]["enabled"] is False
    owner = await callback_owner(server, closed)
    status, body = await Uploader(server, closed).start(owner, b"x" * 10, "a.jpg", "image/jpeg")
    assert (status, body["error"]) == (403, "clips_off")

    # Admins set them with the button's other settings.
    email, password = await make_admin(database, small.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    url = f"{server.url}/api/v1/buttons/{small.button_id}"
    status, body = await call_api(
        "PATCH", url, cookie=cookie, origin=server.url, json={"clips_per_call": 5, "clip_max_mb": 50}
    )
    assert status == 200 and (body["button"]["clips_per_call"], body["button"]["clip_max_mb"]) == (5, 50)
    status, body = await call_api("PATCH", url, cookie=cookie, origin=server.url, json={"clips_per_call": 51})
    assert status == 400 and "clips_per_call" in body["message"]
