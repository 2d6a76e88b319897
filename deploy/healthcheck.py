#!/usr/bin/env python3
"""The container's health check: ``GET /healthz`` on the server's own port, exit 0 when it answers 200.

It reads the server's own settings from the environment (the container's): the listening address
and port, and whether it serves https itself (``CALLBUTTON_TLS_CERT_FILE``). Standard library only.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import ssl
import sys

TIMEOUT_SECONDS = 4.0


def probe(environ: dict[str, str]) -> str | None:
    """None when the server answers ``/healthz`` with 200, else what went wrong."""
    host = environ.get("CALLBUTTON_HOST") or "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass  # a name
    else:
        if address.is_unspecified:  # listening on every address: ask on loopback
            host = "::1" if address.version == 6 else "127.0.0.1"
    port = int(environ.get("CALLBUTTON_PORT") or "8080")
    connection: http.client.HTTPConnection
    if environ.get("CALLBUTTON_TLS_CERT_FILE"):
        # The certificate names the public host, not this address, and the probe neither sends nor
        # receives anything secret: it checks that the process serves, not who it is.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, timeout=TIMEOUT_SECONDS, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/healthz")
        status = connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return f"GET /healthz on {host}:{port} failed: {exc}"
    finally:
        connection.close()
    return None if status == 200 else f"GET /healthz on {host}:{port} answered {status}"


def main() -> int:
    problem = probe(dict(os.environ))
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
