"""A retention purge of 100,000 expired calls with recordings while calls go on: does their audio keep flowing?

Seeds one organisation with N ended calls from about 400 days ago, each with a finished recording
(its row, a small file under the recordings root, its data key in the key store), so that the
default retention (recordings 90 days, calls 365) makes every one of them due. Starts the real
server in this process (``server.app.start``, its own purge schedule off) and, from a second
process, keeps a few synthetic calls going through it (visitor and agent aiortc peers sending
tones, as ``callbutton loadtest`` does; the button records), plus a short probe call every few
seconds. Then measures the same things in two windows of one run:

- baseline: the calls alone, for ``--baseline`` seconds;
- purge: ``Purger(...).run()`` on the server's own pool and event loop, as the server's schedule
  runs it (batch 500, 10 ms pause between batches), while the calls go on.

Per party of every standing call: RTP packets received per second, loss, the largest gap between
two received packets, and the share of 20 ms frames carrying the partner's tone (decoded after
the run); on the server's event loop, how late a 10 ms timer fires; for probe calls, accept ->
first audio. Printed: what the purge removed (rows, files, keys), its wall time and rate, and
every figure for both windows with the purge / baseline ratios. Afterwards the organisation must
hold no call, recording, data key or file (checked here, not timed).

    .venv/bin/python bench/purge.py [--calls 100000] [--live 5] [--baseline 15] [--dsn URL]

``--dsn`` (default ``CALLBUTTON_DATABASE_URL`` or ``CALLBUTTON_TEST_DATABASE_URL``) is a server
the run creates a throwaway database in (and its ``_keys`` key store), both dropped at the end;
without one a throwaway local cluster is started. All traffic stays on 127.0.0.1. Results go in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import av
import numpy as np
from aiortc.rtp import RtpPacket
from common import throwaway_database

from loadtest.clients import ProtocolFailure, SyntheticAgent, SyntheticVisitor
from loadtest.peer import Impairment, LoadPeer, Reception
from loadtest.quality import tone_share
from loadtest.runner import CallResult, Options, Run, tones
from media.aiortc_seam import pin_host_addresses
from server import auth, logs
from server.app import settle_heap, start
from server.config import Settings
from storage.db import Database
from storage.keys import Keyring, MasterKey
from storage.localpg import server_for
from storage.recordings import SUFFIX, RecordingStore
from storage.retention import Purger, PurgeReport

ORIGIN = "http://bench.example.test"
PASSWORD = "bench password 123"
CHUNK = 50_000
FILE_BYTES = 320  # a recording file's size here: the purge only unlinks it
AGE_DAYS = 400
FRAME_SHARE = 0.5  # a 20 ms frame "carries the tone" when half its power is the partner's tone
STALL_MS = 100.0  # a gap between received packets this long is heard as a dropout
TIMEOUT = 15.0
T = TypeVar("T")

_SEED_CALLS = """
INSERT INTO calls (id, organisation_id, button_id, agent_id, state, end_reason, page_url, created_at, queued_at,
                   answered_at, ended_at)
SELECT gen_random_uuid(), $1::uuid, $2::uuid, $3::uuid, 'ended',
       CASE WHEN i % 2 = 0 THEN 'visitor_hangup' ELSE 'agent_hangup' END,
       'https://shop.example.com/help', at, at + interval '1 second', at + interval '6 seconds',
       at + interval '126 seconds'
FROM (SELECT $4::timestamptz - i * interval '20 seconds' AS at, i FROM generate_series($5::int, $6::int) AS i) s
"""

_SEED_RECORDINGS = """
INSERT INTO recordings (id, organisation_id, call_id, state, started_at, ended_at, duration_ms, byte_size,
                        ciphertext_sha256)
SELECT gen_random_uuid(), organisation_id, id, 'complete', answered_at, ended_at, 120000, $2::bigint,
       sha256(uuid_send(id))
FROM calls WHERE organisation_id = $1
RETURNING id
"""


# --- the synthetic calls (a second process) -----------------------------------------------------


class Trace(Reception):
    """A party's reception that also keeps every packet: (arrival, sequence number, payload)."""

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[tuple[float, int, bytes]] = []

    def count(self, packet: RtpPacket, arrival: float) -> None:
        super().count(packet, arrival)
        self.trace.append((arrival, packet.sequence_number, packet.payload))


@dataclass
class Party:
    name: str
    peer: LoadPeer
    trace: Trace
    expect_tone: float


@dataclass
class Probe:
    at: float
    ok: bool
    failures: list[str]
    phases: dict[str, float] = field(default_factory=dict)


async def standing_call(
    http: aiohttp.ClientSession, args: argparse.Namespace, index: int, agent: SyntheticAgent
) -> tuple[SyntheticVisitor, list[Party]]:
    """A call answered by ``agent`` that stays up until the end of the run."""
    visitor_tone, agent_tone = tones(index)
    visitor = SyntheticVisitor(http, args.url, args.button, ORIGIN)
    await visitor.connect()
    peer = visitor.peer = LoadPeer(
        send_tone=visitor_tone, expect_tone=agent_tone, ice_servers=visitor.hello.get("ice_servers") or [],
        impairment=Impairment(), rng=random.Random(index),
    )  # fmt: skip
    peer.reception = visitor_trace = Trace()
    assert agent.peer is not None
    agent.peer.next_call(send_tone=agent_tone, expect_tone=visitor_tone)
    agent.peer.reception = agent_trace = Trace()
    await visitor.socket.send({"type": "call", "sdp": await peer.offer(), "page_url": "https://bench.invalid/call"})
    state = await visitor.socket.wait(lambda m: m.get("type") in ("call_state", "error"), TIMEOUT, "no_call_state")
    if state["type"] == "error" or state.get("state") == "ended":
        raise ProtocolFailure("refused", json.dumps({k: v for k, v in state.items() if k != "_at"}))
    call_id = str(state["call_id"])
    answer = await visitor.socket.wait(lambda m: m.get("type") == "answer", TIMEOUT, "no_answer_sdp")
    await peer.answer(answer["sdp"])
    for _ in range(int(TIMEOUT / 0.01)):
        if call_id in agent.rings:
            break
        await asyncio.sleep(0.01)
    else:
        raise ProtocolFailure("agent_not_rung")
    accepted = time.monotonic()
    peer.listen_for_partner(accepted)
    agent.peer.listen_for_partner(accepted)
    await agent.socket.send({"type": "accept", "call_id": call_id})
    answered = await visitor.socket.wait(
        lambda m: m.get("type") == "call_state" and m.get("state") in ("answered", "ended"), TIMEOUT, "not_connected"
    )
    if answered.get("state") != "answered":
        raise ProtocolFailure("not_answered", str(answered.get("reason")))
    heard = await asyncio.gather(peer.wait_first_audio(TIMEOUT), agent.peer.wait_first_audio(TIMEOUT))
    if None in heard:
        raise ProtocolFailure("no_first_audio")
    return visitor, [
        Party(f"call {index} visitor", peer, visitor_trace, agent_tone),
        Party(f"call {index} agent", agent.peer, agent_trace, visitor_tone),
    ]


async def probes(
    http: aiohttp.ClientSession, args: argparse.Namespace, agent: SyntheticAgent, out: list[Probe]
) -> None:
    """A short call every ``--probe-every`` seconds, checked end to end as ``callbutton loadtest`` does."""
    run = Run(Options(base_url=args.url, button_key=args.button, origin=ORIGIN, agents=[], talk_time=1.5))
    run._began = time.monotonic()
    agent.on_ring = run.takers.heard  # the probe calls' agent: rung for each (no other is free)
    while True:
        began = time.monotonic()
        result = CallResult(args.live, *tones(args.live))  # tones no standing call uses
        visitor = SyntheticVisitor(http, args.url, args.button, ORIGIN)
        try:
            await run.talk(result, visitor)
        except ProtocolFailure as failure:
            result.fail(failure.reason)
        except Exception as exc:
            result.fail(f"error:{type(exc).__name__}")
        finally:
            await visitor.close()
        out.append(Probe(began, result.ok, result.failures, result.phases))
        await asyncio.sleep(max(0.0, began + args.probe_every - time.monotonic()))


def window_figures(party: Party, t0: float, t1: float) -> dict[str, Any]:
    """What one party received between ``t0`` and ``t1`` (monotonic clock, shared by both processes)."""
    packets = [(at, seq, payload) for at, seq, payload in party.trace.trace if t0 <= at <= t1]
    arrivals = [t0] + [at for at, _, _ in packets] + [t1]
    gaps = np.diff(np.array(arrivals)) * 1000
    expected = 0
    if packets:
        unwrapped, last, cycles = [], packets[0][1], 0
        for _, seq, _ in packets:
            if seq < last and last - seq > 32768:
                cycles += 65536
            elif seq > last and seq - last > 32768:
                cycles -= 65536  # a reordered packet from before a wrap
            unwrapped.append(seq + cycles)
            last = seq
        expected = max(unwrapped) - min(unwrapped) + 1
    decoder = av.CodecContext.create("opus", "r")
    toned, pcm = 0, []
    for _, _, payload in packets:
        try:
            frames = decoder.decode(av.Packet(payload))
        except av.FFmpegError:
            continue
        samples = [frame.to_ndarray() for frame in frames]
        if not samples:
            continue
        mono = np.concatenate([s[0] if s.ndim == 2 else s for s in samples])
        if mono.dtype.kind == "f":
            mono = np.clip(mono * 32767, -32768, 32767)
        mono = mono.astype(np.int16)
        pcm.append(mono)
        if tone_share(mono, party.expect_tone, width=60) >= FRAME_SHARE:
            toned += 1
    heard = tone_share(np.concatenate(pcm), party.expect_tone) if pcm else 0.0
    return {
        "party": party.name,
        "packets": len(packets),
        "packets_per_s": len(packets) / (t1 - t0),
        "loss_percent": 100.0 * max(0, expected - len(packets)) / expected if expected else 100.0,
        "max_gap_ms": float(gaps.max()),
        "stalls": int((gaps >= STALL_MS).sum()),
        # (when the gap ended, its length in ms) of every gap of at least STALL_MS
        "gaps": [(arrivals[i + 1], float(gap)) for i, gap in enumerate(gaps) if gap >= STALL_MS],
        "tone_frames": toned / len(packets) if packets else 0.0,
        "heard_share": heard,
    }


async def callers(args: argparse.Namespace) -> None:
    pin_host_addresses(["127.0.0.1"])
    credentials = [tuple(value.split(":", 1)) for value in args.agent]
    deadline = time.monotonic() + args.max_seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        agents = [
            SyntheticAgent(http, args.url, email, password, impairment=Impairment(), rng=random.Random(i))
            for i, (email, password) in enumerate(credentials)
        ]
        visitors: list[SyntheticVisitor] = []
        found: list[Probe] = []
        prober: asyncio.Task[None] | None = None
        try:
            await asyncio.gather(*(agent.start(listen_tone=1000.0) for agent in agents))
            parties: list[Party] = []
            for index in range(args.live):
                visitor, pair = await standing_call(http, args, index, agents[index])
                visitors.append(visitor)
                parties += pair
            if args.probe_every > 0:
                prober = asyncio.create_task(probes(http, args, agents[args.live], found))
            print(json.dumps({"ready": True, "parties": len(parties)}), flush=True)
            line = await asyncio.wait_for(asyncio.to_thread(sys.stdin.readline), deadline - time.monotonic())
            if prober is not None:
                prober.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prober
            windows: dict[str, list[float]] = json.loads(line)["windows"]
            report: dict[str, Any] = {}
            for name, (t0, t1) in windows.items():
                report[name] = {
                    "parties": [window_figures(party, t0, t1) for party in parties],
                    "probes": [vars(p) for p in found if t0 <= p.at <= t1],
                }
            print(json.dumps(report), flush=True)
            for visitor in visitors:
                with contextlib.suppress(Exception):
                    await visitor.socket.send({"type": "hangup"})
        finally:
            for visitor in visitors:
                await visitor.close()
            for agent in agents:
                await agent.close()


# --- the run ------------------------------------------------------------------------------------


def _write_files(folder: Path, ids: list[uuid.UUID]) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    blob = os.urandom(FILE_BYTES)
    for recording_id in ids:
        (folder / f"{recording_id}{SUFFIX}").write_bytes(blob)


def _count_files(folder: Path) -> int:
    return sum(1 for _ in os.scandir(folder)) if folder.exists() else 0


async def seed_expired(database: Database, keyring: Keyring, root: Path, calls: int) -> uuid.UUID:
    """The organisation to purge: ``calls`` ended calls from ~400 days ago, each with a recording."""
    organisation = await database.accounts.create_organisation("Expired")
    button = await database.buttons.create(
        organisation.id, name="Old", allowed_origins=["https://shop.example.com"], recording_enabled=True
    )
    agent = await database.accounts.create_user(
        organisation.id, email=f"old-{uuid.uuid4().hex[:8]}@bench.example.test", display_name="Old agent",
        role="agent", password_hash="not-a-hash",
    )  # fmt: skip
    began = time.perf_counter()
    newest = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=AGE_DAYS)
    async with database.pool.acquire() as conn:
        await conn.execute("SET synchronous_commit = off")
        for first in range(0, calls, CHUNK):
            last = min(calls, first + CHUNK) - 1
            await conn.execute(_SEED_CALLS, organisation.id, button.id, agent.id, newest, first, last)
        ids = [r["id"] for r in await conn.fetch(_SEED_RECORDINGS, organisation.id, FILE_BYTES)]
        await conn.execute("VACUUM (ANALYZE) calls, recordings")
    # The first key for real (it makes the organisation's key, wrapped by the master key); the rest
    # copied in with random wrapped keys: the purge deletes them without unwrapping.
    first_key = await keyring.new_data_key(organisation.id, ids[0])
    aged = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=AGE_DAYS)
    async with database.keystore_pool.acquire() as conn:
        for start_at in range(1, len(ids), CHUNK):
            await conn.copy_records_to_table(
                "data_keys",
                records=[
                    (recording_id, organisation.id, first_key.organisation_key_id, os.urandom(60), aged)
                    for recording_id in ids[start_at : start_at + CHUNK]
                ],
                columns=["recording_id", "organisation_id", "organisation_key_id", "wrapped_key", "created_at"],
            )
        await conn.execute("VACUUM (ANALYZE) data_keys")
    await asyncio.to_thread(_write_files, root / str(organisation.id), ids)
    print(f"seeded {calls:,} expired calls, recordings, data keys and files in {time.perf_counter() - began:.1f} s")
    return organisation.id


async def seed_live(database: Database, agents: int, record: bool) -> tuple[str, list[str]]:
    organisation = await database.accounts.create_organisation("Live")
    button = await database.buttons.create(
        organisation.id, name="Live", allowed_origins=[ORIGIN], recording_enabled=record
    )
    password_hash = await auth.hash_password(PASSWORD)
    emails = []
    for index in range(agents):
        email = f"live-{index}-{uuid.uuid4().hex[:6]}@bench.example.test"
        await database.accounts.create_user(
            organisation.id, email=email, display_name=f"Agent {index}", role="agent", password_hash=password_hash
        )
        emails.append(email)
    return button.public_key, emails


class TimedPurger(Purger):
    """The server's purger, timing its two steps that matter here (same code, same order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps = {"recordings": 0.0, "calls": 0.0}  # seconds, over every organisation

    async def _recordings_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        began = time.monotonic()
        await super()._recordings_due(report, cutoff, dry_run)
        self.steps["recordings"] += time.monotonic() - began

    async def _calls_due(self, report: PurgeReport, cutoff: datetime.datetime, dry_run: bool) -> None:
        began = time.monotonic()
        await super()._calls_due(report, cutoff, dry_run)
        self.steps["calls"] += time.monotonic() - began


class LoopLag:
    """How late a 10 ms timer fires on this event loop (the server's): (when, lateness) samples; and
    the process's full (generation 2) garbage collections: (when it ended, how long it took)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self.collections: list[tuple[float, float]] = []
        self._collecting = 0.0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._collecting = time.monotonic()
        else:
            now = time.monotonic()
            self.collections.append((now, now - self._collecting))

    async def run(self) -> None:
        gc.callbacks.append(self._gc)
        try:
            while True:
                before = time.monotonic()
                await asyncio.sleep(self.interval)
                now = time.monotonic()
                self.samples.append((now, now - before - self.interval))
        finally:
            gc.callbacks.remove(self._gc)

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        lateness = [late * 1000 for at, late in self.samples if t0 <= at <= t1] or [0.0]
        return max(lateness), float(np.percentile(lateness, 99))

    def full_collections(self, t0: float, t1: float) -> list[float]:
        return [took * 1000 for at, took in self.collections if t0 <= at <= t1]

    def explains(self, end: float, length_ms: float) -> tuple[bool, bool]:
        """Whether a gap in received audio (ending at ``end``) overlaps one of this loop's full
        collections, and whether it overlaps a time this loop's timer fired >= STALL_MS late."""
        start = end - length_ms / 1000
        collected = any(at - took < end and at > start for at, took in self.collections)
        late = any(at - late_by < end and at > start for at, late_by in self.samples if late_by * 1000 >= STALL_MS)
        return collected, late


@dataclass
class Phase:
    name: str
    t0: float
    t1: float
    cpu: float  # this process's CPU over the window, % of one core

    @property
    def seconds(self) -> float:
        return self.t1 - self.t0


async def timed_window(name: str, body: Awaitable[T]) -> tuple[Phase, T]:
    cpu0, t0 = sum(os.times()[:2]), time.monotonic()
    result = await body
    cpu1, t1 = sum(os.times()[:2]), time.monotonic()
    return Phase(name, t0, t1, 100 * (cpu1 - cpu0) / (t1 - t0)), result


async def remaining(database: Database, organisation_id: uuid.UUID, folder: Path) -> dict[str, int]:
    pool = database.pool
    return {
        "calls": await pool.fetchval("SELECT count(*) FROM calls WHERE organisation_id = $1", organisation_id),
        "recordings": await pool.fetchval(
            "SELECT count(*) FROM recordings WHERE organisation_id = $1", organisation_id
        ),
        "data_keys": await database.keystore_pool.fetchval(
            "SELECT count(*) FROM data_keys WHERE organisation_id = $1", organisation_id
        ),
        "files": await asyncio.to_thread(_count_files, folder),
    }


def summarise(phase: Phase, figures: dict[str, Any], lag: LoopLag) -> dict[str, float]:
    parties = figures["parties"]
    probes = figures["probes"]
    first_audio = [
        p["phases"][k] for p in probes for k in ("accept_to_first_audio_visitor", "accept_to_first_audio_agent")
        if k in p["phases"]
    ]  # fmt: skip
    lag_max, lag_p99 = lag.window(phase.t0, phase.t1)
    collections = lag.full_collections(phase.t0, phase.t1)
    # Gaps heard on several parties within 50 ms of each other are one event (the server's, or the
    # machine's); each event ends at its first party's gap end and lasts as long as its longest gap.
    events: list[list[float]] = []
    for end, length in sorted(g for p in parties for g in p["gaps"]):
        if events and end - events[-1][0] <= 0.05:
            events[-1][1] = max(events[-1][1], length)
        else:
            events.append([end, length])
    long_events = [e for e in events if e[1] >= 2 * STALL_MS]
    explained = [lag.explains(end, length) for end, length in long_events]
    party_minutes = len(parties) * phase.seconds / 60
    return {
        "seconds": phase.seconds,
        "packets_per_s": statistics.mean(p["packets_per_s"] for p in parties),
        "min_packets_per_s": min(p["packets_per_s"] for p in parties),
        "loss_percent": max(p["loss_percent"] for p in parties),
        "max_gap_ms": max(p["max_gap_ms"] for p in parties),
        "stalls": sum(p["stalls"] for p in parties) / party_minutes,
        "long_event_count": len(long_events),
        "long_events": len(long_events) / phase.seconds * 60,
        "long_events_gc": sum(1 for collected, _ in explained if collected),
        "long_events_late": sum(1 for _, late in explained if late),
        "tone_frames": statistics.mean(p["tone_frames"] for p in parties),
        "min_heard_share": min(p["heard_share"] for p in parties),
        "loop_lag_max_ms": lag_max,
        "loop_lag_p99_ms": lag_p99,
        "full_gc": len(collections),
        "full_gc_max_ms": max(collections, default=0.0),
        "server_cpu": phase.cpu,
        "probes": len(probes),
        "probes_failed": sum(1 for p in probes if not p["ok"]),
        "probe_first_audio_ms": statistics.median(first_audio) if first_audio else float("nan"),
    }


ROWS = [
    ("seconds", "window (s)", "{:.1f}", False),
    ("packets_per_s", "packets/s per party, mean", "{:.2f}", True),
    ("min_packets_per_s", "packets/s, lowest party", "{:.2f}", True),
    ("loss_percent", "loss %, worst party", "{:.2f}", True),
    ("max_gap_ms", "largest gap between packets (ms)", "{:.1f}", True),
    ("stalls", f"gaps >= {STALL_MS:g} ms per party-minute", "{:.2f}", True),
    ("long_event_count", f"gap events >= {2 * STALL_MS:g} ms (all parties at once)", "{:.0f}", False),
    ("long_events", "  per minute", "{:.2f}", True),
    ("long_events_gc", "  of them during a server full GC", "{:.0f}", False),
    ("long_events_late", f"  of them with the server loop >= {STALL_MS:g} ms late", "{:.0f}", False),
    ("tone_frames", "frames carrying the partner's tone", "{:.4f}", True),
    ("min_heard_share", "partner's tone share of power, lowest", "{:.4f}", True),
    ("loop_lag_max_ms", "server loop: 10 ms timer late, max (ms)", "{:.1f}", True),
    ("loop_lag_p99_ms", "server loop: 10 ms timer late, p99 (ms)", "{:.1f}", True),
    ("full_gc", "server: full garbage collections", "{:.0f}", False),
    ("full_gc_max_ms", "server: longest full collection (ms)", "{:.1f}", True),
    ("server_cpu", "server process CPU (% of a core)", "{:.1f}", True),
    ("probes", "probe calls", "{:.0f}", False),
    ("probes_failed", "probe calls failed", "{:.0f}", False),
    ("probe_first_audio_ms", "probe accept -> first audio, median (ms)", "{:.0f}", True),
]


def show(baseline: dict[str, float], purge: dict[str, float]) -> None:
    print(f"\n{'':48s} {'baseline':>10s} {'purge':>10s} {'purge/base':>10s}")
    for key, label, fmt, as_ratio in ROWS:
        base, during = baseline[key], purge[key]
        ratio = f"{during / base:10.3f}" if as_ratio and base and not math.isnan(during) else f"{'':>10s}"
        print(f"{label:48s} {fmt.format(base):>10s} {fmt.format(during):>10s} {ratio}")


async def run(args: argparse.Namespace, server_dsn: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="callbutton-bench-purge-"))
    master = MasterKey.generate()
    settings = Settings(
        host="127.0.0.1", port=0, data_dir=folder, ice_host_addresses=("127.0.0.1",), purge_interval=0,
        master_key=master.to_text(), log_level="warning", call_rate_per_address=100000.0,
        call_rate_per_button=100000.0, visitor_sockets_per_address=100000, login_rate_per_address=6000.0,
        login_rate_per_account=6000.0,
    )  # fmt: skip
    try:
        async with throwaway_database(server_dsn, "purge") as dsn:
            database = await Database.connect(dsn)  # as `callbutton serve` connects
            try:
                await database.migrate()
                keyring = Keyring(database.keystore_pool, master)
                expired = await seed_expired(database, keyring, settings.recordings_root, args.calls)
                button, agents = await seed_live(database, args.live + 1, record=not args.no_record)
                await measure(args, settings, database, keyring, expired, button, agents)
            finally:
                await database.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def measure(
    args: argparse.Namespace,
    settings: Settings,
    database: Database,
    keyring: Keyring,
    expired: uuid.UUID,
    button: str,
    agents: list[str],
) -> None:
    org_folder = settings.recordings_root / str(expired)
    before = await remaining(database, expired, org_folder)
    print("before the purge:", before)
    running = await start(settings, database)
    settle_heap()  # as `callbutton serve` does
    lag = LoopLag()
    lagging = asyncio.create_task(lag.run())
    command = [sys.executable, __file__, "--callers", running.url, "--button", button, "--live", str(args.live)]
    command += ["--probe-every", str(args.probe_every), "--max-seconds", str(args.purge_timeout + 600)]
    for email in agents:
        command += ["--agent", f"{email}:{PASSWORD}"]
    child = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        ready = await asyncio.wait_for(child.stdout.readline(), 180)
        if not ready:
            raise SystemExit("the synthetic calls did not start (see above)")
        print(
            f"{args.live} calls up ({json.loads(ready)['parties']} parties), a probe call every {args.probe_every:g} s"
        )
        await asyncio.sleep(3)  # settle
        baseline, _ = await timed_window("baseline", asyncio.sleep(args.baseline))
        store = RecordingStore(database.pool, keyring, settings.recordings_root)
        purger = TimedPurger(database.pool, store, pause=0.01)  # as the server's schedule makes it
        print("purging ...", flush=True)
        purge, reports = await timed_window("purge", asyncio.wait_for(purger.run(), args.purge_timeout))
        windows = {p.name: [p.t0, p.t1] for p in (baseline, purge)}
        child.stdin.write(json.dumps({"windows": windows}).encode() + b"\n")
        await child.stdin.drain()
        line = await asyncio.wait_for(child.stdout.readline(), 600)
        if not line:
            raise SystemExit("the synthetic calls' process ended without figures (see above)")
        figures = json.loads(line)
        await asyncio.wait_for(child.wait(), 60)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
        lagging.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await lagging
        await running.stop()
    after = await remaining(database, expired, org_folder)

    ours = next(r for r in reports if r.organisation_id == expired)
    print(f"\npurge of organisation {expired}: {purge.seconds:.1f} s wall time")
    print(f"  deleted (receipt {ours.receipt.id if ours.receipt else None}): {ours.counts}")
    keys = f"{before['data_keys']:,} -> {after['data_keys']:,}"
    print(f"  data keys destroyed: {len(ours.destroyed_keys):,} (key store {keys})")
    print(f"  files removed: {before['files'] - after['files']:,} ({before['files']:,} -> {after['files']:,})")
    print(f"  rate: {ours.counts['calls'] / purge.seconds:,.0f} calls/s (each with its recording, key and file)")
    print(
        f"  steps: recordings (keys, rows marked deleted, files) {purger.steps['recordings']:.1f} s, "
        f"calls (rows deleted) {purger.steps['calls']:.1f} s"
    )
    if ours.receipt is not None:
        size = await database.pool.fetchval(
            "SELECT pg_column_size(destroyed_keys) FROM deletion_receipts WHERE id = $1", ours.receipt.id
        )
        print(f"  the receipt lists every destroyed key: {size / 2**20:.1f} MiB stored (jsonb)")
    others = [r for r in reports if r.organisation_id != expired and any(r.counts.values())]
    if others:
        print("  other organisations purged too:", [(str(r.organisation_id), r.counts) for r in others])
    for name in ("baseline", "purge"):
        for party in figures[name]["parties"]:
            if args.verbose:
                print(f"  {name:8s} {json.dumps({k: v for k, v in party.items() if k != 'gaps'})}")
        for probe in figures[name]["probes"]:
            if not probe["ok"]:
                print(f"  {name} probe call failed: {probe['failures']}")
    show(
        summarise(baseline, figures["baseline"], lag),
        summarise(purge, figures["purge"], lag),
    )
    print("\nafter the purge:", after)
    assert after == {"calls": 0, "recordings": 0, "data_keys": 0, "files": 0}, f"left behind: {after}"
    assert ours.counts["calls"] == args.calls, ours.counts
    assert len(ours.destroyed_keys) == args.calls, len(ours.destroyed_keys)
    print("sanity check passed: no call, recording, data key or file of the organisation is left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="expired calls (each with a recording) to purge")
    parser.add_argument("--live", type=int, default=5, help="calls kept up through the run")
    parser.add_argument("--baseline", type=float, default=15.0, help="seconds of calls alone, before the purge")
    parser.add_argument("--probe-every", type=float, default=3.0, help="seconds between probe calls (0: none)")
    parser.add_argument("--purge-timeout", type=float, default=1200.0, help="give up on the purge after this")
    parser.add_argument("--no-record", action="store_true", help="the live button does not record")
    parser.add_argument("--verbose", action="store_true", help="print every party's figures")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("CALLBUTTON_DATABASE_URL") or os.environ.get("CALLBUTTON_TEST_DATABASE_URL"),
        help="a Postgres server to create the throwaway databases in (default: a throwaway local cluster)",
    )
    # The synthetic calls' process (started by the run).
    parser.add_argument("--callers", dest="url", help=argparse.SUPPRESS)
    parser.add_argument("--button", help=argparse.SUPPRESS)
    parser.add_argument("--agent", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=1800.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logs.configure("warning", "console")  # to stderr: the synthetic calls' stdout carries their figures
    if args.url:
        asyncio.run(callers(args))
        return
    with server_for(args.dsn) as server_dsn:
        asyncio.run(run(args, server_dsn))


if __name__ == "__main__":
    main()
