"""An ended call leaves nothing for the cycle collector on the server: its legs (media/aiortc_release.py),
bridge, recorder, encrypted file and the visitor's socket are freed by reference counting. The server
freezes what is alive every few seconds (server.app.collect_garbage), and a frozen object left in a
reference cycle stays until the next collection of everything: a cycle here is memory held for hours."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server import backports
from server.app import Running, start
from server.appkeys import RECORDINGS, SWITCHBOARD
from server.config import Settings
from server.signalling import SOCKETS, Socket
from storage.db import Database
from tests.conftest import answered_call_for, make_tenant
from tests.test_recording import finished_recording


@pytest.fixture
async def calls_server(settings: Settings, database: Database) -> AsyncIterator[Running]:
    running = await start(dataclasses.replace(settings, call_rate_per_address=1000.0), database)
    yield running
    await running.stop()


async def test_an_ended_recorded_call_is_freed_without_the_collector(
    calls_server: Running, database: Database, no_collector: None
) -> None:
    server = calls_server
    (tenant,) = await make_tenant(database, recording=True)
    clients: list[Any] = []  # kept: the test's own peers are not what is checked
    switchboard = server.runner.app[SWITCHBOARD]
    refs: dict[str, weakref.ref[Any]] = {}
    for _ in range(2):  # the second call: nothing first-time (imports, caches) in the way
        refs.clear()
        visitor, agent, call_id = await answered_call_for(server.url, tenant)
        clients += [visitor, agent]
        live = switchboard.calls[uuid.UUID(call_id)]
        assert live.recording is not None and live.bridge.agent is not None
        sockets = [s for s in server.runner.app[SOCKETS] if isinstance(s, Socket)]
        parts = {
            "call": live,
            "call row": live.call,
            "visitor leg": live.leg,
            "agent leg": live.bridge.agent,
            "bridge": live.bridge,
            "recording": live.recording,
            "recorder": live.recording.recorder,
        }
        parts |= {f"socket {i}": s for i, s in enumerate(sockets)} | {f"ws {i}": s.ws for i, s in enumerate(sockets)}
        refs.update({name: weakref.ref(obj) for name, obj in parts.items()})
        del live, sockets, parts
        await asyncio.sleep(1)
        recorder: Any = refs["recorder"]()
        assert recorder._sink is not None  # the encrypted file, opened meanwhile
        refs["file"] = weakref.ref(recorder._sink)
        del recorder
        await visitor.send({"type": "hangup"})
        await agent.expect("call_state", call_id=call_id, state="ended")
        await visitor.close()
        await agent.close()  # the agent's standing leg closes with their socket
        await finished_recording(server.runner.app[RECORDINGS], tenant, call_id)
    for _ in range(50):
        if all(ref() is None for ref in refs.values()):
            break
        await asyncio.sleep(0.1)
    assert [name for name, ref in refs.items() if ref() is not None] == []


async def test_a_closed_tcp_connection_is_freed_without_the_collector(no_collector: None) -> None:
    backports.apply()
    made: asyncio.Queue[asyncio.BaseTransport] = asyncio.Queue()

    class Server(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.put_nowait(transport)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(Server, "127.0.0.1", 0)
    refs: list[weakref.ref[asyncio.BaseTransport]] = []
    try:
        port = server.sockets[0].getsockname()[1]
        for closer in ("client", "server"):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            transport = await made.get()
            refs.append(weakref.ref(transport))
            if closer == "server":
                transport.close()
            del transport
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.1)
        assert [ref() for ref in refs] == [None, None]
    finally:
        server.close()
        await server.wait_closed()
