"""``callbutton serve --workers N``: N server processes on one machine sharing one port.

One Python process uses one core (the GIL); a machine with more cores runs more processes. This
supervisor migrates the database once (starting the local cluster when none is configured), then
runs N ``callbutton serve`` processes with ``SO_REUSEPORT`` on the same port, so that the kernel
spreads new connections over them. They are nodes of one cluster (``server.cluster``, which needs
``CALLBUTTON_REDIS_URL``), each named ``<node name>-w<i>``: a call whose visitor and agent reached
different workers is carried by the organisation's home worker. A worker that dies is started
again after a second (its calls ended with it; its successor closes them and recovers their
recordings). SIGTERM or Ctrl-C is passed on to every worker, which drains as a single server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys

import structlog

from server.config import ConfigError, Settings
from storage.db import Database
from storage.localpg import LOCAL_POSTGRES, LocalPostgres

log = structlog.get_logger(__name__)

WORKERS_STARTED = "workers.started"
WORKER_EXITED = "workers.worker_exited"
RESTART_SECONDS = 1.0
#: A worker that keeps dying at once is started again later and later, up to this.
MAX_RESTART_SECONDS = 30.0
#: A worker that ran this long had started fine: its next restart waits RESTART_SECONDS again.
HEALTHY_SECONDS = 60.0
#: How long workers get to drain and stop after the drain timeout, before they are killed.
STOP_GRACE_SECONDS = 20.0


def node_base(settings: Settings) -> str:
    return settings.node_name or socket.gethostname()


async def run(settings: Settings, count: int) -> None:
    if not settings.redis_url:
        raise ConfigError("serve --workers needs CALLBUTTON_REDIS_URL: workers share their state through Redis")
    port = settings.port or _free_port(settings.host)
    local: LocalPostgres | None = None
    dsn = settings.database_url
    if not dsn:
        local = LocalPostgres(settings.data_dir / "postgres")
        dsn = await asyncio.to_thread(local.start)
        log.warning(LOCAL_POSTGRES, message="no CALLBUTTON_DATABASE_URL set: using a local Postgres cluster")
    try:
        database = await Database.connect(dsn, keystore_dsn=settings.keystore_url or None, min_size=1, max_size=2)
        try:
            await database.migrate()
        finally:
            await database.close()
        env = {**os.environ, "CALLBUTTON_DATABASE_URL": dsn, "CALLBUTTON_PORT": str(port)}
        await _supervise(env, count, node_base(settings), settings.drain_timeout)
    finally:
        if local is not None:
            await asyncio.to_thread(local.stop)


async def _supervise(env: dict[str, str], count: int, base: str, drain_timeout: float) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started: dict[int, float] = {}
    delays = dict.fromkeys(range(count), RESTART_SECONDS)

    async def spawn(index: int) -> asyncio.subprocess.Process:
        started[index] = loop.time()
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "serve",
            "--reuse-port",
            env={**env, "CALLBUTTON_NODE_NAME": f"{base}-w{index}"},
        )

    workers = {index: await spawn(index) for index in range(count)}
    log.info(WORKERS_STARTED, workers=count, port=env["CALLBUTTON_PORT"], pids=[p.pid for p in workers.values()])
    stopping = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            exits = {asyncio.create_task(process.wait()): index for index, process in workers.items()}
            done, _ = await asyncio.wait([*exits, stopping], return_when=asyncio.FIRST_COMPLETED)
            for task in exits:
                if task not in done:
                    task.cancel()
            if stop.is_set():
                break
            for task in done:
                if task is stopping:
                    continue
                index = exits[task]
                if loop.time() - started[index] > HEALTHY_SECONDS:
                    delays[index] = RESTART_SECONDS
                delay = delays[index]
                delays[index] = min(delay * 2, MAX_RESTART_SECONDS)
                log.error(WORKER_EXITED, worker=index, code=task.result(), restart_in=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    break
                workers[index] = await spawn(index)
    finally:
        for process in workers.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(drain_timeout + STOP_GRACE_SECONDS):
                await asyncio.gather(*(p.wait() for p in workers.values()))
        except TimeoutError:
            for process in workers.values():
                if process.returncode is None:
                    process.kill()
            await asyncio.gather(*(p.wait() for p in workers.values()))
        stopping.cancel()


def die_with_parent() -> None:
    """In a worker, first thing: SIGTERM when the supervisor dies (Linux), so that a supervisor
    killed outright leaves no worker behind."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
