"""Calls carried by ``callbutton serve --workers 2`` against ``--workers 1``, in one run.

Both configurations run the same server on the same throwaway Postgres and a throwaway Redis
(``redis-server`` on 127.0.0.1, no persistence), one after the other. Each organisation's calls are
carried by its home worker (docs/scaling.md), so the load is ``--tenants`` organisations (one button
each, ringing its own agents by ``--strategy``: longest-idle by default, whose calls set up in
parallel): at each level of total concurrency C, one ``callbutton loadtest`` process per
tenant runs C / tenants calls at once (2 x that many calls in all, ``--talk`` seconds of talk each),
all in parallel (each process imports first, then all start together). A level passes, over all its
calls, as bench/capacity.py's do: every call verified (each party hears its partner's tone), the
level's calls up at once (every tenant at >= 80% of its concurrency) for at least 3 s,
accept -> first audio p95 < 300 ms (``--first-audio-limit``) and the p95 of packet loss < 1%. Levels rise until
``--stop-after`` levels in a row fail.

Measured per level: the server's CPU, summed over its worker processes (children of the supervisor,
found in /proc; the process itself with one worker), read every second; CPU per call is the median
over the level's steady part (every tenant at >= 80% of its concurrency) of that CPU divided by the
calls in progress; each worker's share of it; how long the busiest worker's event loop waited, ready
to run, for a CPU (from /proc/<pid>/schedstat: the machine's share, not the server's work); and which
worker is each organisation's home (its
``callbutton:home:<org>`` key in Redis), to show whether the calls spread.

    .venv/bin/python bench/workers.py [--levels 16,32,48,64,96,128] [--tenants 8] [--talk 6] [--dsn URL]

The load generator runs on the same machine (2 cores here): it takes a core's worth of CPU or more
at these levels, so the machine, not the server, bounds what two workers can add. ``--cpu-quota
CORES`` (root) puts each worker in a cgroup of its own limited to that much CPU (a CFS quota over
10 ms periods), so that each worker has a share of its own and the load generator the rest, as if
it ran on another machine. Loopback only.
Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from common import throwaway_database
from setup_latency import ORIGIN, ROOT, Server, Tenant, cpu_seconds, pct, server_env, settle, tenant

from storage.db import Database
from storage.localpg import server_for

NODE = "bench"
FIRST_AUDIO_LIMIT_MS = 300
LOADTEST_TIMEOUT = 300  # seconds; a level's load tests take well under a minute
LOSS_LIMIT_PERCENT = 1
#: Seconds a level must hold (nearly) all its calls at once to pass: a server too slow to set them
#: up has the first ones end before the last begin, and carries fewer than the level says.
MIN_STEADY_SECONDS = 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.asynccontextmanager
async def redis_server(folder: Path) -> Any:
    """A throwaway redis-server on 127.0.0.1 (no persistence); yields its URL."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(folder), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = aioredis.from_url(url)
        for _ in range(100):
            with contextlib.suppress(Exception):
                if await client.ping():
                    break
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError("redis-server did not answer")
        await client.aclose()
        yield url
    finally:
        process.terminate()
        await process.wait()


class Workers(Server):
    """``callbutton serve --workers N``: started once every worker has logged ``server.started``;
    ``workers`` maps each worker's node name to its pid."""

    def __init__(self, count: int, env: dict[str, str], quota: float | None = None) -> None:
        argv = [sys.executable, "-m", "server", "serve"] + (["--workers", str(count)] if count > 1 else [])
        super().__init__(f"workers-{count}", argv, {**env, "CALLBUTTON_NODE_NAME": NODE})
        self.count = count
        self.workers: dict[str, int] = {}
        self.quota = quota
        self._limited: dict[int, Path] = {}

    async def start(self) -> None:
        started = 0
        ready = asyncio.Event()

        def line(raw: bytes) -> None:
            nonlocal started
            with contextlib.suppress(ValueError):
                event = json.loads(raw)
                if event.get("event") == "workers.started":
                    self.workers = {f"{NODE}-w{i}": pid for i, pid in enumerate(event["pids"])}
                elif event.get("event") == "server.started":
                    started += 1
                    if started >= self.count:
                        ready.set()

        self.on_line = line
        await super().start()  # returns at the first server.started; then wait for the others
        if self.count == 1:
            self.workers = {NODE: self.pid}
        else:
            async with asyncio.timeout(90):
                await ready.wait()

    def pids(self) -> dict[str, int]:
        """The workers' pids now (a worker that died is started again under a new pid)."""
        if self.count > 1:
            children = _children(self.pid)
            if sorted(children) != sorted(self.workers.values()):
                # Restarted workers: map by their node name, from their environment.
                self.workers = {_node_name(pid) or f"pid{pid}": pid for pid in children}
        if self.quota is not None:
            for pid in self.workers.values():
                if pid not in self._limited:
                    self._limited[pid] = limit_cpu(pid, self.quota)
        return dict(self.workers)

    async def stop(self) -> None:
        await super().stop()
        for group in self._limited.values():
            with contextlib.suppress(OSError):
                group.rmdir()
        self._limited.clear()


CPU_CGROUP = Path("/sys/fs/cgroup/cpu")


def limit_cpu(pid: int, cores: float) -> Path:
    """Put process ``pid`` (all its threads, and those it starts) in a cgroup of its own that may use
    ``cores`` of a CPU (the CFS quota; cgroup v1's cpu controller, as root). Returns the cgroup."""
    group = CPU_CGROUP / f"callbutton-bench-{pid}"
    group.mkdir(exist_ok=True)
    # A short period: a worker that has spent its quota waits out the rest of the period, and with
    # the default 100 ms that would be a stall of 60 ms at 0.4 of a core, which no core imposes.
    period = 10_000
    (group / "cpu.cfs_period_us").write_text(str(period))
    (group / "cpu.cfs_quota_us").write_text(str(int(cores * period)))
    (group / "cgroup.procs").write_text(str(pid))
    return group


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(x) for x in (task / "children").read_text().split()]
    return found


def _node_name(pid: int) -> str | None:
    with contextlib.suppress(OSError):
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(b"CALLBUTTON_NODE_NAME="):
                return item.split(b"=", 1)[1].decode()
    return None


def waited_seconds(pid: int) -> float:
    """How long the process's main thread (the event loop) has waited, runnable, for a CPU."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


async def sample_cpu(server: Workers, samples: list[dict[str, Any]], interval: float = 1.0) -> None:
    """Every ``interval``: {t (monotonic), cpu: {node: % of a core}, waited: {node: % of the time its
    event loop was ready to run but had no CPU}} of every worker."""
    pids = server.pids()
    last_t = time.monotonic()
    last = {node: (cpu_seconds(pid), waited_seconds(pid)) for node, pid in pids.items()}
    while True:
        await asyncio.sleep(interval)
        pids = server.pids()
        now = time.monotonic()
        current = {node: (cpu_seconds(pid), waited_seconds(pid)) for node, pid in pids.items()}
        span = now - last_t
        cpu = {node: 100 * (current[node][0] - last.get(node, current[node])[0]) / span for node in current}
        waited = {node: 100 * (current[node][1] - last.get(node, current[node])[1]) / span for node in current}
        samples.append({"t": now, "cpu": cpu, "waited": waited})
        last_t, last = now, current


async def homes(redis_url: str, tenants: list[Tenant], seen: dict[str, str]) -> None:
    """Note which node is each organisation's home, every half second, while the level runs."""
    client = aioredis.from_url(redis_url, socket_timeout=2)
    try:
        while True:
            for t in tenants:
                value = await client.get(f"callbutton:home:{t.organisation_id}")
                if value is not None:
                    seen[str(t.organisation_id)] = value.decode() if isinstance(value, bytes) else str(value)
            await asyncio.sleep(0.5)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.aclose(), 5)


async def one_loadtest(
    url: str, t: Tenant, per_tenant: int, talk: float, report: Path, gate: Gate, overlapping: bool
) -> dict[str, Any]:
    """One tenant's load test, in a process of its own that imports everything, says so, and waits
    for ``go`` before it starts (eight processes importing aiortc at once would otherwise load the
    machine while the first tenants' calls set up)."""
    # As many agents as calls at once: an agent logged in without a call would still hold a leg
    # sending audio, work for both sides that no call accounts for.
    agents = report.with_suffix(".agents")
    agents.write_text("\n".join(t.agents_file.read_text().splitlines()[:per_tenant]) + "\n")
    args = [
        sys.executable, str(Path(__file__).resolve()), "--loadtest", url, "--button", t.button, "--origin", ORIGIN,
        "--agents-file", str(agents), "--calls", str(2 * per_tenant), "--concurrency", str(per_tenant),
        "--rate", str(max(0.5, per_tenant / talk)), "--talk-time", str(talk), "--ice-host", "127.0.0.1",
        "--json", str(report), "--no-progress", *(["--overlapping-rings"] if overlapping else []),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert process.stdin is not None and process.stdout is not None
    await process.stdout.readline()  # imported
    gate.arrived()
    await gate.go.wait()
    process.stdin.write(b"go\n")
    await process.stdin.drain()
    try:
        async with asyncio.timeout(LOADTEST_TIMEOUT):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        print(f"   load test of {t.button} did not end within {LOADTEST_TIMEOUT} s: killed", flush=True)
    ended = time.monotonic()
    data = json.loads(report.read_text())
    # The load test's clock starts at its run's start (before its agents log in) and its duration
    # ends after its last call; no admin checks follow, so the run began about then.
    began = ended - data["duration_seconds"]
    return {
        "line": out.decode(errors="replace").strip().splitlines()[:1],
        "began": began,
        "data": data,
    }


class Gate:
    """Every load test process imported and waiting (``all_there``); then ``go``."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.all_there = asyncio.Event()
        self.go = asyncio.Event()

    def arrived(self) -> None:
        self.count -= 1
        if self.count <= 0:
            self.all_there.set()


def active_at(runs: list[dict[str, Any]], t: float) -> tuple[int, int]:
    """(calls in progress at ``t`` over every run, the fewest of any one run's)."""
    counts = []
    for run in runs:
        samples = run["data"]["concurrency"]
        if not samples:
            counts.append(0)
            continue
        counts.append(int(min(samples, key=lambda s: abs(run["began"] + s[0] - t))[1]))
    return sum(counts), min(counts) if counts else 0


async def level(server: Workers, tenants: list[Tenant], redis_url: str, total: int, talk: float,
                folder: Path, first_audio_limit: float = FIRST_AUDIO_LIMIT_MS,
                overlapping: bool = False) -> dict[str, Any]:  # fmt: skip
    per_tenant = total // len(tenants)
    samples: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    sampler = asyncio.create_task(sample_cpu(server, samples))
    watcher = asyncio.create_task(homes(redis_url, tenants, seen))
    gate = Gate(len(tenants))
    try:
        started = [
            asyncio.create_task(
                one_loadtest(
                    server.url, t, per_tenant, talk, folder / f"{server.kind}-{total}-{i}.json", gate, overlapping
                )
            )
            for i, t in enumerate(tenants)
        ]
        waiting = asyncio.create_task(gate.all_there.wait())
        await asyncio.wait([waiting, *started], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        await settle(list(server.pids().values()))
        gate.go.set()
        went = time.monotonic()
        runs = await asyncio.gather(*started)
        print(
            f"   {server.kind} at {total}: load tests ended {time.monotonic() - went:.0f} s after the start", flush=True
        )
    finally:
        for task in (sampler, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 10)
    per_call, shares, totals, waits = [], [], [], []
    for sample in samples:
        active, fewest = active_at(runs, sample["t"] - 0.5)  # the sample covers the second before it
        if fewest >= max(1, 0.8 * per_tenant) and active:
            cpu = sum(sample["cpu"].values())
            totals.append(cpu)
            waits.append(max(sample["waited"].values()))
            per_call.append(cpu / active)
            if cpu > 0:
                shares.append({node: value / cpu for node, value in sample["cpu"].items()})
    calls = [c for run in runs for c in run["data"]["per_call"]]
    first_audio = [
        c["phases"][p] for c in calls for p in ("accept_to_first_audio_visitor", "accept_to_first_audio_agent")
        if p in c["phases"]
    ]  # fmt: skip
    loss = [
        side["loss_percent"] for c in calls if c["answered_at"] is not None for side in (c["visitor"], c["agent_side"])
    ]
    failures: dict[str, int] = {}
    for run in runs:
        for reason, count in run["data"]["calls"]["failures_by_reason"].items():
            failures[reason] = failures.get(reason, 0) + count
    nodes = sorted({node for share in shares for node in share})
    # The bar is the level's, over every tenant's calls together (as one load test of them all would
    # judge them): a tenant's few calls make a noisy p95 of their own.
    first_audio_p95, loss_p95 = pct(first_audio, 95), pct(loss, 95)
    failed_calls = sum(1 for c in calls if c["failures"])
    passed = (
        failed_calls == 0
        and len(per_call) >= MIN_STEADY_SECONDS  # the level's calls really were up at once
        and first_audio_p95 is not None
        and first_audio_p95 < first_audio_limit
        and (loss_p95 or 0.0) < LOSS_LIMIT_PERCENT
    )
    return {
        "workers": server.count,
        "concurrency": total,
        "passed": passed,
        "calls": len(calls),
        "failed_calls": failed_calls,
        "failures": failures,
        "first_audio_p95_ms": first_audio_p95,
        "loss_p95": loss_p95,
        "steady_samples": len(per_call),
        "cpu_percent": round(statistics.median(totals), 1) if totals else None,
        "cpu_per_call": round(statistics.median(per_call), 3) if per_call else None,
        "loop_waited_percent": round(statistics.median(waits), 1) if waits else None,
        "load_average": os.getloadavg()[0],
        "cpu_share": {node: round(statistics.median(s.get(node, 0.0) for s in shares), 2) for node in nodes},
        "homes": {node: sum(1 for home in seen.values() if home == node) for node in sorted(set(seen.values()))},
    }


async def run(args: argparse.Namespace, server_dsn: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="callbutton-workers-"))
    folder.chmod(0o755)
    levels = [int(x) for x in args.levels.split(",")]
    results: dict[int, list[dict[str, Any]]] = {}
    began = time.monotonic()
    try:
        async with throwaway_database(server_dsn, "workers") as dsn, redis_server(folder) as redis_url:
            database = await Database.connect(dsn)
            try:
                await database.migrate()
                per_tenant = max(levels) // args.tenants
                tenants = [
                    await tenant(database, per_tenant, args.record, folder, f"t{i}", args.strategy)
                    for i in range(args.tenants)
                ]
            finally:
                await database.close()
            env = server_env(dsn, folder, CALLBUTTON_REDIS_URL=redis_url)
            counts = [int(x) for x in args.workers.split(",")]
            for position, count in enumerate(counts):
                deadline = began + args.budget * (position + 1) / len(counts)  # an equal share each
                server = Workers(count, env, args.cpu_quota)
                await server.start()
                server.pids()  # (with --cpu-quota: each worker into its cgroup now)
                print(f"workers {count}: {server.workers}", flush=True)
                results[count] = []
                failures = 0
                try:
                    for total in levels:
                        if time.monotonic() > deadline:
                            print(f"  this configuration's share of --budget {args.budget:g} s is spent", flush=True)
                            break
                        await settle(list(server.pids().values()))
                        outcome = await level(
                            server, tenants, redis_url, total, args.talk, args.keep or folder, args.first_audio_limit,
                            args.strategy != "ring_all",
                        )  # fmt: skip
                        results[count].append(outcome)
                        print(" ", json.dumps(outcome), flush=True)
                        for problem in server.problems[:3]:
                            print("   server:", problem.strip()[:300], flush=True)
                        server.problems.clear()
                        failures = 0 if outcome["passed"] else failures + 1
                        if failures >= args.stop_after:
                            break
                finally:
                    await server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    quota = f", each worker limited to {args.cpu_quota:g} of a core" if args.cpu_quota else ""
    print(
        f"\n{args.tenants} tenants ({args.strategy}), talk {args.talk:g} s, levels {levels} (total concurrency), "
        f"recording {'on' if args.record else 'off'}{quota}; {time.monotonic() - began:.0f} s"
    )
    print("  workers | highest passed | CPU per call there | server CPU there | per worker | homes | loop waited")
    best: dict[int, dict[str, Any] | None] = {}
    for count, outcomes in results.items():
        passing = [o for o in outcomes if o["passed"]]
        top = best[count] = max(passing, key=lambda o: o["concurrency"]) if passing else None
        if top is None:
            print(f"  {count} | 0 | - | - | - | -")
            continue
        print(
            f"  {count} | {top['concurrency']} | {top['cpu_per_call']}% | {top['cpu_percent']}% | "
            f"{top['cpu_share']} | {top['homes']} | {top['loop_waited_percent']}%"
        )
    one, two = best.get(1), best.get(2)
    if one and two:
        print(f"  calls carried, workers 2 / workers 1: {two['concurrency'] / one['concurrency']:.2f} (target >= 1.8)")
        if one["cpu_per_call"] and two["cpu_per_call"]:
            print(f"  CPU per call, workers 2 / workers 1: {two['cpu_per_call'] / one['cpu_per_call']:.2f}")
    # CPU per call at the same level, where both passed or not (what one call costs either way).
    common = sorted({o["concurrency"] for o in results.get(1, [])} & {o["concurrency"] for o in results.get(2, [])})
    for total in common:
        a = next(o for o in results[1] if o["concurrency"] == total)
        b = next(o for o in results[2] if o["concurrency"] == total)
        print(
            f"  at {total}: CPU per call {a['cpu_per_call']}% (1 worker) / {b['cpu_per_call']}% (2 workers); "
            f"first audio p95 {a['first_audio_p95_ms']} / {b['first_audio_p95_ms']} ms; "
            f"passed {a['passed']} / {b['passed']}"
        )


def loadtest_when_told(argv: list[str]) -> int:
    """``callbutton loadtest ARGV``, once this process has imported it and read a line on stdin."""
    from loadtest.cli import main as loadtest

    print("ready", flush=True)
    sys.stdin.readline()
    return loadtest(argv)


def main() -> None:
    if sys.argv[1:2] == ["--loadtest"]:
        raise SystemExit(loadtest_when_told(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="16,32,48,64,96,128", help="total calls at once, over every tenant")
    parser.add_argument("--tenants", type=int, default=8, help="organisations (one load test process each)")
    parser.add_argument("--talk", type=float, default=6.0, help="seconds of talk per call")
    parser.add_argument("--workers", default="1,2", help="the --workers values to measure")
    parser.add_argument("--record", action="store_true", help="every button records its calls")
    parser.add_argument(
        "--strategy", choices=("longest_idle", "round_robin", "ring_all"), default="longest_idle",
        help="how each tenant's button rings its agents (default longest_idle: a tenant's calls set up in "
        "parallel; ring_all sets them up one after another)",
    )  # fmt: skip
    parser.add_argument(
        "--first-audio-limit",
        type=float,
        default=FIRST_AUDIO_LIMIT_MS,
        help="a level passes only with accept -> first audio p95 below this (ms)",
    )
    parser.add_argument(
        "--cpu-quota",
        type=float,
        help="limit each worker to this many cores (a cgroup CFS quota; needs root): each worker has its own "
        "share while the load generator has the rest, as if it ran on another machine",
    )
    parser.add_argument("--stop-after", type=int, default=2, help="stop after this many failed levels in a row")
    parser.add_argument(
        "--budget", type=float, default=540.0, help="seconds for the run; no level starts after a configuration's share"
    )
    parser.add_argument("--keep", type=Path, help="keep every load test's JSON report in this folder")
    parser.add_argument(
        "--dsn",
        default=os.environ.get("CALLBUTTON_TEST_DATABASE_URL"),
        help="a Postgres server to create the throwaway database in (default: a throwaway local cluster)",
    )
    args = parser.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with server_for(args.dsn) as server_dsn:
        asyncio.run(run(args, server_dsn))


if __name__ == "__main__":
    main()
