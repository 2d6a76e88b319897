"""Who a request comes from: the client's address, through the reverse proxies the operator trusts.

Rate limits and the audit log count clients by address. Behind a reverse proxy every connection
comes from the proxy, so the proxy's ``X-Forwarded-For`` names the client; it is believed only from
the addresses in ``CALLBUTTON_TRUSTED_PROXIES`` (anyone else could write anything there).
"""

from __future__ import annotations

import ipaddress

from aiohttp import web

from server.appkeys import SETTINGS

#: On a socket another node of the cluster relayed here: the client address it was signed for.
RELAYED_CLIENT = "callbutton.relayed_client"


def client_address(request: web.Request) -> str:
    """The client's IP address: the connecting address, or, from a trusted proxy, the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy, or, relayed by another node of
    the cluster, the address that node signed for."""
    relayed = request.get(RELAYED_CLIENT)
    if relayed is not None:
        return str(relayed)
    remote = request.remote or ""
    trusted = request.app[SETTINGS].trusted_proxies
    if remote not in trusted:
        return remote
    hops = [hop.strip() for value in request.headers.getall("X-Forwarded-For", []) for hop in value.split(",")]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return remote  # a malformed chain: count it against the proxy, not against a guess
        if address not in trusted:
            return address
    return remote
