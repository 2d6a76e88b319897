"""Synthetic visitors and agents: real aiortc peers speaking the public signalling protocol.

They use only what a browser would: the REST API, the WebSocket protocol with the right Origin, and
WebRTC with an SDP offer carrying its candidates. Each sends a tone and keeps what it hears.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media.synthetic import AudioSink, OpusLoopTrack, dominant_frequency

Message = dict[str, Any]


class SignallingPeer:
    """A WebSocket client that keeps every message it receives, for tests to wait on."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.received: list[Message] = []
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self._arrived = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self.pc: RTCPeerConnection | None = None
        self.sink: AudioSink | None = None
        self._track_arrived = asyncio.Event()

    async def open(self, url: str, *, origin: str, headers: dict[str, str] | None = None) -> None:
        self.ws = await self.http.ws_connect(url, origin=origin, headers=headers or {})
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for frame in self.ws:
            if frame.type is aiohttp.WSMsgType.TEXT:
                async with self._arrived:
                    self.received.append(json.loads(frame.data))
                    self._arrived.notify_all()
        self.close_code = self.ws.close_code
        self.closed.set()
        async with self._arrived:
            self._arrived.notify_all()

    async def send(self, message: Message | str) -> None:
        assert self.ws is not None
        await self.ws.send_str(message if isinstance(message, str) else json.dumps(message))

    async def expect(self, type_: str, timeout: float = 10.0, **fields: Any) -> Message:
        """The first message (received so far or later) of ``type_`` whose fields match ``fields``."""

        def match(m: Message) -> bool:
            return m.get("type") == type_ and all(m.get(k) == v for k, v in fields.items())

        return await self.wait_for(match, timeout, f"{type_} {fields}")

    async def wait_for(self, predicate: Callable[[Message], bool], timeout: float, what: str) -> Message:
        async def wait() -> Message:
            async with self._arrived:
                while True:
                    for m in self.received:
                        if predicate(m):
                            return m
                    if self.closed.is_set():
                        raise AssertionError(f"socket closed ({self.close_code}) before {what}; got {self.received}")
                    await self._arrived.wait()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no {what} within {timeout}s; got {self.received}") from None

    def messages(self, type_: str) -> list[Message]:
        return [m for m in self.received if m.get("type") == type_]

    async def offer(self, tone: float) -> str:
        """Create this peer's connection sending ``tone`` and return its offer, candidates included."""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(OpusLoopTrack.of_tone(tone))

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.sink = AudioSink(track)
            self._track_arrived.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def apply_answer(self, sdp: str) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def hears(self, frequency: float, timeout: float = 10.0, tolerance: float = 15.0) -> float:
        """Wait until the dominant frequency of what this peer receives is ``frequency``."""
        await asyncio.wait_for(self._track_arrived.wait(), timeout)
        assert self.sink is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        heard = None
        while loop.time() < deadline:
            heard = dominant_frequency(self.sink.samples())
            if heard is not None and abs(heard - frequency) <= tolerance:
                return heard
            await asyncio.sleep(0.2)
        raise AssertionError(f"expected to hear {frequency} Hz, heard {heard}")

    def heard(self) -> float | None:
        return None if self.sink is None else dominant_frequency(self.sink.samples())

    async def close(self) -> None:
        if self.sink is not None:
            await self.sink.close()
        if self.pc is not None:
            await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await self._reader
        await self.http.close()


class Visitor(SignallingPeer):
    def __init__(self, base_url: str, button_key: str, origin: str, *, link: str | None = None) -> None:
        super().__init__()
        query = f"link={link}" if link is not None else f"key={button_key}"
        self.url = base_url.replace("http", "ws", 1) + f"/ws/v1/visitor?{query}"
        self.origin = origin
        self.call_id: str | None = None

    @classmethod
    def through_link(cls, base_url: str, token: str) -> Visitor:
        """A customer calling through a call link, from the app's own call-link page."""
        return cls(base_url, "", base_url, link=token)

    async def connect(self) -> Message:
        await self.open(self.url, origin=self.origin)
        return await self.expect("hello")

    async def call(
        self,
        tone: float = 440.0,
        page_url: str = "https://shop.example.test/cart",
        visitor: dict[str, str] | None = None,
    ) -> str:
        sdp = await self.offer(tone)
        request: Message = {"type": "call", "sdp": sdp, "page_url": page_url}
        if visitor is not None:
            request["visitor"] = visitor
        await self.send(request)
        state = await self.expect("call_state")
        self.call_id = state["call_id"]
        if state["state"] != "ended":
            await self.apply_answer((await self.expect("answer"))["sdp"])
        return self.call_id


class Agent(SignallingPeer):
    def __init__(self, base_url: str, email: str, password: str, *, origin: str | None = None) -> None:
        """``origin``: the app's origin, when ``base_url`` is one node of several behind it."""
        super().__init__()
        self.base_url = base_url
        self.origin = origin or base_url
        self.email = email
        self.password = password
        self.cookie: str | None = None

    async def login(self) -> None:
        async with self.http.post(
            f"{self.base_url}/api/v1/session",
            json={"email": self.email, "password": self.password},
            headers={"Origin": self.origin},
        ) as response:
            assert response.status == 200, await response.text()
            morsel = next(iter(response.cookies.values()))
            self.cookie = f"{morsel.key}={morsel.value}"

    async def connect(self) -> Message:
        if self.cookie is None:
            await self.login()
        assert self.cookie is not None
        url = self.base_url.replace("http", "ws", 1) + "/ws/v1/agent"
        await self.open(url, origin=self.origin, headers={"Cookie": self.cookie})
        return await self.expect("hello")

    async def go_available(self, tone: float = 880.0) -> None:
        await self.send({"type": "offer", "sdp": await self.offer(tone)})
        await self.apply_answer((await self.expect("answer"))["sdp"])
        await self.send({"type": "presence", "status": "available"})
        await self.expect("presence", status="available")


async def ringing_call(
    base_url: str,
    *,
    button_key: str,
    origin: str,
    agent_email: str,
    agent_password: str,
    visitor_tone: float = 440.0,
    agent_tone: float = 880.0,
    visitor: dict[str, str] | None = None,
) -> tuple[Visitor, Agent, str]:
    """A visitor's call ringing an agent: the agent goes available, the visitor calls (``visitor``:
    what they filled in), the agent is rung. The caller closes both peers."""
    agent = Agent(base_url, agent_email, agent_password)
    caller = Visitor(base_url, button_key, origin)
    try:
        await agent.connect()
        await agent.go_available(tone=agent_tone)
        await caller.connect()
        call_id = await caller.call(tone=visitor_tone, visitor=visitor)
        await agent.expect("ring", call_id=call_id)
    except BaseException:
        await caller.close()
        await agent.close()
        raise
    return caller, agent, call_id


async def answered_call(base_url: str, **call: Any) -> tuple[Visitor, Agent, str]:
    """A visitor and an agent in an answered call (``call``: :func:`ringing_call`'s arguments): the
    agent goes available, the visitor calls, the agent accepts. The caller closes both peers."""
    caller, agent, call_id = await ringing_call(base_url, **call)
    try:
        await agent.send({"type": "accept", "call_id": call_id})
        await caller.expect("call_state", state="answered")
    except BaseException:
        await caller.close()
        await agent.close()
        raise
    return caller, agent, call_id
