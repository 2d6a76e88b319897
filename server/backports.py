"""Fixes from later Pythons that the server needs on the Python it runs on.

Applied once per process by :func:`apply` (``server.app.start`` calls it); each is a no-op on a Python
that has it.
"""

from __future__ import annotations

import asyncio.selector_events
import sys
from typing import Any


def apply() -> None:
    _socket_transports_forget_their_reader()


def _socket_transports_forget_their_reader() -> None:
    """Python 3.11's TCP transport keeps a bound method of its own (the reader callback) after the
    connection is gone: a reference cycle for every closed connection (each call's WebSocket among
    them), which the server's frozen heap (``server.app.collect_garbage``) would keep until its next
    collection of everything. Python 3.12 drops it on close (CPython gh-100348); here, once the
    connection is lost, which every closed transport comes to."""
    transport: Any = getattr(asyncio.selector_events, "_SelectorSocketTransport")  # noqa: B009 (private to asyncio)
    if sys.version_info >= (3, 12) or getattr(transport, "_forgets_reader", False):
        return
    lost = transport._call_connection_lost

    def call_connection_lost(self: Any, exc: BaseException | None) -> None:
        try:
            lost(self, exc)
        finally:
            self._read_ready_cb = None

    transport._call_connection_lost = call_connection_lost
    transport._forgets_reader = True
