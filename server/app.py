"""Building the aiohttp application and running it."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import redis.asyncio
import structlog
from aiohttp import web

from media.aiortc_seam import pin_host_addresses
from media.leg import IceSettings
from media.recorder import MuxWorker
from media.ringback import ringback_packets
from server import (
    admin_api,
    agent_api,
    api,
    backports,
    calls_api,
    clips_api,
    cluster_tls,
    integrations_api,
    logs,
    metrics,
    playback,
    privacy_api,
    recording_tools,
    signalling,
    stats_api,
    tls,
    turn,
    webhooks,
    widget_api,
)
from server import web as pages
from server.appkeys import (
    CLUSTER,
    CLUSTER_HTTP,
    DATABASE,
    DEMO_PAGE,
    DIRECTORY,
    LIMITS,
    RECORDINGS,
    ROSTER,
    SESSIONS,
    SETTINGS,
    SWITCHBOARD,
)
from server.auth import Sessions, session_secret
from server.cliptokens import ClipTokens
from server.cluster import Cluster
from server.config import ConfigError, Settings
from server.demo import DemoTenant, ensure_demo_tenant
from server.directory import Directory
from server.errors import error_middleware
from server.homing import home_middleware
from server.limits import Limits
from server.load import LoopLoad
from server.masterkey import load_master_key
from server.presence import Roster
from server.relay import Relayed
from server.routing import Switchboard
from server.tasks import cancel_and_wait
from storage.clips import ClipStore
from storage.db import Database
from storage.keys import Keyring
from storage.recordings import RecordingStore
from storage.retention import PurgeBusy, Purger

log = structlog.get_logger(__name__)

INTERRUPTED_WORK = "server.interrupted_work_closed"
DEAD_NODES_WORK = "cluster.dead_nodes_work_closed"
REAPER = web.AppKey("reaper", asyncio.Task)
RECOVERY_FAILED = "server.recording_recovery_failed"

OPENAPI_PATH = pages.WEB_ROOT.parent / "docs" / "openapi.json"


def create_app(
    settings: Settings,
    database: Database,
    recordings: RecordingStore,
    *,
    session_secret: bytes,
    demo_button_key: str | None = None,
    relay: turn.TurnCredentials | None = None,
    cluster: Cluster | None = None,
) -> web.Application:
    """The application for ``settings`` over an open, migrated ``database``.

    The caller owns the database; the application owns everything it creates (the switchboard, its
    calls and legs, the recorder's worker thread) and ends them on cleanup.
    """
    pin_host_addresses(settings.ice_host_addresses)
    app = web.Application(
        middlewares=[
            error_middleware,
            pages.security_headers,
            pages.csrf_guard,
            home_middleware,
            signalling.release_websockets,
        ],
        client_max_size=64 * 1024,
    )
    app[SETTINGS] = settings
    app[DATABASE] = database
    app[SESSIONS] = Sessions(
        database.accounts,
        idle_timeout=settings.session_idle_timeout,
        max_age=settings.session_max_age,
        secret=session_secret,
    )
    if relay is not None:
        app[turn.TURN] = relay
    node = cluster.name if cluster is not None else settings.node_name or None
    app[ROSTER] = Roster()
    app[RECORDINGS] = recordings
    mux = MuxWorker()
    app[api.OPENAPI] = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    if demo_button_key is not None:
        app[DEMO_PAGE] = pages.render_demo_page(demo_button_key)
    directory = app[DIRECTORY] = Directory(database)
    app[SWITCHBOARD] = Switchboard(
        roster=app[ROSTER],
        events=database.calls,
        ice=IceSettings(servers=settings.ice_servers),
        ring_timeout=settings.ring_timeout,
        directory=directory,
        recordings=recordings,
        mux=mux,
        node=node,
        max_calls=settings.max_calls,
        load=LoopLoad(settings.max_loop_busy),
    )
    app[LIMITS] = Limits(
        calls_per_address=settings.call_rate_per_address,
        calls_per_button=settings.call_rate_per_button,
        visitor_sockets_per_address=settings.visitor_sockets_per_address,
        logins_per_address=settings.login_rate_per_address,
        logins_per_account=settings.login_rate_per_account,
    )
    if cluster is not None:
        app[LIMITS].share(cluster.redis, cluster.key_for("rate limit keys"))
        cluster.busy = lambda: app[SWITCHBOARD].load.overloaded
    app[signalling.SOCKETS] = set()
    app.on_shutdown.append(_end_calls)

    async def stop_mux(app: web.Application) -> None:
        await asyncio.to_thread(mux.close)

    app.on_cleanup.append(stop_mux)

    async def start_directory(app: web.Application) -> None:
        await directory.start()

    async def stop_directory(app: web.Application) -> None:
        await directory.stop()

    async def encode_ringback(app: web.Application) -> None:
        # Once (~150 ms of Opus), in a thread: made by the first call, it held up every other
        # call's audio and signalling for as long.
        await asyncio.to_thread(ringback_packets)

    async def measure_load(app: web.Application) -> None:
        app[SWITCHBOARD].load.start()

    async def stop_measuring_load(app: web.Application) -> None:
        await app[SWITCHBOARD].load.stop()

    app.on_startup.extend((start_directory, encode_ringback, measure_load))
    app.on_cleanup.extend((stop_directory, stop_measuring_load))
    sender = webhooks.Sender(database.webhooks, retry_seconds=settings.webhook_retry_seconds)

    async def start_sender(app: web.Application) -> None:
        sender.start()

    async def stop_sender(app: web.Application) -> None:
        await sender.stop()

    app.on_startup.append(start_sender)
    app.on_cleanup.append(stop_sender)
    if settings.purge_interval > 0:
        purge = PurgeSchedule(Purger(database.pool, recordings, pause=0.01), settings.purge_interval)

        async def start_purge(app: web.Application) -> None:
            purge.start()

        async def stop_purge(app: web.Application) -> None:
            await purge.stop()

        app.on_startup.append(start_purge)
        app.on_cleanup.append(stop_purge)
    if cluster is not None:
        _join(app, cluster, database, recordings)
    app.router.add_get("/ws/v1/visitor", signalling.visitor_socket)
    app.router.add_get("/ws/v1/agent", signalling.agent_socket)
    app.router.add_get("/internal/v1/ws/{role:visitor|agent}", signalling.internal_socket)
    api.add_routes(app)
    admin_api.add_routes(app)
    agent_api.add_routes(app)
    widget_api.add_routes(app)
    stats_api.add_routes(app)
    integrations_api.add_routes(app)
    playback.add_routes(app)
    calls_api.add_routes(app)
    privacy_api.add_routes(app)
    metrics.add_routes(app)
    clips_api.add_routes(
        app,
        ClipStore(database.pool, recordings.keyring, recordings.root, clean=clips_api.cleaner, node=node),
        ClipTokens(recordings.keyring.derive("clip tokens")),
    )
    pages.add_routes(app)
    return app


def _join(app: web.Application, cluster: Cluster, database: Database, recordings: RecordingStore) -> None:
    """Make ``app`` a node of ``cluster`` (joined already): relays, the reaper of dead nodes'
    calls, and leaving on cleanup (docs/scaling.md)."""
    app[CLUSTER] = cluster

    async def reap(live: set[str]) -> None:
        calls = await database.calls.close_interrupted(cluster.name, live, own=False)
        truncated = await recordings.mark_interrupted(cluster.name, live, own=False)
        if calls or truncated:
            log.warning(
                DEAD_NODES_WORK,
                calls_closed=[str(c) for c in calls],
                recordings_truncated=[str(r.id) for r in truncated],
            )

    async def begin(app: web.Application) -> None:
        # Relayed sockets hold their connection all day: no pool limit (aiohttp's default of 100
        # would stall every relay past the hundredth), a short connect timeout, no cookie jar (the
        # clients' cookies are passed on request by request, never kept).
        # Only https, to a listener with a certificate of the cluster's authority (server.cluster_tls).
        app[CLUSTER_HTTP] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=cluster.tls.client if cluster.tls is not None else True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        app[REAPER] = asyncio.create_task(cluster.reap_forever(reap), name="cluster-reaper")

    async def end(app: web.Application) -> None:
        await cancel_and_wait(app.get(REAPER))
        await cluster.leave()
        if CLUSTER_HTTP in app:
            await app[CLUSTER_HTTP].close()

    app.on_startup.append(begin)
    app.on_cleanup.append(end)


def settle_heap() -> None:
    """Once a server process has started: collect, then move everything alive into the collector's
    permanent generation, so that a full collection later (the purge's allocations bring them on)
    walks only what was made since, not the libraries' hundreds of thousands of objects. Measured
    on a purge of 30,000 calls: full collections of 52-83 ms before, 2-3 ms after. For a server
    process, once; not for tests that start many servers in one process (what freezes never goes)."""
    gc.collect()
    gc.freeze()


#: Seconds between the collections a server process makes (:func:`collect_garbage`).
COLLECT_SECONDS = 5.0
#: Seconds between two returns of freed memory to the system (:func:`trim_heap`).
TRIM_SECONDS = 30.0
#: How much the frozen objects may grow, as a share of what was frozen after the last collection of
#: everything, before the next collection of everything (:func:`collect_garbage`).
AUDIT_GROWTH = 0.25


async def collect_garbage(
    interval: float = COLLECT_SECONDS, trim_interval: float = TRIM_SECONDS, audit_growth: float = AUDIT_GROWTH
) -> None:
    """Every ``interval`` seconds, a full collection of what is not frozen, then everything still alive
    frozen (moved where no collection walks it again); every ``trim_interval`` seconds, the freed
    memory given back to the system.

    A full collection walks every object it does not find frozen, and every call waits meanwhile:
    with everything alive in its way, 46 ms at 80 calls in progress and 98 ms at 128, up to 250 ms,
    every 10-15 s (Python's own collections, as calls set up, and this one; docs/benchmarks.md).
    Frozen each time, what it walks is what was made in the last ``interval``: 3-5 ms.

    Frozen objects are still freed when their last reference goes, but not if they end up in a
    reference cycle. Ended calls' do not (:mod:`media.aiortc_release`, and the cycles broken where
    calls and sockets end); whatever else does (an exception's traceback, say, or a cycle in a
    library nobody found) stays until the frozen objects have grown by ``audit_growth`` since the last
    collection of everything, which then makes another: one long pause (the libraries' objects too)
    for a great deal of growth, logged as ``gc.audit``. What is freed stays in the C allocator's
    heaps, in pages among pages still used, which it does not return by itself: :func:`trim_heap`
    does."""
    loop = asyncio.get_running_loop()
    trimmed = loop.time()
    audited = gc.get_freeze_count()
    while True:
        await asyncio.sleep(interval)
        frozen = gc.get_freeze_count()
        audit = frozen > audited * (1 + audit_growth)
        began = time.perf_counter()
        if audit:
            gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        if audit:
            audited = gc.get_freeze_count()
            pause_ms = round(1000 * (time.perf_counter() - began), 1)
            log.info(logs.GC_AUDIT, frozen_before=frozen, frozen_after=audited, freed=freed, pause_ms=pause_ms)
        if loop.time() - trimmed >= trim_interval:
            trim_heap()
            trimmed = loop.time()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to do
    return trim


_trim = _malloc_trim()


def trim_heap() -> None:
    """Give the whole free pages inside the C allocator's heaps back to the system (glibc's
    ``malloc_trim(0)``, every arena; a no-op elsewhere)."""
    if _trim is not None:
        _trim(0)


class PurgeSchedule:
    """The retention purge, run every ``interval`` seconds inside the server (first a minute after
    start). A failed run is logged and tried again at the next interval; nothing is half deleted,
    since every batch is its own transaction."""

    def __init__(self, purger: Purger, interval: float) -> None:
        self._purger = purger
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _loop(self) -> None:
        await asyncio.sleep(min(60.0, self._interval))
        while True:
            try:
                await self._purger.run()
            except PurgeBusy:
                pass  # another process's schedule, or the command line, is at it
            except Exception:
                log.exception(logs.TASK_FAILED, task="retention purge")
            await asyncio.sleep(self._interval)


async def _end_calls(app: web.Application) -> None:
    # on_shutdown runs before aiohttp closes connections: parties hear that their calls ended, then
    # every socket is closed (1001) so that shutdown need not wait for clients to go.
    await app[SWITCHBOARD].close()
    await signalling.close_all(app)


@dataclass
class Running:
    """A started server: its runner, the settings with the real port, and its origin."""

    runner: web.AppRunner
    settings: Settings
    demo: DemoTenant | None = None

    @property
    def url(self) -> str:
        return self.settings.origin

    async def drain(self, seconds: float) -> bool:
        """Stop taking new calls (and say so at /readyz) and wait up to ``seconds`` for the
        calls in progress to end by themselves; True when they all did. Then :meth:`stop` ends what
        is left (as ``shutdown``), finishing their recordings and writing their events."""
        app = self.runner.app
        app[metrics.DRAINING].set()
        switchboard = app[SWITCHBOARD]
        switchboard.accepting = False
        cluster = app.get(CLUSTER)
        if cluster is not None:
            await cluster.take_homes(False)  # no new organisation is placed here
        log.info(logs.SERVER_DRAINING, calls=len(switchboard.calls), seconds=seconds)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await switchboard.no_calls.wait()
                # Sockets this node relays to other nodes (server/relay.py) may carry calls too.
                while any(isinstance(s, Relayed) and s.in_call for s in app[signalling.SOCKETS]):  # noqa: ASYNC110
                    await asyncio.sleep(0.2)  # (they learn of their calls' ends from frames, not events)
        return not switchboard.calls

    async def stop(self) -> None:
        await self.runner.cleanup()


async def recover_interrupted(
    database: Database, recordings: RecordingStore, node: str | None = None, live_nodes: set[str] | None = None
) -> None:
    """What a previous process left behind when it died: its calls end as failed, its recordings
    (files without a final segment) are recovered: rewritten as complete files of what survived,
    marked truncated (``callbutton recording recover`` does the same by hand)."""
    calls = await database.calls.close_interrupted(node, live_nodes)
    truncated = await recordings.mark_interrupted(node, live_nodes)
    # And those a running node marked when this one (or another) was found dead: not recovered yet.
    truncated += await recordings.unrecovered(node, live_nodes)
    await ClipStore(database.pool, recordings.keyring, recordings.root, node=node).discard_interrupted(live_nodes)
    recovered: list[str] = []
    for record in truncated:
        try:
            await recording_tools.recover_file(recordings, record)
        except Exception:
            # Left truncated and listed as such; the operator can look at it with `recording verify`.
            log.exception(RECOVERY_FAILED, recording_id=str(record.id))
        else:
            recovered.append(str(record.id))
    if calls or truncated:
        log.warning(
            INTERRUPTED_WORK,
            calls_closed=len(calls),
            recordings_truncated=[str(r.id) for r in truncated],
            recordings_recovered=recovered,
        )


async def start(settings: Settings, database: Database, *, demo: bool = False, reuse_port: bool = False) -> Running:
    """Bind, build and start the server. Port 0 binds a free port, known before the app is built
    (the app's own origin, which sockets and CSRF checks compare against, includes it).

    With a certificate configured the server speaks https (``server.tls``). The session secret and
    the TURN secret are read here, like the master key, so that a missing or unreadable one stops
    the start with a ``ConfigError`` naming its variable. With ``CALLBUTTON_REDIS_URL`` the server
    joins its cluster and listens on its internal address too (``server.cluster``); ``reuse_port``
    lets workers share the port (``server.workers``).

    With ``demo`` the demo tenant is created or refreshed and its button serves ``/demo``.
    """
    backports.apply()
    ssl_context = tls.server_context(settings)
    relay = turn.load(settings)
    sock = _listen(settings.host, settings.port, "CALLBUTTON_HOST, CALLBUTTON_PORT", reuse_port=reuse_port)
    settings = settings.with_port(sock.getsockname()[1])
    tenant = None
    internal: socket.socket | None = None
    cluster: Cluster | None = None
    runner: web.AppRunner | None = None
    try:
        keyring = Keyring(database.keystore_pool, load_master_key(settings))
        await keyring.check_master_key()
        secret = session_secret(settings, keyring.derive)
        recordings = RecordingStore(database.pool, keyring, settings.recordings_root)
        live: set[str] | None = None
        if settings.redis_url:
            internal = _listen(
                settings.internal_host, settings.internal_port, "CALLBUTTON_INTERNAL_HOST, CALLBUTTON_INTERNAL_PORT"
            )
            host = f"[{settings.internal_host}]" if ":" in settings.internal_host else settings.internal_host
            name = settings.node_name or socket.gethostname()
            cluster = Cluster(
                redis.asyncio.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
                name=name,
                internal_url=f"https://{host}:{internal.getsockname()[1]}",
                secret=keyring.derive("cluster internal requests"),
                tls=cluster_tls.for_node(keyring.derive("cluster TLS authority"), name),
            )
            await cluster.join()
            live = await cluster.live_nodes()
        await recover_interrupted(database, recordings, cluster.name if cluster else None, live)
        if demo:
            tenant = await ensure_demo_tenant(database, settings.origins)
        app = create_app(
            settings,
            database,
            recordings,
            session_secret=secret,
            demo_button_key=tenant.button_key if tenant else None,
            relay=relay,
            cluster=cluster,
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        await web.SockSite(runner, sock, ssl_context=ssl_context).start()
        if internal is not None:
            # TLS 1.3 both ways, with certificates of the cluster's own (server.cluster_tls).
            assert cluster is not None and cluster.tls is not None
            await web.SockSite(runner, internal, ssl_context=cluster.tls.server).start()
        if cluster is not None:
            await cluster.take_homes(True)  # serving now: new organisations may be placed here
    except BaseException:
        sock.close()
        if internal is not None:
            internal.close()
        if runner is not None:
            await runner.cleanup()  # leaves the cluster too
        elif cluster is not None:
            await cluster.leave()
        raise
    return Running(runner=runner, settings=settings, demo=tenant)


def _listen(host: str, port: int, settings: str, *, reuse_port: bool = False) -> socket.socket:
    """A listening socket; a ConfigError naming ``settings`` when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ConfigError(f"cannot listen on {shown} ({settings}): {error.strerror or error}") from error
    return sock
