"""Ports for servers a test starts itself and must name before they start.

A port the kernel hands out for ``bind(0)`` is in its ephemeral range, and the kernel may hand it out
again, to any socket bound to port 0 or connecting out, between the probe and the server's own bind:
a node started first (its internal listener, its Redis and Postgres connections) could take the port
the second node was given. So the ports named here are below that range, where the kernel never
allocates on its own, and each is handed out once per test run."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_given: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback TCP and UDP port nobody is bound to, outside the kernel's ephemeral range."""
    floor = _ephemeral_floor()
    low = max(1024, floor - 12000)
    for _ in range(1000):
        port = random.randrange(low, floor)
        if port in _given:
            continue
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET, kind) as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        _given.add(port)
        return port
    raise RuntimeError(f"no free port between {low} and {floor}")
