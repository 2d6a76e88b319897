"""Retention, legal holds, erasure that reaches backups, data-subject rights, termination.

Calls are stored directly (their age is what matters here); recordings are real encrypted files with
real keys in the key store, written through the recording store as the recorder does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import io
import json
import re
import shutil
import subprocess
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from server.app import Running, start
from server.appkeys import RECORDINGS
from server.config import Settings
from storage import webhooks
from storage.calls import CallFilter
from storage.db import Database, keystore_dsn_for
from storage.keys import Keyring, KeyringError
from storage.localpg import find_bin_dir
from storage.recordings import RecordingStore, read_plaintext
from storage.retention import PurgeBusy, Purger, Subject
from storage.subjects import SubjectError, Subjects, organisation_rows
from tests.conftest import Tenant, login_cookie, make_admin, make_tenant
from tests.run_keys import MASTER_KEY
from tests.test_cli import run_cli
from tests.test_routing import call_api

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
ADA = "ada@example.test"


def mentions_phone(document: object, digits: str) -> bool:
    """Whether a JSON document carries a phone number in any spelling ("+44 (20) 7946-0001", "442079460001").
    UUIDs are left out: their hex may hold the same digits by chance."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "", json.dumps(document))
    return any(digits in re.sub(r"[^0-9]", "", span) for span in re.findall(r"[+0-9][0-9 ()\-]*[0-9]", text))


def days_ago(days: float, now: datetime.datetime = NOW) -> datetime.datetime:
    return now - datetime.timedelta(days=days)


@dataclass
class Stored:
    call_id: uuid.UUID
    recording_id: uuid.UUID | None
    audio: bytes | None


async def store_call(
    database: Database,
    store: RecordingStore,
    tenant: Tenant,
    *,
    ended: datetime.datetime,
    email: str | None = None,
    phone: str | None = None,
    name: str | None = None,
    record: bool = False,
) -> Stored:
    call_id = uuid.uuid4()
    await database.pool.execute(
        """
        INSERT INTO calls (id, organisation_id, button_id, agent_id, state, end_reason, page_url, created_at,
                           answered_at, ended_at, visitor_name, visitor_email, visitor_phone, notes, rating)
        VALUES ($1, $2, $3, $4, 'ended', 'visitor_hangup', 'https://shop.example/help', $5, $6, $7, $8, $9, $10,
                'Spoke about an order', 4)
        """,
        call_id,
        tenant.organisation_id,
        tenant.button_id,
        tenant.agent_id,
        ended - datetime.timedelta(minutes=5),
        ended - datetime.timedelta(minutes=4),
        ended,
        name,
        email,
        phone,
    )
    if not record:
        return Stored(call_id, None, None)
    recording_id, sink = await store.begin(
        organisation_id=tenant.organisation_id, call_id=call_id, started_at=ended - datetime.timedelta(minutes=4)
    )
    audio = f"OggS audio of call {call_id}".encode() * 50
    await asyncio.to_thread(sink.write, audio)
    await asyncio.to_thread(sink.close)
    await store.finish(
        organisation_id=tenant.organisation_id, recording_id=recording_id, ended_at=ended, duration_ms=240000, sink=sink
    )
    return Stored(call_id, recording_id, audio)


def recording_store(database: Database, root: Path) -> RecordingStore:
    return RecordingStore(database.pool, Keyring(database.keystore_pool, MASTER_KEY), root)


async def key_exists(database: Database, recording_id: uuid.UUID | None) -> bool:
    return bool(
        await database.keystore_pool.fetchval("SELECT count(*) FROM data_keys WHERE recording_id = $1", recording_id)
    )


async def call_exists(database: Database, call_id: uuid.UUID) -> bool:
    return bool(await database.pool.fetchval("SELECT count(*) FROM calls WHERE id = $1", call_id))


async def recording_state(database: Database, recording_id: uuid.UUID | None) -> str | None:
    return await database.pool.fetchval("SELECT state FROM recordings WHERE id = $1", recording_id)  # type: ignore[no-any-return]


async def test_the_purge_removes_what_is_due_and_nothing_else(database: Database, tmp_path: Path) -> None:
    store = recording_store(database, tmp_path / "recordings")
    tenant, other = (await make_tenant(database))[0], (await make_tenant(database))[0]
    org = tenant.organisation_id
    await database.retention.set_policy(
        org, {"recordings": 30, "calls": 60, "callbacks": 20, "audit": 30, "webhook_log": 10}, None
    )
    old = await store_call(database, store, tenant, ended=days_ago(100), email="old@example.test", record=True)
    middle = await store_call(database, store, tenant, ended=days_ago(45), record=True)
    recent = await store_call(database, store, tenant, ended=days_ago(10), record=True)
    on_hold = await store_call(database, store, tenant, ended=days_ago(100), record=True)
    held_person = await store_call(database, store, tenant, ended=days_ago(100), phone="+44 20 7946 0001", record=True)
    elsewhere = await store_call(database, store, other, ended=days_ago(400), record=True)
    await database.retention.add_hold(org, reason="Dispute 17", actor=None, call_id=on_hold.call_id)
    await database.retention.add_hold(org, reason="Claim 4", actor=None, subject=Subject.of(None, "+44 (20) 7946-0001"))
    await database.retention.add_hold(org, reason="ended", actor=None, subject=Subject.of("old@example.test", None))
    (lifted,) = [h for h in await database.retention.holds(org) if h.subject_email == "old@example.test"]
    await database.retention.lift_hold(org, lifted.id, None)  # a lifted hold keeps nothing
    callbacks = []
    for age in (25, 5):
        callbacks.append(
            await database.pool.fetchval(
                "INSERT INTO callback_requests (organisation_id, email, reason, created_at) "
                "VALUES ($1, 'cb@example.test', 'closed', $2) RETURNING id",
                org,
                days_ago(age),
            )
        )
    audit = [
        await database.pool.fetchval(
            "INSERT INTO audit_log (organisation_id, at, action, object_type) VALUES ($1, $2, 'test', 'test') "
            "RETURNING id",
            org,
            days_ago(age),
        )
        for age in (40, 5)
    ]
    endpoint = await database.webhooks.create(
        org, url="https://crm.example/hook", events=["call.ended"], description=None
    )
    events = [
        await database.pool.fetchval(
            "INSERT INTO webhook_events (event_id, organisation_id, endpoint_id, kind, subject, payload, created_at) "
            "VALUES (gen_random_uuid(), $1, $2, 'call.ended', gen_random_uuid(), '{}', $3) RETURNING id",
            org,
            endpoint.id,
            days_ago(age),
        )
        for age in (15, 1)
    ]

    purger = Purger(database.pool, store, batch=2, clock=lambda: NOW)
    # The dry run says what would go, and changes nothing.
    (preview,) = await purger.run(organisation_id=org, dry_run=True)
    assert preview.counts == {"recordings": 2, "clips": 0, "calls": 1, "callbacks": 1, "audit": 1, "webhook_log": 1}
    assert preview.held == {"recordings": 2, "clips": 0, "calls": 2, "callbacks": 0}
    assert preview.receipt is None and await key_exists(database, old.recording_id)

    (report,) = await purger.run(organisation_id=org)
    # Past retention: the old call whole (its recording with it), the middle call's recording only.
    assert not await call_exists(database, old.call_id) and not await key_exists(database, old.recording_id)
    assert not store.path(org, old.recording_id).exists()  # type: ignore[arg-type]
    assert await call_exists(database, middle.call_id)
    assert await recording_state(database, middle.recording_id) == "deleted"
    assert not await key_exists(database, middle.recording_id)
    assert not store.path(org, middle.recording_id).exists()  # type: ignore[arg-type]
    # Within retention, or held: kept, still decrypting.
    for kept in (recent, on_hold, held_person):
        assert await call_exists(database, kept.call_id) and await key_exists(database, kept.recording_id)
        assert await recording_state(database, kept.recording_id) == "complete"
        record = await store.get(org, kept.recording_id)  # type: ignore[arg-type]
        assert record is not None
        plaintext = read_plaintext(store.path(org, record.id), await store.key(record), record.id)
        assert plaintext == kept.audio
    assert [
        await database.pool.fetchval("SELECT count(*) FROM callback_requests WHERE id = $1", c) for c in callbacks
    ] == [0, 1]
    assert [await database.pool.fetchval("SELECT count(*) FROM audit_log WHERE id = $1", a) for a in audit] == [0, 1]
    assert [await database.pool.fetchval("SELECT count(*) FROM webhook_events WHERE id = $1", e) for e in events] == [
        0,
        1,
    ]
    # Another organisation (default policy) was not touched by this organisation's run.
    assert await key_exists(database, elsewhere.recording_id) and await call_exists(database, elsewhere.call_id)

    # The receipt: categories, counts, which keys, no personal data.
    assert report.receipt is not None
    receipt = await database.retention.receipt(org, report.receipt.id)
    assert receipt is not None and receipt.kind == "purge"
    assert receipt.counts == {"recordings": 2, "clips": 0, "calls": 1, "callbacks": 1, "audit": 1, "webhook_log": 1}
    assert sorted(receipt.destroyed_keys["data_keys"]) == sorted([str(old.recording_id), str(middle.recording_id)])
    assert receipt.held == {"recordings": 2, "calls": 2}
    assert "example.test" not in json.dumps(receipt.document()) and not mentions_phone(receipt.document(), "79460001")

    # A second run at the same time finds nothing more.
    (again,) = await purger.run(organisation_id=org)
    assert not any(again.counts.values()) and again.receipt is None

    # The clock moves on 25 days: the recent call's recording (now 35 days old) is due, not its call;
    # the middle call (70 days) is.
    later = Purger(database.pool, store, clock=lambda: NOW + datetime.timedelta(days=25))
    (report,) = await later.run(organisation_id=org)
    assert report.counts["recordings"] == 1 and report.counts["calls"] == 1
    assert not await key_exists(database, recent.recording_id) and await call_exists(database, recent.call_id)
    assert not await call_exists(database, middle.call_id)

    # Shortening a policy applies to what is stored already, at the next run.
    await database.retention.set_policy(org, {"calls": 30}, None)
    (report,) = await later.run(organisation_id=org)
    assert report.counts["calls"] == 1  # the recent call, 35 days old now
    assert not await call_exists(database, recent.call_id)

    # Lifting the holds lets the next run take what they kept.
    for hold in await database.retention.holds(org, active=True):
        await database.retention.lift_hold(org, hold.id, None)
    (report,) = await later.run(organisation_id=org)
    assert report.counts["calls"] == 2 and report.counts["recordings"] == 2
    assert not await key_exists(database, on_hold.recording_id)


@pytest.fixture
async def admin_server(settings: Settings, database: Database, tmp_path: Path) -> AsyncIterator[Running]:
    running = await start(settings, database)
    yield running
    await running.stop()


async def admin_cookie(server: Running, database: Database, tenant: Tenant) -> str:
    email, password = await make_admin(database, tenant.organisation_id)
    return await login_cookie(server.url, email, password)


def restore_copy(dsn: str, name: str) -> str:
    """pg_dump the main database into a new database ``name``; return its DSN."""
    bin_dir = find_bin_dir()
    target = urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
    dump = subprocess.run(
        [str(bin_dir / "pg_dump"), "--format=custom", dsn], capture_output=True, timeout=300, check=True
    ).stdout
    _restore(bin_dir, dsn, target, name, dump)
    return target


def _restore(bin_dir: Path, dsn: str, target: str, name: str, dump: bytes) -> None:
    async def create() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    subprocess.run(
        [str(bin_dir / "pg_restore"), "--no-owner", "--exit-on-error", "-d", target],
        input=dump,
        capture_output=True,
        timeout=300,
        check=True,
    )


async def drop(dsn: str, name: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_an_erased_person_stays_erased_even_in_a_restored_backup(
    admin_server: Running, database: Database, migrated: str, settings: Settings, tmp_path: Path
) -> None:
    store = admin_server.runner.app[RECORDINGS]
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    await database.webhooks.create(org, url="https://crm.example/hook", events=list(webhooks.EVENTS), description=None)
    ada = [
        await store_call(database, store, tenant, ended=days_ago(3), email=ADA, name="Ada", record=True),
        await store_call(database, store, tenant, ended=days_ago(2), phone="+44 20 7946 0000", record=True),
    ]
    await database.pool.execute("UPDATE calls SET visitor_phone = '+44 20 7946 0000' WHERE id = $1", ada[0].call_id)
    bob = await store_call(database, store, tenant, ended=days_ago(1), email="bob@example.test", record=True)
    callback = await database.callbacks.create(
        org, button_id=tenant.button_id, call_id=None, name="Ada", email=ADA, phone=None,
        note="call me", reason="visitor",
    )  # fmt: skip
    # Backups taken before the erasure: the main database, and the recording files.
    files = tmp_path / "file-backup"
    shutil.copytree(store.root / str(org), files)
    restored_name = f"restored_{uuid.uuid4().hex[:8]}"
    restored = await asyncio.to_thread(restore_copy, migrated, restored_name)
    try:
        cookie = await admin_cookie(admin_server, database, tenant)
        status, body = await call_api(
            "POST", f"{admin_server.url}/api/v1/data-subjects/erase", cookie=cookie, origin=admin_server.url,
            json={"email": ADA, "phone": "+44 (20) 7946-0000"},
        )  # fmt: skip
        assert status == 200, body
        receipt = body["receipt"]
        assert receipt["kind"] == "erasure"
        assert receipt["deleted"]["recordings"] == 2 and receipt["deleted"]["calls_anonymised"] == 2
        assert receipt["deleted"]["callbacks"] == 1
        assert sorted(receipt["destroyed_keys"]["data_keys"]) == sorted(str(s.recording_id) for s in ada)
        assert ADA not in json.dumps(receipt) and not mentions_phone(receipt, "79460000")

        # Files gone, keys destroyed, rows anonymised or gone.
        for stored in ada:
            assert not store.path(org, stored.recording_id).exists()
            assert not await key_exists(database, stored.recording_id)
            row = await database.pool.fetchrow("SELECT * FROM calls WHERE id = $1", stored.call_id)
            assert row is not None and row["erased_at"] is not None
            assert [
                row[c] for c in ("visitor_name", "visitor_email", "visitor_phone", "notes", "page_url", "rating")
            ] == [None] * 6
        assert await database.callbacks.get(org, callback.id) is None
        assert await key_exists(database, bob.recording_id)  # nobody else's
        # Webhooks said so, with ids only; the log of what was sent about Ada is gone.
        sent = await database.pool.fetch(
            "SELECT kind, payload FROM webhook_events WHERE organisation_id = $1 ORDER BY id", org
        )
        erased = [json.loads(r["payload"]) for r in sent if r["kind"] == "call.erased"]
        assert sorted(e["call"]["id"] for e in erased) == sorted(str(s.call_id) for s in ada)
        assert [r["kind"] for r in sent if r["kind"] == "callback.erased"] == ["callback.erased"]
        assert ADA not in json.dumps([json.loads(r["payload"]) for r in sent])
        # An audit entry without personal data, pointing at the receipt.
        entry = await database.pool.fetchrow(
            "SELECT * FROM audit_log WHERE organisation_id = $1 AND action = 'subject.erase'", org
        )
        assert entry is not None and str(entry["object_id"]) == receipt["receipt"]

        # The old backup restored and used by a server: Ada's recordings are rows again, and their
        # files are back from the file backup, but nothing decrypts them: the keys are not in it.
        backup = await Database.connect(restored, keystore_dsn=keystore_dsn_for(migrated))
        try:
            old_store = RecordingStore(backup.pool, Keyring(backup.keystore_pool, MASTER_KEY), tmp_path / "restored")
            shutil.copytree(files, old_store.root / str(org))
            for stored in ada:
                record = await old_store.get(org, stored.recording_id)  # type: ignore[arg-type]
                assert record is not None and record.state == "complete"  # the backup predates the erasure
                with pytest.raises(KeyringError, match="destroyed"):
                    await old_store.key(record)
            record = await old_store.get(org, bob.recording_id)  # type: ignore[arg-type]
            assert record is not None
            assert read_plaintext(old_store.path(org, record.id), await old_store.key(record), record.id) == bob.audio
            # And through the server's own player, on the restored database.
            restored_settings = dataclasses.replace(settings, recordings_dir=old_store.root)
            running = await start(restored_settings, backup)
            try:
                cookie = await admin_cookie(running, backup, tenant)
                for stored in ada:
                    status, body = await call_api(
                        "GET", f"{running.url}/api/v1/recordings/{stored.recording_id}/file", cookie=cookie
                    )
                    assert status >= 400 and status != 200
                status, _ = await call_api(
                    "GET", f"{running.url}/api/v1/recordings/{bob.recording_id}/file", cookie=cookie
                )
                assert status == 200
            finally:
                await running.stop()
        finally:
            await backup.close()
    finally:
        await drop(migrated, restored_name)


async def test_export_rectify_and_restrict_change_what_is_shown(
    admin_server: Running, database: Database, tmp_path: Path
) -> None:
    store = admin_server.runner.app[RECORDINGS]
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    url = admin_server.url
    await database.webhooks.create(org, url="https://crm.example/hook", events=list(webhooks.EVENTS), description=None)
    mine = [
        await store_call(database, store, tenant, ended=days_ago(3), email=ADA, name="Ada L", record=True),
        await store_call(database, store, tenant, ended=days_ago(2), email=ADA, name="Ada L"),
    ]
    theirs = await store_call(
        database, store, tenant, ended=days_ago(1), email="bob@example.test", name="Bob", record=True
    )
    callback = await database.callbacks.create(
        org, button_id=tenant.button_id, call_id=None, name="Ada L", email=ADA, phone="+1 555 0100",
        note="evenings please", reason="closed",
    )  # fmt: skip
    cookie = await admin_cookie(admin_server, database, tenant)

    async def export() -> tuple[dict, zipfile.ZipFile]:  # type: ignore[type-arg]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/api/v1/data-subjects/export", json={"email": ADA}, headers={"Cookie": cookie, "Origin": url}
            ) as response,
        ):
            assert response.status == 200 and response.content_type == "application/zip"
            assert "attachment" in response.headers["Content-Disposition"]
            archive = zipfile.ZipFile(io.BytesIO(await response.read()))
        return json.loads(archive.read("data.json")), archive

    data, archive = await export()
    assert sorted(c["id"] for c in data["calls"]) == sorted(str(s.call_id) for s in mine)
    assert {c["form"]["name"] for c in data["calls"]} == {"Ada L"}
    assert all(c["notes"] == "Spoke about an order" and c["rating"] == 4 for c in data["calls"])
    assert [b["id"] for b in data["callback_requests"]] == [str(callback.id)]
    assert data["purposes_and_storage"]["recordings"]["kept_days"] == 90
    assert data["purposes_and_storage"]["calls"]["purpose"]
    (recorded,) = [c for c in data["calls"] if c["recordings"]]
    assert archive.read(recorded["recordings"][0]["file"]) == mine[0].audio
    everything = json.dumps(data) + "".join(archive.namelist())
    assert "bob@example.test" not in everything and str(theirs.call_id) not in everything
    assert str(theirs.recording_id) not in everything

    # Rectify: later exports and webhooks show the corrected name.
    status, body = await call_api(
        "POST", f"{url}/api/v1/data-subjects/rectify", cookie=cookie, origin=url,
        json={"email": ADA, "set": {"name": "Ada Lovelace"}},
    )  # fmt: skip
    assert status == 200 and body["rectified"] == {"calls": 2, "callbacks": 1}
    data, _ = await export()
    assert {c["form"]["name"] for c in data["calls"]} == {"Ada Lovelace"}
    assert data["callback_requests"][0]["name"] == "Ada Lovelace"
    rectified = await database.pool.fetch(
        "SELECT payload FROM webhook_events WHERE organisation_id = $1 AND kind = 'call.rectified'", org
    )
    assert {json.loads(r["payload"])["call"]["visitor"]["name"] for r in rectified} == {"Ada Lovelace"}

    # Restrict: kept, but out of statistics, the calls list, webhooks and playback.
    before = (await database.call_search.stats(org, CallFilter(), group="total"))[0].attempted
    status, body = await call_api(
        "POST", f"{url}/api/v1/data-subjects/restrict", cookie=cookie, origin=url, json={"email": ADA}
    )
    assert status == 200 and body["restricted"] == {"calls": 2, "callbacks": 1}
    assert (await database.call_search.stats(org, CallFilter(), group="total"))[0].attempted == before - 2
    status, body = await call_api("GET", f"{url}/api/v1/calls", cookie=cookie)
    assert status == 200 and [c["id"] for c in body["calls"]] == [str(theirs.call_id)]
    status, body = await call_api("GET", f"{url}/api/v1/recordings/{mine[0].recording_id}/audio", cookie=cookie)
    assert (status, body["error"]) == (409, "restricted")
    assert [c.id for c in await database.callbacks.all(org)] == []
    async with database.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", mine[0].call_id)
        await webhooks.emit(conn, org, "call.ended", mine[0].call_id, webhooks.call_data(row))
        row = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", theirs.call_id)
        await webhooks.emit(conn, org, "call.ended", theirs.call_id, webhooks.call_data(row))
    ended = await database.pool.fetch(
        "SELECT subject FROM webhook_events WHERE organisation_id = $1 AND kind = 'call.ended'", org
    )
    assert [r["subject"] for r in ended] == [theirs.call_id]
    notices = await database.pool.fetch(
        "SELECT subject FROM webhook_events WHERE organisation_id = $1 AND kind = 'call.restricted'", org
    )
    assert sorted(r["subject"] for r in notices) == sorted(s.call_id for s in mine)
    # A new call from the restricted person is restricted from the start.
    new_id = uuid.uuid4()
    await database.calls.create(
        call_id=new_id, organisation_id=org, button_id=tenant.button_id, page_url=None, at=NOW, visitor={"email": ADA}
    )
    assert await database.pool.fetchval("SELECT restricted FROM calls WHERE id = $1", new_id) is True

    # Lifted: back in statistics and playable.
    status, body = await call_api(
        "POST", f"{url}/api/v1/data-subjects/lift-restriction", cookie=cookie, origin=url, json={"email": ADA}
    )
    assert status == 200 and body["lifted"]["calls"] == 3
    status, _ = await call_api("GET", f"{url}/api/v1/recordings/{mine[0].recording_id}/file", cookie=cookie)
    assert status == 200

    # Every request is logged, without the person.
    status, body = await call_api("GET", f"{url}/api/v1/data-subject-requests", cookie=cookie)
    assert status == 200
    assert [r["kind"] for r in body["requests"]][::-1] == [
        "export", "rectify", "export", "restrict", "lift_restriction",
    ]  # fmt: skip
    assert ADA not in json.dumps(body)

    # A person under a legal hold cannot be erased until it is lifted.
    status, body = await call_api(
        "POST", f"{url}/api/v1/legal-holds", cookie=cookie, origin=url, json={"reason": "Claim", "email": ADA}
    )
    assert status == 201
    hold = body["hold"]["id"]
    status, body = await call_api(
        "POST", f"{url}/api/v1/data-subjects/erase", cookie=cookie, origin=url, json={"email": ADA}
    )
    assert (status, body["error"]) == (409, "held") and "legal hold" in body["message"]
    assert await key_exists(database, mine[0].recording_id)
    status, _ = await call_api("DELETE", f"{url}/api/v1/legal-holds/{hold}", cookie=cookie, origin=url)
    assert status == 200
    # A request that names nobody says what is missing.
    status, body = await call_api("POST", f"{url}/api/v1/data-subjects/erase", cookie=cookie, origin=url, json={})
    assert status == 400 and "email" in body["message"]


async def test_terminating_an_organisation_leaves_nothing_of_it(admin_server: Running, database: Database) -> None:
    store = admin_server.runner.app[RECORDINGS]
    tenant, _colleague = await make_tenant(database, agents=2)
    org = tenant.organisation_id
    (other,) = await make_tenant(database)
    await database.webhooks.create(org, url="https://crm.example/hook", events=list(webhooks.EVENTS), description=None)
    for index in range(3):
        await store_call(
            database, store, tenant, ended=days_ago(index + 1), email=f"c{index}@example.test", record=True
        )
    kept = await store_call(database, store, other, ended=days_ago(1), record=True)
    await database.callbacks.create(
        org, button_id=tenant.button_id, call_id=None, name=None, email="x@example.test", phone=None,
        note=None, reason="closed",
    )  # fmt: skip
    cookie = await admin_cookie(admin_server, database, tenant)
    url = admin_server.url
    status, _ = await call_api("GET", f"{url}/api/v1/recordings", cookie=cookie)  # an audit entry
    organisation = await database.accounts.organisation(org)
    assert organisation is not None

    # A hold blocks it; a wrong confirmation too.
    await database.retention.add_hold(org, reason="Audit by the regulator", actor=None)
    status, body = await call_api(
        "POST", f"{url}/api/v1/organisation/terminate", cookie=cookie, origin=url, json={"confirm": organisation.name}
    )
    assert (status, body["error"]) == (409, "held")
    for hold in await database.retention.holds(org, active=True):
        await database.retention.lift_hold(org, hold.id, None)
    status, body = await call_api(
        "POST", f"{url}/api/v1/organisation/terminate", cookie=cookie, origin=url, json={"confirm": "Not it"}
    )
    assert status == 400 and "name" in body["message"]

    before = {table: n for table, n in (await organisation_rows(database.pool, org)).items() if n}
    keys_before = await database.keystore_pool.fetchval(
        "SELECT count(*) FROM data_keys WHERE organisation_id = $1", org
    )
    assert before["calls"] == 3 and before["recordings"] == 3 and before["users"] == 3 and keys_before == 3
    status, body = await call_api(
        "POST", f"{url}/api/v1/organisation/terminate", cookie=cookie, origin=url, json={"confirm": organisation.name}
    )
    assert status == 200, body
    receipt = body["receipt"]
    assert receipt["kind"] == "termination"
    deleted = receipt["deleted"]
    assert {table: deleted[table] for table in before} == before
    assert deleted["data_keys"] == 3 and deleted["files"] == 3 and deleted["organisation_keys"] == 1

    # No row, no file, no key of it remains; the receipt does, and nothing of the other organisation went.
    assert not any((await organisation_rows(database.pool, org)).values())
    for table in ("data_keys", "organisation_keys"):
        assert not await database.keystore_pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE organisation_id = $1", org
        )
    assert not (store.root / str(org)).exists()
    stored_receipt = await database.pool.fetchrow(
        "SELECT * FROM deletion_receipts WHERE id = $1", uuid.UUID(receipt["receipt"])
    )
    assert stored_receipt is not None and json.loads(stored_receipt["counts"]) == deleted
    assert await key_exists(database, kept.recording_id) and await call_exists(database, kept.call_id)
    # The admin's session went with the organisation.
    status, _ = await call_api("GET", f"{url}/api/v1/retention", cookie=cookie)
    assert status == 401


async def test_the_purge_and_termination_commands(database: Database, migrated: str, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    store = recording_store(database, root)
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    old = await store_call(database, store, tenant, ended=days_ago(400), record=True)
    kept = await store_call(database, store, tenant, ended=days_ago(1), record=True)
    extra = {"CALLBUTTON_MASTER_KEY": MASTER_KEY.to_text(), "CALLBUTTON_RECORDINGS_DIR": str(root)}

    dry = await asyncio.to_thread(run_cli, ["purge", "--dry-run", "--org", str(org)], migrated, "", extra)
    assert dry.returncode == 0, dry.stderr
    assert f"{org}: would delete recordings 1, clips 0, calls 1, callbacks 0, audit 0, webhook_log 0" in dry.stdout
    assert await call_exists(database, old.call_id) and await key_exists(database, old.recording_id)

    done = await asyncio.to_thread(run_cli, ["purge", "--org", str(org)], migrated, "", extra)
    assert done.returncode == 0, done.stderr
    assert f"{org}: deleted recordings 1, clips 0, calls 1" in done.stdout and "receipt" in done.stdout
    assert not await call_exists(database, old.call_id) and not await key_exists(database, old.recording_id)
    assert await call_exists(database, kept.call_id)

    organisation = await database.accounts.organisation(org)
    assert organisation is not None
    wrong = await asyncio.to_thread(
        run_cli, ["terminate-org", "--org", str(org), "--confirm", "x"], migrated, "", extra
    )
    assert wrong.returncode == 2 and "--confirm must be the organisation's name" in wrong.stderr
    receipt_file = tmp_path / "receipt.json"
    ended = await asyncio.to_thread(
        run_cli,
        ["terminate-org", "--org", str(org), "--confirm", organisation.name, "-o", str(receipt_file)],
        migrated,
        "",
        extra,
    )
    assert ended.returncode == 0, ended.stderr
    receipt = json.loads(receipt_file.read_text())
    assert (
        receipt["kind"] == "termination" and receipt["deleted"]["calls"] == 1 and receipt["deleted"]["data_keys"] == 1
    )
    assert not any((await organisation_rows(database.pool, org)).values())


async def test_the_server_purges_on_its_schedule(settings: Settings, database: Database, tmp_path: Path) -> None:
    store = recording_store(database, tmp_path / "recordings")
    (tenant,) = await make_tenant(database)
    old = await store_call(database, store, tenant, ended=days_ago(400), record=True)
    recent = await store_call(database, store, tenant, ended=days_ago(1), record=True)
    running = await start(dataclasses.replace(settings, purge_interval=0.5, recordings_dir=store.root), database)
    try:
        for _ in range(100):  # the receipt is written once the organisation's run is through
            if await database.retention.receipts(tenant.organisation_id):
                break
            await asyncio.sleep(0.1)
        assert not await call_exists(database, old.call_id) and not await key_exists(database, old.recording_id)
        assert not store.path(tenant.organisation_id, old.recording_id).exists()  # type: ignore[arg-type]
        assert await call_exists(database, recent.call_id) and await key_exists(database, recent.recording_id)
        (receipt,) = await database.retention.receipts(tenant.organisation_id)
        assert receipt.kind == "purge" and receipt.requested_by is None and receipt.counts["calls"] == 1
    finally:
        await running.stop()


async def test_requests_that_name_nobody_or_carry_unstorable_text_are_refused(
    admin_server: Running, database: Database
) -> None:
    (tenant,) = await make_tenant(database)
    cookie = await admin_cookie(admin_server, database, tenant)
    url = admin_server.url
    for path, body, message in (
        ("/api/v1/data-subjects/restrict", {"phone": "..."}, "not a phone number"),
        ("/api/v1/data-subjects/lookup", {"email": "  ", "phone": "( )"}, "not a phone number"),
        ("/api/v1/data-subjects/lookup", {}, "'email' or 'phone'"),
        ("/api/v1/legal-holds", {"reason": "r", "phone": "..."}, "not a phone number"),
        ("/api/v1/legal-holds", {"reason": "a\u0000b"}, "NUL character"),
        ("/api/v1/legal-holds", {"reason": "a\udadcb"}, "lone surrogate"),
        ("/api/v1/data-subjects/rectify", {"email": ADA, "set": {"name": "x\u0000"}}, "NUL character"),
        ("/api/v1/data-subjects/rectify", {"email": ADA, "set": {"shoe": "42"}}, "unknown field 'shoe'"),
        ("/api/v1/retention", {"audit": 5}, "from 30 to 36500"),
    ):
        method = "PUT" if path.endswith("retention") else "POST"
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                method,
                url + path,
                data=json.dumps(body, ensure_ascii=True).encode(),
                headers={"Cookie": cookie, "Origin": url, "Content-Type": "application/json"},
            ) as response,
        ):
            answer = await response.json()
        assert response.status == 400 and message in answer["message"], (path, body, answer)
    assert await database.retention.holds(tenant.organisation_id) == []


async def test_erasure_reaches_callback_requests_typed_any_case_and_the_calls_before_them(
    database: Database, tmp_path: Path
) -> None:
    store = recording_store(database, tmp_path / "recordings")
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    await database.webhooks.create(org, url="https://crm.example/hook", events=list(webhooks.EVENTS), description=None)
    # A call with an empty form, after which the caller left a callback request, typing their email
    # their own way.
    before = await store_call(database, store, tenant, ended=days_ago(1), record=True)
    callback = await database.callbacks.create(
        org, button_id=tenant.button_id, call_id=before.call_id, name="Ada", email="Ada@Example.TEST", phone=None,
        note="after six", reason="max_wait",
    )  # fmt: skip
    assert callback.email == ADA
    subjects = Subjects(database.pool, store)
    found = await subjects.find(org, Subject.of(ADA, None))
    assert [c["id"] for c in found.calls] == [before.call_id] and len(found.callbacks) == 1

    # A recording still being finished holds the erasure back.
    open_id, sink = await store.begin(organisation_id=org, call_id=before.call_id, started_at=NOW)
    with pytest.raises(SubjectError, match="in progress"):
        await subjects.erase(org, Subject.of(ADA, None), None)
    await asyncio.to_thread(sink.close)
    await store.finish(organisation_id=org, recording_id=open_id, ended_at=NOW, duration_ms=1, sink=sink)

    receipt = await subjects.erase(org, Subject.of("ADA@example.test", None), None)
    assert receipt.counts["callbacks"] == 1 and receipt.counts["calls_anonymised"] == 1
    assert receipt.counts["recordings"] == 2
    assert not await key_exists(database, before.recording_id) and not await key_exists(database, open_id)
    payloads = [
        r["payload"]
        for r in await database.pool.fetch("SELECT payload FROM webhook_events WHERE organisation_id = $1", org)
    ]
    assert payloads and not any("after six" in p or ADA in p for p in payloads)


async def test_a_purge_stopped_part_way_still_leaves_a_receipt_and_orphan_keys_go(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = recording_store(database, tmp_path / "recordings")
    (tenant,) = await make_tenant(database)
    org = tenant.organisation_id
    old = await store_call(database, store, tenant, ended=days_ago(200), record=True)

    async def broken(*args: object) -> None:
        raise RuntimeError("the disk went away")

    purger = Purger(database.pool, store, clock=lambda: NOW)
    monkeypatch.setattr(purger, "_calls_due", broken)
    with pytest.raises(RuntimeError, match="disk"):
        await purger.run(organisation_id=org)
    (receipt,) = await database.retention.receipts(org)
    assert receipt.counts["recordings"] == 1 and receipt.destroyed_keys["data_keys"] == [str(old.recording_id)]

    # A key whose recording never got its row (a crash between the two databases), an hour old, and
    # the keys of an organisation that is gone: the next full run destroys them.
    stray = uuid.uuid4()
    await store.keyring.new_data_key(org, stray)
    gone = uuid.uuid4()
    await store.keyring.new_data_key(gone, uuid.uuid4())
    await database.keystore_pool.execute(
        "UPDATE data_keys SET created_at = now() - interval '2 hours' WHERE organisation_id = ANY($1::uuid[])",
        [org, gone],
    )
    fresh = uuid.uuid4()
    await store.keyring.new_data_key(org, fresh)  # being opened right now: left alone
    await Purger(database.pool, store, clock=lambda: NOW).run()
    assert not await key_exists(database, stray) and await key_exists(database, fresh)
    assert await store.keyring.organisation_key_ids(gone) == []


async def test_the_audit_logs_retention_switch_is_not_for_a_role_merely_granted_delete(database: Database) -> None:
    (tenant,) = await make_tenant(database)
    await database.audit.add(organisation_id=tenant.organisation_id, action="test", object_type="test", object_id=None)
    role = f"cb_server_{uuid.uuid4().hex[:8]}"
    async with database.pool.acquire() as conn:
        await conn.execute(f"CREATE ROLE {role}")
        try:
            await conn.execute(f"GRANT SELECT, INSERT, DELETE ON audit_log TO {role}")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL ROLE {role}")
                    await conn.execute("SET LOCAL callbutton.audit_retention = 'on'")
                    await conn.execute("DELETE FROM audit_log WHERE organisation_id = $1", tenant.organisation_id)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL ROLE {role}")
                    await conn.fetchval("SELECT purge_audit_log($1, now(), 10, false)", tenant.organisation_id)
        finally:
            await conn.execute(f"REVOKE ALL ON audit_log FROM {role}")
            await conn.execute(f"DROP ROLE {role}")
    assert (
        await database.pool.fetchval(
            "SELECT count(*) FROM audit_log WHERE organisation_id = $1", tenant.organisation_id
        )
        == 1
    )


async def test_one_purge_at_a_time(admin_server: Running, database: Database, tmp_path: Path) -> None:
    (tenant,) = await make_tenant(database)
    store = admin_server.runner.app[RECORDINGS]
    cookie = await admin_cookie(admin_server, database, tenant)
    async with database.pool.acquire() as other:  # another process's run, say
        assert await other.fetchval("SELECT pg_try_advisory_lock($1)", 0x70757267)
        try:
            with pytest.raises(PurgeBusy):
                await Purger(database.pool, store).run()
            status, body = await call_api(
                "POST", f"{admin_server.url}/api/v1/retention/purge", cookie=cookie, origin=admin_server.url,
                json={"dry_run": False},
            )  # fmt: skip
            assert (status, body["error"]) == (409, "busy")
            (preview,) = await Purger(database.pool, store).run(organisation_id=tenant.organisation_id, dry_run=True)
            assert preview.receipt is None  # a dry run changes nothing, so it does not wait
        finally:
            await other.execute("SELECT pg_advisory_unlock($1)", 0x70757267)
    status, body = await call_api(
        "POST", f"{admin_server.url}/api/v1/retention/purge", cookie=cookie, origin=admin_server.url,
        json={"dry_run": False},
    )  # fmt: skip
    assert status == 200, body
