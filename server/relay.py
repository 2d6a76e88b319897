"""Relaying a client's socket to its organisation's home node (``server.cluster``).

The node a client reached opens an internal WebSocket to the home, signed with the cluster's key and
carrying the client's address, Origin and cookie, so that the home checks and serves it exactly as
if the client had come to it; then frames go both ways unchanged. The home's close (code and reason)
is passed on. When the link to the home fails (the home died, a network cut), the client is told
that its call ended (``failed``, detail ``server_failed``) when it was in one, and its socket is
closed with **1012** (service restart): a client reconnects, and lands on a live node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from yarl import URL

from server.cluster import Cluster, Home
from server.errors import json_error

log = structlog.get_logger(__name__)

RELAY_OPENED = "relay.opened"
RELAY_FAILED = "relay.failed"

#: The internal link pings this often; a home that stops answering is taken for dead in 1.5 times it
#: (aiohttp waits half an interval for the pong: a node busy for a second must not cut its relays).
HEARTBEAT_SECONDS = 5.0
CLOSE_SERVER_FAILED = 1012
#: A client gone without a close frame, passed on as a close the home takes for unclean.
CLOSE_CLIENT_LOST = 4000
_PASSED_ON = frozenset({WSCloseCode.OK, WSCloseCode.GOING_AWAY})

# What the home's refusal of the handshake means, for the client (the same codes as a local refusal).
_REFUSALS = {
    401: ("not_authenticated", "log in first"),
    403: ("origin_not_allowed", "this socket may not be opened from this website"),
    404: ("unknown_button", "no call button has this key"),
    410: ("link_used", "this call link was used already or has expired"),
    429: ("too_many_sockets", "too many open calls from this address"),
}


class Relayed:
    """A client socket relayed to another node, listed among the app's sockets (for shutdown and
    the metrics). Closing it (this node is stopping) tells the client that its calls ended and the
    home that the client is gone, not that it hung up."""

    def __init__(self) -> None:
        self.calls = _Calls()
        self.closing: tuple[int, str] | None = None
        self.close_requested = asyncio.Event()

    @property
    def in_call(self) -> bool:
        return bool(self.calls.active)

    def close(self, code: int, reason: str) -> None:
        if self.closing is None:
            self.closing = (code, reason)
            self.close_requested.set()


class _Calls:
    """The calls the client is in, as the home told it (to end them for it, should the home die)."""

    def __init__(self) -> None:
        self.active: set[str] = set()

    def saw(self, text: str) -> None:
        if '"call_state"' not in text:
            return
        with contextlib.suppress(ValueError, KeyError, TypeError):
            message = json.loads(text)
            if message.get("type") != "call_state":
                return
            call_id = str(message["call_id"])
            if message["state"] == "ended":
                self.active.discard(call_id)
            elif message["state"] in ("created", "queued", "answered"):
                self.active.add(call_id)

    def endings(self, reason: str, detail: str | None) -> list[str]:
        ending = {"state": "ended", "reason": reason, "detail": detail}
        return [json.dumps({"type": "call_state", "call_id": call_id, **ending}) for call_id in sorted(self.active)]


async def relay(
    request: web.Request,
    *,
    cluster: Cluster,
    http: aiohttp.ClientSession,
    home: Home,
    role: str,
    client: str,
    prepare: Any,
    registry: set[Any],
) -> web.StreamResponse:
    """Serve ``request`` (a visitor or agent socket) by relaying it to ``home``."""
    assert home.url is not None
    ws: web.WebSocketResponse = prepare()
    if not ws.can_prepare(request).ok:
        return json_error(400, "bad_request", "this is a WebSocket endpoint")
    query = request.rel_url.raw_query_string
    path_qs = f"/internal/v1/ws/{role}" + (f"?{query}" if query else "")
    origin = request.headers.get("Origin", "")
    headers = {
        "X-Callbutton-Cluster": cluster.sign(home.node, "GET", path_qs, client, origin),
        "X-Callbutton-Client": client,
        "Origin": origin,
    }
    if "Cookie" in request.headers:
        headers["Cookie"] = request.headers["Cookie"]
    bound = log.bind(role=role, home=home.node)
    try:
        upstream = await http.ws_connect(
            URL(home.url + path_qs, encoded=True),
            headers=headers,
            heartbeat=HEARTBEAT_SECONDS,
            max_msg_size=0,
            autoping=True,
        )
    except aiohttp.WSServerHandshakeError as exc:
        code, message = _REFUSALS.get(exc.status, ("unavailable", "the service is briefly unavailable; try again"))
        return json_error(exc.status if exc.status in _REFUSALS else 503, code, message)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        bound.warning(RELAY_FAILED, error=repr(exc), stage="connect")
        return json_error(503, "unavailable", "the service is briefly unavailable; try again in a moment")

    relayed = Relayed()
    try:
        await ws.prepare(request)
        registry.add(relayed)
        bound.info(RELAY_OPENED)
        await _pump(ws, upstream, relayed, bound)
    finally:
        if not upstream.closed:
            with contextlib.suppress(Exception):
                await upstream.close(code=CLOSE_CLIENT_LOST)
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.close()
        registry.discard(relayed)
    return ws


async def _pump(
    ws: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, relayed: Relayed, bound: Any
) -> None:
    """Frames both ways until one side goes, or this node stops; then close the other side as the
    situation says."""
    closed_by_home: tuple[int, str] | None = None

    async def down() -> None:
        nonlocal closed_by_home
        while True:
            frame = await upstream.receive()
            if frame.type is WSMsgType.TEXT:
                relayed.calls.saw(frame.data)
                await ws.send_str(frame.data)
            elif frame.type is WSMsgType.CLOSE:
                code = int(frame.data or 0)
                closed_by_home = (code if 1000 <= code < 5000 else WSCloseCode.OK, str(frame.extra or ""))
                return
            elif frame.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return  # no close frame from the home: the link failed

    async def up() -> None:
        async for frame in ws:
            if frame.type is WSMsgType.TEXT:
                await upstream.send_str(frame.data)
            elif frame.type is WSMsgType.BINARY:
                await upstream.send_bytes(frame.data)  # the home refuses it, as it would locally
            elif frame.type is WSMsgType.ERROR:
                return

    tasks = [
        asyncio.create_task(down(), name="relay-down"),
        asyncio.create_task(up(), name="relay-up"),
        asyncio.create_task(relayed.close_requested.wait(), name="relay-stop"),
    ]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        down_task, up_task, _stop = tasks
        if relayed.closing is not None and not (up_task in done or down_task in done):
            # This node is stopping: its client hears its calls ended and reconnects elsewhere; the
            # home hears the client is gone (not that it hung up).
            with contextlib.suppress(Exception):
                for text in relayed.calls.endings("shutdown", None):
                    await ws.send_str(text)
            await ws.close(code=relayed.closing[0], message=relayed.closing[1].encode())
        elif up_task in done and ws.close_code is not None:
            # The client went: the home hears how (a clean close, or a lost client).
            how = ws.close_code if ws.close_code in _PASSED_ON else CLOSE_CLIENT_LOST
            with contextlib.suppress(Exception):
                await upstream.close(code=how)
        elif closed_by_home is not None:
            await ws.close(code=closed_by_home[0], message=closed_by_home[1].encode())
        else:
            # The link to the home failed (or the client could not be written to): the client hears
            # its calls ended, then reconnects.
            bound.warning(RELAY_FAILED, stage="link", calls=len(relayed.calls.active))
            with contextlib.suppress(Exception):
                for text in relayed.calls.endings("failed", "server_failed"):
                    await ws.send_str(text)
            await ws.close(code=CLOSE_SERVER_FAILED, message=b"the server carrying this connection failed")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def relayed_client(request: web.Request, cluster: Cluster | None) -> str | None:
    """The client address an internal request was signed for, or None when it is not a valid one:
    signed by a node of the cluster, for this node, and come in on the internal listener (never on
    the public port, where a replayed header would be worth trying)."""
    header = request.headers.get("X-Callbutton-Cluster")
    client = request.headers.get("X-Callbutton-Client", "")
    if cluster is None or header is None or request.transport is None:
        return None
    sockname = request.transport.get_extra_info("sockname")
    if not sockname or sockname[1] != cluster.internal_port:
        return None
    if not cluster.verify(header, request.method, request.raw_path, client, request.headers.get("Origin", "")):
        return None
    return client
