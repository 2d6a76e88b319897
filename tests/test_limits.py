"""The signalling limits the other test files do not reach (docs/protocol.md, "Limits", lists each
limit with the test that shows it): heartbeats, and call attempts per button."""

from __future__ import annotations

import asyncio
import dataclasses

import aiohttp
import pytest

from server import signalling
from server.app import start
from server.config import Settings
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, make_tenant
from tests.peers import Visitor


async def test_a_client_that_does_not_answer_pings_is_disconnected(
    settings: Settings, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signalling, "HEARTBEAT_SECONDS", 0.5)
    (tenant,) = await make_tenant(database)
    running = await start(settings, database)
    try:
        url = running.url.replace("http", "ws", 1) + f"/ws/v1/visitor?key={tenant.button_key}"
        async with aiohttp.ClientSession() as http:
            answering = await http.ws_connect(url, headers={"Origin": VISITOR_ORIGIN})  # autoping on

            async def answer_pings() -> None:
                # aiohttp's client answers a ping while something reads the socket (autoping); a
                # socket nobody reads answers none and is rightly dropped too, which made this
                # test depend on which of the two the server's heartbeat reached first.
                async for _ in answering:
                    pass

            reader = asyncio.create_task(answer_pings())
            silent = await http.ws_connect(url, headers={"Origin": VISITOR_ORIGIN}, autoping=False)
            pings = 0
            loop = asyncio.get_running_loop()
            began = loop.time()
            while True:
                message = await silent.receive(timeout=10)
                if message.type is aiohttp.WSMsgType.PING:
                    pings += 1  # and no pong
                    continue
                if message.type is aiohttp.WSMsgType.TEXT:
                    continue  # hello
                break
            assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
            assert pings >= 1 and loop.time() - began < 5
            for _ in range(50):  # the server forgets it too
                if len(running.runner.app[signalling.SOCKETS]) == 1:
                    break
                await asyncio.sleep(0.1)
            assert len(running.runner.app[signalling.SOCKETS]) == 1
            # The one that answers pings stays.
            await asyncio.sleep(1.5)
            assert len(running.runner.app[signalling.SOCKETS]) == 1 and not answering.closed
            await answering.close()
            await reader
    finally:
        await running.stop()


async def test_call_attempts_are_limited_per_button(settings: Settings, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    # Only the button's limit can trigger: 6 a minute, in bursts of 3.
    running = await start(
        dataclasses.replace(settings, call_rate_per_button=6.0, call_rate_per_address=6000.0), database
    )
    try:
        replies = []
        for _ in range(5):
            visitor = Visitor(running.url, tenant.button_key, VISITOR_ORIGIN)
            try:
                await visitor.connect()
                await visitor.send({"type": "call", "sdp": await visitor.offer(440)})
                replies.append(await visitor.wait_for(lambda m: m["type"] in ("call_state", "error"), 5, "a reply"))
            finally:
                await visitor.close()
        assert [r.get("code") or r["state"] for r in replies] == ["ended"] * 3 + ["rate_limited"] * 2
        assert "this button is taking too many calls" in replies[-1]["message"]
    finally:
        await running.stop()
