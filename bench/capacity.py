"""How many concurrent calls a server carries, callbutton against a stock aiortc relay, in one run.

Both servers are the same program but for the media path (bench/stock_relay.py swaps it), on a
throwaway Postgres, driven by the same load generator (``callbutton loadtest``) at rising
concurrency. A level passes when every call verifies, accept -> first audio p95 is under 300 ms,
the p95 of packet loss under 1%, the recordings lost at most ``MAX_RECORDING_DROPS`` of their
packets (held too long before their files opened, or the recorder's thread behind), and the level
was really reached: at least 80% of its calls in conversation at once (answered, not yet ended) for
``MIN_STEADY_SAMPLES`` of the server samples (one a second). Server CPU per concurrent call is read
from /proc over those samples, divided by the calls in conversation.

The button rings its agents by ``--strategy``. ``longest_idle`` (the default) rings one agent a call,
so calls are requested, rung and answered in parallel (``--overlapping-rings``), as a team's would.
``ring_all`` rings every free agent for each call, one call at a time, so the load generator sets
calls up one after another: a level of N needs ``--talk`` long enough for N setups (0.1-0.25 s each
here), and each setup costs in proportion to the agents free.

    .venv/bin/python bench/capacity.py [--levels 2,4,8,12,16,24,32] [--talk 8] [--record] [--strategy ring_all]

The load generator runs on the same machine (2 cores here): at high levels it competes with the
server, which the figures include. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from setup_latency import scrape, server_env

from server import auth
from storage.db import Database
from storage.localpg import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "http://bench.example.test"
PASSWORD = "bench password 123"


async def tenant(database: Database, agents: int, record: bool, strategy: str) -> tuple[str, list[str], str]:
    organisation = await database.accounts.create_organisation(f"Bench {uuid.uuid4().hex[:6]}")
    button = await database.buttons.create(
        organisation.id, name="Bench", allowed_origins=[ORIGIN], recording_enabled=record, strategy=strategy
    )
    password_hash = await auth.hash_password(PASSWORD)
    emails = []
    for index in range(agents):
        email = f"bench-agent-{index}-{uuid.uuid4().hex[:6]}@example.test"
        await database.accounts.create_user(
            organisation.id, email=email, display_name=f"Agent {index}", role="agent", password_hash=password_hash
        )
        emails.append(email)
    admin = f"bench-admin-{uuid.uuid4().hex[:6]}@example.test"
    await database.accounts.create_user(
        organisation.id, email=admin, display_name="Admin", role="admin", password_hash=password_hash
    )
    return button.public_key, emails, admin


class Server:
    def __init__(self, kind: str, env: dict[str, str]) -> None:
        self.kind = kind
        self.env = env
        self.process: asyncio.subprocess.Process | None = None
        self.url = ""

    async def start(self) -> None:
        program = ["-m", "server", "serve"] if self.kind == "callbutton" else [str(ROOT / "bench" / "stock_relay.py")]
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, *program, env=self.env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
        )
        assert self.process.stderr is not None
        while not self.url:
            line = await asyncio.wait_for(self.process.stderr.readline(), 60)
            if not line:
                raise RuntimeError(f"{self.kind} server exited")
            event = json.loads(line)
            if event.get("event") == "server.started":
                self.url = event["url"]
        self._drain = asyncio.create_task(self._collect(self.process.stderr))

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        """Keep the server's warnings and errors: a failed level should say why."""
        self.problems: list[str] = []
        #: What the recordings finished since the last level lost: packets dropped (the mux worker's
        #: backlog full, or a sender faster than real time) and late.
        self.recordings = {"finished": 0, "packets": 0, "dropped": 0, "late": 0, "before_start": 0}
        while line := await stream.readline():
            if b'"level": "warning"' in line or b'"level": "error"' in line:
                self.problems.append(line.decode()[:600])
            if b'"recording.finished"' in line:
                event = json.loads(line)
                self.recordings["finished"] += 1
                for key in ("packets", "dropped", "late", "before_start"):
                    self.recordings[key] += event.get(key) or 0

    async def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        await self.process.wait()


async def level(server: Server, button: str, agents: list[str], admin: str, concurrency: int, talk: float,
                folder: Path, overlapping: bool) -> dict[str, Any]:  # fmt: skip
    report = folder / f"{server.kind}-{concurrency}.json"
    assert server.process is not None
    args = [
        sys.executable, "-m", "server", "loadtest", server.url, "--button", button, "--origin", ORIGIN,
        "--calls", str(2 * concurrency), "--concurrency", str(concurrency),
        "--rate", str(max(1.0, concurrency / talk)), "--talk-time", str(talk),
        "--ice-host", "127.0.0.1", "--server-pid", str(server.process.pid), "--json", str(report), "--no-progress",
        "--admin", f"{admin}:{PASSWORD}", "--max-first-audio-p95", "300", "--max-loss", "1",
    ]  # fmt: skip
    for email in agents[:concurrency]:
        args += ["--agent", f"{email}:{PASSWORD}"]
    if overlapping:
        args.append("--overlapping-rings")
    before = await metrics(server.url)
    process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL, cwd=ROOT)
    busy: list[tuple[float, float]] = []
    backlog: list[tuple[float, float]] = []
    watch = asyncio.create_task(watch_server(server.url, busy, backlog))
    code = await process.wait()
    watch.cancel()
    data = json.loads(report.read_text())
    after = await metrics(server.url)
    pauses = full_collections(before, after)
    # CPU per concurrent call over the samples taken while the level was at (nearly) full concurrency.
    steady = [
        (sample, active)
        for sample in data["server_resources"]
        if (active := _nearest(data["concurrency"], sample["t"])) >= max(1, concurrency * 0.8)
    ]
    per_call = [sample["cpu_percent"] / active for sample, active in steady]
    # The load generator's own CPU per call over the same steady part (it shares the machine).
    generator = [
        sample["cpu_percent"] / active
        for sample in data["generator_resources"]
        if (active := _nearest(data["concurrency"], sample["t"])) >= max(1, concurrency * 0.8)
    ]
    return {
        "concurrency": concurrency,
        "passed": code == 0
        and len(steady) >= MIN_STEADY_SAMPLES
        and server.recordings["dropped"] <= MAX_RECORDING_DROPS * server.recordings["packets"],
        "steady_samples": len(steady),
        "failed_calls": data["calls"]["failed"],
        "failures": data["calls"]["failures_by_reason"],
        "failed": [call["details"] | {"index": call["index"]} for call in data["per_call"] if call["failures"]][:5],
        "first_audio_p95_ms": data["first_audio_ms"]["p95"],
        "loss_p95": data["quality"]["loss_percent"]["p95"],
        "cpu_per_call": round(statistics.median(per_call), 2) if per_call else None,
        "generator_cpu_per_call": round(statistics.median(generator), 2) if generator else None,
        "generator_cpu_max": data["generator_cpu_percent"]["max"],
        # The load generator's own warnings (short of CPU, its own drops): the level's figures include them.
        "generator_warnings": data["warnings"],
        "rss_mib_steady": round(statistics.median(s["rss_mib"] for s, _ in steady), 1) if steady else None,
        "rss_mib_peak": max((s["rss_mib"] for s in data["server_resources"]), default=None),
        "gc_full": pauses,
        "loop_lag": loop_lag(before, after),
        # The event loop's utilisation over 5 s, read every 2 s while the level was at (nearly) full
        # concurrency (not while it ramped up or its calls were checked): its median and highest.
        "loop_busy": spread([value for t, value in busy if _nearest(data["concurrency"], t) >= concurrency * 0.8]),
        # Database writes queued behind one another (the outbox), read every 2 s: the most at once.
        "writes_pending_max": int(max(value for _, value in backlog)) if backlog else None,
        "refused_overloaded": int(
            after.get("callbutton_calls_refused_overloaded_total{}", 0.0)
            - before.get("callbutton_calls_refused_overloaded_total{}", 0.0)
        ),
        "recordings": dict(server.recordings),
    }


def spread(values: list[float]) -> dict[str, float] | None:
    return {"p50": round(statistics.median(values), 2), "max": round(max(values), 2)} if values else None


async def watch_server(url: str, busy: list[tuple[float, float]], backlog: list[tuple[float, float]]) -> None:
    """Every 2 s, the server's loop utilisation and queued writes, each with the seconds since the
    load test started (its reports' ``t``)."""
    began = time.monotonic()
    while True:
        await asyncio.sleep(2)
        sample = await metrics(url)
        t = time.monotonic() - began
        for name, into in (("callbutton_event_loop_utilisation{}", busy), ("callbutton_outbox_pending{}", backlog)):
            if (value := sample.get(name)) is not None:
                into.append((t, value))


async def metrics(url: str) -> dict[str, float]:
    try:
        return await scrape(url)
    except Exception:
        return {}  # a server without /metrics


def full_collections(before: dict[str, float], after: dict[str, float]) -> dict[str, Any] | None:
    """The server's full garbage collections during a level (``callbutton_gc_pause_seconds``,
    generation 2): how many, their mean, the histogram bound under which the longest fell, the objects
    they found in reference cycles, and the objects frozen out of their way at the level's end."""
    prefix = "callbutton_gc_pause_seconds"
    label = "generation=2"
    count = after.get(f"{prefix}_count{{{label}}}", 0.0) - before.get(f"{prefix}_count{{{label}}}", 0.0)
    if not after or count <= 0:
        return None
    total = after[f"{prefix}_sum{{{label}}}"] - before.get(f"{prefix}_sum{{{label}}}", 0.0)
    bounds = sorted(
        (float(key.split("le=", 1)[1].split(",", 1)[0].rstrip("}")), value - before.get(key, 0.0))
        for key, value in after.items()
        if key.startswith(f"{prefix}_bucket{{") and label in key
    )
    longest = next((bound for bound, seen in bounds if seen >= count), None)
    collected = "callbutton_gc_collected_objects_total{}"
    return {
        "count": int(count),
        "mean_ms": round(1000 * total / count, 1),
        "max_le_ms": longest and 1000 * longest,
        "collected": int(after.get(collected, 0.0) - before.get(collected, 0.0)),
        "frozen": int(after.get("callbutton_gc_frozen_objects{}", 0.0)),
    }


def loop_lag(before: dict[str, float], after: dict[str, float]) -> dict[str, Any] | None:
    """How late the server's event loop ran its 0.5 s timer during a level
    (``callbutton_event_loop_lag_seconds``): the mean, and the share of ticks later than 25 and 100 ms."""
    prefix = "callbutton_event_loop_lag_seconds"
    count = after.get(f"{prefix}_count{{}}", 0.0) - before.get(f"{prefix}_count{{}}", 0.0)
    if not after or count <= 0:
        return None
    total = after[f"{prefix}_sum{{}}"] - before.get(f"{prefix}_sum{{}}", 0.0)

    def later_than(bound: str) -> float:
        key = f"{prefix}_bucket{{le={bound}}}"
        return round(1 - (after.get(key, 0.0) - before.get(key, 0.0)) / count, 2)

    return {"ticks": int(count), "mean_ms": round(1000 * total / count, 1),
            "over_25ms": later_than("0.025"), "over_100ms": later_than("0.1")}  # fmt: skip


#: Server samples (one a second) a level's calls must have been in conversation at once, at >= 80%.
MIN_STEADY_SAMPLES = 3
#: The share of the recordings' packets they may lose (``dropped`` in ``recording.finished``) in a level
#: that passes: a recording with gaps is a call not carried.
MAX_RECORDING_DROPS = 0.001


def _nearest(samples: list[list[float]], t: float) -> int:
    return int(min(samples, key=lambda s: abs(s[0] - t))[1]) if samples else 0


async def main(
    levels: list[int], talk: float, record: bool, kinds: list[str], keep: Path | None, strategy: str,
    max_loop_busy: str | None,
) -> None:  # fmt: skip
    folder = Path(tempfile.mkdtemp(prefix="callbutton-capacity-"))
    folder.chmod(0o755)
    cluster = LocalPostgres(folder / "pg")
    dsn = cluster.start()
    database = await Database.connect(dsn)
    await database.migrate()
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        tenants = {
            "stock-relay": await tenant(database, max(levels), False, strategy),  # the baseline records nothing
            "callbutton": await tenant(database, max(levels), record, strategy),
        }
        # The same environment as the other server benchmarks: loopback ICE, JSON logs, and every
        # per-address limit lifted (one machine plays every visitor and agent; logging 64 agents in
        # from one address is otherwise refused with 429).
        env = server_env(dsn, folder)
        if max_loop_busy is not None:
            env["CALLBUTTON_MAX_LOOP_BUSY"] = max_loop_busy
        for kind in kinds:
            button, agents, admin = tenants[kind]
            server = Server(kind, env)
            await server.start()
            reports = keep or folder
            reports.mkdir(parents=True, exist_ok=True)
            results[kind] = []
            failures = 0
            try:
                for concurrency in levels:
                    outcome = await level(
                        server, button, agents, admin, concurrency, talk, reports, strategy != "ring_all"
                    )
                    results[kind].append(outcome)
                    print(kind, outcome, flush=True)
                    for problem in server.problems[:5]:
                        print("   server:", problem.strip(), flush=True)
                    server.problems.clear()
                    server.recordings.update(dict.fromkeys(server.recordings, 0))
                    failures = 0 if outcome["passed"] else failures + 1
                    if failures == 2:
                        break
            finally:
                await server.stop()
    finally:
        await database.close()
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\nrecording {'on' if record else 'off'}, {strategy} button, talk {talk:g} s, levels {levels}")
    best: dict[str, dict[str, Any] | None] = {}
    for kind, outcomes in results.items():
        passing = [o for o in outcomes if o["passed"]]
        best[kind] = max(passing, key=lambda o: o["concurrency"]) if passing else None
        top = best[kind]
        print(
            f"  {kind:12s} carries {top['concurrency'] if top else 0} concurrent calls; "
            f"CPU per call at that level {top['cpu_per_call'] if top else '-'}% of a core"
        )
    ours, theirs = best.get("callbutton"), best.get("stock-relay")
    if ours and theirs and ours["cpu_per_call"] and theirs["cpu_per_call"]:
        print(f"  CPU per call, callbutton / stock relay: {ours['cpu_per_call'] / theirs['cpu_per_call']:.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="2,4,8,12,16,24,32")
    parser.add_argument("--talk", type=float, default=8.0)
    parser.add_argument("--record", action="store_true", help="record every call on the callbutton server")
    parser.add_argument("--servers", default="stock-relay,callbutton", help="which servers to measure")
    parser.add_argument("--keep", type=Path, help="keep every level's JSON report in this folder")
    parser.add_argument(
        "--strategy", choices=("longest_idle", "round_robin", "ring_all"), default="longest_idle",
        help="how the button rings its agents (default longest_idle: calls set up in parallel)",
    )  # fmt: skip
    parser.add_argument(
        "--max-loop-busy", help="the server's CALLBUTTON_MAX_LOOP_BUSY (default 0, as in the other benchmarks: what a "
        "process carries, no call refused for load; 0.8, the server's own default, to see it refuse)",
    )  # fmt: skip
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    kinds = args.servers.split(",")
    asyncio.run(main(levels, args.talk, args.record, kinds, args.keep, args.strategy, args.max_loop_busy))
