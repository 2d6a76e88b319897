"""A server killed with SIGKILL in the middle of a recorded call: at the next start the call is
closed as failed and the recording recovered (playable, marked truncated), with everything up to
about a second before the kill. And a server stopped with SIGTERM mid-call: it drains, then ends
the call with its recording complete."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from media.recording_file import decode_tracks
from media.synthetic import dominant_frequency
from storage.db import Database
from storage.keys import Keyring
from storage.recordings import RecordingStore, read_plaintext
from tests.conftest import answered_call_for, make_tenant
from tests.run_keys import MASTER_KEY
from tests.test_call import wait_for_row

ROOT = Path(__file__).parent.parent


class ServerProcess:
    """``callbutton serve`` in a process of its own, on a free port, its JSON log lines kept."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.started: dict[str, Any] = {}  # its server.started line
        self.events: list[dict[str, Any]] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", "serve", env=self.env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        stderr = self.process.stderr
        assert stderr is not None
        line = b""
        try:
            while not self.url:
                line = await asyncio.wait_for(stderr.readline(), 60)
                assert line, "the server exited before it started"
                event = json.loads(line)
                if event.get("event") == "server.started":
                    self.url, self.started = event["url"], event
        except (AssertionError, ValueError, TimeoutError) as error:
            # Not started: say what it printed (a traceback is not JSON), and leave nothing running.
            if self.process.returncode is None:
                self.process.kill()
            rest = await asyncio.wait_for(stderr.read(), 30)
            await self.process.wait()
            printed = (line + rest).decode(errors="replace")
            raise AssertionError(f"the server did not start ({error!r}); it printed:\n{printed}") from error
        self._reader = asyncio.create_task(self._read(stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            with contextlib.suppress(ValueError):
                self.events.append(json.loads(line))

    async def kill(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        await asyncio.wait_for(self.process.wait(), 30)
        if self._reader is not None:
            await self._reader

    async def stop(self) -> None:
        """SIGTERM, and SIGKILL if it has not stopped within 30 s; nothing if it is not running."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            await self.kill(signal.SIGTERM)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@pytest.fixture
async def environment(migrated: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update(
        {
            "CALLBUTTON_DATABASE_URL": migrated,
            "CALLBUTTON_DATA_DIR": str(tmp_path),
            "CALLBUTTON_PORT": "0",
            "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1",
            "CALLBUTTON_MASTER_KEY": MASTER_KEY.to_text(),
            "CALLBUTTON_LOG_FORMAT": "json",
        }
    )
    yield env


async def test_sigkill_mid_call_leaves_a_recoverable_truncated_recording(
    environment: dict[str, str], database: Database, tmp_path: Path
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    first = ServerProcess(environment)
    await first.start()
    visitor, agent, call_id = await answered_call_for(first.url, tenant)
    try:
        answered = time.monotonic()
        await asyncio.sleep(4.0)
        talked = time.monotonic() - answered
        await first.kill(signal.SIGKILL)
    finally:
        await visitor.close()
        await agent.close()

    # Nothing closed the call or the recording: the process died with them.
    row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
    assert row is not None and row.state == "answered"

    second = ServerProcess(environment)
    await second.start()
    try:
        row = await wait_for_row(database, tenant, call_id, "ended")
        assert row.end_reason == "failed"
        store = RecordingStore(database.pool, Keyring(database.keystore_pool, MASTER_KEY), tmp_path / "recordings")
        (record,) = await store.for_call(tenant.organisation_id, uuid.UUID(call_id))
        assert record.state == "truncated"

        # The start recovered it: what survived is a complete file again, which verifies.
        cli_env = {**environment, "CALLBUTTON_LOG_FORMAT": "console", "CALLBUTTON_LOG_LEVEL": "warning"}
        verify = subprocess.run(
            [sys.executable, "-m", "server", "recording", "verify", str(record.id)],
            env=cli_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0 and "every segment authenticates" in verify.stdout, verify.stdout
        recover = subprocess.run(
            [sys.executable, "-m", "server", "recording", "recover", str(record.id)],
            env=cli_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert recover.returncode == 0 and "complete already" in recover.stdout, recover.stdout + recover.stderr

        recovered = await store.get(tenant.organisation_id, record.id)
        assert recovered is not None and recovered.state == "truncated"
        plaintext = read_plaintext(store.path(tenant.organisation_id, record.id), await store.key(recovered), record.id)
        tracks = decode_tracks(plaintext)
        # Everything but about the last second before the kill survived, both parties in it.
        assert talked - 1.2 <= tracks.duration_seconds <= talked + 0.2, (tracks.duration_seconds, talked)
        assert abs((dominant_frequency(tracks.visitor[: len(tracks.visitor) // 2]) or 0) - 440) < 15
        assert abs((dominant_frequency(tracks.agent[: len(tracks.agent) // 2]) or 0) - 880) < 15
        assert abs(recovered.duration_ms / 1000 - tracks.duration_seconds) < 0.1
    finally:
        await second.kill(signal.SIGTERM)


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
async def test_sigterm_mid_call_drains_then_ends_it_with_a_complete_recording(
    environment: dict[str, str], database: Database, tmp_path: Path, event_loop: str
) -> None:
    """Issue 8, test 2: a real SIGTERM to ``callbutton serve`` during a recorded call; on either
    event loop (CALLBUTTON_EVENT_LOOP)."""
    (tenant,) = await make_tenant(database, recording=True)
    drain = 3.0
    server = ServerProcess({**environment, "CALLBUTTON_DRAIN_TIMEOUT": str(drain), "CALLBUTTON_EVENT_LOOP": event_loop})
    await server.start()
    assert server.started["event_loop"] == event_loop
    visitor, agent, call_id = await answered_call_for(server.url, tenant)
    try:
        await visitor.hears(880.0)
        await agent.hears(440.0)
        signalled = time.monotonic()
        await server.kill(signal.SIGTERM)  # waits for the process to exit
        took = time.monotonic() - signalled
        # Both parties were told why the call ended before their sockets closed.
        await visitor.expect("call_state", call_id=call_id, state="ended", reason="shutdown")
        await agent.expect("call_state", call_id=call_id, state="ended")
    finally:
        await visitor.close()
        await agent.close()
    assert server.process is not None and server.process.returncode == 0
    assert drain <= took < drain + 10, took  # it waited for the call, then no longer than it had to

    row = await database.calls.get(tenant.organisation_id, uuid.UUID(call_id))
    assert row is not None and row.state == "ended" and row.end_reason == "shutdown"
    kinds = [e.kind for e in await database.calls.events(tenant.organisation_id, uuid.UUID(call_id))]
    assert kinds[0] == "created" and kinds[-2:] == ["answered", "ended"], kinds
    store = RecordingStore(database.pool, Keyring(database.keystore_pool, MASTER_KEY), tmp_path / "recordings")
    (record,) = await store.for_call(tenant.organisation_id, uuid.UUID(call_id))
    assert record.state == "complete"
    # The final segment is there: the file decrypts whole, without allowing truncation.
    tracks = decode_tracks(
        read_plaintext(store.path(tenant.organisation_id, record.id), await store.key(record), record.id)
    )
    assert tracks.duration_seconds >= drain
    assert abs((dominant_frequency(tracks.visitor) or 0) - 440) < 15
    assert abs((dominant_frequency(tracks.agent) or 0) - 880) < 15
