"""TURN: time-limited REST credentials in every socket's ``hello``, and the documented coturn
configuration, run as it is (with test-only overrides) by a real ``turnserver`` on loopback.

Only 127.0.0.0/8 is used: coturn listens and relays on 127.0.0.1, and the address it is allowed to
relay to, standing for the callbutton server's, is 127.0.0.2. Permissions asked for other addresses
are refused before anything is sent (and the suite's network namespace has only loopback anyway).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import pytest
import yaml
from aioice import stun
from aioice.turn import TurnClientUdpProtocol
from aiortc import RTCConfiguration, RTCIceServer, RTCIceTransportPolicy, RTCPeerConnection

from media.aiortc_discard import discard_queued_rtp
from media.aiortc_seam import pin_host_addresses
from media.synthetic import AudioSink, OpusLoopTrack
from server.app import Running, start
from server.config import ConfigError, Settings
from server.turn import TurnCredentials
from storage.db import Database
from tests.conftest import VISITOR_ORIGIN, Tenant
from tests.peers import Agent, Visitor
from tests.ports import free_port

ROOT = Path(__file__).parent.parent
CONF = ROOT / "deploy" / "coturn" / "turnserver.conf"
ENTRYPOINT = ROOT / "deploy" / "coturn" / "entrypoint.sh"
COMPOSE = ROOT / "deploy" / "compose.yaml"
SECRET = "turn-test-secret-" + "0123456789abcdef"
# Stands for the callbutton server's media address, which the documented file allows by name.
SERVER_ADDRESS = "127.0.0.2"

# --- credentials -----------------------------------------------------------------------------


def coturn_password(secret: str, username: str) -> str:
    """What coturn computes for ``use-auth-secret`` (TURN REST API): base64(HMAC-SHA1(secret, username))."""
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


def test_credentials_are_signed_time_limited_and_name_no_one() -> None:
    relay = TurnCredentials(urls=("turn:turn.example.com:3478",), secret=SECRET.encode(), ttl=3600)
    user = uuid.uuid4()
    before = time.time()
    server = relay.ice_server("agent", user)
    expiry, _, name = server["username"].partition(":")
    assert before + 3600 - 1 <= int(expiry) <= time.time() + 3600
    assert server["credential"] == coturn_password(SECRET, server["username"])
    assert server["urls"] == ["turn:turn.example.com:3478"]
    # The id part is a pseudonym: stable for one user, different for another, not the user's id.
    assert name.startswith("agent-") and user.hex not in name and str(user) not in name
    assert relay.ice_server("agent", user)["username"].endswith(name)
    assert relay.ice_server("agent", uuid.uuid4())["username"].partition(":")[2] != name
    assert relay.ice_server("visitor", user)["username"].partition(":")[2].startswith("visitor-")
    # Another secret (a coturn not sharing it) computes another password.
    assert server["credential"] != coturn_password("another secret of some length", server["username"])


def test_turn_settings_and_their_errors(tmp_path: Path) -> None:
    secret_file = tmp_path / "turn_secret"
    secret_file.write_text(SECRET + "\n")
    settings = Settings.from_env(
        {
            "CALLBUTTON_TURN_URLS": "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349",
            "CALLBUTTON_TURN_SECRET_FILE": str(secret_file),
        }
    )
    assert settings.turn_urls == ("turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:5349")
    assert settings.turn_ttl == 86400
    assert "turn-test-secret" not in repr(settings)
    for env, message in [
        ({"CALLBUTTON_TURN_URLS": "turn:t.example.com"}, "CALLBUTTON_TURN_URLS needs CALLBUTTON_TURN_SECRET_FILE"),
        ({"CALLBUTTON_TURN_SECRET": SECRET}, "CALLBUTTON_TURN_URLS is empty"),
        (
            {"CALLBUTTON_TURN_URLS": "stun:t.example.com", "CALLBUTTON_TURN_SECRET": SECRET},
            "'stun:t.example.com' is not a turn: or turns: URL",
        ),
        (
            {"CALLBUTTON_TURN_URLS": "turn:t.example.com", "CALLBUTTON_TURN_SECRET": "short"},
            "CALLBUTTON_TURN_SECRET: a TURN secret has at least 16",
        ),
        (
            {"CALLBUTTON_TURN_URLS": "turn:t.example.com", "CALLBUTTON_TURN_SECRET": SECRET + " #x"},
            "no spaces",
        ),
        ({"CALLBUTTON_TURN_TTL": "10"}, "CALLBUTTON_TURN_TTL must be between 60"),
        (
            {
                "CALLBUTTON_TURN_URLS": "turn:t.example.com",
                "CALLBUTTON_TURN_SECRET": SECRET,
                "CALLBUTTON_TURN_SECRET_FILE": str(secret_file),
            },
            "not both",
        ),
    ]:
        with pytest.raises(ConfigError, match=message):
            Settings.from_env(env)


# --- credentials in the hello ------------------------------------------------------------------


@pytest.fixture
def turn_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        ice_servers=("stun:127.0.0.1:3478",),
        turn_urls=("turn:127.0.0.1:3478",),
        turn_secret=SECRET,
        turn_ttl=600,
    )


@pytest.fixture
async def turn_server(turn_settings: Settings, database: Database) -> AsyncIterator[Running]:
    running = await start(turn_settings, database)
    yield running
    await running.stop()


def turn_entry(hello: dict[str, Any]) -> dict[str, Any]:
    entries = [s for s in hello["ice_servers"] if "username" in s]
    assert len(entries) == 1, hello["ice_servers"]
    return entries[0]


async def test_agent_and_visitor_sockets_get_their_own_credentials_in_hello(
    turn_server: Running, tenant: Tenant
) -> None:
    agent = Agent(turn_server.url, tenant.agent_email, tenant.agent_password)
    visitor = Visitor(turn_server.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        agent_hello = await agent.connect()
        visitor_hello = await visitor.connect()
    finally:
        await agent.close()
        await visitor.close()
    for hello, kind in ((agent_hello, "agent"), (visitor_hello, "visitor")):
        # The configured STUN server first, as before, then the TURN server with credentials.
        assert hello["ice_servers"][0] == {"urls": "stun:127.0.0.1:3478"}
        entry = turn_entry(hello)
        assert entry["urls"] == ["turn:127.0.0.1:3478"]
        expiry, _, name = entry["username"].partition(":")
        assert 0 < int(expiry) - time.time() <= 600
        assert name.startswith(f"{kind}-")
        assert entry["credential"] == coturn_password(SECRET, entry["username"])
    assert str(tenant.agent_id) not in str(agent_hello["ice_servers"])
    assert tenant.agent_email not in str(agent_hello["ice_servers"])


async def test_no_credentials_without_an_authorised_socket(turn_server: Running, tenant: Tenant) -> None:
    base = turn_server.url
    ws_base = base.replace("http", "ws", 1)
    async with aiohttp.ClientSession() as http:
        # An agent socket without a session, a visitor socket from a website the button does not
        # allow: refused at the handshake, so no hello and no credentials.
        for url, origin, status in (
            (f"{ws_base}/ws/v1/agent", base, 401),
            (f"{ws_base}/ws/v1/visitor?key={tenant.button_key}", "https://elsewhere.example", 403),
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refusal:
                await http.ws_connect(url, origin=origin)
            assert refusal.value.status == status
        # Nor does the widget's public lookup of its button carry any.
        async with http.get(f"{base}/api/v1/widget/{tenant.button_key}", headers={"Origin": VISITOR_ORIGIN}) as lookup:
            assert lookup.status == 200
            text = await lookup.text()
            assert "credential" not in text and "turn:" not in text


# --- the documented coturn configuration -------------------------------------------------------


def peer_ranges(text: str, option: str) -> list[tuple[str, str]]:
    ranges = []
    for line in text.splitlines():
        if line.startswith(f"{option}="):
            low, _, high = line.split("=", 1)[1].partition("-")
            ranges.append((low, high or low))
    return ranges


def coturn_in_range(low: str, high: str, address: str) -> bool:
    """coturn's ``ioa_addr_in_range`` (src/client/ns_turn_ioaddr.c), quirks included: a range whose
    low end is 0.0.0.0 or :: has no low end, for either family; addresses of different families
    compare by family number (IPv4 before IPv6); IPv6 compares byte by byte, each byte on its own
    (which is containment for the prefix-shaped ranges used here)."""
    lo, hi, addr = ipaddress.ip_address(low), ipaddress.ip_address(high), ipaddress.ip_address(address)

    def less_eq(
        a: ipaddress.IPv4Address | ipaddress.IPv6Address, b: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bool:
        if a.version != b.version:
            return a.version < b.version
        if a.version == 4:
            return int(a) <= int(b)
        return all(x <= y for x, y in zip(a.packed, b.packed, strict=True))

    if int(lo) == 0 or less_eq(lo, addr):
        return int(hi) == 0 or less_eq(addr, hi)
    return False


def coturn_allows(text: str, address: str) -> bool:
    if any(coturn_in_range(lo, hi, address) for lo, hi in peer_ranges(text, "allowed-peer-ip")):
        return True
    return not any(coturn_in_range(lo, hi, address) for lo, hi in peer_ranges(text, "denied-peer-ip"))


CATCH_ALL = ("denied-peer-ip=0.0.0.0-255.255.255.255", "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")

# Special-purpose networks (RFC 6890; IANA's IPv4 and IPv6 special-purpose address registries).
SPECIAL = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
]  # fmt: skip
GLOBAL = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"]


def without_catch_all(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line not in CATCH_ALL) + "\n"


def test_the_documented_config_denies_every_peer_but_the_server_and_every_special_range_on_its_own() -> None:
    text = CONF.read_text()
    for line in ("use-auth-secret", "no-multicast-peers", "no-cli", "no-tcp-relay", *CATCH_ALL):
        assert line in text.splitlines(), line
    assert "static-auth-secret=REPLACE-WITH-CALLBUTTON_TURN_SECRET" in text.splitlines()
    [(allowed, _)] = peer_ranges(text, "allowed-peer-ip")
    assert coturn_allows(text, allowed)
    for address in [*GLOBAL, "10.0.0.1", "127.0.0.1", "172.28.0.11", "::1"]:
        assert not coturn_allows(text, address), address
    # Without the two catch-all lines (a relay shared with other services), each special range is
    # still denied, its first and last address alike, and global addresses are not (a range such as
    # ::-::1 would, in coturn's reading, deny every IPv4 address).
    shared = without_catch_all(text)
    for network in map(ipaddress.ip_network, SPECIAL):
        for address in (network[0], network[-1]):
            if int(address) == 0:
                continue  # 0.0.0.0 and :: are refused by coturn itself, whatever the configuration
            assert not coturn_allows(shared, str(address)), address
    for address in GLOBAL:
        assert coturn_allows(shared, address), address


def test_compose_puts_the_server_at_the_address_coturn_allows() -> None:
    [(allowed, _)] = peer_ranges(CONF.read_text(), "allowed-peer-ip")
    compose = yaml.safe_load(COMPOSE.read_text())
    service = compose["services"]["callbutton"]
    assert service["networks"]["callbutton"]["ipv4_address"] == allowed
    assert service["environment"]["CALLBUTTON_ICE_HOST_ADDRESSES"] == allowed


class Catcher(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received.put_nowait((data, addr))


@dataclasses.dataclass
class Coturn:
    address: tuple[str, int]
    log: Path


def turnserver_binary() -> str:
    found = shutil.which("turnserver") or ("/usr/bin/turnserver" if os.path.exists("/usr/bin/turnserver") else None)
    if found is None:
        pytest.fail("turnserver is missing: install coturn (`./dev system` does, as root)")
    return found


def write_secret(folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    secret_file = folder / "turn_secret"
    secret_file.write_text(SECRET + "\n")
    return secret_file


async def start_coturn(folder: Path, config: Path) -> tuple[asyncio.subprocess.Process, Coturn]:
    """coturn with ``config`` started by the deployment's own entrypoint, with test-only overrides:
    loopback listener and relay, a free port, no TLS, loopback peers possible and SERVER_ADDRESS
    allowed (standing for the server's private address), files in ``folder``."""
    turnserver_binary()
    secret_file = write_secret(folder)
    port = free_port()
    log = folder / "turn.log"
    env = {
        **os.environ,
        "TURN_CONFIG": str(config),
        "TURN_SECRET_FILE": str(secret_file),
        "TURN_RENDERED_CONFIG": str(folder / "turnserver.conf"),
    }
    process = await asyncio.create_subprocess_exec(
        "sh",
        str(ENTRYPOINT),
        "--listening-ip=127.0.0.1",
        "--relay-ip=127.0.0.1",
        f"--listening-port={port}",
        "--no-tls",
        "--no-dtls",
        "--allow-loopback-peers",
        f"--allowed-peer-ip={SERVER_ADDRESS}",
        f"--pidfile={folder / 'turnserver.pid'}",
        f"--userdb={folder / 'turndb'}",
        f"--log-file={log}",
        "--no-stdout-log",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    coturn = Coturn(("127.0.0.1", port), log)
    try:
        await wait_for_binding(coturn.address, process)
    except BaseException:
        await stop_coturn(process)
        raise
    return process, coturn


async def wait_for_binding(address: tuple[str, int], process: asyncio.subprocess.Process) -> None:
    """Until the server answers a STUN Binding request (RFC 8489), or 15 s."""
    loop = asyncio.get_running_loop()
    transport, probe = await loop.create_datagram_endpoint(Catcher, remote_addr=address)
    try:
        deadline = loop.time() + 15
        while loop.time() < deadline:
            if process.returncode is not None:
                raise AssertionError(f"turnserver exited with {process.returncode}")
            transport.sendto(bytes(stun.Message(stun.Method.BINDING, stun.Class.REQUEST)))
            try:
                await asyncio.wait_for(probe.received.get(), 0.3)
                return
            except TimeoutError:
                continue
    finally:
        transport.close()
    raise AssertionError("turnserver did not answer within 15 s")


async def stop_coturn(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


@pytest.fixture
async def coturn(tmp_path: Path) -> AsyncIterator[Coturn]:
    process, running = await start_coturn(tmp_path / "coturn", CONF)
    yield running
    await stop_coturn(process)


@pytest.fixture
def relay_credentials() -> TurnCredentials:
    """Credentials as the server makes them, for the tests that need other expiries."""
    return TurnCredentials(urls=("turn:127.0.0.1",), secret=SECRET.encode(), ttl=600)


async def allocate(coturn: Coturn, username: str, password: str) -> TurnClientUdpProtocol:
    """A TURN allocation (RFC 8656 section 7) made with these credentials."""
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: TurnClientUdpProtocol(
            coturn.address, username=username, password=password, lifetime=600, channel_refresh_time=500
        ),
        remote_addr=coturn.address,
    )
    try:
        await protocol.connect()
    except BaseException:
        protocol.transport.close()
        raise
    return protocol


async def refused(coturn: Coturn, username: str, password: str) -> int:
    """The error code of an Allocate with these credentials, which must fail."""
    with pytest.raises(stun.TransactionFailed) as failure:
        protocol = await allocate(coturn, username, password)
        await protocol.delete()
    return int(failure.value.response.attributes["ERROR-CODE"][0])


async def permission(protocol: TurnClientUdpProtocol, address: str) -> int | None:
    """CreatePermission for ``address`` (RFC 8656 section 9): None when granted, else the error code."""
    request = stun.Message(message_method=stun.Method.CREATE_PERMISSION, message_class=stun.Class.REQUEST)
    request.attributes["XOR-PEER-ADDRESS"] = (address, 9)
    try:
        await protocol.request_with_retry(request)
    except stun.TransactionFailed as exc:
        return int(exc.response.attributes["ERROR-CODE"][0])
    return None


async def test_coturn_takes_the_servers_credentials_and_refuses_expired_and_forged_ones(
    coturn: Coturn, turn_settings: Settings, database: Database, tenant: Tenant, relay_credentials: TurnCredentials
) -> None:
    # The credentials a real visitor socket is handed, against the real coturn.
    settings = dataclasses.replace(turn_settings, turn_urls=(f"turn:{coturn.address[0]}:{coturn.address[1]}",))
    running = await start(settings, database)
    visitor = Visitor(running.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        entry = turn_entry(await visitor.connect())
    finally:
        await visitor.close()
        await running.stop()
    protocol = await allocate(coturn, entry["username"], entry["credential"])
    assert protocol.relayed_address is not None and protocol.relayed_address[0] == "127.0.0.1"
    await protocol.delete()

    expired = relay_credentials.ice_server("visitor", tenant.button_id, now=time.time() - 601)
    assert await refused(coturn, expired["username"], expired["credential"]) == 401
    # A later expiry written into a valid username breaks its signature.
    later = f"{int(time.time()) + 10**6}:{entry['username'].partition(':')[2]}"
    assert await refused(coturn, later, entry["credential"]) == 401
    forged = TurnCredentials(urls=(), secret=b"not the shared secret at all", ttl=600).ice_server("agent", uuid.uuid4())
    assert await refused(coturn, forged["username"], forged["credential"]) == 401
    assert await refused(coturn, "agent-x", coturn_password(SECRET, "agent-x")) == 401  # no expiry at all


async def test_coturn_checks_expiry_when_a_relay_opens_not_when_it_is_refreshed(
    coturn: Coturn, relay_credentials: TurnCredentials
) -> None:
    # What docs/operations.md says of CALLBUTTON_TURN_TTL: it bounds when relays can be opened.
    soon = relay_credentials.ice_server("agent", uuid.uuid4(), now=time.time() - 600 + 2)
    protocol = await allocate(coturn, soon["username"], soon["credential"])
    try:
        await asyncio.sleep(3)
        refresh = stun.Message(message_method=stun.Method.REFRESH, message_class=stun.Class.REQUEST)
        refresh.attributes["LIFETIME"] = 600
        response, _ = await protocol.request_with_retry(refresh)
        assert response.attributes["LIFETIME"] == 600
    finally:
        await protocol.delete()
    assert await refused(coturn, soon["username"], soon["credential"]) == 401


async def test_the_documented_config_relays_to_the_server_and_nowhere_else(
    coturn: Coturn, relay_credentials: TurnCredentials
) -> None:
    loop = asyncio.get_running_loop()
    entry = relay_credentials.ice_server("visitor", uuid.uuid4())
    protocol = await allocate(coturn, entry["username"], entry["credential"])
    relay_sink = Catcher()
    protocol.receiver = relay_sink
    server_end, server = await loop.create_datagram_endpoint(Catcher, local_addr=(SERVER_ADDRESS, 0))
    denied_end, denied = await loop.create_datagram_endpoint(Catcher, local_addr=("127.0.0.1", 0))
    try:
        for address in ("127.0.0.1", "10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.1.1", "100.64.0.1"):
            assert await permission(protocol, address) == 403, address
        # Even a global address: the relay reaches the callbutton server only.
        assert await permission(protocol, "8.8.8.8") == 403
        assert await permission(protocol, SERVER_ADDRESS) is None

        # Data to the server's address arrives from the relayed address, and its answer comes back.
        await protocol.send_data(b"to the server", server_end.get_extra_info("sockname"))
        data, source = await asyncio.wait_for(server.received.get(), 5)
        assert data == b"to the server" and source == protocol.relayed_address
        server_end.sendto(b"to the browser", source)
        data, _ = await asyncio.wait_for(relay_sink.received.get(), 5)
        assert data == b"to the browser"

        # A channel to a denied peer is refused (403); a Send indication to one goes nowhere.
        with pytest.raises(stun.TransactionFailed) as failure:
            await protocol.send_data(b"x", denied_end.get_extra_info("sockname"))
        assert failure.value.response.attributes["ERROR-CODE"][0] == 403
        send = stun.Message(message_method=stun.Method.SEND, message_class=stun.Class.INDICATION)
        send.attributes["XOR-PEER-ADDRESS"] = denied_end.get_extra_info("sockname")
        send.attributes["DATA"] = b"to a denied peer"
        protocol.send_stun(send, coturn.address)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(denied.received.get(), 1)
    finally:
        server_end.close()
        denied_end.close()
        await protocol.delete()


async def test_the_special_ranges_alone_deny_private_peers_and_not_global_ones(
    tmp_path: Path, relay_credentials: TurnCredentials
) -> None:
    shared = tmp_path / "shared.conf"
    shared.write_text(without_catch_all(CONF.read_text()))
    process, coturn = await start_coturn(tmp_path / "coturn", shared)
    try:
        entry = relay_credentials.ice_server("visitor", uuid.uuid4())
        protocol = await allocate(coturn, entry["username"], entry["credential"])
        try:
            for address in (
                "127.0.0.1", "10.0.0.1", "100.64.0.1", "169.254.169.254", "172.16.0.1", "172.31.255.254",
                "192.0.0.8", "192.0.2.1", "192.168.1.1", "198.18.0.1", "198.51.100.1", "203.0.113.1",
                "224.0.0.1", "240.0.0.1", "255.255.255.255",
            ):  # fmt: skip
                assert await permission(protocol, address) == 403, address
            # A permission only: nothing is sent to it.
            assert await permission(protocol, "8.8.8.8") is None
            assert await permission(protocol, SERVER_ADDRESS) is None
        finally:
            await protocol.delete()
    finally:
        await stop_coturn(process)


class RelayedVisitor(Visitor):
    """A visitor whose browser can reach nothing but the TURN server: relay candidates only, with
    the ICE servers its hello gave it."""

    async def offer(self, tone: float) -> str:
        [hello] = self.messages("hello")
        servers = [RTCIceServer(**server) for server in hello["ice_servers"]]
        self.pc = RTCPeerConnection(
            RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)
        )
        self.pc.addTrack(OpusLoopTrack.of_tone(tone))

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.sink = AudioSink(track)
            self._track_arrived.set()

        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)


async def test_a_visitor_reaching_only_the_relay_talks_to_an_agent(
    coturn: Coturn, settings: Settings, database: Database, tenant: Tenant
) -> None:
    settings = dataclasses.replace(
        settings,
        ice_host_addresses=(SERVER_ADDRESS,),
        turn_urls=(f"turn:{coturn.address[0]}:{coturn.address[1]}",),
        turn_secret=SECRET,
    )
    running = await start(settings, database)
    agent = Agent(running.url, tenant.agent_email, tenant.agent_password)
    visitor = RelayedVisitor(running.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await agent.connect()
        await agent.go_available(tone=880)
        await visitor.connect()
        call_id = await visitor.call(tone=440)
        assert visitor.pc is not None
        candidates = [line for line in visitor.pc.localDescription.sdp.splitlines() if line.startswith("a=candidate")]
        assert candidates and all(" typ relay " in line for line in candidates), candidates
        await agent.expect("ring", call_id=call_id)
        await agent.send({"type": "accept", "call_id": call_id})
        await visitor.expect("call_state", call_id=call_id, state="answered")
        assert abs(await visitor.hears(880, timeout=15) - 880) < 15
        assert abs(await agent.hears(440, timeout=15) - 440) < 15
    finally:
        await visitor.close()
        await agent.close()
        await running.stop()


async def test_audio_waiting_in_a_relays_socket_is_discarded_at_the_switch(
    coturn: Coturn, relay_credentials: TurnCredentials
) -> None:
    """A leg whose own ICE runs through a TURN relay (the server's ``CALLBUTTON_ICE_SERVERS``) holds
    what the relay forwarded in its socket to the TURN server, wrapped as ChannelData: when a leg's
    audio is switched somewhere new (an answer), the RTP among it is dropped like a host socket's,
    and what keeps the leg up (STUN, DTLS, RTCP) is kept. The stall is made by pausing the reads of
    the relay's socket for 1.5 s, as a busy server's would be."""
    previous = aioice.ice.get_host_addresses
    pin_host_addresses([SERVER_ADDRESS])  # the peer's host candidate: where the documented coturn relays to
    server = relay_credentials.ice_server("agent", uuid.uuid4())
    url = f"turn:{coturn.address[0]}:{coturn.address[1]}"
    relayed = RTCPeerConnection(
        RTCConfiguration(
            iceServers=[RTCIceServer(urls=url, username=server["username"], credential=server["credential"])],
            iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        )
    )
    peer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sink: AudioSink | None = None
    try:
        peer.addTrack(OpusLoopTrack.of_tone(440))
        relayed.addTransceiver("audio", direction="recvonly")
        await relayed.setLocalDescription(await relayed.createOffer())
        await peer.setRemoteDescription(relayed.localDescription)
        await peer.setLocalDescription(await peer.createAnswer())
        await relayed.setRemoteDescription(peer.localDescription)
        (receiver,) = relayed.getReceivers()
        sink = AudioSink(receiver.track)
        arrivals: list[float] = []
        handle: Any = receiver._handle_rtp_packet

        async def count(packet: Any, arrival_time_ms: int) -> None:
            arrivals.append(time.monotonic())
            await handle(packet, arrival_time_ms)

        receiver._handle_rtp_packet = count  # type: ignore[method-assign]
        for _ in range(200):
            if len(arrivals) >= 10:
                break
            await asyncio.sleep(0.05)
        assert len(arrivals) >= 10, "no audio through the relay"

        connection: Any = receiver.transport.transport._connection
        (relay,) = [p.transport._TurnTransport__inner_protocol for p in connection._protocols]
        relay.transport.pause_reading()
        await asyncio.sleep(1.5)
        dropped = discard_queued_rtp(relayed)
        relay.transport.resume_reading()
        resumed = time.monotonic()
        await asyncio.sleep(1.0)

        assert dropped >= 50, f"only {dropped} of about 75 queued packets dropped"
        burst = [t for t in arrivals if resumed <= t < resumed + 0.2]
        assert len(burst) <= 15, f"{len(burst)} packets in the 0.2 s after the stall: the queued ones came through"
        assert len([t for t in arrivals if t >= resumed]) >= 35  # audio goes on through the relay
        assert relayed.connectionState == "connected"
    finally:
        if sink is not None:
            await sink.close()
        await relayed.close()
        await peer.close()
        aioice.ice.get_host_addresses = previous
