"""The key hierarchy: wrapping bound to what is wrapped, the master key checked at start, rotation."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from media.recording_file import decode_tracks
from media.synthetic import dominant_frequency
from server.app import start
from server.config import ConfigError, Settings
from server.masterkey import load_master_key
from storage import migrations
from storage.db import Database, keystore_dsn_for
from storage.keys import Keyring, KeyringError, MasterKey, _data_key_aad, _organisation_key_aad, wrap
from storage.localpg import find_bin_dir
from storage.recordings import RecordingStore, read_plaintext
from tests.conftest import login_cookie, make_admin, make_tenant
from tests.test_recording import finished_recording, recorded_call

ROOT = Path(__file__).parent.parent


def test_master_keys_are_read_checked_and_never_printed() -> None:
    key = MasterKey.generate()
    assert MasterKey.from_text(key.to_text()) == key
    assert MasterKey.from_text(key.to_text() + "=\n") == key
    assert key.to_text() not in repr(key) and key.id in repr(key)
    with pytest.raises(KeyringError, match="not base64"):
        MasterKey.from_text("not base64 at all!")
    with pytest.raises(KeyringError, match="32 bytes"):
        MasterKey.from_text("c2hvcnQ")


async def test_a_wrapped_key_only_unwraps_for_its_own_recording(fresh_database: tuple[str, Database]) -> None:
    _, database = fresh_database
    (tenant,) = await make_tenant(database)
    keyring = Keyring(database.keystore_pool, MasterKey.generate())
    first, second = uuid.uuid4(), uuid.uuid4()
    key = await keyring.new_data_key(tenant.organisation_id, first)
    # The same wrapped key copied onto another recording's row (in the key store) does not unwrap there.
    await database.keystore_pool.execute(
        "INSERT INTO data_keys (recording_id, organisation_id, organisation_key_id, wrapped_key) "
        "VALUES ($1, $2, $3, $4)",
        second,
        tenant.organisation_id,
        key.organisation_key_id,
        key.wrapped,
    )
    assert await keyring.data_key(tenant.organisation_id, first) == key.ikm
    with pytest.raises(KeyringError, match="does not unwrap"):
        await keyring.data_key(tenant.organisation_id, second)
    # A server started with another master key refuses, naming both keys.
    other = Keyring(database.keystore_pool, MasterKey.generate())
    with pytest.raises(KeyringError, match=f"wrapped by master key {keyring.master_key_id}"):
        await other.check_master_key()


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


async def test_rotation_rewraps_every_key_and_the_old_master_key_is_no_longer_needed(
    fresh_database: tuple[str, Database], settings: Settings, tmp_path: Path
) -> None:
    dsn, database = fresh_database
    old = MasterKey.generate()
    settings = dataclasses.replace(settings, master_key=old.to_text(), recordings_dir=tmp_path / "recordings")
    (tenant,) = await make_tenant(database, recording=True)
    running = await start(settings, database)
    try:
        call_id = await recorded_call(running, tenant, talk_seconds=1.5)
        store = RecordingStore(database.pool, Keyring(database.keystore_pool, old), tmp_path / "recordings")
        record = await finished_recording(store, tenant, call_id)
    finally:
        await running.stop()
    path = store.path(tenant.organisation_id, record.id)
    ciphertext_before = path.read_bytes()

    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update(
        {
            "CALLBUTTON_DATABASE_URL": dsn,
            "CALLBUTTON_RECORDINGS_DIR": str(tmp_path / "recordings"),
            "CALLBUTTON_LOG_LEVEL": "warning",
        }
    )
    new_file = tmp_path / "new-master.key"
    generated = cli(["keys", "generate", "-o", str(new_file)], env)
    assert generated.returncode == 0 and oct(new_file.stat().st_mode & 0o777) == "0o600"
    rotated = cli(
        ["keys", "rotate", "--new-master-key-file", str(new_file)], {**env, "CALLBUTTON_MASTER_KEY": old.to_text()}
    )
    assert rotated.returncode == 0, rotated.stderr
    assert "1 recording key(s) re-wrapped" in rotated.stdout and "no longer needed" in rotated.stdout

    # The audio was not re-encrypted; only keys changed.
    assert path.read_bytes() == ciphertext_before
    # Nothing in the database unwraps with the old key any more.
    with pytest.raises(KeyringError):
        await Keyring(database.keystore_pool, old).data_key(tenant.organisation_id, record.id)
    retired = await database.keystore_pool.fetch(
        "SELECT wrapped_key FROM organisation_keys WHERE retired_at IS NOT NULL"
    )
    assert retired and all(r["wrapped_key"] == b"" for r in retired)

    # With only the new key configured, the recording verifies and plays.
    new_env = {**env, "CALLBUTTON_MASTER_KEY_FILE": str(new_file)}
    verified = cli(["recording", "verify", str(record.id)], new_env)
    assert verified.returncode == 0 and "every segment authenticates" in verified.stdout, (
        verified.stdout + verified.stderr
    )
    new = MasterKey.from_text(new_file.read_text())
    running = await start(dataclasses.replace(settings, master_key="", master_key_file=new_file), database)
    try:
        admin = await login_cookie(running.url, *await make_admin(database, tenant.organisation_id))
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{running.url}/api/v1/recordings/{record.id}/file", headers={"Cookie": admin}) as got:
                assert got.status == 200
                tracks = decode_tracks(await got.read())
        assert abs((dominant_frequency(tracks.visitor) or 0) - 440) < 15
        # New recordings are made under the new hierarchy too.
        call_id = await recorded_call(running, tenant, talk_seconds=0.5)
        store = RecordingStore(database.pool, Keyring(database.keystore_pool, new), tmp_path / "recordings")
        second = await finished_recording(store, tenant, call_id)
        assert read_plaintext(store.path(tenant.organisation_id, second.id), await store.key(second), second.id)
    finally:
        await running.stop()

    # The old key no longer starts the server: it says which key the database needs.
    with pytest.raises(KeyringError, match=f"wrapped by master key {new.id}"):
        await start(settings, database)


def test_production_refuses_to_start_without_a_master_key_and_development_makes_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="production mode needs a master key"):
        load_master_key(Settings(env="production", data_dir=tmp_path))
    generated = load_master_key(Settings(data_dir=tmp_path))
    key_file = tmp_path / "master.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert load_master_key(Settings(data_dir=tmp_path)) == generated  # kept for the next start
    configured = MasterKey.generate()
    assert load_master_key(Settings(env="production", master_key=configured.to_text())) == configured
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({"CALLBUTTON_MASTER_KEY": "x", "CALLBUTTON_MASTER_KEY_FILE": "/x"})


async def test_the_master_key_never_reaches_the_database_or_the_logs(
    fresh_database: tuple[str, Database], settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dsn, database = fresh_database
    key = MasterKey.generate()
    settings = dataclasses.replace(settings, master_key=key.to_text(), recordings_dir=tmp_path / "recordings")
    (tenant,) = await make_tenant(database, recording=True)
    caplog.set_level(logging.DEBUG)
    running = await start(settings, database)
    try:
        call_id = await recorded_call(running, tenant, talk_seconds=0.5)
        await finished_recording(
            RecordingStore(database.pool, Keyring(database.keystore_pool, key), tmp_path / "recordings"),
            tenant,
            call_id,
        )
    finally:
        await running.stop()
    main, keystore = (
        subprocess.run(
            [str(find_bin_dir() / "pg_dump"), "--data-only", "--inserts", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for name in (dsn, keystore_dsn_for(dsn))
    )
    assert "INSERT INTO public.recordings" in main and "INSERT INTO public.data_keys" not in main
    assert "INSERT INTO public.organisation_keys" in keystore and "INSERT INTO public.data_keys" in keystore
    dump = main + keystore
    for form in (key.to_text(), key.key.hex(), base64.b64encode(key.key).decode()):
        assert form not in dump
        assert form not in caplog.text
    assert key.id in caplog.text  # the fingerprint is what identifies it


async def test_recordings_started_during_a_rotation_stay_readable(
    fresh_database: tuple[str, Database], tmp_path: Path
) -> None:
    """A rotation and new recordings of the same organisation, interleaved: every data key ends up
    wrapped by a live organisation key under the new master key."""
    _, database = fresh_database
    (tenant,) = await make_tenant(database)
    old, new = MasterKey.generate(), MasterKey.generate()
    store = RecordingStore(database.pool, Keyring(database.keystore_pool, old), tmp_path)
    call_id = uuid.uuid4()
    await database.pool.execute(
        "INSERT INTO calls (id, organisation_id, button_id, state, created_at) VALUES ($1, $2, $3, 'created', now())",
        call_id,
        tenant.organisation_id,
        tenant.button_id,
    )

    async def begin() -> uuid.UUID | None:
        try:
            recording_id, sink = await store.begin(
                organisation_id=tenant.organisation_id, call_id=call_id, started_at=datetime.datetime.now(datetime.UTC)
            )
        except KeyringError:
            return None  # started after the rotation with the old key: refused, nothing stored
        sink.close()
        return recording_id

    await begin()  # the organisation has a key before the rotation starts
    results = await asyncio.gather(*(begin() for _ in range(10)), Keyring(database.keystore_pool, old).rotate(new))
    made = [r for r in results[:-1] if r is not None]
    rows = await database.pool.fetch("SELECT id FROM recordings WHERE organisation_id = $1", tenant.organisation_id)
    assert len(rows) == len(made) + 1  # a refused start left no row behind
    after = Keyring(database.keystore_pool, new)
    for row in rows:
        assert len(await after.data_key(tenant.organisation_id, row["id"])) == 32


async def test_keys_an_older_release_kept_in_the_main_database_move_to_the_key_store(migrated: str) -> None:
    """Before migration 0007, keys lived in the main database: migrating moves them to the key store
    and empties them there, and the recordings they unlock still decrypt."""
    name = f"legacy_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(migrated)
    await admin.execute(f'CREATE DATABASE "{name}"')
    host_part, _, query = migrated.partition("?")
    dsn = host_part.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await migrations.migrate(conn, migrations.load_migrations()[:6])
            organisation_id = await conn.fetchval("INSERT INTO organisations (name) VALUES ('Old') RETURNING id")
            call_id = await conn.fetchval(
                "INSERT INTO calls (organisation_id, state, created_at) VALUES ($1, 'created', now()) RETURNING id",
                organisation_id,
            )
            master, organisation_key, ikm = MasterKey.generate(), os.urandom(32), os.urandom(32)
            key_id, recording_id = uuid.uuid4(), uuid.uuid4()
            await conn.execute(
                "INSERT INTO organisation_keys (id, organisation_id, wrapped_key, master_key_id) "
                "VALUES ($1, $2, $3, $4)",
                key_id,
                organisation_id,
                wrap(master.key, organisation_key, _organisation_key_aad(organisation_id, key_id)),
                master.id,
            )
            await conn.execute(
                "INSERT INTO recordings (id, organisation_id, call_id, state, started_at, organisation_key_id, "
                "wrapped_key) VALUES ($1, $2, $3, 'complete', now(), $4, $5)",
                recording_id,
                organisation_id,
                call_id,
                key_id,
                wrap(organisation_key, ikm, _data_key_aad(recording_id)),
            )
        finally:
            await conn.close()
        database = await Database.connect(dsn, min_size=1, max_size=2)
        try:
            await database.migrate()
            assert await Keyring(database.keystore_pool, master).data_key(organisation_id, recording_id) == ikm
            assert await database.pool.fetchval("SELECT count(*) FROM recordings WHERE wrapped_key IS NOT NULL") == 0
            assert await database.pool.fetchval("SELECT count(*) FROM legacy_organisation_keys") == 0
            await database.migrate()  # again: nothing more to move, nothing lost
            assert await Keyring(database.keystore_pool, master).data_key(organisation_id, recording_id) == ikm
        finally:
            await database.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}_keys" WITH (FORCE)')
        await admin.close()
