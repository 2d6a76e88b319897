"""Synthetic agents and visitors: the public protocol (docs/protocol.md) spoken as a browser would."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from loadtest.peer import Impairment, LoadPeer

Message = dict[str, Any]


class ProtocolFailure(Exception):
    """The server did not do what the protocol says; ``reason`` names what, for the report."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Socket:
    """A signalling WebSocket whose messages can be awaited by predicate."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self._http = http
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._messages: list[Message] = []
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.on_message: Callable[[Message], None] | None = None

    async def open(self, url: str, *, origin: str, headers: dict[str, str] | None = None) -> None:
        try:
            self._ws = await self._http.ws_connect(url, origin=origin, headers=headers or {}, heartbeat=None)
        except aiohttp.WSServerHandshakeError as exc:
            raise ProtocolFailure("socket_refused", f"HTTP {exc.status}") from None
        except aiohttp.ClientError as exc:
            raise ProtocolFailure("socket_unreachable", str(exc)) from None
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        while True:
            frame = await self._ws.receive()
            if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                if frame.type is aiohttp.WSMsgType.CLOSE:
                    self.close_reason = str(frame.extra or "")
                break
            if frame.type is aiohttp.WSMsgType.ERROR:
                self.close_reason = f"error: {frame.data}"
                break
            if frame.type is not aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            message["_at"] = time.monotonic()  # when it arrived, for phase timings
            if self.on_message is not None:
                self.on_message(message)
            async with self._changed:
                self._messages.append(message)
                self._changed.notify_all()
        self.closed = True
        self.close_code = self._ws.close_code
        async with self._changed:
            self._changed.notify_all()

    async def send(self, message: Message) -> None:
        assert self._ws is not None
        try:
            await self._ws.send_str(json.dumps(message))
        except ConnectionError:
            raise ProtocolFailure("socket_lost", self.how_closed()) from None

    def how_closed(self) -> str:
        """The server's close code and reason, as the report shows them."""
        if not self.closed:
            return "closed"
        return f"closed {self.close_code}" + (f": {self.close_reason}" if self.close_reason else "")

    async def wait(self, predicate: Callable[[Message], bool], within: float, reason: str) -> Message:
        """The first message (already received or to come) matching ``predicate``."""

        async def find() -> Message:
            async with self._changed:
                while True:
                    for message in self._messages:
                        if predicate(message):
                            return message
                    if self.closed:
                        raise ProtocolFailure(reason, f"socket {self.how_closed()}")
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), within)
        except TimeoutError:
            raise ProtocolFailure(reason, f"nothing within {within:g} s") from None

    def forget(self, predicate: Callable[[Message], bool]) -> None:
        """Drop messages no longer needed (an agent's socket lives for the whole run)."""
        self._messages = [m for m in self._messages if not predicate(m)]

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader


class SyntheticAgent:
    """An agent: logs in through the REST API, holds a standing leg, takes the calls it is given."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        email: str,
        password: str,
        *,
        impairment: Impairment,
        rng: random.Random,
    ) -> None:
        self.email = email
        self._http = http
        self._base_url = base_url
        self._password = password
        self._impairment = impairment
        self._rng = rng
        self.socket = Socket(http)
        self.peer: LoadPeer | None = None
        self.rings: dict[str, float] = {}  # call id -> when the ring arrived
        #: Told of every ``ring`` and ``ring_stopped`` message, as it arrives.
        self.on_ring: Callable[[SyntheticAgent, Message], None] | None = None

    async def start(self, listen_tone: float) -> None:
        async with self._http.post(
            f"{self._base_url}/api/v1/session",
            json={"email": self.email, "password": self._password},
            headers={"Origin": self._base_url},
        ) as response:
            if response.status != 200:
                raise ProtocolFailure("agent_login_failed", f"{self.email}: HTTP {response.status}")
            morsel = next(iter(response.cookies.values()))
            cookie = f"{morsel.key}={morsel.value}"
        self.socket.on_message = self._on_message
        await self.socket.open(
            self._base_url.replace("http", "ws", 1) + "/ws/v1/agent", origin=self._base_url, headers={"Cookie": cookie}
        )
        hello = await self.socket.wait(lambda m: m.get("type") == "hello", 10, "agent_no_hello")
        await self.new_leg(hello.get("ice_servers") or [], listen_tone)
        await self.socket.send({"type": "presence", "status": "available"})
        await self.socket.wait(
            lambda m: m.get("type") == "presence" and m.get("status") == "available", 15, "agent_not_available"
        )

    async def new_leg(self, ice_servers: list[dict[str, Any]], listen_tone: float) -> None:
        """Negotiate the standing leg; its tone and the tone it listens for are re-set per call."""
        self.ice_servers = ice_servers
        self.peer = LoadPeer(
            send_tone=listen_tone, expect_tone=listen_tone, ice_servers=ice_servers,
            impairment=self._impairment, rng=self._rng,
        )  # fmt: skip
        await self.socket.send({"type": "offer", "sdp": await self.peer.offer()})
        answer = await self.socket.wait(lambda m: m.get("type") == "answer", 10, "agent_no_answer_sdp")
        self.socket.forget(lambda m: m is answer)
        await self.peer.answer(answer["sdp"])

    def _on_message(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "ring":
            now = time.monotonic()
            self.rings[str(message.get("call_id"))] = now
            if len(self.rings) > 1000:  # rings of calls other agents took
                self.rings = {k: v for k, v in self.rings.items() if now - v < 60}
        if kind in ("ring", "ring_stopped") and self.on_ring is not None:
            self.on_ring(self, message)

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
        await self.socket.close()


class SyntheticVisitor:
    """A visitor: opens the visitor socket with the website's Origin and calls."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, button_key: str, origin: str) -> None:
        self.socket = Socket(http)
        self._url = base_url.replace("http", "ws", 1) + f"/ws/v1/visitor?key={button_key}"
        self._origin = origin
        self.peer: LoadPeer | None = None
        self.hello: Message = {}

    async def connect(self) -> None:
        await self.socket.open(self._url, origin=self._origin)
        self.hello = await self.socket.wait(lambda m: m.get("type") == "hello", 10, "visitor_no_hello")

    async def close(self) -> None:
        if self.peer is not None:
            await self.peer.close()
        await self.socket.close()
