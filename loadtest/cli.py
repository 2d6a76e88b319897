"""``callbutton loadtest URL --button KEY --agent EMAIL:PASSWORD ...``: the command's options, the
run, the reports and the exit code (0 pass, 1 a threshold crossed or a call failed, 2 bad usage)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loadtest import checks, report, resources
from loadtest.clients import ProtocolFailure
from loadtest.peer import DROPS, Impairment
from loadtest.runner import Options, Run
from media.aiortc_seam import pin_host_addresses


def _credentials(value: str) -> tuple[str, str]:
    email, sep, password = value.partition(":")
    if not sep or not email or not password:
        raise argparse.ArgumentTypeError(f"{value!r} is not EMAIL:PASSWORD")
    return email, password


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="callbutton loadtest",
        description="Drive synthetic calls through a deployment and check every one end to end.",
    )
    p.add_argument("url", help="the deployment's base URL, e.g. https://calls.example.com")
    p.add_argument("--button", required=True, help="the button key the synthetic visitors call")
    p.add_argument("--origin", help="the website origin visitors call from (must be allowed); default: URL")
    p.add_argument(
        "--agent",
        action="append",
        default=[],
        type=_credentials,
        metavar="EMAIL:PASSWORD",
        help="a synthetic agent's login (repeat; one call at a time each, the calls the server rings it for)",
    )
    p.add_argument("--agents-file", type=Path, help="one EMAIL:PASSWORD per line")
    p.add_argument(
        "--admin",
        type=_credentials,
        metavar="EMAIL:PASSWORD",
        help="an admin of the button's organisation: enables the pipeline checks (rows, recordings)",
    )
    p.add_argument("--calls", type=int, default=20, help="calls in all (default 20)")
    p.add_argument("--rate", type=float, default=2.0, help="calls started per second (default 2)")
    p.add_argument("--concurrency", type=int, default=5, help="calls at once at most (default 5)")
    p.add_argument("--talk-time", type=float, default=3.0, help="seconds from answer to hang-up (default 3)")
    p.add_argument("--answer-delay", type=float, default=0.0, help="seconds an agent lets it ring (default 0)")
    p.add_argument("--duration-limit", type=float, default=600.0, help="start no call after this many seconds")
    p.add_argument("--hangup-by", choices=("visitor", "agent", "alternate"), default="alternate")
    p.add_argument("--loss", type=float, default=0.0, help="impairment: %% of outgoing packets lost")
    p.add_argument("--delay", type=float, default=0.0, help="impairment: ms added to outgoing packets")
    p.add_argument("--jitter", type=float, default=0.0, help="impairment: +/- ms of random delay")
    p.add_argument(
        "--overlapping-rings",
        action="store_true",
        help="request calls while others still ring (a ring-all button queues them, which the timings then include; "
        "a longest-idle button rings them in parallel)",
    )
    p.add_argument("--max-failures", type=int, default=0, help="failed calls allowed (default 0)")
    p.add_argument("--max-first-audio-p95", type=float, help="ms; accept -> first audio p95 limit")
    p.add_argument("--max-loss", type=float, help="%%; p95 of per-party packet loss limit")
    p.add_argument("--min-mos", type=float, help="5th percentile of per-party MOS, lower limit")
    p.add_argument(
        "--expect-recordings",
        choices=("auto", "yes", "no"),
        default="auto",
        help="check recordings (auto: when the button says calls are recorded)",
    )
    p.add_argument("--json", type=Path, help="write the JSON report here")
    p.add_argument("--html", type=Path, help="write the HTML report here")
    p.add_argument("--server-pid", type=int, help="a local server process to sample CPU and memory from")
    p.add_argument(
        "--ice-host",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="local addresses for the synthetic peers' ICE candidates (e.g. 127.0.0.1)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    agents = list(args.agent)
    if args.agents_file:
        try:
            lines = args.agents_file.read_text(encoding="utf-8").splitlines()
            agents += [_credentials(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
        except (OSError, argparse.ArgumentTypeError) as exc:
            print(f"callbutton loadtest: --agents-file: {exc}", file=sys.stderr)
            return 2
    if not agents:
        print("callbutton loadtest: give at least one --agent EMAIL:PASSWORD", file=sys.stderr)
        return 2
    url = args.url.rstrip("/")
    options = Options(
        base_url=url,
        button_key=args.button,
        origin=args.origin or url,
        agents=agents,
        calls=args.calls,
        rate=args.rate,
        concurrency=args.concurrency,
        talk_time=args.talk_time,
        answer_delay=args.answer_delay,
        duration_limit=args.duration_limit,
        hangup_by=args.hangup_by,
        impairment=Impairment(loss=args.loss / 100, delay=args.delay / 1000, jitter=args.jitter / 1000),
        overlapping_rings=args.overlapping_rings,
        seed=args.seed,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    thresholds = report.Thresholds(
        max_failed_calls=args.max_failures,
        max_first_audio_p95_ms=args.max_first_audio_p95,
        max_loss_p95_percent=args.max_loss,
        min_mos_p5=args.min_mos,
    )
    if args.ice_host:
        pin_host_addresses(args.ice_host)
    summary = asyncio.run(run(options, thresholds, args))
    if args.json:
        report.write_json(summary, args.json)
    if args.html:
        report.write_html(summary, args.html)
    calls = summary["calls"]
    print(
        f"{summary['verdict'].upper()}: {calls['started']} calls, {calls['ok']} verified, {calls['failed']} failed; "
        f"accept -> first audio p95 {summary['first_audio_ms']['p95']} ms; "
        f"loss p95 {summary['quality']['loss_percent']['p95']}%, MOS p50 {summary['quality']['mos']['p50']}"
    )
    for crossed in summary["thresholds_crossed"]:
        print(f"  {crossed}")
    for warning in summary["warnings"]:
        print(f"  warning: {warning}")
    for failure in calls["failed_calls"][:20]:
        details = failure.get("details", {})
        reasons = [f"{r} ({details[r]})" if r in details else r for r in failure["reasons"]]
        print(f"  call {failure['index']} ({failure['call_id']}): {', '.join(reasons)}")
    return 0 if summary["verdict"] == "pass" else 1


async def run(options: Options, thresholds: report.Thresholds, args: Any) -> dict[str, Any]:
    loadrun = Run(options)
    began = time.monotonic()
    samples: list[dict[str, float]] = []
    sampler = asyncio.create_task(resources.sample(args.server_pid, samples, began)) if args.server_pid else None
    # The load generator's own CPU: a generator short of CPU delays its packets and its timings.
    own: list[dict[str, float]] = []
    own_sampler = asyncio.create_task(resources.sample(os.getpid(), own, began))
    try:
        results = await loadrun.run()
    except ProtocolFailure as failure:
        # Nothing could start (an agent could not log in, say): one verdict, no calls.
        print(f"callbutton loadtest: {failure}", file=sys.stderr)
        results = []
    finally:
        for task in (sampler, own_sampler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    duration = time.monotonic() - began
    check_counts = None
    if args.admin is not None and results:
        expect = args.expect_recordings == "yes" or (args.expect_recordings == "auto" and loadrun.recorded)
        try:
            impairment = options.impairment
            check_counts = await checks.check_calls(
                options.base_url,
                args.admin,
                results,
                expect_recordings=expect,
                injected_loss=impairment.loss if impairment.jitter == 0 else None,
            )
        except ProtocolFailure as failure:
            check_counts = {"error": str(failure)}
    summary = report.summarise(
        options,
        thresholds,
        results,
        concurrency=loadrun.concurrency_samples,
        resources=samples,
        generator=own,
        generator_drops={"datagrams": DROPS.datagrams, "sends": DROPS.sends},
        checks=check_counts,
        duration=duration,
    )
    if not results:
        summary["verdict"] = "fail"
        summary["thresholds_crossed"].append("no call could be made")
    return summary
