"""What an operator watches: ``/metrics`` for Prometheus, ``/readyz`` for load balancers.

Each application has its own registry (several servers in one process, as in tests, do not mix
their figures). Gauges are read from the live state at scrape time; counters and histograms are
fed as things happen. ``/metrics`` answers loopback clients, or anyone presenting
``CALLBUTTON_METRICS_TOKEN`` as a bearer token when that is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.appkeys import DATABASE, RECORDINGS, ROSTER, SETTINGS, SWITCHBOARD
from server.clients import client_address
from server.livecall import LiveCall
from server.signalling import SOCKETS
from server.tasks import cancel_and_wait

METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
#: Set once shutdown begins: /readyz answers 503 from then on.
DRAINING = web.AppKey("draining", asyncio.Event)


class _Live(Collector):
    """Figures read from the running server when scraped."""

    def __init__(self, app: web.Application, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        switchboard = self._app[SWITCHBOARD]
        calls = list(switchboard.calls.values())
        yield GaugeMetricFamily(
            "callbutton_calls_active", "Calls in progress (queued, ringing or answered)", len(calls)
        )
        answered = sum(1 for live in calls if live.agent is not None)
        yield GaugeMetricFamily("callbutton_calls_answered_active", "Calls in progress with an agent", answered)
        yield GaugeMetricFamily(
            "callbutton_legs_active", "WebRTC legs open (visitors' and agents' standing legs)", self._metrics.legs()
        )
        queued = GaugeMetricFamily("callbutton_queue_depth", "Calls waiting in a button's queue, in all", value=None)
        queued.add_metric([], switchboard.queues.depth())
        yield queued
        yield GaugeMetricFamily("callbutton_websockets", "WebSocket connections open", len(self._app[SOCKETS]))
        roster = self._app[ROSTER]
        online = GaugeMetricFamily("callbutton_agents", "Agents connected, by presence", labels=["presence"])
        counts: dict[str, int] = {}
        for agent in roster:
            counts[agent.presence.value] = counts.get(agent.presence.value, 0) + 1
        for presence, count in sorted(counts.items()):
            online.add_metric([presence], count)
        yield online
        yield CounterMetricFamily(
            "callbutton_packets_forwarded",
            "RTP packets forwarded between the legs of calls",
            self._metrics.forwarded_ended + sum(live.bridge.forwarded for live in calls),
        )
        load = switchboard.load
        yield CounterMetricFamily(
            "callbutton_event_loop_idle_seconds",
            "Seconds the event loop waited with nothing to do (rate() of it is the loop's idle share; "
            "1 minus that, its utilisation)",
            load.idle,
        )
        yield GaugeMetricFamily(
            "callbutton_event_loop_utilisation",
            "The share of the last 5 s the event loop was busy (not waiting for the next packet or "
            "message); at CALLBUTTON_MAX_LOOP_BUSY visitors' calls are refused",
            load.utilisation,
        )
        yield GaugeMetricFamily(
            "callbutton_gc_frozen_objects",
            "Objects alive at the last periodic collection, frozen out of the collector's way since (they "
            "come and go with calls; a count that keeps growing at a steady load is a leak)",
            gc.get_freeze_count(),
        )
        yield GaugeMetricFamily(
            "callbutton_webhook_backlog", "Webhook events not yet delivered", self._metrics.webhook_backlog
        )
        stats = switchboard.recording_stats
        recordings = CounterMetricFamily(
            "callbutton_recordings", "Recordings since start, by how they went", labels=["outcome"]
        )
        for outcome, count in (
            ("opened", stats.opened),
            ("unavailable", stats.unavailable),
            ("complete", stats.complete),
            ("truncated", stats.truncated),
        ):
            recordings.add_metric([outcome], count)
        yield recordings
        dropped = CounterMetricFamily(
            "callbutton_packets_dropped",
            "Packets the media path dropped to stay bounded, by why: over_rate (a peer sending faster than "
            "real time), receive_queue_full, send_buffer_full, send_failed",
            labels=["reason"],
        )
        for reason, count in sorted(switchboard.packets_dropped_now().items()):
            dropped.add_metric([reason], count)
        yield dropped
        outbox = switchboard.outbox
        yield GaugeMetricFamily(
            "callbutton_outbox_pending",
            "Call events and recording rows not yet written to the database",
            outbox.pending,
        )
        yield GaugeMetricFamily(
            "callbutton_outbox_waiting", "Of those, writes waiting for the database to come back", outbox.waiting
        )
        yield CounterMetricFamily(
            "callbutton_outbox_failed",
            "Writes the database refused, or given up at shutdown while it was away (each logged)",
            outbox.failed,
        )
        yield CounterMetricFamily(
            "callbutton_calls_refused_at_capacity",
            "Visitors' calls refused because CALLBUTTON_MAX_CALLS calls were in progress",
            self._app[SWITCHBOARD].refused_at_capacity,
        )
        yield CounterMetricFamily(
            "callbutton_calls_refused_overloaded",
            "Visitors' calls refused because the event loop was busier than CALLBUTTON_MAX_LOOP_BUSY",
            self._app[SWITCHBOARD].refused_overloaded,
        )
        yield CounterMetricFamily("callbutton_recording_bytes", "Encrypted bytes written to recordings", stats.bytes)
        yield CounterMetricFamily(
            "callbutton_recording_packets_dropped",
            "Packets recorders dropped (their queue was full, or they arrived too late)",
            stats.packets_dropped,
        )


class Metrics:
    def __init__(self, app: web.Application) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._app = app
        self.forwarded_ended = 0
        self.webhook_backlog = 0
        self.calls_ended = Counter(
            "callbutton_calls_ended", "Calls ended, by reason", ["reason"], registry=self.registry
        )
        self.answer_seconds = Histogram(
            "callbutton_call_answer_seconds",
            "From a call's start to its answer (answered calls)",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=self.registry,
        )
        self.setup_seconds = Histogram(
            "callbutton_setup_seconds",
            "How long each phase of setting up a call took: ring (the visitor's call request to the first "
            "agent rung, when one was free), visitor_answer (request to the server's SDP answer), "
            "visitor_connected (request to the visitor's leg connected: ICE and DTLS), agent_connected "
            "(an agent's offer to its standing leg connected), recording_open (an answer to its recording's "
            "file open: the call's row written, a data key stored)",
            ["phase"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "callbutton_event_loop_lag_seconds",
            "How late the event loop ran a timer due every 0.5 s",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self.gc_pause = Histogram(
            "callbutton_gc_pause_seconds",
            "How long each garbage collection of generation 1 or 2 held the interpreter (every call's audio "
            "waits as long; 2 is a full collection)",
            ["generation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=self.registry,
        )
        self._gc_pauses = {generation: self.gc_pause.labels(str(generation)) for generation in (1, 2)}
        self.gc_collected = Counter(
            "callbutton_gc_collected_objects",
            "Objects the full garbage collections found in reference cycles and freed (what reference "
            "counting could not free: a steady count per call ended means each call leaves cycles)",
            registry=self.registry,
        )
        self._gc_began = 0.0
        self.registry.register(_Live(app, self))
        self._lag_task: asyncio.Task[None] | None = None

    def legs(self) -> int:
        switchboard = self._app[SWITCHBOARD]
        agents = sum(1 for agent in self._app[ROSTER] for socket in agent.sockets if socket.leg is not None)
        return len(switchboard.calls) + agents

    def call_ended(self, live: LiveCall) -> None:
        self.calls_ended.labels(live.call.end_reason.value if live.call.end_reason else "unknown").inc()
        self.forwarded_ended += live.bridge.forwarded
        if live.call.answered_at is not None:
            self.answer_seconds.observe((live.call.answered_at - live.call.created_at).total_seconds())

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.5
            await asyncio.sleep(0.5)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def _collecting(self, phase: str, info: dict[str, int]) -> None:
        # Called by the interpreter around every collection (gc.callbacks): cheap for generation 0,
        # the frequent and short ones, which are not measured.
        pause = self._gc_pauses.get(info["generation"])
        if pause is None:
            return
        if phase == "start":
            self._gc_began = time.perf_counter()
            return
        pause.observe(time.perf_counter() - self._gc_began)
        if info["generation"] == 2:
            self.gc_collected.inc(info["collected"])

    def start(self) -> None:
        self._lag_task = asyncio.create_task(self._watch_loop())
        gc.callbacks.append(self._collecting)

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._collecting)
        await cancel_and_wait(self._lag_task)


def _may_scrape(request: web.Request) -> bool:
    token = request.app[SETTINGS].metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(client_address(request)).is_loopback
    except ValueError:
        return False


async def metrics(request: web.Request) -> web.Response:
    if not _may_scrape(request):
        raise web.HTTPNotFound()
    collector = request.app[METRICS]
    with contextlib.suppress(Exception):  # the database out: the backlog keeps its last figure
        collector.webhook_backlog = int(
            await request.app[DATABASE].pool.fetchval(
                "SELECT count(*) FROM webhook_events WHERE delivered_at IS NULL", timeout=2
            )
        )
    body = await asyncio.to_thread(generate_latest, collector.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})


async def readyz(request: web.Request) -> web.Response:
    """Whether this server should get traffic: not shutting down, its database and key store
    answering, its migrations applied, its master key the one the keys are wrapped by."""
    checks: dict[str, str] = {}
    started = time.monotonic()
    if request.app[DRAINING].is_set():
        checks["draining"] = "shutting down: no new calls"
    database = request.app[DATABASE]
    try:
        pending = await asyncio.wait_for(database.pending_migrations(), 3)
        if pending:
            checks["migrations"] = f"{pending} migration(s) not applied: run callbutton migrate"
    except Exception as exc:
        checks["database"] = f"the database or the key store does not answer: {type(exc).__name__}"
    else:
        try:
            await asyncio.wait_for(request.app[RECORDINGS].keyring.check_master_key(), 3)
        except Exception as exc:
            checks["keys"] = str(exc)[:300] or type(exc).__name__
    body = {"ready": not checks, "problems": checks, "took_ms": round((time.monotonic() - started) * 1000, 1)}
    return web.json_response(body, status=200 if not checks else 503, headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    collector = app[METRICS] = Metrics(app)
    app[DRAINING] = asyncio.Event()
    previous = app[SWITCHBOARD].on_call_ended

    def ended(live: LiveCall) -> None:
        collector.call_ended(live)
        if previous is not None:
            previous(live)

    app[SWITCHBOARD].on_call_ended = ended
    app[SWITCHBOARD].on_setup = lambda phase, seconds: collector.setup_seconds.labels(phase).observe(seconds)

    async def start(app: web.Application) -> None:
        collector.start()

    async def drain(app: web.Application) -> None:
        app[DRAINING].set()

    async def stop(app: web.Application) -> None:
        await collector.stop()

    app.on_startup.append(start)
    app.on_shutdown.insert(0, drain)
    app.on_cleanup.append(stop)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", readyz)
