"""Operators' recording and key commands: ``callbutton recording verify|decrypt|recover`` and
``callbutton keys generate|rotate``. Each prints what it found and returns a process exit code."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import uuid
from pathlib import Path

from media.recording_file import RecordingFormatError, duration_seconds, whole_pages
from server.config import Settings
from server.masterkey import load_master_key, read_key_file, write_key_file
from storage.crypto_stream import StreamError, TruncatedError
from storage.db import Database
from storage.keys import Keyring, MasterKey
from storage.recordings import SUFFIX, RecordingRecord, RecordingStore, read_plaintext, rewrite_complete


class ToolError(Exception):
    """The command cannot do what was asked; the message says why."""


def store_for(settings: Settings, database: Database) -> RecordingStore:
    return RecordingStore(
        database.pool, Keyring(database.keystore_pool, load_master_key(settings)), settings.recordings_root
    )


async def resolve(store: RecordingStore, target: str) -> tuple[RecordingRecord, Path]:
    """A recording named by its id, or by its file (``<id>.cbrec``, wherever it was copied to)."""
    path: Path | None = None
    text = target
    if target.endswith(SUFFIX) or os.sep in target:
        path = Path(target)
        text = path.name.removesuffix(SUFFIX)
    try:
        recording_id = uuid.UUID(text)
    except ValueError:
        raise ToolError(f"{target!r} is neither a recording id nor a recording file (<id>{SUFFIX})") from None
    record = await store.find(recording_id)
    if record is None:
        raise ToolError(f"no recording {recording_id} in this database")
    path = path or store.path(record.organisation_id, record.id)
    if not path.exists():
        raise ToolError(f"the file of recording {recording_id} is missing: {path}")
    return record, path


def _seconds(plaintext: bytes) -> float:
    try:
        return duration_seconds(plaintext)
    except RecordingFormatError as exc:
        raise ToolError(f"the recording decrypts but is not a playable recording: {exc}") from None


def _refuse_live(record: RecordingRecord) -> None:
    if record.state == "recording":
        raise ToolError(
            f"recording {record.id} is still being recorded (or its server died: the next start marks it "
            "truncated); wait for the call to end"
        )


async def verify(store: RecordingStore, target: str) -> int:
    record, path = await resolve(store, target)
    _refuse_live(record)
    key = await store.key(record)
    try:
        plaintext = await asyncio.to_thread(read_plaintext, path, key, record.id)
    except TruncatedError as exc:
        print(f"recording {record.id}: TRUNCATED: {exc}; `callbutton recording recover {record.id}` makes it playable")
        return 1
    except StreamError as exc:
        print(f"recording {record.id}: INVALID: {exc}")
        return 1
    seconds = await asyncio.to_thread(_seconds, plaintext)
    print(
        f"recording {record.id}: every segment authenticates; {len(plaintext)} bytes of Ogg/Opus, "
        f"{seconds:.2f} s, state {record.state}"
    )
    return 0


async def decrypt(database: Database, store: RecordingStore, target: str, output: Path, *, partial: bool) -> int:
    record, path = await resolve(store, target)
    _refuse_live(record)
    if output.exists():
        raise ToolError(f"{output} exists; choose another output file")
    key = await store.key(record)
    try:
        plaintext = await asyncio.to_thread(read_plaintext, path, key, record.id)
    except TruncatedError as exc:
        if not partial:
            raise ToolError(
                f"recording {record.id} is truncated ({exc}); pass --partial to write what survived, "
                f"or run `callbutton recording recover {record.id}` first"
            ) from None
        plaintext = await asyncio.to_thread(read_plaintext, path, key, record.id, torn_tail=True)
        plaintext = plaintext[: whole_pages(plaintext)]
    except StreamError as exc:
        raise ToolError(f"recording {record.id} does not decrypt: {exc}") from None
    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(plaintext)
    await database.audit.add(
        organisation_id=record.organisation_id,
        action="recording.decrypt",
        object_type="recording",
        object_id=record.id,
        user_agent=_operator(),
    )
    print(f"recording {record.id}: wrote {len(plaintext)} bytes to {output} (Ogg, stream 0 visitor, stream 1 agent)")
    return 0


async def recover(store: RecordingStore, target: str) -> int:
    """Turn a file that lost its final segment (a crash) into a complete one, marked truncated."""
    record, _ = await resolve(store, target)
    _refuse_live(record)
    seconds = await recover_file(store, record)
    if seconds is None:
        print(f"recording {record.id}: complete already, nothing to recover")
    else:
        print(f"recording {record.id}: recovered, {seconds:.2f} s survived; marked truncated")
    return 0


async def recover_file(store: RecordingStore, record: RecordingRecord) -> float | None:
    """Rewrite ``record``'s file, which lost its final segment, as a complete file of what survived
    (to the last whole Ogg page), and mark the recording truncated with that length: the seconds
    that survived, or None when the file was complete already. A server runs this at start for the
    recordings a crash left open. Raises :class:`ToolError` when the file is damaged otherwise."""
    path = store.path(record.organisation_id, record.id)
    key = await store.key(record)
    try:
        await asyncio.to_thread(read_plaintext, path, key, record.id)
    except TruncatedError:
        pass
    except StreamError:
        pass  # perhaps a segment cut short mid-write: the recovery read below tells
    else:
        return None
    try:
        survived = await asyncio.to_thread(read_plaintext, path, key, record.id, torn_tail=True)
    except StreamError as exc:
        raise ToolError(f"recording {record.id} is damaged, not just cut short: {exc}") from None
    survived = survived[: whole_pages(survived)]
    seconds = await asyncio.to_thread(_seconds, survived) if survived else 0.0
    size, digest = await asyncio.to_thread(rewrite_complete, path, survived, key, record.id)
    await store.set_recovered(record, duration_ms=round(seconds * 1000), byte_size=size, sha256=digest)
    return seconds


def _operator() -> str:
    """Who ran the command, as far as this machine knows (the audit entry's 'who' for the CLI)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"callbutton CLI, {user}@{socket.gethostname()}"


def generate(output: Path | None) -> int:
    key = MasterKey.generate()
    if output is None:
        print(key.to_text())
    else:
        if output.exists():
            raise ToolError(f"{output} exists; a master key is never overwritten")
        write_key_file(output, key)
        print(f"wrote a new master key ({key.id}) to {output}")
    return 0


async def rotate(settings: Settings, database: Database, new_key_file: Path) -> int:
    """Re-wrap every organisation and data key under the key in ``new_key_file``."""
    old = load_master_key(settings)
    new = read_key_file(new_key_file)
    if new.id == old.id:
        raise ToolError("the new master key is the configured one; generate a new key first")
    keyring = Keyring(database.keystore_pool, old)
    await keyring.check_master_key()
    report = await keyring.rotate(new)
    print(
        f"rotated: {report.organisations} organisation key(s) replaced, {report.data_keys} recording key(s) "
        f"re-wrapped, all under master key {report.new_master_key_id}.\n"
        f"Now configure CALLBUTTON_MASTER_KEY_FILE={new_key_file} and restart every server; the old "
        "master key is no longer needed."
    )
    return 0
