"""Two nodes (two ``callbutton serve`` processes) sharing Postgres and a Redis started here
(server/cluster.py): a call whose visitor and agent reached different nodes, and a node that dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio
from yarl import URL

from server import cluster_tls
from server.cluster import REAP_SECONDS, TTL_SECONDS, Cluster, ClusterError, Home
from server.limits import Limits
from storage.db import Database
from storage.keys import Keyring
from storage.recordings import RecordingStore, read_plaintext
from tests.conftest import VISITOR_ORIGIN, answered_call_for, make_admin, make_tenant
from tests.peers import Agent, Visitor
from tests.ports import free_port
from tests.run_keys import MASTER_KEY
from tests.test_call import wait_for_row
from tests.test_recording_crash import ROOT, ServerProcess


class RedisServer:
    """``redis-server`` on a loopback port, without persistence (as a cluster needs it)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is missing: run ./dev system"
        self._process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"],
            cwd=self.folder,
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self._process.poll() is not None:
                    raise AssertionError("redis-server exited") from None
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)
            self._process = None


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of this module's own, on loopback (the suite runs in a network namespace of its own)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def membership(redis_url: str, name: str, ttl: float = TTL_SECONDS) -> Cluster:
    client = redis.asyncio.from_url(redis_url)
    member = Cluster(client, name=name, internal_url=f"http://127.0.0.1:1/{name}", secret=b"k" * 32)
    member._ttl_ms = int(ttl * 1000)
    await member.join(wait=ttl * 2)
    return member


async def test_an_organisation_has_one_home_which_it_keeps_while_in_use_and_loses_when_its_node_dies(
    redis_url: str,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    a = await membership(redis_url, f"a-{suffix}", ttl=1.0)
    b = await membership(redis_url, f"b-{suffix}", ttl=1.0)
    organisation = uuid.uuid4()
    try:
        assert {a.name, b.name} <= await a.live_nodes()
        assert (await a.home(organisation)).url is None  # free: a takes it
        a.hold(organisation)
        there = await b.home(organisation)
        assert (there.node, there.url) == (a.name, a.internal_url)
        await asyncio.sleep(2.5)  # more than the TTL: a renews what it holds
        assert (await b.home(organisation)).node == a.name
        with pytest.raises(ClusterError, match="another node named"):
            await membership(redis_url, a.name, ttl=1.0)

        a._renewer.cancel()  # type: ignore[union-attr]  # a dies: it renews nothing any more
        await asyncio.sleep(1.5)
        assert a.name not in await b.live_nodes()
        assert (await b.home(organisation)).url is None  # b takes over
    finally:
        await b.leave()


async def test_organisations_arriving_together_spread_over_the_nodes(redis_url: str) -> None:
    """Homes are placed on the live node with the fewest (ties stay on the node asking), in one step
    in Redis: organisations whose first sockets all reach one node at once still spread evenly."""
    suffix = uuid.uuid4().hex[:6]
    a = await membership(redis_url, f"a-{suffix}")
    b = await membership(redis_url, f"b-{suffix}")
    a._live = b._live = {a.name, b.name}  # (not other tests' nodes, still expiring in this Redis)
    organisations = [uuid.uuid4() for _ in range(6)]
    try:
        # A node takes new homes only once it serves: until then they stay with the node asking.
        assert (await a.home(uuid.uuid4())).node == a.name
        await a.take_homes(True)
        await b.take_homes(True)
        homes = await asyncio.gather(*(a.home(organisation) for organisation in organisations))
        assert sorted(home.node for home in homes) == [a.name] * 3 + [b.name] * 3
        # a is already the home of one (placed before it took homes, its socket not yet there): the
        # first goes to b, then ties stay on a.
        assert homes[0] == Home(b.name, b.internal_url)
        for organisation, home in zip(organisations, homes, strict=True):
            if home.node == b.name:
                assert home.url == b.internal_url
                # The socket relayed to b: b is the home, and does not place it again.
                assert await b.home(organisation, place=False) == Home(b.name, None)
                b.hold(organisation)
                assert (await a.home(organisation)).node == b.name
            else:
                a.hold(organisation)
        # A home given up leaves its node's count at once: the next organisation goes there (4 / 2).
        b.release(organisations[[h.node for h in homes].index(b.name)])
        await asyncio.sleep(0.2)
        assert (await a.home(uuid.uuid4())).node == b.name
        # A draining node takes no new homes, however few it holds; nor does a node that is gone.
        await b.take_homes(False)
        assert {(await a.home(uuid.uuid4())).node for _ in range(3)} == {a.name}
        await b.take_homes(True)
        a._live.add(ghost := f"ghost-{suffix}")
        await a._redis.set(f"callbutton:taking:{ghost}", "1", px=6000)  # taking, but its node key has expired
        assert (await a.home(uuid.uuid4())).node == b.name
    finally:
        await a.leave()
        await b.leave()


async def test_a_node_refusing_calls_for_load_takes_no_new_homes_until_it_stops(redis_url: str) -> None:
    """New organisations go to a node that is not refusing calls for load, though it holds more
    homes; once the busy node is not, it takes them again. If every node is busy, the node asking
    keeps its organisation."""
    suffix = uuid.uuid4().hex[:6]
    a = await membership(redis_url, f"a-{suffix}", ttl=1.5)
    b = await membership(redis_url, f"b-{suffix}", ttl=1.5)
    a._live = b._live = {a.name, b.name}
    try:
        await b.take_homes(True)
        for _ in range(2):
            organisation = uuid.uuid4()
            assert (await b.home(organisation)).node == b.name  # (a takes none yet): b holds 2, a none
            b.hold(organisation)
        await a.take_homes(True)
        a.busy = lambda: True
        await asyncio.sleep(0.8)  # a renewal (every 0.5 s here)
        assert {(await b.home(uuid.uuid4())).node for _ in range(2)} == {b.name}
        b.busy = lambda: True
        await asyncio.sleep(0.8)
        assert (await a.home(uuid.uuid4())).node == a.name  # nobody is free: the node asking
        a.busy = b.busy = lambda: False
        await asyncio.sleep(0.8)
        assert (await b.home(uuid.uuid4())).node == a.name
    finally:
        await a.leave()
        await b.leave()


async def test_a_home_counts_where_it_is_placed_before_its_socket_arrives(redis_url: str) -> None:
    """A placement is counted on the node it chose at once, and that node's renewals keep it counted
    while the relayed socket is on its way (they used to write the count of what the node held,
    forgetting it); one whose socket never comes stops counting once its key expires."""
    suffix = uuid.uuid4().hex[:6]
    a = await membership(redis_url, f"a-{suffix}", ttl=1.5)
    b = await membership(redis_url, f"b-{suffix}", ttl=1.5)
    a._live = b._live = {a.name, b.name}
    try:
        await a.take_homes(True)
        await b.take_homes(True)
        first, second = uuid.uuid4(), uuid.uuid4()
        assert (await a.home(first)).node == a.name  # a tie: stays on a
        a.hold(first)
        assert (await a.home(second)).node == b.name  # b has none: its socket is relayed there...
        await asyncio.sleep(1.0)  # ... slowly: b renews (every 0.5 s) before it arrives
        assert await b._redis.scard(f"callbutton:homes:{b.name}") == 1
        assert (await a.home(uuid.uuid4())).node == a.name  # 1 / 1: a tie, not b again
        await asyncio.sleep(3.0)  # the relayed socket never came: its home expired, b's count with it
        assert await b._redis.scard(f"callbutton:homes:{b.name}") == 0
        assert (await a.home(uuid.uuid4())).node == b.name
    finally:
        await a.leave()
        await b.leave()


async def test_a_home_given_up_when_its_last_socket_closes_and_signatures_bind_what_they_sign(redis_url: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    a = await membership(redis_url, f"a-{suffix}")
    b = await membership(redis_url, f"b-{suffix}")
    organisation = uuid.uuid4()
    try:
        assert (await a.home(organisation)).url is None
        a.hold(organisation)
        a.release(organisation)
        await asyncio.sleep(0.2)
        assert (await b.home(organisation)).url is None  # given up at once, not after the TTL

        path, client, origin = "/internal/v1/ws/agent", "203.0.113.9", "https://calls.example"
        header = a.sign(b.name, "GET", path, client, origin)
        assert b.verify(header, "GET", path, client, origin)
        assert not b.verify(header, "DELETE", path, client, origin)  # another method
        assert not b.verify(header, "GET", path, "203.0.113.10", origin)  # another client
        assert not b.verify(header, "GET", "/internal/v1/ws/visitor", client, origin)
        assert not a.verify(header, "GET", path, client, origin)  # signed for b, not for a
        assert not b.verify(header[:-4] + "AAAA", "GET", path, client, origin)
        stale = f"{int(time.time()) - 120}" + header[header.index(".") :]
        assert not b.verify(stale, "GET", path, client, origin)
        other = Cluster(b._redis, name=b.name, internal_url="http://127.0.0.1:1", secret=b"o" * 32)
        assert not other.verify(header, "GET", path, client, origin)  # another cluster's key
    finally:
        await a.leave()
        await b.leave()


def node_env(migrated: str, tmp_path: Path, redis_url: str, **more: str) -> dict[str, str]:
    """The environment of a node of the test cluster (``more``: further CALLBUTTON_ variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update(
        {
            "CALLBUTTON_DATABASE_URL": migrated,
            "CALLBUTTON_DATA_DIR": str(tmp_path),
            "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1",
            "CALLBUTTON_MASTER_KEY": MASTER_KEY.to_text(),
            "CALLBUTTON_LOG_FORMAT": "json",
            "CALLBUTTON_REDIS_URL": redis_url,
            "CALLBUTTON_PURGE_INTERVAL": "0",
            "CALLBUTTON_LOGIN_RATE_PER_ACCOUNT": "6000",
            "CALLBUTTON_LOGIN_RATE_PER_ADDRESS": "6000",
            # Counted in the module's Redis (whose keys outlive each test's nodes): every call of the
            # module comes from 127.0.0.1.
            "CALLBUTTON_CALL_RATE_PER_ADDRESS": "6000",
        }
    )
    env.update({f"CALLBUTTON_{key.upper()}": value for key, value in more.items()})
    return env


@contextlib.asynccontextmanager
async def two_nodes(
    migrated: str, tmp_path: Path, redis_url: str, **more: str
) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    """Nodes a and b behind one public origin (a's), as behind a load balancer."""
    ports = free_port(), free_port()
    base = node_env(migrated, tmp_path, redis_url, public_url=f"http://127.0.0.1:{ports[0]}", **more)
    a = ServerProcess({**base, "CALLBUTTON_PORT": str(ports[0]), "CALLBUTTON_NODE_NAME": f"a-{ports[0]}"})
    b = ServerProcess({**base, "CALLBUTTON_PORT": str(ports[1]), "CALLBUTTON_NODE_NAME": f"b-{ports[1]}"})
    try:
        await a.start()
        await b.start()
        # Each node's own address (both say they serve the public origin, which is a's).
        b.url = f"http://127.0.0.1:{ports[1]}"
        yield a, b
    finally:
        for node in (a, b):
            if node.process is not None and node.process.returncode is None:
                await node.kill(signal.SIGTERM)


@pytest.fixture
async def nodes(migrated: str, tmp_path: Path, redis_url: str) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with two_nodes(migrated, tmp_path, redis_url) as pair:
        yield pair


async def test_nodes_speak_to_each_other_only_over_tls_with_certificates_of_their_cluster(
    nodes: tuple[ServerProcess, ServerProcess], database: Database, redis_url: str
) -> None:
    _, b = nodes
    client = redis.asyncio.from_url(redis_url)
    try:
        # b tells the others an https address.
        raw = await client.get(f"callbutton:node:{b.env['CALLBUTTON_NODE_NAME']}")
        internal = URL(json.loads(raw)["url"])
        assert internal.scheme == "https" and internal.host == "127.0.0.1"
        route = internal / "internal/v1/ws/agent"
        ours = cluster_tls.for_node(Keyring(database.keystore_pool, MASTER_KEY).derive("cluster TLS authority"), "t")
        theirs = cluster_tls.for_node(os.urandom(32), "t")  # another cluster's authority
        anyone = ssl.create_default_context()
        anyone.check_hostname, anyone.verify_mode = False, ssl.CERT_NONE  # no certificate of its own
        async with aiohttp.ClientSession() as http:
            # A node's certificate gets through TLS (to be refused for want of a signature).
            async with http.get(route, ssl=ours.client) as response:
                assert response.status == 403
                assert (await response.json())["message"] == "not a signed request of this cluster"
            # b's certificate is not one of another cluster's authority.
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await http.get(route, ssl=theirs.client)
            # b asks for the caller's certificate, and one of its own cluster's: without, no request is
            # read. (The impostor trusts b's authority, so it is b that refuses it.)
            impostor = cluster_tls.for_node(os.urandom(32), "t").client
            impostor.load_verify_locations(cadata=ours.authority_pem.decode())
            for context in (anyone, impostor):
                with pytest.raises(aiohttp.ClientError):
                    async with http.get(route, ssl=context) as response:
                        await response.read()
            # Nor is plain http.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(route.with_scheme("http")) as response:
                    await response.read()
        # A node that says it listens in the clear (Redis written by someone else, say) is not relayed to.
        await client.set("callbutton:node:in-the-clear", json.dumps({"url": "http://127.0.0.1:1", "started": 0}))
        observer = Cluster(client, name="observer", internal_url="https://127.0.0.1:1", secret=b"o" * 32, tls=ours)
        assert await observer._node_url("in-the-clear") is None
        assert observer._refused_nodes == {"in-the-clear"}  # left out of placements
        assert await observer._node_url(b.env["CALLBUTTON_NODE_NAME"]) == str(internal)
    finally:
        await client.delete("callbutton:node:in-the-clear")
        await client.aclose()


async def test_a_visitor_on_one_node_talks_with_an_agent_on_another(
    nodes: tuple[ServerProcess, ServerProcess], database: Database, tmp_path: Path
) -> None:
    a, b = nodes
    (tenant,) = await make_tenant(database, recording=True)
    agent = Agent(b.url, tenant.agent_email, tenant.agent_password, origin=a.url)
    visitor = Visitor(a.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await agent.connect()  # the organisation's first socket: b is its home
        await agent.go_available(tone=880.0)
        await visitor.connect()  # on a: relayed to b
        call_id = await visitor.call(tone=440.0)
        await agent.expect("ring", call_id=call_id)
        await agent.send({"type": "accept", "call_id": call_id})
        await visitor.expect("call_state", state="answered")
        await visitor.hears(880.0)
        await agent.hears(440.0)
        await asyncio.sleep(2.0)
        await visitor.send({"type": "hangup"})
        await agent.expect("call_state", call_id=call_id, state="ended")
        await asyncio.wait_for(visitor.closed.wait(), 5)
        assert visitor.close_code == aiohttp.WSCloseCode.OK  # b's close, passed on by a
    finally:
        await visitor.close()
        await agent.close()

    row = await wait_for_row(database, tenant, call_id, "ended")
    assert row.end_reason == "visitor_hangup"
    carried_by = await database.pool.fetchval("SELECT node FROM calls WHERE id = $1", uuid.UUID(call_id))
    assert carried_by.startswith("b-")
    store = RecordingStore(database.pool, Keyring(database.keystore_pool, MASTER_KEY), tmp_path / "recordings")
    for _ in range(100):
        records = await store.for_call(tenant.organisation_id, uuid.UUID(call_id))
        if records and records[0].state != "recording":
            break
        await asyncio.sleep(0.1)
    (record,) = records  # recorded once, by the node carrying the call
    assert record.state == "complete"
    plaintext = read_plaintext(store.path(tenant.organisation_id, record.id), await store.key(record), record.id)
    assert plaintext.startswith(b"OggS")


async def test_when_a_node_dies_its_calls_end_with_a_reason_and_another_node_takes_over(
    nodes: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    a, b = nodes
    tenant, colleague = await make_tenant(database, agents=2)
    first, second = tenant.agent_email, colleague.agent_email
    on_b = Agent(b.url, first, tenant.agent_password, origin=a.url)
    via_a = Agent(a.url, second, tenant.agent_password, origin=a.url)
    visitor = Visitor(a.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await on_b.connect()  # b becomes the home
        await on_b.go_available()
        await via_a.connect()  # relayed to b
        await visitor.connect()
        call_id = await visitor.call()
        await on_b.expect("ring", call_id=call_id)
        await on_b.send({"type": "accept", "call_id": call_id})
        await visitor.expect("call_state", state="answered")
        await visitor.hears(880.0)

        assert b.process is not None
        b.process.kill()  # SIGKILL: no goodbye
        await asyncio.wait_for(b.process.wait(), 10)
        loop = asyncio.get_running_loop()
        died = loop.time()
        ended = await visitor.expect("call_state", call_id=call_id, state="ended", timeout=TTL_SECONDS + 5)
        assert (ended["reason"], ended["detail"]) == ("failed", "server_failed")
        assert loop.time() - died < TTL_SECONDS
        await asyncio.wait_for(via_a.closed.wait(), TTL_SECONDS)
        assert via_a.close_code == 1012  # reconnect: the console does, after a moment
    finally:
        await visitor.close()
        await on_b.close()
        await via_a.close()
        if b.process is not None and b.process.returncode is None:
            await b.kill(signal.SIGKILL)

    # The agent reconnects to a; once b's home has expired, a is the home and rings it.
    again = Agent(a.url, second, tenant.agent_password, origin=a.url)
    caller = Visitor(a.url, tenant.button_key, VISITOR_ORIGIN)
    try:
        await again.login()
        for _ in range(int(TTL_SECONDS * 4)):
            try:
                await again.connect()
                break
            except aiohttp.WSServerHandshakeError as refused:
                assert refused.status == 503  # b's home has not expired yet
                await asyncio.sleep(0.5)
        await again.go_available()
        await caller.connect()
        new_call = await caller.call()
        await again.expect("ring", call_id=new_call)
        # b's agent is gone from presence: a's admin view lists it offline.
        email, password = await make_admin(database, tenant.organisation_id)
        admin = Agent(a.url, email, password, origin=a.url)
        await admin.login()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{a.url}/api/v1/users", headers={"Cookie": admin.cookie or ""}) as response:
                users = {u["email"]: u for u in (await response.json())["users"]}
        assert users[first]["presence"] == "offline" and users[second]["presence"] == "ringing"
        await admin.close()
    finally:
        await caller.close()
        await again.close()
    # The call b carried is closed as failed by a, once b is known dead (its key expired).
    row = await wait_for_row(database, tenant, call_id, "ended", timeout=REAP_SECONDS + TTL_SECONDS + 5)
    assert row.end_reason == "failed"


async def test_serve_workers_runs_processes_on_one_port_and_restarts_one_that_dies(
    migrated: str, tmp_path: Path, redis_url: str, database: Database
) -> None:
    port = free_port()
    name = f"w-{uuid.uuid4().hex[:6]}"
    env = node_env(migrated, tmp_path, redis_url, node_name=name, port=str(port))
    supervisor = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server", "serve", "--workers", "2", env=env, cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    assert supervisor.stderr is not None
    events: list[dict[str, object]] = []

    async def read() -> None:
        assert supervisor.stderr is not None
        while line := await supervisor.stderr.readline():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))

    reader = asyncio.create_task(read())
    client = redis.asyncio.from_url(redis_url)
    observer = Cluster(client, name=f"observer-{name}", internal_url="http://127.0.0.1:1", secret=b"o" * 32)

    async def workers_live() -> set[str]:
        return {n for n in await observer.live_nodes() if n.startswith(name)}

    try:
        for _ in range(150):
            if await workers_live() == {f"{name}-w0", f"{name}-w1"}:
                break
            await asyncio.sleep(0.2)
        assert await workers_live() == {f"{name}-w0", f"{name}-w1"}

        # Sockets land on either worker (the kernel picks); the call works whichever.
        (tenant,) = await make_tenant(database)
        visitor, agent, _ = await answered_call_for(f"http://127.0.0.1:{port}", tenant)
        try:
            await visitor.hears(880.0)
            await agent.hears(440.0)
        finally:
            await visitor.close()
            await agent.close()

        # A worker killed is started again under its name.
        started = next(e for e in events if e.get("event") == "workers.started")
        pids = started["pids"]
        assert isinstance(pids, list) and len(pids) == 2
        os.kill(int(pids[0]), signal.SIGKILL)
        for _ in range(100):
            if any(e.get("event") == "workers.worker_exited" for e in events):
                break
            await asyncio.sleep(0.1)
        assert any(e.get("event") == "workers.worker_exited" and e.get("worker") == 0 for e in events)
        for _ in range(150):  # its old key expires, then it joins again
            restarted = [e for e in events if e.get("event") == "cluster.joined" and e.get("node") == f"{name}-w0"]
            if len(restarted) >= 2:
                break
            await asyncio.sleep(0.2)
        assert len(restarted) >= 2
        supervisor.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(supervisor.wait(), 60) == 0
        # They leave on the way out (one stopped while still starting leaves by expiry).
        for _ in range(int(TTL_SECONDS * 10) + 10):
            if not await workers_live():
                break
            await asyncio.sleep(0.1)
        assert await workers_live() == set()
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
        await reader
        await client.aclose()


async def test_requests_about_live_state_are_answered_by_the_home_wherever_they_land(
    nodes: tuple[ServerProcess, ServerProcess], database: Database
) -> None:
    a, b = nodes
    (tenant,) = await make_tenant(database)
    agent = Agent(b.url, tenant.agent_email, tenant.agent_password, origin=a.url)
    email, password = await make_admin(database, tenant.organisation_id)
    admin = Agent(a.url, email, password, origin=a.url)
    try:
        await agent.connect()  # b is the home
        await agent.go_available()
        await admin.login()
        async with aiohttp.ClientSession() as http:
            # On a, which holds nothing of the organisation: the answers are b's.
            async with http.get(f"{a.url}/api/v1/users", headers={"Cookie": admin.cookie or ""}) as response:
                assert response.status == 200
                users = {u["email"]: u for u in (await response.json())["users"]}
            assert users[tenant.agent_email]["presence"] == "available"
            widget = f"{a.url}/api/v1/widget/{tenant.button_key}"
            async with http.get(widget, headers={"Origin": VISITOR_ORIGIN}) as response:
                assert response.status == 200 and (await response.json())["agents_available"] is True
                assert response.headers["Access-Control-Allow-Origin"] == VISITOR_ORIGIN
            # Logging out through a ends the agent's socket on b at once.
            async with http.delete(
                f"{a.url}/api/v1/session", headers={"Cookie": agent.cookie or "", "Origin": a.url}
            ) as response:
                assert response.status == 204, await response.text()
            await asyncio.wait_for(agent.closed.wait(), 5)
            assert agent.close_code == 4002
            # A clip chunk (up to 1 MiB) passes a to reach b, which knows no such upload.
            async with http.put(
                f"{a.url}/api/v1/widget/{tenant.button_key}/clips/{uuid.uuid4()}?offset=0",
                data=b"x" * 200_000,
                headers={"Origin": VISITOR_ORIGIN, "X-Clip-Token": "t", "Content-Type": "application/octet-stream"},
            ) as response:
                assert response.status == 404, await response.text()
            # A plain GET of a socket route is refused at a, opening nothing at b.
            socket_route = f"{a.url}/ws/v1/visitor?key={tenant.button_key}"
            async with http.get(socket_route, headers={"Origin": VISITOR_ORIGIN}) as response:
                assert response.status == 400
            # A forged internal request is refused.
            async with http.get(
                f"{b.url}/api/v1/users",
                headers={
                    "Cookie": admin.cookie or "",
                    "X-Callbutton-Cluster": "1.x.forged",
                    "X-Callbutton-Client": "1.2.3.4",
                },
            ) as response:
                assert response.status == 403
    finally:
        await agent.close()
        await admin.close()


async def test_nodes_keep_their_calls_through_a_redis_outage_and_recover_without_a_restart(
    migrated: str, tmp_path: Path, database: Database
) -> None:
    store = RedisServer(tmp_path)
    store.start()
    try:
        async with two_nodes(migrated, tmp_path, store.url) as (a, b):
            (tenant,) = await make_tenant(database, agents=1)
            agent = Agent(b.url, tenant.agent_email, tenant.agent_password, origin=a.url)
            visitor = Visitor(a.url, tenant.button_key, VISITOR_ORIGIN)
            try:
                await agent.connect()  # b is the home
                await agent.go_available()
                await visitor.connect()  # relayed by a: a has seen where the home is
                call_id = await visitor.call()
                await agent.expect("ring", call_id=call_id)
                await agent.send({"type": "accept", "call_id": call_id})
                await visitor.hears(880.0)

                store.stop()  # Redis goes away
                await asyncio.sleep(TTL_SECONDS + 1)  # longer than any key would live
                assert visitor.sink is not None
                heard = visitor.sink.frames_received
                await asyncio.sleep(1.0)
                assert visitor.sink.frames_received - heard > 25  # the call goes on
                await agent.hears(440.0)
                # A socket of an organisation whose home a knows still gets there.
                late = Visitor(a.url, tenant.button_key, VISITOR_ORIGIN)
                try:
                    await late.connect()
                finally:
                    await late.close()

                store.start()  # back, empty: the nodes put their keys back by themselves
                client = redis.asyncio.from_url(store.url)
                observer = Cluster(client, name="observer", internal_url="http://127.0.0.1:1", secret=b"o" * 32)
                try:
                    for _ in range(50):
                        if {
                            a.env["CALLBUTTON_NODE_NAME"],
                            b.env["CALLBUTTON_NODE_NAME"],
                        } <= await observer.live_nodes():
                            break
                        await asyncio.sleep(0.2)
                    assert {a.env["CALLBUTTON_NODE_NAME"], b.env["CALLBUTTON_NODE_NAME"]} <= await observer.live_nodes()
                    home = await client.get(f"callbutton:home:{tenant.organisation_id}")
                    assert home is not None and home.decode() == b.env["CALLBUTTON_NODE_NAME"]
                finally:
                    await client.aclose()
                await visitor.hears(880.0)
                await visitor.send({"type": "hangup"})
                await agent.expect("call_state", call_id=call_id, state="ended")
            finally:
                await visitor.close()
                await agent.close()
    finally:
        store.stop()


async def test_a_relaying_node_that_stops_drains_its_relayed_calls_first(
    migrated: str, tmp_path: Path, redis_url: str, database: Database
) -> None:
    (tenant,) = await make_tenant(database)
    async with two_nodes(migrated, tmp_path, redis_url, drain_timeout="3") as (a, b):
        agent = Agent(b.url, tenant.agent_email, tenant.agent_password, origin=a.url)
        visitor = Visitor(a.url, tenant.button_key, VISITOR_ORIGIN)
        try:
            await agent.connect()  # b is the home
            await agent.go_available()
            await visitor.connect()  # relayed by a
            call_id = await visitor.call()
            await agent.expect("ring", call_id=call_id)
            await agent.send({"type": "accept", "call_id": call_id})
            await visitor.hears(880.0)
            assert a.process is not None
            a.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(2.0)  # a drains: the relayed call goes on
            assert not visitor.closed.is_set()
            await visitor.hears(880.0, timeout=3)
            ended = await visitor.expect("call_state", call_id=call_id, state="ended", timeout=10)
            assert ended["reason"] == "shutdown"
            await asyncio.wait_for(a.process.wait(), 20)
            row = await wait_for_row(database, tenant, call_id, "ended")
            assert row.end_reason == "failed"  # the visitor was cut off, not hanging up
        finally:
            await visitor.close()
            await agent.close()


async def test_login_attempts_are_counted_by_the_whole_cluster(
    migrated: str, tmp_path: Path, redis_url: str, database: Database
) -> None:
    """Five attempts a minute for an account: spread over two nodes, the sixth is refused on either."""
    (tenant,) = await make_tenant(database)
    async with two_nodes(migrated, tmp_path, redis_url, login_rate_per_account="5") as (a, b):
        statuses = []
        async with aiohttp.ClientSession() as http:
            for attempt in range(7):
                node = (a, b)[attempt % 2]
                async with http.post(
                    f"{node.url}/api/v1/session",
                    json={"email": tenant.agent_email, "password": "not the password"},
                    headers={"Origin": a.url},
                ) as response:
                    statuses.append(response.status)
                    if response.status == 429:
                        assert "too many login attempts" in (await response.json())["message"]
        assert statuses == [401] * 5 + [429, 429], statuses
    # Redis holds neither the address nor the email: only keyed hashes.
    client = redis.asyncio.from_url(redis_url)
    try:
        keys = [key.decode() async for key in client.scan_iter("callbutton:limit:*")]
        assert keys and not any("@" in key or "127.0.0.1" in key for key in keys), keys
    finally:
        await client.aclose()


async def test_call_attempts_from_one_address_are_counted_by_the_whole_cluster(
    migrated: str, tmp_path: Path, redis_url: str, database: Database
) -> None:
    """Six calls a minute from an address, in bursts of three (the default): calls to two
    organisations homed on two nodes share that allowance."""
    first, second = (await make_tenant(database))[0], (await make_tenant(database))[0]
    client = redis.asyncio.from_url(redis_url)

    async def forget_counts() -> None:  # the other tests' calls, and this one's for those after it
        async for key in client.scan_iter("callbutton:limit:call_address:*"):
            await client.delete(key)

    await forget_counts()
    try:
        async with two_nodes(migrated, tmp_path, redis_url, call_rate_per_address="6") as (a, b):
            codes = []
            for attempt in range(5):
                node, tenant = ((a, first), (b, second))[attempt % 2]
                visitor = Visitor(node.url, tenant.button_key, VISITOR_ORIGIN)
                try:
                    await visitor.connect()
                    # Each organisation's home is the node its socket reached (held while it is open).
                    home = await client.get(f"callbutton:home:{tenant.organisation_id}")
                    assert home is not None and home.decode() == node.env["CALLBUTTON_NODE_NAME"]
                    await visitor.send({"type": "call", "sdp": await visitor.offer(440)})
                    reply = await visitor.wait_for(lambda m: m["type"] in ("call_state", "error"), 5, "a reply")
                    codes.append(reply.get("code") or reply["state"])
                finally:
                    await visitor.close()
            assert codes == ["ended", "ended", "ended", "rate_limited", "rate_limited"], codes
    finally:
        await forget_counts()
        await client.aclose()


async def test_login_limits_count_on_each_node_while_redis_is_away() -> None:
    gone = redis.asyncio.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    limits = Limits(calls_per_address=6, calls_per_button=120, visitor_sockets_per_address=10, logins_per_account=3)
    limits.share(gone, b"k" * 32)
    try:
        allowed = [await limits.allow_login("192.0.2.1", "Ada@example.test") for _ in range(4)]
        assert allowed == [True, True, True, False]  # the node's own count, the same limit
        assert await limits.allow_login("192.0.2.1", "bob@example.test")  # another account
    finally:
        await gone.aclose()
