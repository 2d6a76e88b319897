"""WebSocket signalling: the visitor socket and the agent socket (protocol version 1).

Both sockets share :class:`Socket`: a bounded outbox drained by one writer task (so the switchboard
can notify any party without awaiting, and a client that stops reading is cut off instead of growing
our memory), a cap on message size (close 1009), heartbeats, and a per-connection message-rate limit.
Every client error is answered with an ``error`` message and leaves the connection, and any call on it,
as they were. ``docs/protocol.md`` describes the messages.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from media.sdp import SdpError
from server import logs, messages
from server.appkeys import DATABASE, ROSTER, SESSIONS, SETTINGS, SWITCHBOARD
from server.auth import CookiePolicy
from server.errors import json_error
from server.messages import ProtocolError
from server.presence import Agent
from server.routing import LiveCall

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024
OUTBOX_SIZE = 256
HEARTBEAT_SECONDS = 20.0
RATE_PER_SECOND = 10.0
RATE_BURST = 40
# Close codes in the private range (RFC 6455 section 7.4.2).
CLOSE_REPLACED = 4001
CLOSE_SESSION_ENDED = 4002
CLOSE_TOO_SLOW = 4003

_BUTTON_KEY = re.compile(r"^cb_[A-Za-z0-9_-]{16,64}$")

Handler = Callable[[Any], Awaitable[None]]


class _RateLimit:
    """A token bucket: ``rate`` messages a second on average, bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Socket:
    """A prepared WebSocket: bounded outbox, rate limit, and the read loop."""

    def __init__(self, ws: web.WebSocketResponse, log: Any) -> None:
        self.ws = ws
        self.log = log
        self._outbox: asyncio.Queue[messages.Outgoing | None] = asyncio.Queue(OUTBOX_SIZE)
        self._writer = asyncio.create_task(self._write(), name="ws-writer")
        self._limit = _RateLimit(RATE_PER_SECOND, RATE_BURST)
        self._strikes = 0
        self._closing: tuple[int, str] | None = None

    def send(self, message: messages.Outgoing) -> None:
        if self._closing is not None:
            return
        try:
            self._outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.close(CLOSE_TOO_SLOW, "client is not reading its messages")

    def close(self, code: int, reason: str) -> None:
        """Close after the messages already queued have been sent."""
        if self._closing is None:
            self._closing = (code, reason)
            # The writer ends at this marker; if the queue is full it is closing anyway.
            try:
                self._outbox.put_nowait(None)
            except asyncio.QueueFull:
                self._writer.cancel()

    async def run(self, registry: dict[str, Any], handle: Handler) -> int | None:
        """Read and dispatch messages until the socket closes; return the close code."""
        try:
            async for frame in self.ws:
                if frame.type is WSMsgType.TEXT:
                    await self._dispatch(frame.data, registry, handle)
                elif frame.type is WSMsgType.BINARY:
                    self._reject(ProtocolError("bad_message", "binary frames are not part of the protocol"))
                elif frame.type is WSMsgType.ERROR:
                    break
        finally:
            self.close(WSCloseCode.OK, "")
            try:
                await asyncio.wait_for(asyncio.shield(self._writer), timeout=2)
            except (TimeoutError, asyncio.CancelledError):
                self._writer.cancel()
            if not self.ws.closed:
                await self.ws.close()
        return self.ws.close_code

    async def _dispatch(self, text: str, registry: dict[str, Any], handle: Handler) -> None:
        if not self._limit.allow():
            self._strikes += 1
            if self._strikes > RATE_BURST:
                self.close(WSCloseCode.POLICY_VIOLATION, "message rate limit exceeded")
            else:
                self._reject(ProtocolError("rate_limited", f"at most {RATE_PER_SECOND:g} messages a second"))
            return
        try:
            message = messages.parse(text, registry)
        except ProtocolError as exc:
            self._reject(exc)
            return
        try:
            await handle(message)
        except ProtocolError as exc:
            self._reject(exc)
        except SdpError as exc:
            self._reject(ProtocolError("invalid_sdp", str(exc), message.type))
        except Exception:
            self.log.exception(logs.TASK_FAILED, ref=message.type)
            self._reject(ProtocolError("internal", "the server failed to handle this message", message.type))

    def _reject(self, error: ProtocolError) -> None:
        self.log.info(logs.MESSAGE_REJECTED, code=error.code, ref=error.ref)
        self.send(messages.Error(code=error.code, message=error.message, ref=error.ref))

    async def _write(self) -> None:
        while True:
            message = await self._outbox.get()
            if message is None:
                break
            try:
                await self.ws.send_str(message.to_json())
            except ConnectionError:
                break
        code, reason = self._closing or (WSCloseCode.OK, "")
        if not self.ws.closed:
            await self.ws.close(code=code, message=reason.encode())


def _ice_servers(request: web.Request) -> list[dict[str, Any]]:
    return [{"urls": url} for url in request.app[SETTINGS].ice_servers]


def _prepare() -> web.WebSocketResponse:
    return web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_SECONDS, autoping=True)


async def visitor_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/v1/visitor?key=BUTTON_KEY``: a visitor's socket, authorised by key and Origin."""
    key = request.query.get("key", "")
    button = None
    if _BUTTON_KEY.match(key):
        button = await request.app[DATABASE].buttons.by_public_key(key)
    if button is None:
        return json_error(404, "unknown_button", "no call button has this key")
    origin = request.headers.get("Origin")
    if origin is None or origin not in button.allowed_origins:
        log.info(logs.SOCKET_REJECTED, role="visitor", reason="origin", button_id=str(button.id))
        return json_error(403, "origin_not_allowed", "this call button may not be used from this website")

    ws = _prepare()
    await ws.prepare(request)
    bound = log.bind(role="visitor", button_id=str(button.id), org_id=str(button.organisation_id))
    socket = Socket(ws, bound)
    switchboard = request.app[SWITCHBOARD]
    live: LiveCall | None = None
    bound.info(logs.SOCKET_OPENED)
    socket.send(messages.Hello(role="visitor", button={"name": button.name}, ice_servers=_ice_servers(request)))

    async def handle(message: messages.VisitorMessage) -> None:
        nonlocal live
        if isinstance(message, messages.CallRequest):
            if live is not None:
                raise ProtocolError("wrong_state", "this socket already has a call; open a new one", "call")
            live = await switchboard.place(
                button=button, page_url=message.page_url, offer_sdp=message.sdp, send_visitor=socket.send
            )
            socket.log = bound.bind(call_id=str(live.call.id))
        elif isinstance(message, messages.VisitorHangup):
            if live is None or live.call.ended:
                raise ProtocolError("wrong_state", "there is no call to hang up", "hangup")
            await switchboard.visitor_hangup(live)

    try:
        await socket.run(messages.VISITOR_MESSAGES, handle)
    finally:
        if live is not None and not live.call.ended:
            await switchboard.visitor_hangup(live)
        bound.info(logs.SOCKET_CLOSED, code=ws.close_code)
    return ws


async def agent_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/v1/agent``: a logged-in agent's socket, from the app's own origin."""
    settings = request.app[SETTINGS]
    if request.headers.get("Origin") != settings.origin:
        log.info(logs.SOCKET_REJECTED, role="agent", reason="origin")
        return json_error(403, "origin_not_allowed", "agent sockets must come from the agent console's origin")
    cookie = CookiePolicy.for_origin(settings.origin)
    token = request.cookies.get(cookie.name)
    session = await request.app[SESSIONS].lookup(token)
    if session is None or token is None:
        return json_error(401, "not_authenticated", "log in first")
    user = session.user

    ws = _prepare()
    await ws.prepare(request)
    bound = log.bind(role="agent", agent_id=str(user.id), org_id=str(user.organisation_id))
    socket = Socket(ws, bound)
    agent = Agent(
        user_id=user.id,
        organisation_id=user.organisation_id,
        display_name=user.display_name,
        send=socket.send,
        close=socket.close,
        session=token,
    )
    switchboard = request.app[SWITCHBOARD]
    previous = request.app[ROSTER].add(agent)
    if previous is not None:
        previous.close(CLOSE_REPLACED, "replaced by a newer connection of the same agent")
        await switchboard.agent_gone(previous, clean=True)
    bound.info(logs.SOCKET_OPENED)
    socket.send(
        messages.Hello(
            role="agent",
            agent={"id": str(user.id), "name": user.display_name, "presence": agent.presence.value},
            ice_servers=_ice_servers(request),
        )
    )

    async def handle(message: messages.AgentMessage) -> None:
        if isinstance(message, messages.Offer):
            socket.send(messages.Answer(sdp=await switchboard.agent_offer(agent, message.sdp)))
        elif isinstance(message, messages.SetPresence):
            switchboard.set_presence(agent, message.status)
        elif isinstance(message, messages.Accept):
            await switchboard.accept(agent, message.call_id)
        elif isinstance(message, messages.Decline):
            await switchboard.decline(agent, message.call_id)
        elif isinstance(message, messages.AgentHangup):
            await switchboard.agent_hangup(agent, message.call_id)

    code = None
    try:
        code = await socket.run(messages.AGENT_MESSAGES, handle)
    finally:
        request.app[ROSTER].remove(agent)
        if agent.connected:
            await switchboard.agent_gone(agent, clean=code in (WSCloseCode.OK, WSCloseCode.GOING_AWAY))
        bound.info(logs.SOCKET_CLOSED, code=code)
    return ws
