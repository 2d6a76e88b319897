"""Recorded calls: written live and encrypted, two parties on two streams, in step with the call."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from media.recording_file import decode_tracks
from media.synthetic import band_share, dominant_frequency
from server.app import Running
from server.appkeys import RECORDINGS, SWITCHBOARD
from storage.crypto_stream import HEADER_SIZE
from storage.db import Database
from storage.recordings import RecordingRecord, RecordingStore, read_plaintext
from tests.conftest import Tenant, answered_call_for, login_cookie, make_admin, make_tenant, sample, scrape
from tests.run_keys import MASTER_KEY
from tests.test_call import wait_for_row


async def recorded_call(server: Running, tenant: Tenant, talk_seconds: float) -> str:
    """A call answered at once, with ``talk_seconds`` of 440 Hz (visitor) and 880 Hz (agent)."""
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    try:
        await asyncio.sleep(talk_seconds)
        await visitor.send({"type": "hangup"})
        await agent.expect("call_state", call_id=call_id, state="ended")
        return call_id
    finally:
        await visitor.close()
        await agent.close()


async def finished_recording(
    store: RecordingStore, tenant: Tenant, call_id: str, timeout: float = 5.0
) -> RecordingRecord:
    for _ in range(round(timeout / 0.05)):
        (record,) = await store.for_call(tenant.organisation_id, uuid.UUID(call_id)) or (None,)
        if record is not None and record.state != "recording":
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"the recording of call {call_id} did not finish")


async def test_a_recorded_call_leaves_an_encrypted_two_channel_file(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    call_id = await recorded_call(server, tenant, talk_seconds=3.0)
    row = await wait_for_row(database, tenant, call_id, "ended")
    assert row.answered_at is not None and row.ended_at is not None
    talk = (row.ended_at - row.answered_at).total_seconds()

    store = server.runner.app[RECORDINGS]
    record = await finished_recording(store, tenant, call_id)
    assert record.state == "complete" and (record.container, record.codec) == ("ogg", "opus")
    path = store.path(tenant.organisation_id, record.id)
    ciphertext = path.read_bytes()
    assert record.byte_size == len(ciphertext)
    # Encrypted as written: the file is the stream header and segments, no Ogg in sight.
    assert ciphertext[0] == HEADER_SIZE and b"OggS" not in ciphertext and b"OpusHead" not in ciphertext

    plaintext = read_plaintext(path, await store.key(record), record.id)
    assert plaintext.startswith(b"OggS")
    tracks = decode_tracks(plaintext)
    # Stream 0 is the visitor (440 Hz), stream 1 the agent (880 Hz), each clean of the other.
    middle = slice(len(tracks.visitor) // 4, 3 * len(tracks.visitor) // 4)
    assert abs((dominant_frequency(tracks.visitor[middle]) or 0) - 440) < 15
    assert abs((dominant_frequency(tracks.agent[middle]) or 0) - 880) < 15
    assert band_share(tracks.visitor[middle], 880) < 0.01 and band_share(tracks.agent[middle], 440) < 0.01
    assert abs(tracks.duration_seconds - talk) < 0.5, (tracks.duration_seconds, talk)
    assert abs(record.duration_ms / 1000 - talk) < 0.5


async def test_a_recording_opens_without_waiting_for_the_calls_later_writes(
    server: Running, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call's writes queue one behind the other, and under a burst each waits behind every other
    call's: the recording's file waits only for the call's own row, and loses nothing meanwhile."""
    (tenant,) = await make_tenant(database, recording=True)
    events = server.runner.app[SWITCHBOARD]._events
    transition = events.transition

    async def slow_transition(**fields: Any) -> None:
        await asyncio.sleep(3.0)  # the database's writes backed up
        await transition(**fields)

    monkeypatch.setattr(events, "transition", slow_transition)
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    try:
        await asyncio.sleep(1.0)
        store = server.runner.app[RECORDINGS]
        (record,) = await store.for_call(tenant.organisation_id, uuid.UUID(call_id))
        assert record.state == "recording"
        row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
        assert row is not None and row.answered_at is None  # the answer is not written yet
        await asyncio.sleep(1.0)
        await visitor.send({"type": "hangup"})
        await agent.expect("call_state", call_id=call_id, state="ended")
    finally:
        await visitor.close()
        await agent.close()
    row = await wait_for_row(database, tenant, call_id, "ended", timeout=15)  # each transition 3 s late
    assert row.answered_at is not None and row.ended_at is not None
    record = await finished_recording(store, tenant, call_id, timeout=15)
    _, text = await scrape(server.url)
    assert sample(text, "callbutton_setup_seconds_count", '{phase="recording_open"}') == 1
    assert sample(text, "callbutton_setup_seconds_sum", '{phase="recording_open"}') < 1.5  # not behind the 3 s
    tracks = decode_tracks(
        read_plaintext(store.path(tenant.organisation_id, record.id), await store.key(record), record.id)
    )
    assert abs(tracks.duration_seconds - (row.ended_at - row.answered_at).total_seconds()) < 0.5
    assert abs((dominant_frequency(tracks.visitor[: len(tracks.visitor) // 2]) or 0) - 440) < 15


async def test_calls_on_buttons_without_recording_leave_no_recording(
    server: Running, database: Database, tenant: Tenant
) -> None:
    call_id = await recorded_call(server, tenant, talk_seconds=0.5)
    await wait_for_row(database, tenant, call_id, "ended")
    await server.runner.app[SWITCHBOARD].drain()
    store = server.runner.app[RECORDINGS]
    assert await store.for_call(tenant.organisation_id, uuid.UUID(call_id)) == []


async def test_admins_play_and_download_with_an_audit_trail_and_other_organisations_get_404(
    server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    call_id = await recorded_call(server, tenant, talk_seconds=2.0)
    record = await finished_recording(server.runner.app[RECORDINGS], tenant, call_id)
    admin = await login_cookie(server.url, *await make_admin(database, tenant.organisation_id))
    agent = await login_cookie(server.url, tenant.agent_email, tenant.agent_password)
    (stranger_tenant,) = await make_tenant(database)
    stranger = await login_cookie(server.url, *await make_admin(database, stranger_tenant.organisation_id))
    base = f"{server.url}/api/v1/recordings"

    async with aiohttp.ClientSession() as http:
        async with http.get(base, headers={"Cookie": admin}) as listing:
            assert listing.status == 200
            assert [r["id"] for r in (await listing.json())["recordings"]] == [str(record.id)]
        async with http.head(f"{base}/{record.id}/audio", headers={"Cookie": admin}) as head:
            assert head.status == 200 and int(head.headers["Content-Length"]) > 44  # no audit for HEAD
        async with http.get(f"{base}/{record.id}/audio", headers={"Cookie": admin}) as whole:
            assert whole.status == 200
            assert whole.headers["Cache-Control"] == "no-store"
            assert whole.headers["Accept-Ranges"] == "bytes"
            assert whole.headers["Content-Type"] == "audio/wav"
            etag = whole.headers["ETag"]
            rendering = await whole.read()
        assert len(rendering) == int(head.headers["Content-Length"])
        # The rendering is stereo: visitor (440 Hz) left, agent (880 Hz) right.
        left, right = stereo_channels(rendering)
        assert abs((dominant_frequency(left) or 0) - 440) < 15
        assert abs((dominant_frequency(right) or 0) - 880) < 15
        ranged = {"Cookie": admin, "Range": "bytes=100-199", "If-Range": etag}
        async with http.get(f"{base}/{record.id}/audio", headers=ranged) as part:
            assert part.status == 206
            assert part.headers["Content-Range"] == f"bytes 100-199/{len(rendering)}"
            assert await part.read() == rendering[100:200]
        stale = {"Cookie": admin, "Range": "bytes=100-199", "If-Range": '"another-rendering"'}
        async with http.get(f"{base}/{record.id}/audio", headers=stale) as whole_again:
            assert whole_again.status == 200 and await whole_again.read() == rendering
        async with http.get(f"{base}/{record.id}/audio", headers={"Cookie": admin, "Range": "bytes=-10"}) as tail:
            assert tail.status == 206 and await tail.read() == rendering[-10:]
        far = {"Cookie": admin, "Range": f"bytes={len(rendering)}-"}
        async with http.get(f"{base}/{record.id}/audio", headers=far) as beyond:
            assert beyond.status == 416 and beyond.headers["Content-Range"] == f"bytes */{len(rendering)}"
        async with http.get(f"{base}/{record.id}/file", headers={"Cookie": admin}) as download:
            assert download.status == 200 and download.headers["Cache-Control"] == "no-store"
            assert download.headers["Content-Disposition"] == f'attachment; filename="recording-{record.id}.ogg"'
            original = await download.read()
        assert original.startswith(b"OggS")
        assert abs((dominant_frequency(decode_tracks(original).agent) or 0) - 880) < 15

        for path in ("", "/audio", "/file"):
            async with http.get(f"{base}/{record.id}{path}", headers={"Cookie": stranger}) as other_org:
                assert other_org.status == 404, path
            async with http.get(f"{base}/{record.id}{path}", headers={"Cookie": agent}) as not_admin:
                assert not_admin.status == 403, path
            async with http.get(f"{base}/{record.id}{path}") as anonymous:
                assert anonymous.status == 401, path
        async with http.get(f"{base}/{uuid.uuid4()}/audio", headers={"Cookie": admin}) as unknown:
            assert unknown.status == 404
        async with http.get(f"{base}/not-a-uuid/audio", headers={"Cookie": admin}) as malformed:
            assert malformed.status == 404
        async with http.get(base, headers={"Cookie": stranger}) as other_listing:
            assert (await other_listing.json())["recordings"] == []

    entries = await database.audit.for_object(tenant.organisation_id, record.id)
    # A playback is audited once, when it starts from the beginning (the whole, and the stale
    # If-Range that got the whole); seeking within it (ranges further in) is the same listening.
    assert [e.action for e in entries] == ["recording.play"] * 2 + ["recording.download"]
    assert all(e.address == "127.0.0.1" and e.actor_id is not None for e in entries)
    # Only the admin's requests were allowed, so only they are audited.
    assert len({e.actor_id for e in entries}) == 1


def stereo_channels(wav: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The two channels of a 16-bit stereo WAV, read with the standard library's parser."""
    with wave.open(io.BytesIO(wav)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (2, 2, 48000)
        samples = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16).reshape(-1, 2)
    return samples[:, 0], samples[:, 1]


async def test_the_cli_verifies_and_decrypts_and_names_what_is_wrong(
    server: Running, database: Database, migrated: str, tmp_path: Path
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    first = await finished_recording(
        server.runner.app[RECORDINGS], tenant, await recorded_call(server, tenant, talk_seconds=1.0)
    )
    second = await finished_recording(
        server.runner.app[RECORDINGS], tenant, await recorded_call(server, tenant, talk_seconds=1.0)
    )
    store = server.runner.app[RECORDINGS]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update(
        {
            "CALLBUTTON_DATABASE_URL": migrated,
            "CALLBUTTON_RECORDINGS_DIR": str(store.root),
            "CALLBUTTON_MASTER_KEY": MASTER_KEY.to_text(),
            "CALLBUTTON_LOG_LEVEL": "warning",
        }
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "server", *args], env=env, capture_output=True, text=True, timeout=60
        )

    ok = cli("recording", "verify", str(first.id))
    assert ok.returncode == 0 and "every segment authenticates" in ok.stdout, ok.stdout + ok.stderr
    out = tmp_path / "first.ogg"
    decrypted = cli("recording", "decrypt", str(first.id), "-o", str(out))
    assert decrypted.returncode == 0, decrypted.stderr
    assert abs((dominant_frequency(decode_tracks(out.read_bytes()).visitor) or 0) - 440) < 15
    assert cli("recording", "decrypt", str(first.id), "-o", str(out)).returncode == 2  # never overwrites
    assert [e.action for e in await database.audit.for_object(tenant.organisation_id, first.id)] == [
        "recording.decrypt"
    ]

    # A bit flipped in a copy of the file.
    original = store.path(tenant.organisation_id, first.id)
    tampered = tmp_path / "tampered" / original.name
    tampered.parent.mkdir()
    data = bytearray(original.read_bytes())
    data[len(data) // 2] ^= 0x10
    tampered.write_bytes(bytes(data))
    bad = cli("recording", "verify", str(tampered))
    assert bad.returncode == 1 and "INVALID" in bad.stdout and "does not authenticate" in bad.stdout
    # The first recording's file passed off as the second's: bound to its own id, it fails.
    swapped = tmp_path / "swapped" / store.path(tenant.organisation_id, second.id).name
    swapped.parent.mkdir()
    swapped.write_bytes(original.read_bytes())
    wrong_id = cli("recording", "verify", str(swapped))
    assert wrong_id.returncode == 1 and "wrong key or recording id" in wrong_id.stdout
    unknown = cli("recording", "verify", str(uuid.uuid4()))
    assert unknown.returncode == 2 and "no recording" in unknown.stderr
