"""Call setup with 50 calls set up at once: callbutton against a stock aiortc relay, in one run.

Both servers (``callbutton serve`` with the button recording, and bench/stock_relay.py: the same
server with the media path a stock aiortc server has) run side by side on a throwaway Postgres, each
with a tenant of its own (one ring-all button, or ``--strategy``, ``--calls`` agents, an admin). ``callbutton loadtest``
then sets up ``--calls`` calls at once against each in turn, ``--repeat`` times, alternating which
server goes first so that the machine's noise falls on both: concurrency = calls = agents, a rate of
1000 calls a second, ``--talk`` seconds of talk, the admin checks (rows, recordings) after. Two
``--modes`` of requesting: ``overlapping`` (``--overlapping-rings``: each request is sent as soon as
its offer is ready; a ring-all button rings one call at a time, since an agent who is ringing is not
available, so the rest queue; a ``--strategy longest_idle`` button rings them in parallel) and
``gated`` (the load tester's default: the next request once the previous call is answered, while the
other calls' media still sets up).

Printed per mode and server: p50/p95 of visitor request -> agent ringing and of accept -> first audio
at both ends (a call's figure is the later of its two ends), over every run's calls, the p95 of each
run (the spread), the ratio callbutton / stock and where the targets (issue 10: first audio p95 <=
100 ms, ringing p95 <= 50 ms) stand; per run, the server's own setup histogram
(``callbutton_setup_seconds`` on its /metrics) and the calls whose recording's length was off.

    .venv/bin/python bench/setup_latency.py [--calls 50] [--repeat 2] [--talk 3] [--modes overlapping,gated]
                                            [--servers stock-relay,callbutton] [--strategy ring_all]
                                            [--answer-delay 0] [--no-pin] [--profile FILE]

The servers run on the first CPU and the load tester on the others (``--no-pin``: anywhere): the
load tester sets up both ends of every call, and its bursts must not take the server's CPU. Postgres
runs anywhere. Agents accept as soon as they are rung unless ``--answer-delay`` says how long they
let a call ring: at once, accept -> first audio holds the whole of the visitor's leg's setup, which
a person's second of answering otherwise hides (the standing agent leg and the visitor's leg connect
while it rings, DESIGN.md).

``--profile FILE`` runs one more callbutton run, not counted, with the server under cProfile from
its first call created to every call answered (plus a second), and writes the stats to FILE
(``python -m pstats FILE``); the top functions are printed.

The stock relay is started through :func:`serve_stock`, which gives bench/stock_relay.py's classes the
attributes the server has since come to read of every bridge and leg, when they lack them.

Loopback only (ICE host candidates on 127.0.0.1, no STUN). The load generator runs on the same
machine as the servers. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import numpy as np
from common import inherited_env
from prometheus_client.parser import text_string_to_metric_families

from server import auth
from storage.db import Database
from storage.keys import MasterKey
from storage.localpg import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://bench.example.test"
PASSWORD = "bench password 123"
RING_TARGET_MS = 50.0
FIRST_AUDIO_TARGET_MS = 100.0
TICKS = os.sysconf("SC_CLK_TCK")
SETUP_PHASES = ("ring", "visitor_answer", "visitor_connected")


# --- shared with bench/workers.py ------------------------------------------------------------------


class Tenant(NamedTuple):
    button: str  # the button's public key
    agents_file: Path  # EMAIL:PASSWORD a line
    admin: str  # the admin's email
    organisation_id: uuid.UUID


async def tenant(
    database: Database, agents: int, record: bool, folder: Path, label: str = "bench", strategy: str = "ring_all"
) -> Tenant:
    """An organisation with one button (ringing its agents by ``strategy``), ``agents`` agents and an admin."""
    organisation = await database.accounts.create_organisation(f"Bench {label} {uuid.uuid4().hex[:6]}")
    button = await database.buttons.create(
        organisation.id, name="Bench", allowed_origins=[ORIGIN], recording_enabled=record, strategy=strategy
    )
    password_hash = await auth.hash_password(PASSWORD)
    lines = []
    for index in range(agents):
        email = f"{label}-agent-{index}-{uuid.uuid4().hex[:6]}@example.test"
        await database.accounts.create_user(
            organisation.id, email=email, display_name=f"Agent {index}", role="agent", password_hash=password_hash
        )
        lines.append(f"{email}:{PASSWORD}")
    admin = f"{label}-admin-{uuid.uuid4().hex[:6]}@example.test"
    await database.accounts.create_user(
        organisation.id, email=admin, display_name="Admin", role="admin", password_hash=password_hash
    )
    agents_file = folder / f"agents-{label}-{button.public_key}.txt"
    agents_file.write_text("\n".join(lines) + "\n")
    return Tenant(button.public_key, agents_file, admin, organisation.id)


def server_env(dsn: str, folder: Path, **extra: str) -> dict[str, str]:
    """The servers' environment: loopback ICE, JSON logs, every per-address and per-button limit
    lifted (one machine plays every visitor and agent), and no call refused for load (what a
    benchmark measures is how the server does as it is loaded, refusing nothing). The event loop is
    the one the benchmark is run with: ``CALLBUTTON_EVENT_LOOP=uvloop`` compares it."""
    env = inherited_env()
    env.update({
        "CALLBUTTON_DATABASE_URL": dsn, "CALLBUTTON_DATA_DIR": str(folder), "CALLBUTTON_PORT": "0",
        "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1", "CALLBUTTON_LOG_FORMAT": "json",
        "CALLBUTTON_LOG_LEVEL": "info", "CALLBUTTON_CALL_RATE_PER_ADDRESS": "100000",
        "CALLBUTTON_VISITOR_SOCKETS_PER_ADDRESS": "100000", "CALLBUTTON_CALL_RATE_PER_BUTTON": "100000",
        "CALLBUTTON_LOGIN_RATE_PER_ADDRESS": "100000", "CALLBUTTON_LOGIN_RATE_PER_ACCOUNT": "100000",
        "CALLBUTTON_PURGE_INTERVAL": "0", "CALLBUTTON_MASTER_KEY": MasterKey.generate().to_text(),
        "CALLBUTTON_MAX_LOOP_BUSY": "0",
    })  # fmt: skip
    env.update(extra)
    return env


class Server:
    """A server subprocess; ``url`` once it logged ``server.started``. Its warnings and errors are
    kept in ``problems``; ``on_line`` sees every log line (as bytes)."""

    def __init__(self, kind: str, argv: list[str], env: dict[str, str], cpus: set[int] | None = None) -> None:
        self.kind = kind
        self.argv = argv
        self.env = env
        #: The CPUs the process may run on (None: any).
        self.cpus = cpus
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""
        self.problems: list[str] = []
        #: call id -> the server's ``recording.finished`` line (duration, packets, dropped, late)
        self.recordings: dict[str, dict[str, Any]] = {}
        self.on_line: Any = None
        self._drain: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            preexec_fn=pinned(self.cpus),
        )
        assert self.process.stderr is not None
        async with asyncio.timeout(90):
            while not self.url:
                line = await self.process.stderr.readline()
                if not line:
                    raise RuntimeError(f"{self.kind} server exited")
                if self.on_line is not None:
                    self.on_line(line)
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == "server.started":
                        self.url = event["url"]
        self._drain = asyncio.create_task(self._collect(self.process.stderr))

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            if b'"level": "warning"' in line or b'"level": "error"' in line:
                self.problems.append(line.decode(errors="replace"))
            if b'"recording.finished"' in line:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    self.recordings[str(event.get("call_id"))] = event
            if self.on_line is not None:
                self.on_line(line)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(60):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, 5)


def pinned(cpus: set[int] | None) -> Any:
    """A ``preexec_fn`` that keeps the child on ``cpus`` (None: no such function)."""
    if cpus is None:
        return None
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


async def settle(pids: list[int], below: float = 5.0, within: float = 30.0) -> float:
    """Wait (up to ``within`` s) until the processes together use under ``below``% of a core over a
    second: what the previous run left (calls still ending, legs timing out) must not weigh on the
    next. Returns the last reading."""
    percent = 0.0
    for _ in range(int(within)):
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(1.0)
        percent = 100 * (sum(cpu_seconds(pid) for pid in pids) - before)
        if percent < below:
            break
    return percent


def pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(values, dtype=np.float64), q)), 1) if values else None


async def scrape(url: str) -> dict[str, float]:
    """A server's /metrics (it answers loopback clients), as {name{labels}: value}."""
    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        text = await response.text()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


# --- this benchmark --------------------------------------------------------------------------------


def loadtest_args(url: str, button: str, agents: Path, admin: str | None, *, calls: int, talk: float,
                  report: Path, server_pid: int | None = None, answer_delay: float = 0.0) -> list[str]:  # fmt: skip
    args = [
        sys.executable, "-m", "server", "loadtest", url, "--button", button, "--origin", ORIGIN,
        "--agents-file", str(agents), "--calls", str(calls), "--concurrency", str(calls),
        "--rate", "1000", "--talk-time", str(talk), "--overlapping-rings", "--ice-host", "127.0.0.1",
        "--json", str(report), "--no-progress",
    ]  # fmt: skip
    if admin:
        args += ["--admin", f"{admin}:{PASSWORD}"]
    if answer_delay:
        args += ["--answer-delay", str(answer_delay)]
    if server_pid:
        args += ["--server-pid", str(server_pid)]
    return args


def setup_histogram(before: dict[str, float], after: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per phase of the server's setup histogram, over one run: the count and the bucket bounds
    (ms) holding the median and the 95th percentile."""
    out: dict[str, dict[str, Any]] = {}
    for phase in SETUP_PHASES:
        buckets = []
        for key, value in after.items():
            if key.startswith("callbutton_setup_seconds_bucket{") and f"phase={phase}" in key:
                bound = key.split("le=", 1)[1].split(",", 1)[0].rstrip("}")
                buckets.append((float(bound), value - before.get(key, 0.0)))
        buckets.sort()
        total = buckets[-1][1] if buckets else 0
        out[phase] = {"count": int(total)}
        for name, q in (("p50_le_ms", 0.5), ("p95_le_ms", 0.95)):
            bound = next((b for b, n in buckets if total and n >= q * total), None)
            out[phase][name] = None if bound is None else ("inf" if bound == float("inf") else round(bound * 1000))
    return out


async def one_run(server: Server, key: Tenant, calls: int, talk: float, report: Path,
                  checks: bool, overlapping: bool, profile_loadtest: Path | None = None, *,
                  answer_delay: float = 0.0, cpus: set[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """One load test run against ``server``; ``cpus``: where the load tester runs."""
    button, agents, admin, _ = key
    before = await scrape(server.url)
    args = loadtest_args(
        server.url, button, agents, admin if checks else None, calls=calls, talk=talk, report=report,
        answer_delay=answer_delay,
    )  # fmt: skip
    if not overlapping:
        args.remove("--overlapping-rings")
    if profile_loadtest is not None:
        args[1:1] = ["-m", "cProfile", "-o", str(profile_loadtest)]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, cwd=ROOT, preexec_fn=pinned(cpus)
    )
    out, _ = await process.communicate()
    after = await scrape(server.url)
    data = json.loads(report.read_text())
    ringing, both, visitor, agent = [], [], [], []
    for call in data["per_call"]:
        phases = call["phases"]
        if "request_to_ringing" in phases:
            ringing.append(phases["request_to_ringing"])
        v, a = phases.get("accept_to_first_audio_visitor"), phases.get("accept_to_first_audio_agent")
        if v is not None:
            visitor.append(v)
        if a is not None:
            agent.append(a)
        if v is not None and a is not None:
            both.append(max(v, a))
    await asyncio.sleep(0.5)  # the last recordings' lines
    off = []
    for call in data["per_call"]:
        if "check:recording_duration" in call["failures"]:
            event = server.recordings.get(str(call["call_id"]), {})
            off.append({
                "index": call["index"], "talk_s": call["talk_seconds"], "recording_ms": event.get("duration_ms"),
                "packets": event.get("packets"), "dropped": event.get("dropped"), "late": event.get("late"),
                "first_audio_visitor": call["phases"].get("accept_to_first_audio_visitor"),
            })  # fmt: skip
    return {
        "server": server.kind,
        "passed": process.returncode == 0,
        "recordings_off": off,
        "verdict_line": out.decode(errors="replace").strip().splitlines()[:1],
        "calls": data["calls"]["started"],
        "failed": data["calls"]["failed"],
        "failures": data["calls"]["failures_by_reason"],
        "ringing": ringing,
        "first_audio_both": both,
        "first_audio_visitor": visitor,
        "first_audio_agent": agent,
        "server_setup": setup_histogram(before, after),
        "spread_of_starts_ms": spread(data["per_call"]),
    }


def spread(calls: list[dict[str, Any]]) -> float:
    """Milliseconds from the first call's start to the last's (the load tester's clock)."""
    starts = [c["started_at"] for c in calls]
    return round(1000 * (max(starts) - min(starts)), 1) if starts else 0.0


def summary_line(kind: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ringing = [x for r in runs for x in r["ringing"]]
    both = [x for r in runs for x in r["first_audio_both"]]
    return {
        "server": kind,
        "runs": len(runs),
        "calls": sum(r["calls"] for r in runs),
        "failed": sum(r["failed"] for r in runs),
        "ringing_p50": pct(ringing, 50),
        "ringing_p95": pct(ringing, 95),
        "ringing_p95_runs": [pct(r["ringing"], 95) for r in runs],
        "first_audio_p50": pct(both, 50),
        "first_audio_p95": pct(both, 95),
        "first_audio_p95_runs": [pct(r["first_audio_both"], 95) for r in runs],
        "first_audio_visitor_p95": pct([x for r in runs for x in r["first_audio_visitor"]], 95),
        "first_audio_agent_p95": pct([x for r in runs for x in r["first_audio_agent"]], 95),
    }


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3f}" if a is not None and b else "-"


async def profiled_run(server: Server, key: Tenant, calls: int, talk: float, folder: Path,
                       out: Path, overlapping: bool, *, answer_delay: float = 0.0,
                       cpus: set[int] | None = None) -> None:  # fmt: skip
    """One more run with the server's profiler on from its first call created to every call answered."""
    state = {"created": 0, "answered": 0, "on": False}
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def line(raw: bytes) -> None:
        if b'"-> created"' in raw:
            state["created"] += 1
            if not state["on"]:
                state["on"] = True
                os.kill(server.pid, signal.SIGUSR1)
        elif b'-> answered"' in raw:
            state["answered"] += 1
            if state["answered"] >= calls:
                loop.call_later(1.0, done.set)

    server.on_line = line
    loadtest = out.with_name(out.name + ".loadtest")
    run = one_run(
        server, key, calls, talk, folder / "profiled.json", False, overlapping, profile_loadtest=loadtest,
        answer_delay=answer_delay, cpus=cpus,
    )  # fmt: skip
    task = asyncio.create_task(run)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 120)
    os.kill(server.pid, signal.SIGUSR2)  # stop and write the stats
    await task
    server.on_line = None
    for _ in range(50):
        if out.exists():
            break
        await asyncio.sleep(0.1)
    print(f"\nprofile of the callbutton server during {calls} setups -> {out} "
          f"({state['created']} created, {state['answered']} answered while on)")  # fmt: skip
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
    print(f"\nprofile of the load tester over the whole run (its own process) -> {loadtest}")
    stats = pstats.Stats(str(loadtest))
    stats.sort_stats("tottime").print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="callbutton-setup-"))
    folder.chmod(0o755)
    cluster = LocalPostgres(folder / "pg")
    dsn = cluster.start()
    database = await Database.connect(dsn)
    servers: dict[str, Server] = {}
    modes = args.modes.split(",")
    order = [kind for kind in ("stock-relay", "callbutton") if kind in args.servers.split(",")]
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        await database.migrate()
        tenants = {
            # the baseline records nothing
            "stock-relay": await tenant(database, args.calls, False, folder, "stock", args.strategy),
            "callbutton": await tenant(database, args.calls, True, folder, "callbutton", args.strategy),
        }
        env = server_env(dsn, folder)
        this = str(Path(__file__).resolve())
        ours = [sys.executable, "-m", "server", "serve"]
        if args.profile:
            ours = [sys.executable, this, "--serve-profiled", str(args.profile.resolve())]
        server_cpus, loadtest_cpus = placement(args.pin)
        servers = {
            "stock-relay": Server("stock-relay", [sys.executable, this, "--serve-stock"], env, server_cpus),
            "callbutton": Server("callbutton", ours, env, server_cpus),
        }
        servers = {kind: server for kind, server in servers.items() if kind in order}
        await asyncio.gather(*(s.start() for s in servers.values()))
        for repeat in range(args.repeat):
            for mode in modes:
                for kind in order if repeat % 2 == 0 else order[::-1]:
                    server = servers[kind]
                    await settle([s.pid for s in servers.values()])
                    report = folder / f"{kind}-{mode}-{repeat}.json"
                    outcome = await one_run(
                        server, tenants[kind], args.calls, args.talk, report, not args.no_checks,
                        mode == "overlapping", answer_delay=args.answer_delay, cpus=loadtest_cpus,
                    )  # fmt: skip
                    results.setdefault((mode, kind), []).append(outcome)
                    s = summary_line(kind, [outcome])
                    print(
                        f"run {repeat + 1} {mode:11s} {kind:11s} {'pass' if outcome['passed'] else 'FAIL'}: "
                        f"{outcome['calls']} calls ({outcome['failed']} failed {outcome['failures'] or ''}), "
                        f"started within {outcome['spread_of_starts_ms']} ms; ringing p50/p95 "
                        f"{s['ringing_p50']}/{s['ringing_p95']} ms; first audio (both ends) p50/p95 "
                        f"{s['first_audio_p50']}/{s['first_audio_p95']} ms; server setup {outcome['server_setup']}",
                        flush=True,
                    )
                    for short in outcome["recordings_off"][: 50 if args.verbose else 5]:
                        print("   recording length off:", short, flush=True)
                    for problem in server.problems[: 20 if args.verbose else 3]:
                        print("   server:", problem.strip() if args.verbose else problem.strip()[:300], flush=True)
                    server.problems.clear()
        if args.profile:
            await profiled_run(servers["callbutton"], tenants["callbutton"], args.calls, args.talk, folder,
                               args.profile.resolve(), "overlapping" in modes, answer_delay=args.answer_delay,
                               cpus=loadtest_cpus)  # fmt: skip
    finally:
        for server in servers.values():
            await server.stop()
        await database.close()
        cluster.stop()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for report in folder.glob("*.json"):
                shutil.copy(report, args.keep / report.name)
        shutil.rmtree(folder, ignore_errors=True)

    where = f"servers on CPU {server_cpus}, load tester on {loadtest_cpus}" if server_cpus else "not pinned"
    print(f"\n{args.calls} calls set up at once, talk {args.talk:g} s, agents answer after {args.answer_delay:g} s, "
          f"{args.repeat} run(s) of each ({where})")  # fmt: skip
    for mode in modes:
        lines = {kind: summary_line(kind, results[(mode, kind)]) for kind in order if results.get((mode, kind))}
        print(f" {mode} rings:")
        for line in lines.values():
            print(
                f"  {line['server']:11s} {line['calls']} calls ({line['failed']} failed): request -> ringing "
                f"p50 {line['ringing_p50']} ms, p95 {line['ringing_p95']} ms (runs {line['ringing_p95_runs']}); "
                f"accept -> first audio at both ends p50 {line['first_audio_p50']} ms, p95 "
                f"{line['first_audio_p95']} ms (runs {line['first_audio_p95_runs']}; visitor p95 "
                f"{line['first_audio_visitor_p95']}, agent p95 {line['first_audio_agent_p95']})"
            )
        ours_line, stock_line = lines.get("callbutton"), lines.get("stock-relay")
        if ours_line and stock_line:
            print(
                f"  callbutton / stock: ringing p95 {ratio(ours_line['ringing_p95'], stock_line['ringing_p95'])}, "
                f"first audio p95 {ratio(ours_line['first_audio_p95'], stock_line['first_audio_p95'])}"
            )
        if ours_line:
            fa, ring = ours_line["first_audio_p95"], ours_line["ringing_p95"]
            print(f"  target first audio p95 <= {FIRST_AUDIO_TARGET_MS:g} ms: "
                  f"{'met' if fa is not None and fa <= FIRST_AUDIO_TARGET_MS else 'missed'} ({fa} ms)")  # fmt: skip
            print(f"  target request -> ringing p95 <= {RING_TARGET_MS:g} ms: "
                  f"{'met' if ring is not None and ring <= RING_TARGET_MS else 'missed'} ({ring} ms)")  # fmt: skip


def placement(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """Where the servers and the load tester run: with ``pin`` and two CPUs or more, the servers
    on the first and the load tester on the rest, so that the load tester's own bursts (it sets up
    both ends of every call) never take the server's CPU; Postgres runs anywhere."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, set(cpus[1:])


def serve_stock() -> int:
    """bench/stock_relay.py, given the attributes the server reads of every bridge and leg since it
    was written (``Bridge.forwarded``, ``Leg.drops``) when its classes lack them: without them every
    call's end raises half way (server/metrics.py, server/routing.py ``leg_drops``), leaving the
    visitor's leg and the relay running."""
    sys.path.insert(0, str(ROOT / "bench"))
    import stock_relay

    from media.aiortc_seam import Drops

    if not hasattr(stock_relay.StockBridge, "forwarded"):
        stock_relay.StockBridge.forwarded = 0  # type: ignore[attr-defined]
    if not hasattr(stock_relay.StockLeg, "drops"):
        stock_relay.StockLeg.drops = Drops()  # type: ignore[attr-defined]
    sys.argv = sys.argv[:1]
    return stock_relay.main()


def serve_profiled(out: Path) -> int:
    """``callbutton serve`` with cProfile switched on by SIGUSR1 and off (stats written) by SIGUSR2."""
    import cProfile

    from server.cli import main as cli

    profiler = cProfile.Profile()

    def on(*_: object) -> None:
        profiler.enable()

    def off(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(str(out))

    signal.signal(signal.SIGUSR1, on)
    signal.signal(signal.SIGUSR2, off)
    return cli(["serve"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50, help="calls set up at once (and agents)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per server and mode")
    parser.add_argument("--talk", type=float, default=3.0, help="seconds of talk per call")
    parser.add_argument(
        "--modes",
        default="overlapping,gated",
        help="overlapping: --overlapping-rings (requests sent together; a ring-all button rings one call at a "
        "time, the rest queue); gated: the load tester's default, the next call requested once one is answered",
    )
    parser.add_argument("--servers", default="stock-relay,callbutton", help="which servers to measure")
    parser.add_argument(
        "--strategy", choices=("ring_all", "longest_idle", "round_robin"), default="ring_all",
        help="how the buttons ring their agents (longest_idle rings one agent a call: overlapping requests "
        "then ring in parallel)",
    )  # fmt: skip
    parser.add_argument("--no-checks", action="store_true", help="skip the admin checks (rows, recordings)")
    parser.add_argument(
        "--answer-delay", type=float, default=0.0,
        help="seconds each agent lets a call ring before accepting (default 0: at once, so that accept -> first "
        "audio includes the whole of the visitor's leg's setup; a person takes a second or more)",
    )  # fmt: skip
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=True,
        help="servers on the first CPU, the load tester on the others (default; --no-pin: anywhere)",
    )  # fmt: skip
    parser.add_argument(
        "--profile",
        type=Path,
        help="one more callbutton run with the server and the load tester under cProfile: stats here, and in "
        "PATH.loadtest",
    )
    parser.add_argument("--verbose", action="store_true", help="print the servers' warnings and errors in full")
    parser.add_argument("--keep", type=Path, help="keep every run's JSON report in this folder")
    parser.add_argument("--serve-profiled", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--serve-stock", action="store_true", help=argparse.SUPPRESS)
    cli_args = parser.parse_args()
    if cli_args.serve_stock:
        raise SystemExit(serve_stock())
    if cli_args.serve_profiled:
        raise SystemExit(serve_profiled(cli_args.serve_profiled))
    asyncio.run(main(cli_args))
