"""The recording of one call: its recorder, its encrypted file, and how the two come together.

Recording starts the moment the call is answered (the recorder takes packets at once); the file
and its key need a database round trip, so they are opened alongside, and the recorder holds what
arrives meanwhile. ``finish`` waits for the opening, finishes the file and completes the row. When
the recording cannot be opened (database down, disk full) the call goes on unrecorded, and that is
logged.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from media.recorder import MuxWorker, Recorder
from storage.outbox import Outbox
from storage.recordings import EncryptedFile, RecordingStore

log = structlog.get_logger(__name__)

RECORDING_STARTED = "recording.started"
RECORDING_FINISHED = "recording.finished"
RECORDING_UNAVAILABLE = "recording.unavailable"


@dataclass
class RecordingStats:
    """What the server's recordings did since it started (for its metrics)."""

    opened: int = 0
    #: could not be opened (no key store, no disk, no database): the call went on unrecorded
    unavailable: int = 0
    complete: int = 0
    truncated: int = 0
    bytes: int = 0
    packets_dropped: int = 0


class CallRecording:
    def __init__(
        self,
        *,
        store: RecordingStore,
        mux: MuxWorker,
        organisation_id: uuid.UUID,
        call_id: uuid.UUID,
        call_row_stored: Callable[[], Awaitable[None]],
        call_stored: Callable[[], Awaitable[None]],
        outbox: Outbox,
        stats: RecordingStats | None = None,
        on_opened: Callable[[float], None] | None = None,
    ) -> None:
        """``call_row_stored`` waits until the call's own row is written (the recording's row refers
        to it, and call writes are queued behind the call, not waited for), ``call_stored`` until all
        of the call's writes so far are. The file opens after the first: under a backlog of writes
        the call's later ones queue behind it once each, seconds at 128 calls, and what the recorder
        takes meanwhile is held in memory. ``on_opened`` hears how long the file took to open."""
        self.recorder = Recorder(mux)
        self.recording_id: uuid.UUID | None = None
        self._store = store
        self._organisation_id = organisation_id
        self._call_id = call_id
        self._log = log.bind(call_id=str(call_id), org_id=str(organisation_id))
        self._opening: asyncio.Task[EncryptedFile | None] | None = None
        self._call_row_stored = call_row_stored
        self._call_stored = call_stored
        self._outbox = outbox
        self._stats = stats if stats is not None else RecordingStats()
        self._on_opened = on_opened

    def start(self) -> None:
        """Open the file (in the background); the recorder must already be taking packets."""
        self._opening = asyncio.create_task(self._open(datetime.datetime.now(datetime.UTC)), name="recording-open")

    async def _open(self, started_at: datetime.datetime) -> EncryptedFile | None:
        began = time.monotonic()
        try:
            await self._call_row_stored()
            self.recording_id, sink = await self._store.begin(
                organisation_id=self._organisation_id, call_id=self._call_id, started_at=started_at
            )
        except Exception:
            self._stats.unavailable += 1
            self._log.exception(RECORDING_UNAVAILABLE)
            return None
        self._stats.opened += 1
        self.recorder.attach(sink)
        took = time.monotonic() - began
        self._log.info(RECORDING_STARTED, recording_id=str(self.recording_id), opened_ms=round(took * 1000))
        if self._on_opened is not None:
            self._on_opened(took)
        return sink

    async def finish(self) -> None:
        sink = await self._opening if self._opening is not None else None
        result = await self.recorder.close()
        if sink is None or self.recording_id is None:
            return
        # Counted before the row says so: whoever sees the row finished sees it counted.
        if result.error is None:
            self._stats.complete += 1
        else:
            self._stats.truncated += 1
        self._stats.bytes += sink.size
        self._stats.packets_dropped += result.dropped
        recording_id, ended_at = self.recording_id, datetime.datetime.now(datetime.UTC)
        state = "complete" if result.error is None else "truncated"
        # After the call's own events (its end among them): webhook receivers hear call.ended first.
        await self._call_stored()
        # Through the outbox: finishing twice is harmless (only a recording still being written is
        # finished), so a retry after a lost commit changes nothing.
        await self._outbox.write(
            "recording finished",
            lambda: self._store.finish(
                organisation_id=self._organisation_id,
                recording_id=recording_id,
                ended_at=ended_at,
                duration_ms=result.duration_ms,
                sink=sink,
                state=state,
            ),
            recording_id=str(recording_id),
            call_id=str(self._call_id),
            state=state,
            duration_ms=result.duration_ms,
        )
        self._log.info(
            RECORDING_FINISHED,
            recording_id=str(self.recording_id),
            duration_ms=result.duration_ms,
            packets=result.packets,
            dropped=result.dropped,
            late=result.late,
            before_start=result.before_start,
            bytes=sink.size,
            error=result.error,
        )
