"""Delivering webhooks from the outbox (``storage/webhooks.py``).

One loop per server process takes due events (leased, so several processes never send one event at
once, and an event whose sender died comes due again), POSTs each to its endpoint signed with the
endpoint's secret, and records the outcome: delivered on a 2xx answer, otherwise retried with
exponential backoff (with jitter) until ``MAX_ATTEMPTS``, then given up (and shown so in the log).
Delivery is at least once: receivers deduplicate by event id (``docs/webhooks.md``).

Signature: ``Callbutton-Signature: t=UNIX_SECONDS,v1=HEX`` where ``HEX`` is
HMAC-SHA256(secret, ``t`` + "." + body), as Stripe and others do, so that a receiver can check both
the sender and the freshness of a delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import hmac
import json
import random
import time

import aiohttp
import structlog

from server import logs
from storage.outbox import transient
from storage.webhooks import Delivery, Webhooks

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 20
LEASE = datetime.timedelta(seconds=60)
TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.5
USER_AGENT = "callbutton-webhooks/1"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def envelope(delivery: Delivery) -> bytes:
    """What a receiver gets: the event's id (the same for every endpoint and every retry), its type,
    when it happened, and its data."""
    return json.dumps(
        {
            "id": str(delivery.event_id),
            "type": delivery.kind,
            "created_at": delivery.created_at.isoformat(),
            "organisation_id": str(delivery.organisation_id),
            "data": delivery.payload,
        },
        separators=(",", ":"),
    ).encode()


class Sender:
    """The delivery loop of one process."""

    def __init__(self, store: Webhooks, *, retry_seconds: float, max_retry_seconds: float = 3600.0) -> None:
        self._store = store
        self._retry = retry_seconds
        self._max_retry = max_retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._stopping = asyncio.Event()
        #: Rows claimed and not yet settled: released at stop, so that the next process need not
        #: wait out their lease.
        self._in_flight: set[int] = set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-sender")

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the deliveries under way (for at most ``grace`` seconds), then stop; events claimed
        and not delivered are due again at once, for whichever process runs next."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._in_flight:
            with contextlib.suppress(Exception):
                await self._store.release(sorted(self._in_flight))
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS), headers={"User-Agent": USER_AGENT}
        )
        while not self._stopping.is_set():
            try:
                due = await self._store.claim(LEASE)
            except Exception as exc:
                if transient(exc):  # the database is away: said once a try, without a traceback
                    log.warning(logs.WEBHOOK_CLAIM_FAILED, error=repr(exc))
                else:
                    log.warning(logs.WEBHOOK_CLAIM_FAILED, exc_info=True)
                due = []
            if due:
                self._in_flight.update(d.row for d in due)
                # One endpoint's slowness must not hold up another's: each delivery runs on its own,
                # and this round ends when all have (a call's next event waits for this one anyway).
                await asyncio.gather(*(self._deliver(d) for d in due))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), POLL_SECONDS)

    async def _deliver(self, delivery: Delivery) -> None:
        assert self._http is not None
        body = envelope(delivery)
        headers = {
            "Content-Type": "application/json",
            "Callbutton-Event-Id": str(delivery.event_id),
            "Callbutton-Event-Type": delivery.kind,
            "Callbutton-Signature": signature(delivery.secret, int(time.time()), body),
        }
        began = time.monotonic()
        status: int | None = None
        error = ""
        try:
            async with self._http.post(delivery.url, data=body, headers=headers, allow_redirects=False) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or "no answer"
        duration_ms = round((time.monotonic() - began) * 1000)
        try:
            if status is not None and 200 <= status < 300:
                await self._store.delivered(delivery.row, status, duration_ms)
                self._in_flight.discard(delivery.row)
                log.info(logs.WEBHOOK_DELIVERED, event_id=str(delivery.event_id), status=status)
                return
            attempts = delivery.attempts + 1
            retry = None
            if attempts < MAX_ATTEMPTS:
                delay = min(self._retry * 2 ** (attempts - 1), self._max_retry) * random.uniform(0.8, 1.2)
                retry = datetime.timedelta(seconds=delay)
            await self._store.failed(delivery.row, status, error or f"HTTP {status}", retry, duration_ms)
            self._in_flight.discard(delivery.row)
            log.info(
                logs.WEBHOOK_FAILED, event_id=str(delivery.event_id), status=status, attempts=attempts,
                given_up=retry is None,
            )  # fmt: skip
        except Exception:
            # The outcome is not recorded: the lease runs out and the event is sent again.
            log.warning(logs.WEBHOOK_CLAIM_FAILED, exc_info=True)
