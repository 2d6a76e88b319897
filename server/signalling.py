"""WebSocket signalling: the visitor socket and the agent socket (protocol version 1).

Both sockets share :class:`Socket`: a bounded outbox drained by one writer task (so the switchboard
can notify any party without awaiting, and a client that stops reading is cut off instead of growing
our memory), a cap on message size (close 1009), heartbeats, and a per-connection message-rate limit.
Every client error is answered with an ``error`` message and leaves the connection, and any call on it,
as they were. ``docs/protocol.md`` describes the messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

from media.sdp import SdpError
from server import links, logs, messages
from server.api import button_json
from server.appkeys import (
    CLIP_TOKENS,
    CLUSTER,
    CLUSTER_HTTP,
    DATABASE,
    DIRECTORY,
    LIMITS,
    ROSTER,
    SESSIONS,
    SETTINGS,
    SWITCHBOARD,
)
from server.auth import CookiePolicy
from server.calls import CallState
from server.clients import RELAYED_CLIENT, client_address
from server.cluster import Home, NoHome
from server.errors import json_error
from server.limits import TokenBucket
from server.links import CallLinkClaim
from server.livecall import LiveCall
from server.messages import ProtocolError
from server.presence import SOCKETS_PER_AGENT, AgentSocket
from server.relay import Relayed, relay, relayed_client
from server.turn import TURN
from storage.accounts import User
from storage.buttons import Button

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
_CLEAN_CLOSE = (WSCloseCode.OK, WSCloseCode.GOING_AWAY)
# How often an agent socket checks (and refreshes) its session.
SESSION_CHECK_SECONDS = 60.0

_BUTTON_KEY = re.compile(r"^cb_[A-Za-z0-9_-]{16,64}$")

Handler = Callable[[Any], Awaitable[None]]


class Socket:
    """A prepared WebSocket: bounded outbox, rate limit, and the read loop.

    It is listed in ``registry`` while open, so that shutdown can close every socket.
    """

    def __init__(self, ws: web.WebSocketResponse, log: Any, registry: set[Socket | Relayed]) -> None:
        self.ws = ws
        self.log = log
        self._registry = registry
        registry.add(self)
        self._outbox: asyncio.Queue[messages.Outgoing | None] = asyncio.Queue(OUTBOX_SIZE)
        self._writer = asyncio.create_task(self._write(), name="ws-writer")
        self._limit = TokenBucket(RATE_PER_SECOND, RATE_BURST)
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
            if self._outbox.full():
                # A client that stopped reading gets nothing more; if it does not read even the
                # close, the heartbeat ends the connection.
                while not self._outbox.empty():
                    self._outbox.get_nowait()
            # The writer closes the socket when it reaches this marker.
            self._outbox.put_nowait(None)

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
            self._registry.discard(self)
        return self.ws.close_code

    async def _dispatch(self, text: str, registry: dict[str, Any], handle: Handler) -> None:
        if not self._limit.allow():
            # Consecutive refusals: a client that keeps sending after being told is cut off.
            self._strikes += 1
            if self._strikes > RATE_BURST:
                self.close(WSCloseCode.POLICY_VIOLATION, "message rate limit exceeded")
            else:
                self._reject(ProtocolError("rate_limited", f"at most {RATE_PER_SECOND:g} messages a second"))
            return
        self._strikes = 0
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


#: The open sockets of an application.
SOCKETS: web.AppKey[set[Socket | Relayed]] = web.AppKey("sockets")


def _ice_servers(request: web.Request, kind: str, subject: uuid.UUID) -> list[dict[str, Any]]:
    """The ``hello``'s ICE servers: the configured STUN/TURN URLs, and with TURN configured, a TURN
    server with credentials of this socket's own (``server.turn``): ``kind`` ``agent`` for a user's id,
    ``visitor`` for a button's id."""
    servers: list[dict[str, Any]] = [{"urls": url} for url in request.app[SETTINGS].ice_servers]
    relay = request.app.get(TURN)
    if relay is not None:
        servers.append(relay.ice_server(kind, subject))
    return servers


def _prepare() -> web.WebSocketResponse:
    return web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=HEARTBEAT_SECONDS, autoping=True)


@web.middleware
async def release_websockets(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Once a WebSocket's handler is done: break the reference cycles aiohttp (3.14, pinned) leaves
    after it. The connection's request handler keeps the response's heartbeat callback after the
    connection is lost, and data arriving during the close handshake starts the heartbeat again after
    the close stopped it (a spent timer then holds the response's bound method). Each ended call's
    socket, request and handler would otherwise wait for a full collection, while the server freezes
    what is alive (``server.app.collect_garbage``)."""
    response = await handler(request)
    if isinstance(response, web.WebSocketResponse):
        cancel_heartbeat = getattr(response, "_cancel_heartbeat", None)
        if cancel_heartbeat is not None:
            cancel_heartbeat()
        protocol: Any = request.protocol
        if protocol is not None and hasattr(protocol, "_data_received_cb"):
            protocol._data_received_cb = None
    return response


async def visitor_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/v1/visitor?key=BUTTON_KEY``: a visitor's socket, authorised by key and Origin.

    ``GET /ws/v1/visitor?link=TOKEN``: a customer calling back through an agent's call link, from
    the call-link page on the app's own origin.
    """
    link: CallLinkClaim | None = None
    if "link" in request.query:
        found = await _link_button(request)
        if isinstance(found, web.Response):
            return found
        button, link = found
    else:
        key = request.query.get("key", "")
        found_button = await request.app[DIRECTORY].button_by_key(key) if _BUTTON_KEY.match(key) else None
        if found_button is None:
            return json_error(404, "unknown_button", "no call button has this key")
        button = found_button
        origin = request.headers.get("Origin")
        if origin is None or origin not in button.allowed_origins:
            log.info(logs.SOCKET_REJECTED, role="visitor", reason="origin", button_id=str(button.id))
            return json_error(403, "origin_not_allowed", "this call button may not be used from this website")

    address = client_address(request)
    limits = request.app[LIMITS]
    if not limits.visitor_sockets.acquire(address):
        return json_error(429, "too_many_sockets", "too many open calls from this address")
    try:
        home = await _home(request, button.organisation_id)
        if isinstance(home, web.Response):
            return home
        if home is not None:
            return await _relay(request, home, "visitor", address)
        return await _visitor_session(request, button, address, link)
    finally:
        limits.visitor_sockets.release(address)


async def _home(request: web.Request, organisation_id: uuid.UUID) -> Home | web.Response | None:
    """Where a socket of the organisation is served (``server.cluster``): None here, a
    :class:`Home` elsewhere (relay it), or the response refusing it."""
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return None  # one process
    try:
        # A socket relayed here was placed here by the relaying node: it is not placed again.
        home = await cluster.home(organisation_id, place=request.get(RELAYED_CLIENT) is None)
    except NoHome as exc:
        log.warning(logs.SOCKET_REJECTED, reason="no_home", error=str(exc))
        return json_error(503, "unavailable", "the service is briefly unavailable; try again in a moment")
    if home.url is not None and request.get(RELAYED_CLIENT) is not None:
        # Relayed here as to the home, which another node has become meanwhile: the relaying node
        # answers 503, and the client's next try finds the new home.
        log.warning(logs.SOCKET_REJECTED, reason="not_home", home=home.node)
        return json_error(503, "unavailable", "the service is briefly unavailable; try again in a moment")
    return None if home.url is None else home


async def _relay(request: web.Request, home: Home, role: str, address: str) -> web.StreamResponse:
    return await relay(
        request,
        cluster=request.app[CLUSTER],
        http=request.app[CLUSTER_HTTP],
        home=home,
        role=role,
        client=address,
        prepare=_prepare,
        registry=request.app[SOCKETS],
    )


async def internal_socket(request: web.Request) -> web.StreamResponse:
    """``GET /internal/v1/ws/{visitor,agent}``: a socket another node of the cluster relays here,
    this node being its organisation's home. Signed by that node; served like a direct socket of
    the client it names."""
    client = relayed_client(request, request.app.get(CLUSTER))
    if client is None:
        return json_error(403, "forbidden", "not a signed request of this cluster")
    request[RELAYED_CLIENT] = client
    if request.match_info["role"] == "visitor":
        return await visitor_socket(request)
    return await agent_socket(request)


async def _link_button(request: web.Request) -> tuple[Button, CallLinkClaim] | web.Response:
    """The button and claim of a call link socket, or the response refusing it."""
    if request.headers.get("Origin") not in request.app[SETTINGS].origins:
        log.info(logs.SOCKET_REJECTED, role="visitor", reason="origin")
        return json_error(403, "origin_not_allowed", "call links are opened from this server's own page")
    database = request.app[DATABASE]
    token = request.query["link"]
    found = await database.call_links.find(token) if links.TOKEN.match(token) else None
    if found is None or not found.usable(datetime.datetime.now(datetime.UTC)):
        return json_error(410, "link_used", "this call link was used already or has expired")
    button = await database.buttons.get(found.organisation_id, found.button_id) if found.button_id else None
    if button is None:
        return json_error(410, "link_used", "this call link's button no longer exists")
    return button, CallLinkClaim(database.call_links, token, found.agent_id)


async def _visitor_session(
    request: web.Request, button: Button, address: str, link: CallLinkClaim | None
) -> web.WebSocketResponse:
    ws = _prepare()
    await ws.prepare(request)
    bound = log.bind(role="visitor", button_id=str(button.id), org_id=str(button.organisation_id))
    socket = Socket(ws, bound, request.app[SOCKETS])
    switchboard = request.app[SWITCHBOARD]
    limits = request.app[LIMITS]
    live: LiveCall | None = None
    requested = False
    bound.info(logs.SOCKET_OPENED)
    socket.send(
        messages.Hello(
            role="visitor",
            button=button_json(button, link=link is not None),
            ice_servers=_ice_servers(request, "visitor", button.id),
        )
    )

    def send_visitor(message: messages.Outgoing) -> None:
        if isinstance(message, messages.CallState) and message.state != CallState.ENDED.value:
            # With it, the visitor may send clips with this call (server/clips_api.py).
            message = dataclasses.replace(message, clip_token=request.app[CLIP_TOKENS].for_call(message.call_id))
        socket.send(message)
        if isinstance(message, messages.CallState) and message.state == CallState.ENDED.value:
            # One socket, one call: once the visitor knows it ended, the socket has done its job.
            socket.close(WSCloseCode.OK, "call ended")

    def no_call_requested() -> None:
        if not requested:
            socket.close(WSCloseCode.POLICY_VIOLATION, "no call was requested")

    deadline = asyncio.get_running_loop().call_later(limits.visitor_call_deadline, no_call_requested)

    async def handle(message: messages.VisitorMessage) -> None:
        nonlocal live
        if isinstance(message, messages.CallRequest):
            if live is not None:
                raise ProtocolError("wrong_state", "this socket already has a call; open a new one", "call")

            async def admit() -> None:
                nonlocal requested
                if not await limits.allow_call(address):
                    raise ProtocolError("rate_limited", "too many calls from here just now; try again in a minute")
                if not limits.calls_per_button.allow(button.id):
                    raise ProtocolError(
                        "rate_limited", "this button is taking too many calls just now; try again in a minute"
                    )
                requested = True  # the deadline no longer applies, even while the call is being placed

            live = await switchboard.place(
                button=button,
                page_url=message.page_url,
                offer_sdp=message.sdp,
                send_visitor=send_visitor,
                visitor=message.visitor,
                admit=admit,
                link=link,
            )
            socket.log = bound.bind(call_id=str(live.call.id))
        elif isinstance(message, messages.VisitorHangup):
            if live is None or live.call.ended:
                raise ProtocolError("wrong_state", "there is no call to hang up", "hangup")
            await switchboard.visitor_hangup(live)

    code = None
    cluster = request.app.get(CLUSTER)
    if cluster is not None:
        cluster.hold(button.organisation_id)
    try:
        code = await socket.run(messages.VISITOR_MESSAGES, handle)
    finally:
        deadline.cancel()
        try:
            if live is not None and not live.call.ended:
                await switchboard.visitor_gone(live, clean=code in _CLEAN_CLOSE)
        finally:
            if cluster is not None:
                cluster.release(button.organisation_id)
        bound.info(logs.SOCKET_CLOSED, code=code)
    return ws


async def agent_socket(request: web.Request) -> web.StreamResponse:
    """``GET /ws/v1/agent``: a logged-in agent's socket, from the app's own origin.

    An agent may have several (tabs, devices), up to ``SOCKETS_PER_AGENT``; one more closes the
    oldest that carries no call.
    """
    settings = request.app[SETTINGS]
    if request.headers.get("Origin") not in settings.origins:
        log.info(logs.SOCKET_REJECTED, role="agent", reason="origin")
        return json_error(403, "origin_not_allowed", "agent sockets must come from the agent console's origin")
    cookie = CookiePolicy.for_origin(settings.origin)
    token = request.cookies.get(cookie.name)
    session = await request.app[SESSIONS].lookup(token)
    if session is None or token is None:
        return json_error(401, "not_authenticated", "log in first")
    user = session.user
    home = await _home(request, user.organisation_id)
    if isinstance(home, web.Response):
        return home
    if home is not None:
        return await _relay(request, home, "agent", client_address(request))

    ws = _prepare()
    await ws.prepare(request)
    # Held while the socket is open: the home stays here meanwhile (server/cluster.py).
    cluster = request.app.get(CLUSTER)
    if cluster is not None:
        cluster.hold(user.organisation_id)
    try:
        return await _agent_session(request, ws, user, token)
    finally:
        if cluster is not None:
            cluster.release(user.organisation_id)


async def _agent_session(
    request: web.Request, ws: web.WebSocketResponse, user: User, token: str
) -> web.WebSocketResponse:
    bound = log.bind(role="agent", agent_id=str(user.id), org_id=str(user.organisation_id))
    socket = Socket(ws, bound, request.app[SOCKETS])
    console = AgentSocket(send=socket.send, close=socket.close, session=token)
    switchboard = request.app[SWITCHBOARD]
    agent = request.app[ROSTER].join(
        user_id=user.id, organisation_id=user.organisation_id, display_name=user.display_name
    )
    if len(agent.sockets) >= SOCKETS_PER_AGENT:
        oldest = next((s for s in agent.sockets if s is not agent.call_socket), None)
        if oldest is not None:
            oldest.close(CLOSE_REPLACED, "replaced by a newer console of the same agent")
            await switchboard.agent_gone(agent, oldest, clean=False, detail="agent_reconnected")
    bound.info(logs.SOCKET_OPENED)
    # Joined before the hello, so that the hello tells the presence the agent now has.
    agent.sockets.append(console)
    presence = agent.presence_message()
    socket.send(
        messages.Hello(
            role="agent",
            agent={
                "id": str(user.id),
                "name": user.display_name,
                "presence": presence.status,
                "wants_available": agent.wants_available,
                "wrap_up_seconds": presence.wrap_up_seconds,
                "in_call": str(agent.call_id) if agent.call_id else None,
            },
            ice_servers=_ice_servers(request, "agent", user.id),
        )
    )
    switchboard.changed(agent)

    async def handle(message: messages.AgentMessage) -> None:
        if isinstance(message, messages.Offer):
            console.send(messages.Answer(sdp=await switchboard.agent_offer(agent, console, message.sdp)))
        elif isinstance(message, messages.SetPresence):
            switchboard.set_presence(agent, message.status)
        elif isinstance(message, messages.Accept):
            await switchboard.accept(agent, console, message.call_id)
        elif isinstance(message, messages.Decline):
            await switchboard.decline(agent, message.call_id)
        elif isinstance(message, messages.AgentHangup):
            await switchboard.agent_hangup(agent, message.call_id)

    async def watch_session() -> None:
        """End the socket with its session (timeout, logout, disabled user); keep it alive while open."""
        sessions = request.app[SESSIONS]
        while True:
            await asyncio.sleep(SESSION_CHECK_SECONDS)
            try:
                alive = await sessions.lookup(token) is not None
            except Exception:
                bound.warning(logs.SESSION_CHECK_FAILED, exc_info=True)
                continue
            if not alive:
                socket.close(CLOSE_SESSION_ENDED, "the session has ended; log in again")
                return

    watcher = asyncio.create_task(watch_session(), name="agent-session-watch")
    code = None
    try:
        code = await socket.run(messages.AGENT_MESSAGES, handle)
    finally:
        watcher.cancel()
        if console in agent.sockets:
            await switchboard.agent_gone(agent, console, clean=code in _CLEAN_CLOSE)
        bound.info(logs.SOCKET_CLOSED, code=code)
    return ws


async def close_all(app: web.Application) -> None:
    """Close every open socket (at shutdown, once calls have ended and parties been told)."""
    sockets = app[SOCKETS]
    for socket in list(sockets):
        socket.close(WSCloseCode.GOING_AWAY, "the server is shutting down")
