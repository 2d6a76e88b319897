"""HTTP requests that read or change live state, served by their organisation's home node.

In a cluster (``server.cluster``) presence, calls in progress, open sockets and clip uploads live in
the home node of their organisation. A request for them that reaches another node is forwarded to
the home (signed like a relayed socket, with the client's address), and the home's response is the
answer; every other request is served where it lands, from the database. A forwarded request
carries the cluster's signature, which this middleware checks on the home before anything else.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from server.api import current_session, token_session
from server.appkeys import CLUSTER, CLUSTER_HTTP, DIRECTORY
from server.clients import RELAYED_CLIENT, client_address
from server.clips_api import CHUNK_BYTES
from server.cluster import Home, NoHome
from server.errors import ApiError, json_error
from server.relay import relayed_client

log = structlog.get_logger(__name__)

FORWARD_FAILED = "cluster.forward_failed"
FORWARD_TIMEOUT_SECONDS = 30.0
#: The largest body forwarded: a clip's upload chunk (the home applies each route's own limit).
MAX_FORWARDED_BODY = CHUNK_BYTES + 64 * 1024

# (method, route) of the requests that need the home, found by the session's organisation.
_BY_SESSION = frozenset(
    {
        ("GET", "/api/v1/users"),
        ("GET", "/api/v1/users/{id}"),
        ("PATCH", "/api/v1/users/{id}"),
        ("DELETE", "/api/v1/users/{id}"),
        ("DELETE", "/api/v1/session"),
        ("PUT", "/api/v1/calls/{call_id}/notes"),
        ("POST", "/api/v1/callbacks/{id}/done"),
        ("GET", "/api/v1/clips/{id}"),
        ("GET", "/api/v1/clips/{id}/content"),
    }
)
# Every widget route (availability, callback requests, clip uploads), found by the button's key.
_BY_BUTTON = "/api/v1/widget/{key}"
# Hop-by-hop headers, and those aiohttp sets itself.
_NOT_PASSED = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-encoding",
        "x-callbutton-cluster",
        "x-callbutton-client",
    }
)


@web.middleware
async def home_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    cluster = request.app.get(CLUSTER)
    if cluster is None:
        return await handler(request)
    if "X-Callbutton-Cluster" in request.headers:
        client = relayed_client(request, cluster)
        if client is None:
            return json_error(403, "forbidden", "not a signed request of this cluster")
        request[RELAYED_CLIENT] = client
        return await handler(request)
    organisation_id = await _organisation(request)
    if organisation_id is not None:
        try:
            home = await cluster.home(organisation_id)
        except NoHome:
            raise ApiError(503, "unavailable", "the service is briefly unavailable; try again in a moment") from None
        if home.url is not None:
            return await _forward(request, home)
    return await handler(request)


async def _body(request: web.Request) -> bytes:
    """The request's body, read past the app's small default limit (clip chunks are larger)."""
    parts = []
    size = 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_FORWARDED_BODY:
            raise ApiError(413, "too_large", "the request body is too large")
        parts.append(chunk)
    return b"".join(parts)


async def _organisation(request: web.Request) -> uuid.UUID | None:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else ""
    if route.startswith(_BY_BUTTON):
        button = await request.app[DIRECTORY].button_by_key(request.match_info.get("key", ""))
        return None if button is None else button.organisation_id
    if (request.method, route) in _BY_SESSION:
        authorization = request.headers.get("Authorization")
        try:
            if authorization is not None:
                session = await token_session(request, authorization)
            else:
                session = await current_session(request)
        except ApiError:
            return None  # not logged in: refused where it landed
        return session.user.organisation_id
    return None


async def _forward(request: web.Request, home: Home) -> web.Response:
    assert home.url is not None
    cluster = request.app[CLUSTER]
    client = client_address(request)
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in _NOT_PASSED)
    origin = request.headers.get("Origin", "")
    headers["X-Callbutton-Cluster"] = cluster.sign(home.node, request.method, request.raw_path, client, origin)
    headers["X-Callbutton-Client"] = client
    payload = await _body(request)
    try:
        async with request.app[CLUSTER_HTTP].request(
            request.method,
            URL(home.url + request.raw_path, encoded=True),
            headers=headers,
            data=payload or None,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS),
        ) as response:
            body = await response.read()
            returned = CIMultiDict((k, v) for k, v in response.headers.items() if k.lower() not in _NOT_PASSED)
            return web.Response(status=response.status, body=body, headers=returned)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning(FORWARD_FAILED, home=home.node, path=request.path, error=repr(exc))
        raise ApiError(503, "unavailable", "the service is briefly unavailable; try again in a moment") from None
