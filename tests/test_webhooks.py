"""Webhooks: a real local receiver that refuses the first deliveries still gets every event exactly
once by event id, signed, in order per call, across a restart of our server."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from server.app import Running, start
from server.appkeys import RECORDINGS
from server.config import Settings
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, login_cookie, make_admin, make_tenant
from tests.test_recording import finished_recording, recorded_call
from tests.test_routing import call_api


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """What docs/webhooks.md tells receivers to do, written from the document."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    timestamp = int(fields["t"])
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - timestamp) <= tolerance


class Receiver:
    """A CRM's webhook endpoint on loopback: refuses the first ``fail_first`` deliveries with 503."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.requests: list[tuple[int, dict[str, str], bytes]] = []  # (status answered, headers, body)
        self.url = ""
        self._runner: web.AppRunner | None = None
        self.arrived = asyncio.Event()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/calls", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hooks/calls"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        status = 503 if len(self.requests) < self.fail_first else 200
        self.requests.append((status, dict(request.headers), body))
        self.arrived.set()
        return web.Response(status=status)

    def accepted(self) -> list[dict[str, Any]]:
        return [json.loads(body) for status, _, body in self.requests if status == 200]

    async def wait_for(self, count: int, timeout: float = 20) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.accepted()) < count:
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.accepted())} of {count} events arrived: {self.requests}")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 1)
            except TimeoutError:
                pass


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, webhook_retry_seconds=0.2)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(fail_first=3)
    await receiver.start()
    yield receiver
    await receiver.stop()


async def test_every_event_arrives_once_signed_and_in_order_across_failures_and_a_restart(
    settings: Settings, database: Database, receiver: Receiver
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    email, password = await make_admin(database, tenant.organisation_id)
    first: Running | None = await start(settings, database)
    second: Running | None = None
    try:
        assert first is not None
        cookie = await login_cookie(first.url, email, password)
        status, body = await call_api(
            "POST", f"{first.url}/api/v1/webhooks", cookie=cookie, origin=first.url,
            json={"url": receiver.url, "events": ["call.created", "call.answered", "call.ended", "recording.ready",
                                                  "recording.deleted", "callback.requested"]},
        )  # fmt: skip
        assert status == 201, body
        secret, endpoint_id = body["webhook"]["secret"], body["webhook"]["id"]

        call_id = await recorded_call(first, tenant, talk_seconds=0.5)
        record = await finished_recording(first.runner.app[RECORDINGS], tenant, call_id)
        await receiver.wait_for(1)  # the first three attempts were refused, and retried
        await first.stop()  # ... and the server stops with events still to deliver
        first = None
        delivered_before = len(receiver.accepted())

        second = await start(settings, database)
        cookie = await login_cookie(second.url, email, password)
        status, _ = await call_api(
            "POST", f"{second.url}/api/v1/widget/{tenant.button_key}/callbacks", origin=VISITOR_ORIGIN,
            json={"name": "Grace", "phone": "+1 202 555 0100", "call_id": call_id, "reason": "visitor"},
        )  # fmt: skip
        assert status == 201
        status, _ = await call_api(
            "DELETE", f"{second.url}/api/v1/recordings/{record.id}", cookie=cookie, origin=second.url
        )
        assert status == 200
        await receiver.wait_for(6)
        await asyncio.sleep(1)  # nothing more, no duplicate, arrives later

        events = receiver.accepted()
        assert delivered_before < 6
        ids = [e["id"] for e in events]
        assert len(ids) == len(set(ids)) == 6, "every event exactly once"
        assert [e["type"] for e in events] == [
            "call.created", "call.answered", "call.ended", "recording.ready", "callback.requested", "recording.deleted",
        ]  # fmt: skip
        assert {e["data"].get("call", {}).get("id") for e in events[:3]} == {call_id}
        assert events[2]["data"]["call"]["outcome"] == "answered" and events[2]["data"]["call"]["talk_ms"] > 0
        assert events[3]["data"]["recording"]["id"] == str(record.id)
        assert events[4]["data"]["callback"]["phone"] == "+1 202 555 0100"
        assert events[5]["data"]["recording"]["state"] == "deleted"
        assert all(e["organisation_id"] == str(tenant.organisation_id) for e in events)
        for _, headers, raw in receiver.requests:
            assert verify(secret, headers["Callbutton-Signature"], raw)
            assert not verify("whsec_wrong", headers["Callbutton-Signature"], raw)
            assert headers["Callbutton-Event-Id"] == json.loads(raw)["id"]
        refused = [json.loads(raw)["id"] for status, _, raw in receiver.requests if status != 200]
        assert len(refused) == 3 and set(refused) <= set(ids)

        # The console's delivery log says how each went.
        status, log = await call_api("GET", f"{second.url}/api/v1/webhooks/{endpoint_id}/deliveries", cookie=cookie)
        assert status == 200
        assert {d["state"] for d in log["deliveries"]} == {"delivered"}
        assert sum(d["attempts"] for d in log["deliveries"]) == 6 + 3
        assert any(d["last_status"] == 200 and d["attempts"] > 1 for d in log["deliveries"])
    finally:
        for running in (first, second):
            if running is not None:
                await running.stop()


async def test_a_receiver_that_never_answers_holds_back_only_its_own_call(
    settings: Settings, database: Database, receiver: Receiver, server: Running
) -> None:
    """Events of one call wait for each other; another endpoint, and another call, do not wait."""
    receiver.fail_first = 10**6  # this endpoint refuses everything
    healthy = Receiver(fail_first=0)
    await healthy.start()
    try:
        (tenant,) = await make_tenant(database)
        email, password = await make_admin(database, tenant.organisation_id)
        cookie = await login_cookie(server.url, email, password)
        for url in (receiver.url, healthy.url):
            status, _ = await call_api(
                "POST", f"{server.url}/api/v1/webhooks", cookie=cookie, origin=server.url,
                json={"url": url, "events": ["callback.requested"]},
            )  # fmt: skip
            assert status == 201
        for name in ("Ada", "Grace"):
            status, _ = await call_api(
                "POST", f"{server.url}/api/v1/widget/{tenant.button_key}/callbacks", origin=VISITOR_ORIGIN,
                json={"name": name, "email": f"{name.lower()}@example.test"},
            )  # fmt: skip
            assert status == 201
        await healthy.wait_for(2)
        assert {e["data"]["callback"]["name"] for e in healthy.accepted()} == {"Ada", "Grace"}
        await asyncio.sleep(0.5)
        # The failing endpoint was tried for both (they have different subjects), never successfully.
        tried = {json.loads(raw)["data"]["callback"]["name"] for _, _, raw in receiver.requests}
        assert tried == {"Ada", "Grace"} and receiver.accepted() == []
    finally:
        await healthy.stop()
