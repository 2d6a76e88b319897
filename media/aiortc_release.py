"""Freeing a closed peer connection by reference counting, without the cycle collector.

aiortc's and aioice's objects for one connection refer to each other in cycles: the peer connection
listens to its transports' events and they hold its bound methods, a receiver's transport routes
packets back to it, the ICE connection's sockets' protocols hold the connection's methods, and the
seam's own wrappers (:mod:`media.aiortc_seam`) close over the objects they wrap. A closed leg left
about 290 objects that only a full collection frees. Such a collection walks every object alive
(about 1,000 for each leg in progress) and holds every call meanwhile: 46 ms at 80 calls, 98 ms at
128 (docs/benchmarks.md). Once nothing runs on a closed connection any more, :func:`release_later`
empties the instance dictionaries of its own aiortc and aioice objects, which breaks every cycle
through them, and reference counting frees the lot as the leg's last reference goes. What is alive
can then be frozen out of the collector's way (``server.app.collect_garbage``) without a closed
call's objects staying behind.

Like the rest of the seam, this relies on aiortc's and aioice's classes as pinned; the classes are
named here, and ``tests/test_aiortc_release.py`` shows a closed leg's connection freed with the
collector off.
"""

from __future__ import annotations

import asyncio
import collections
import types
from typing import Any

import aioice.ice
from aiortc import (
    RTCDtlsTransport,
    RTCIceGatherer,
    RTCIceTransport,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.rtcdtlstransport import RtpRouter

#: The classes whose instances belong to one peer connection alone (never shared between connections,
#: unlike its certificate, configuration or codec parameters), and whose dictionaries hold its cycles.
OWNED: tuple[type, ...] = (
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCRtpSender,
    RTCRtpReceiver,
    RTCDtlsTransport,
    RtpRouter,
    RTCIceTransport,
    RTCIceGatherer,
    aioice.ice.Connection,
    aioice.ice.StunProtocol,
)
#: Seconds from a connection's close to its release: what a close cancels (the DTLS transport's task,
#: say) finishes on a later turn of the event loop, and a socket's last callbacks come after it closes.
RELEASE_DELAY = 2.0
#: Releases tried, RELEASE_DELAY apart, while a task of the connection's is still running; after that
#: the connection is left to the collector.
RELEASE_TRIES = 5

_CONTAINERS = (list, tuple, set, frozenset, collections.deque)


def connection_objects(pc: RTCPeerConnection) -> list[Any]:
    """``pc``'s own aiortc and aioice objects, to :func:`release_later` once it is closed. Take them
    before closing it: a closing ICE connection forgets its sockets' protocols, which their sockets'
    transports still hold (and they them)."""
    owned, _ = _reach([pc])
    return owned


def release_later(objects: list[Any]) -> None:
    """Release a closed connection's ``objects`` (see the module's description) RELEASE_DELAY seconds
    from now."""
    asyncio.get_running_loop().call_later(RELEASE_DELAY, _release, objects, RELEASE_TRIES)


def release(objects: list[Any]) -> bool:
    """Empty the dictionaries of a closed connection's ``objects`` (and of any others of its own they
    lead to) now, unless a task of theirs is still running; whether it did. Nothing of the connection
    works afterwards."""
    owned, running = _reach(objects)
    if running:
        return False
    for obj in owned:
        vars(obj).clear()
    return True


def _release(objects: list[Any], tries: int) -> None:
    if not release(objects) and tries > 1:
        asyncio.get_running_loop().call_later(RELEASE_DELAY, _release, objects, tries - 1)


def _reach(roots: list[Any]) -> tuple[list[Any], bool]:
    """The OWNED objects reachable from ``roots`` through their attributes (and the containers, bound
    methods and closures in them), and whether one of those attributes is a task still running."""
    owned: list[Any] = []
    running = False
    seen: set[int] = set()
    stack: list[Any] = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, OWNED):
            owned.append(obj)
            stack.extend(vars(obj).values())
        elif isinstance(obj, _CONTAINERS):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
        elif isinstance(obj, types.FunctionType):
            stack.extend(cell.cell_contents for cell in obj.__closure__ or () if _filled(cell))
        elif isinstance(obj, asyncio.Task) and not obj.done():
            running = True
    return owned, running


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents  # noqa: B018 (an empty cell raises)
    except ValueError:
        return False
    return True
