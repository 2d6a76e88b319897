"""Web origins: normalising the ones admins type, and the ones the app itself is reached at."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class OriginError(ValueError):
    pass


def normalise_origin(value: str) -> str:
    """``value`` as browsers send it in ``Origin``: scheme and lower-case host, port only when not
    the default. Refuses anything with a path, query, fragment or credentials."""
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise OriginError(f"{value!r} is not an origin such as https://www.example.com")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise OriginError(f"{value!r} is not an origin: drop everything after the host and port")
    try:
        port = parts.port
    except ValueError:
        raise OriginError(f"{value!r} has an invalid port") from None
    host = parts.hostname.lower()
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    if port is None or port == _DEFAULT_PORTS[parts.scheme]:
        return f"{parts.scheme}://{host}"
    return f"{parts.scheme}://{host}:{port}"


def loopback_aliases(origin: str) -> frozenset[str]:
    """``origin`` and, when it is a loopback http origin, the same port under every loopback name
    (a developer opens http://localhost:8080 as readily as http://127.0.0.1:8080)."""
    parts = urlsplit(origin)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    if parts.scheme != "http" or host not in _LOOPBACK_NAMES:
        return frozenset({origin})
    port = f":{parts.port}" if parts.port else ""
    return frozenset(f"http://{name}{port}" for name in _LOOPBACK_NAMES)
