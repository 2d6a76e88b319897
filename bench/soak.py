"""A soak: ``callbutton loadtest`` at a steady concurrency for ``--minutes``; do the server's memory and
file descriptors stay flat, does every call and every recording verify?

Creates a throwaway database (one organisation, one button that records, ``--concurrency`` agents and an
admin) and starts the real server on it as a subprocess (``callbutton serve``; ICE host candidates on
127.0.0.1 only, no STUN server). Samples it idle for ``--idle`` seconds, then runs ``callbutton loadtest``
against it: ``--concurrency`` calls at once of ``--talk`` seconds of talk, a new call started as one ends,
for ``--minutes``; every call checked end to end (each party hears its partner's tone), then every call's
row and recording (downloaded, decoded, both parties' tones and the duration) through the admin API
(``--expect-recordings yes``). Then idle again for ``--idle`` seconds.

Every 5 s the server process's RSS (``VmRSS``), open file descriptors and threads are read from /proc, and
its calls in progress from its ``/metrics``; one row a minute is printed (medians of the minute). Verdict,
exit status 1 when a target is missed:

- RSS and FDs: growth from the last minute of the warm-up (the first ``--warmup`` minutes) to the last
  minute of the load, under 5%;
- no failed call;
- every call answered, and every answered call's recording verified.

Also printed: memory per call, (median RSS after the warm-up - idle RSS) / ``--concurrency``.

    .venv/bin/python bench/soak.py [--minutes 10] [--concurrency 16] [--talk 20] [--dsn URL] [--keep DIR]

``--dsn`` (default ``CALLBUTTON_DATABASE_URL`` or ``CALLBUTTON_TEST_DATABASE_URL``) is a Postgres server
the run creates its throwaway database in (and its ``_keys`` key store), both dropped at the end; without
one a throwaway local cluster is started. All traffic stays on 127.0.0.1. Results go in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from common import inherited_env, throwaway_database
from memory_trace import compare
from prometheus_client.parser import text_string_to_metric_families

from server import auth
from storage.db import Database
from storage.keys import MasterKey
from storage.localpg import server_for

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://bench.example.test"
PASSWORD = "bench password 123"
LOOPBACK = "127.0.0.1"
SAMPLE_EVERY = 5.0  # seconds
MINUTE = 60.0
TARGET_GROWTH = 5.0  # percent
CHECKS_TIMEOUT = 1200.0  # seconds the load tester may spend checking rows and recordings after the calls


@dataclass
class Sample:
    phase: str  # "idle" (before the load), "load" (the load tester running), "after" (idle again)
    t: float  # seconds since the phase began
    rss_mib: float
    fds: int
    threads: int
    cpu_percent: float  # of one core, since the previous sample
    calls: int  # calls in progress, from the server's /metrics
    legs: int
    sockets: int
    frozen: int  # objects the server froze out of the collector's way (callbutton_gc_frozen_objects)
    collected: int  # objects its full collections found in cycles, since it started
    kinds: dict[str, int]  # the open file descriptors by kind (tcp, udp, unix, file, pipe, anon_inode:...)


@dataclass
class Tenant:
    button: str
    agents: list[str]
    admin: str


# --- the server and its figures -----------------------------------------------------------------


class Server:
    """``callbutton serve`` in a subprocess; keeps count of the warnings and errors it logs."""

    def __init__(self, env: dict[str, str], traced: Path | None = None) -> None:
        self.env = env
        #: Where snapshots of its memory go, when it runs under tracemalloc (bench/memory_trace.py).
        self.traced = traced
        self.snapshots = 0
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.problems: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        command = ["-m", "server", "serve"]
        if self.traced is not None:
            command = [str(ROOT / "bench" / "memory_trace.py"), str(self.traced)]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *command, env=self.env, cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stderr is not None
        while not self.url:
            line = await asyncio.wait_for(self.process.stderr.readline(), 60)
            if not line:
                raise SystemExit("the server exited before it started")
            event = self._event(line)
            if event.get("event") == "server.started":
                self.url = str(event["url"])
        if urlsplit(self.url).hostname != LOOPBACK:
            raise SystemExit(f"the server listens on {self.url}, not on loopback")
        self._reader = asyncio.create_task(self._collect(self.process.stderr))

    async def snapshot(self) -> int:
        """Have the traced server write its next memory snapshot; its number."""
        assert self.traced is not None
        self.snapshots += 1
        os.kill(self.pid, signal.SIGUSR1)
        written = self.traced / f"snapshot-{self.snapshots}.json"
        for _ in range(600):
            if written.exists():
                return self.snapshots
            await asyncio.sleep(0.1)
        raise SystemExit(f"the server wrote no {written.name} within 60 s")

    def _event(self, line: bytes) -> dict[str, Any]:
        try:
            event = json.loads(line)
        except ValueError:
            event = {"event": line.decode(errors="replace").strip()[:200], "level": "error"}
        if not isinstance(event, dict):
            return {}
        if event.get("level") in ("warning", "error", "critical"):
            self.problems[f"{event.get('level')} {event.get('event')}"] += 1
            if len(self.examples) < 10:
                self.examples.append(line.decode(errors="replace").strip()[:600])
        return event

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self._event(line)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 10)


_TICKS = os.sysconf("SC_CLK_TCK")


def read_proc(pid: int) -> tuple[float, int, int, float]:
    """The process's RSS (MiB), open file descriptors, threads and CPU time (s), from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    rss_mib = int(status["VmRSS"].split()[0]) / 1024  # kB
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / _TICKS
    return rss_mib, fds, int(status["Threads"]), cpu


def fd_kinds(pid: int) -> dict[str, int]:
    """The process's open file descriptors by kind: sockets by protocol (from its /proc/PID/net tables), files,
    pipes, and anonymous inodes (epoll, eventfd) by name."""
    protocols: dict[str, str] = {}
    for table, column in (("tcp", 9), ("tcp6", 9), ("udp", 9), ("udp6", 9), ("unix", 6)):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > column:
                    protocols[fields[column]] = table.rstrip("6")
    kinds: collections.Counter[str] = collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            kinds[protocols.get(target[8:-1], "socket")] += 1
        elif target.startswith(("pipe:", "anon_inode:")):
            kinds[target.split("[")[0].rstrip(":") if target.startswith("pipe:") else target] += 1
        else:
            kinds["file"] += 1
    return dict(sorted(kinds.items()))


async def scrape(http: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The server's /metrics (it answers loopback clients), as {name or name{labels}: value}."""
    async with http.get(f"{url}/metrics", timeout=aiohttp.ClientTimeout(total=10)) as response:
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


class Monitor:
    """Samples the server every ``SAMPLE_EVERY`` seconds; prints a row at the end of every minute of the load."""

    def __init__(self, server: Server, http: aiohttp.ClientSession, minutes: float) -> None:
        self.server = server
        self.http = http
        self.minutes = minutes
        self.samples: list[Sample] = []
        self.metrics: dict[str, float] = {}  # the last scrape
        self.phase = "idle"
        self._began = time.monotonic()
        self._rows = 0

    def begin(self, phase: str) -> None:
        self.phase, self._began, self._rows = phase, time.monotonic(), 0

    async def run(self) -> None:
        _, _, _, cpu_before = read_proc(self.server.pid)
        at_before = next_at = time.monotonic()
        while True:  # a sample at once, then every SAMPLE_EVERY seconds
            try:
                rss, fds, threads, cpu = read_proc(self.server.pid)
            except (FileNotFoundError, ProcessLookupError):
                return  # the server ended
            now = time.monotonic()
            try:
                self.metrics = await scrape(self.http, self.server.url)
            except (aiohttp.ClientError, TimeoutError):
                self.metrics = {}
            gauge = self.metrics.get
            cpu_percent = 100 * (cpu - cpu_before) / (now - at_before) if now - at_before >= 1 else 0.0
            sample = Sample(
                self.phase, round(now - self._began, 2), round(rss, 1), fds, threads,
                round(cpu_percent, 1), int(gauge("callbutton_calls_active", -1)),
                int(gauge("callbutton_legs_active", -1)), int(gauge("callbutton_websockets", -1)),
                int(gauge("callbutton_gc_frozen_objects", -1)), int(gauge("callbutton_gc_collected_objects_total", -1)),
                fd_kinds(self.server.pid),
            )  # fmt: skip
            cpu_before, at_before = cpu, now
            self.samples.append(sample)
            if sample.phase == "load":
                while sample.t >= (self._rows + 1) * MINUTE:
                    self._rows += 1
                    self._print_minute(self._rows)
            next_at += SAMPLE_EVERY
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def window(self, phase: str, t0: float = 0.0, t1: float = math.inf) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase and t0 <= s.t < t1]

    def _print_minute(self, minute: int) -> None:
        if minute == 1:
            print(f"\n{'minute':>8s} {'RSS MiB':>9s} {'(max)':>7s} {'FDs':>5s} {'threads':>8s} {'CPU %':>6s} "
                  f"{'calls in progress (min-max)':>28s} {'frozen':>9s}", flush=True)  # fmt: skip
        samples = self.window("load", (minute - 1) * MINUTE, minute * MINUTE)
        if samples:
            note = "" if minute <= self.minutes else "  (calls ending, then the checks)"
            print(f"{minute:8d} {row(samples)}{note}", flush=True)

    def print_phase(self, label: str, phase: str) -> None:
        samples = self.window(phase)
        if samples:
            print(f"{label:>8s} {row(samples)}", flush=True)


def row(samples: list[Sample]) -> str:
    calls = [s.calls for s in samples]
    return (
        f"{median(s.rss_mib for s in samples):9.1f} {max(s.rss_mib for s in samples):7.1f} "
        f"{median(s.fds for s in samples):5.0f} {median(s.threads for s in samples):8.0f} "
        f"{median(s.cpu_percent for s in samples):6.1f} "
        f"{median(calls):18.0f} ({min(calls)}-{max(calls)}) {median(s.frozen for s in samples):9.0f}"
    )


def median(values: Any) -> float:
    listed = list(values)
    return float(statistics.median(listed)) if listed else math.nan


def growth(before: float, after: float) -> float:
    return 100.0 * (after - before) / before if before else math.nan


# --- the run ------------------------------------------------------------------------------------


async def create_tenant(database: Database, agents: int) -> Tenant:
    organisation = await database.accounts.create_organisation(f"Soak {uuid.uuid4().hex[:6]}")
    button = await database.buttons.create(
        organisation.id, name="Soak", allowed_origins=[ORIGIN], recording_enabled=True
    )
    password_hash = await auth.hash_password(PASSWORD)
    emails = []
    for index in range(agents):
        email = f"soak-agent-{index}-{uuid.uuid4().hex[:6]}@bench.example.test"
        await database.accounts.create_user(
            organisation.id, email=email, display_name=f"Agent {index}", role="agent", password_hash=password_hash
        )
        emails.append(email)
    admin = f"soak-admin-{uuid.uuid4().hex[:6]}@bench.example.test"
    await database.accounts.create_user(
        organisation.id, email=admin, display_name="Admin", role="admin", password_hash=password_hash
    )
    return Tenant(button.public_key, emails, admin)


def server_env(dsn: str, folder: Path) -> dict[str, str]:
    """The server's environment; its event loop the one the soak is run with (CALLBUTTON_EVENT_LOOP)."""
    env = inherited_env()
    env.update({
        "CALLBUTTON_DATABASE_URL": dsn, "CALLBUTTON_DATA_DIR": str(folder / "data"), "CALLBUTTON_HOST": LOOPBACK,
        "CALLBUTTON_PORT": "0", "CALLBUTTON_ICE_HOST_ADDRESSES": LOOPBACK, "CALLBUTTON_ICE_SERVERS": "",
        "CALLBUTTON_LOG_FORMAT": "json", "CALLBUTTON_LOG_LEVEL": "info",
        "CALLBUTTON_CALL_RATE_PER_ADDRESS": "100000", "CALLBUTTON_CALL_RATE_PER_BUTTON": "100000",
        "CALLBUTTON_VISITOR_SOCKETS_PER_ADDRESS": "100000", "CALLBUTTON_LOGIN_RATE_PER_ADDRESS": "6000",
        "CALLBUTTON_LOGIN_RATE_PER_ACCOUNT": "6000", "CALLBUTTON_MASTER_KEY": MasterKey.generate().to_text(),
    })  # fmt: skip
    return env


def loadtest_command(args: argparse.Namespace, server: Server, tenant: Tenant, folder: Path) -> list[str]:
    """Calls of ``--talk`` seconds, at most ``--concurrency`` at once, started a little faster than
    calls end (so that the concurrency, not the rate, holds the load) until ``--minutes`` are up."""
    agents_file = folder / "agents.txt"
    agents_file.write_text("".join(f"{email}:{PASSWORD}\n" for email in tenant.agents), encoding="utf-8")
    agents_file.chmod(0o600)
    seconds = args.minutes * MINUTE
    rate = 1.25 * args.concurrency / args.talk
    calls = math.ceil(rate * seconds) + args.concurrency  # a bound: the duration limit ends the run first
    return [
        sys.executable, "-m", "server", "loadtest", server.url, "--button", tenant.button, "--origin", ORIGIN,
        "--agents-file", str(agents_file), "--admin", f"{tenant.admin}:{PASSWORD}", "--expect-recordings", "yes",
        "--calls", str(calls), "--concurrency", str(args.concurrency), "--rate", f"{rate:.3f}",
        "--talk-time", f"{args.talk:g}", "--duration-limit", f"{seconds:g}", "--ice-host", LOOPBACK,
        "--server-pid", str(server.pid), "--json", str(folder / "loadtest.json"), "--no-progress",
    ]  # fmt: skip


async def run(args: argparse.Namespace, server_dsn: str) -> int:
    folder = Path(tempfile.mkdtemp(prefix="callbutton-bench-soak-"))
    try:
        async with throwaway_database(server_dsn, "soak") as dsn:
            database = await Database.connect(dsn, max_size=2)
            try:
                await database.migrate()
                tenant = await create_tenant(database, args.concurrency)
                return await soak(args, dsn, folder, tenant, database)
            finally:
                await database.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def soak(args: argparse.Namespace, dsn: str, folder: Path, tenant: Tenant, database: Database) -> int:
    traced = folder / "memory" if args.trace_memory else None
    if traced is not None:
        traced.mkdir()
    server = Server(server_env(dsn, folder), traced)
    try:
        await server.start()
    except BaseException:
        await server.stop()  # it may be running without having said so
        raise
    print(f"server pid {server.pid} at {server.url}, recording on; {args.concurrency} agents", flush=True)
    loadtest: asyncio.subprocess.Process | None = None
    async with aiohttp.ClientSession() as http:
        monitor = Monitor(server, http, args.minutes)
        sampling = asyncio.create_task(monitor.run())
        try:
            print(f"idle for {args.idle:g} s ...", flush=True)
            await asyncio.sleep(args.idle)
            if traced is not None:
                await server.snapshot()  # 1: idle
            command = loadtest_command(args, server, tenant, folder)
            print(f"load: {args.concurrency} calls at once, {args.talk:g} s of talk each, for {args.minutes:g} min")
            print("  " + " ".join(c if "@" not in c else "EMAIL:PASSWORD" for c in command[1:]), flush=True)
            monitor.begin("load")
            loadtest = await asyncio.create_subprocess_exec(*command, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
            limit = args.minutes * MINUTE + args.talk + CHECKS_TIMEOUT
            under_load = asyncio.create_task(snapshot_under_load(args, server, monitor)) if traced else None
            output, _ = await asyncio.wait_for(loadtest.communicate(), limit)
            calls_traced = await under_load if under_load is not None else 0
            code = loadtest.returncode
            monitor.begin("after")
            print(f"\nload tester exited {code}:\n  " + output.decode().strip().replace("\n", "\n  "), flush=True)
            print(f"idle again for {args.idle:g} s ...", flush=True)
            await asyncio.sleep(args.idle)
            if traced is not None:
                await server.snapshot()  # 3: idle again
                print_memory(traced, calls_traced)
        finally:
            if loadtest is not None and loadtest.returncode is None:
                loadtest.kill()
                await loadtest.wait()
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
            recordings_metric = {k: v for k, v in monitor.metrics.items() if k.startswith("callbutton_recording")}
            await server.stop()
    rows = await database.pool.fetch("SELECT state, count(*) AS n FROM recordings GROUP BY state ORDER BY state")
    report = json.loads((folder / "loadtest.json").read_text())
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / "loadtest.json", args.keep / "loadtest.json")
        (args.keep / "samples.json").write_text(json.dumps([asdict(s) for s in monitor.samples]) + "\n")
    await failed_calls(database, report)
    return verdict(args, monitor, server, report, code, {r["state"]: r["n"] for r in rows}, recordings_metric)


async def snapshot_under_load(args: argparse.Namespace, server: Server, monitor: Monitor) -> int:
    """Snapshot 2, a minute after the warm-up (every call up by then), taken when ``--concurrency``
    calls are in progress (within 30 s); how many were."""
    await asyncio.sleep((min(args.warmup, args.minutes / 2) + 1) * MINUTE)
    for _ in range(60):
        if int(monitor.metrics.get("callbutton_calls_active", 0)) >= args.concurrency:
            break
        await asyncio.sleep(0.5)
    calls = int(monitor.metrics.get("callbutton_calls_active", 0))
    await server.snapshot()
    return calls


def print_memory(folder: Path, calls: int) -> None:
    """What tracemalloc and glibc say of the server's memory: under load against idle, per call (each
    call's agent logged in with a standing leg, which idle had not), and idle again against idle."""
    print(f"\nmemory, {calls} calls in progress against idle (before the agents logged in), per call:")
    print("  " + "\n  ".join(compare(folder, 1, 2, max(calls, 1))))
    print("\nmemory, idle again after the load against idle before it (in all, not per call):")
    print("  " + "\n  ".join(compare(folder, 1, 3, 1, top=8)))


async def failed_calls(database: Database, report: dict[str, Any]) -> None:
    """Each failed call with what its recording row says (before the throwaway database goes): a
    failed check is then explained by figures, not guessed at."""
    failed = [c for c in report["per_call"] if c["failures"]]
    if not failed:
        return
    rows = await database.pool.fetch(
        "SELECT call_id::text AS call_id, state, duration_ms FROM recordings WHERE call_id::text = ANY($1::text[])",
        [c["call_id"] for c in failed if c["call_id"]],
    )
    recorded = {r["call_id"]: r for r in rows}
    print(f"\nfailed calls ({len(failed)}):")
    for call in failed[:20]:
        row = recorded.get(call["call_id"] or "")
        recording = f"recording {row['state']}, {row['duration_ms']} ms" if row else "no recording row"
        phases = {k: call["phases"][k] for k in sorted(call["phases"])}
        print(
            f"  call {call['index']} ({call['call_id']}) at {call['started_at']:.1f} s: {', '.join(call['failures'])}; "
            f"talk {call['talk_seconds']} s, {recording}; phases (ms) {phases}"
        )


def verdict(
    args: argparse.Namespace,
    monitor: Monitor,
    server: Server,
    report: dict[str, Any],
    code: int | None,
    recording_rows: dict[str, int],
    recordings_metric: dict[str, float],
) -> int:
    warmup = min(args.warmup, args.minutes / 2) * MINUTE
    end = args.minutes * MINUTE
    idle, after = monitor.window("idle"), monitor.window("after")
    warm = monitor.window("load", max(0.0, warmup - MINUTE), warmup)
    last = monitor.window("load", end - MINUTE, end)
    steady = monitor.window("load", warmup, end)
    print(f"\n{'':8s} {'RSS MiB':>9s} {'(max)':>7s} {'FDs':>5s} {'threads':>8s} {'CPU %':>6s} "
          f"{'calls in progress (min-max)':>28s} {'frozen':>9s}")  # fmt: skip
    monitor.print_phase("idle", "idle")
    print(f"{'warm-up':>8s} {row(warm)}   (minute {warmup / MINUTE:g} of the load)")
    print(f"{'end':>8s} {row(last)}   (minute {args.minutes:g} of the load)")
    monitor.print_phase("after", "after")
    for label, samples in (("idle", idle), ("warm-up", warm), ("end", last), ("after", after)):
        if samples:
            print(f"  FDs by kind, {label} (its last sample): {samples[-1].kinds}")

    failures: list[str] = []

    def target(ok: bool, text: str) -> None:
        print(f"  {'ok    ' if ok else 'MISSED'} {text}")
        if not ok:
            failures.append(text)

    def metric(samples: list[Sample], key: Callable[[Sample], float]) -> float:
        return median(key(s) for s in samples)

    rss_idle, rss_warm, rss_end = (metric(w, lambda s: s.rss_mib) for w in (idle, warm, last))
    fds_idle, fds_warm, fds_end = (metric(w, lambda s: s.fds) for w in (idle, warm, last))
    rss_steady, calls_steady = metric(steady, lambda s: s.rss_mib), metric(steady, lambda s: s.calls)
    frozen_warm, frozen_end = (metric(w, lambda s: s.frozen) for w in (warm, last))
    rss_growth, fds_growth = growth(rss_warm, rss_end), growth(fds_warm, fds_end)
    calls = report["calls"]
    per_call = report["per_call"]
    answered = [c for c in per_call if c["answered_at"] is not None]
    checks = report.get("checks") or {}
    if "error" in checks or not checks:
        verified = 0
    else:
        verified = sum(1 for c in answered if not any(f.startswith("check:recording") for f in c["failures"]))
        verified = min(verified, int(checks.get("recordings_checked", 0)))

    print(f"\nverdict ({len(monitor.samples)} samples, every {SAMPLE_EVERY:g} s; medians):")
    target(
        rss_growth < TARGET_GROWTH,
        f"RSS {rss_warm:.1f} MiB after the warm-up -> {rss_end:.1f} MiB at the end: {rss_growth:+.1f}% "
        f"(target < {TARGET_GROWTH:g}%)",
    )
    target(
        fds_growth < TARGET_GROWTH,
        f"FDs {fds_warm:.0f} after the warm-up -> {fds_end:.0f} at the end: {fds_growth:+.1f}% "
        f"(target < {TARGET_GROWTH:g}%)",
    )
    target(
        growth(frozen_warm, frozen_end) < TARGET_GROWTH,
        f"objects frozen out of the collector's way {frozen_warm:.0f} after the warm-up -> {frozen_end:.0f} "
        f"at the end: {growth(frozen_warm, frozen_end):+.1f}% (target < {TARGET_GROWTH:g}%; what a frozen "
        "cycle keeps stays)",
    )
    target(calls["failed"] == 0 and calls["started"] > 0, f"{calls['failed']} failed calls of {calls['started']}")
    if calls["failures_by_reason"]:
        print(f"         failures: {calls['failures_by_reason']}")
    target(
        verified == len(answered) == calls["started"] and verified > 0,
        f"recordings verified: {verified} / {calls['started']} calls ({len(answered)} answered)",
    )
    target(code == 0, f"load tester exit status {code}")
    print(
        f"\n  idle RSS {rss_idle:.1f} MiB, {fds_idle:.0f} FDs; idle again after the load "
        f"{metric(after, lambda s: s.rss_mib):.1f} MiB, {metric(after, lambda s: s.fds):.0f} FDs"
    )
    if idle and after:
        print(
            f"  frozen objects idle {idle[-1].frozen}, idle again after the load {after[-1].frozen}; objects "
            f"the full collections found in cycles during the load: {after[-1].collected - idle[-1].collected} "
            f"({(after[-1].collected - idle[-1].collected) / max(1, calls['started']):.0f} a call)"
        )
    print(
        f"  memory per call: (steady RSS {rss_steady:.1f} - idle {rss_idle:.1f}) / {args.concurrency} = "
        f"{(rss_steady - rss_idle) / args.concurrency:.2f} MiB (calls in progress after the warm-up, median "
        f"{calls_steady:.0f}); peak RSS {max(s.rss_mib for s in monitor.samples):.1f} MiB"
    )
    print(
        f"  calls carried: {calls['started']} in {report['duration_seconds']:.0f} s; "
        f"accept -> first audio p95 {report['first_audio_ms']['p95']} ms, loss p95 "
        f"{report['quality']['loss_percent']['p95']}%, MOS p50 {report['quality']['mos']['p50']}"
    )
    print(f"  recording rows by state: {recording_rows}; checks: {checks}")
    print(f"  server recordings (its /metrics, last scrape): {recordings_metric}")
    print(f"  server warnings and errors logged: {dict(server.problems) or 'none'}")
    for example in server.examples[:5]:
        print(f"    {example}")
    return 1 if failures else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of load (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls at once (default 16)")
    parser.add_argument("--talk", type=float, default=20.0, help="seconds of talk per call (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0, help="minutes of warm-up (default 2)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds sampled idle before and after the load")
    parser.add_argument(
        "--trace-memory",
        action="store_true",
        help="run the server under tracemalloc and say where its memory goes (slower: a run to explain, not to time)",
    )
    parser.add_argument("--keep", type=Path, help="keep the load tester's JSON report and the samples in this folder")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("CALLBUTTON_DATABASE_URL") or os.environ.get("CALLBUTTON_TEST_DATABASE_URL"),
        help="a Postgres server to create the throwaway databases in (default: a throwaway local cluster)",
    )
    args = parser.parse_args()
    if not 2 <= args.minutes <= 120:
        parser.error("--minutes: from 2 to 120")
    if not 1 <= args.concurrency <= 64:
        parser.error("--concurrency: from 1 to 64")
    if not 2 <= args.talk <= 300 or not 10 <= args.idle <= 600 or not 0 < args.warmup:
        parser.error(
            "--talk from 2 to 300 s, --idle from 10 to 600 s, --warmup above 0 (at most half of --minutes is used)"
        )
    with server_for(args.dsn) as server_dsn:
        code = asyncio.run(run(args, server_dsn))
    sys.exit(code)


if __name__ == "__main__":
    main()
