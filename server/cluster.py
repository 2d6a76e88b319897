"""Several server processes (workers on one machine, nodes on several) sharing the work through Redis.

What a call needs at once (the queues, who is available, who rings, the legs and the bridge) stays in
one process per organisation: the organisation's *home*. Any node takes a socket; a socket for an
organisation homed elsewhere is relayed, message for message, to the home over an internal
WebSocket (``server.signalling``; TLS with certificates of the cluster's own, ``server.cluster_tls``),
and the home negotiates the legs itself, so a call's media runs between the browsers and the home
and is recorded there, once. Nothing about routing is distributed, so it behaves exactly as on one
process.

Redis holds these keys, each with a time to live that its holder keeps renewing:

- ``callbutton:node:<name>``: a live node and the URL its internal routes answer on;
- ``callbutton:home:<organisation id>``: the node that is the organisation's home. The first node
  to need a home for an organisation while none is held places it on the node with the fewest homes
  among those taking new ones (itself when it has no more than any other); the holder renews it
  while it has sockets of that organisation, and gives it up when they are gone (or when it stops);
- ``callbutton:taking:<node>``: the node takes new homes (from when it has started,
  :meth:`Cluster.take_homes`, until it drains or leaves), except while it refuses calls for load;
- ``callbutton:homes:<node>``: the set of organisations whose home the node is, which is what
  placements count. A placement adds the organisation to the chosen node's set in the step that
  places it, so that organisations arriving together spread, and the count stays right while the
  relayed socket is on its way; the node adds what it holds, and at every renewal removes what is
  no longer its home (a placement whose socket never came, a home given up or lost).

A node that dies stops renewing: within :data:`TTL_SECONDS` its keys expire, the sockets it relayed
see their relay fail and tell their clients (who reconnect), and the next socket of one of its
organisations makes a live node the home. While Redis itself is away, a node keeps serving what it
already serves (its homes, its relays); a socket of an organisation it knows no home for is
refused with 503 until Redis is back (redis-py reconnects by itself; nothing needs a restart).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from server.cluster_tls import ClusterTLS
from server.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

PREFIX = "callbutton:"
#: How long a dead node's keys outlive it, at most.
TTL_SECONDS = 6.0
RENEW_SECONDS = 2.0
#: How often a node looks for calls of nodes that died, to close them.
REAP_SECONDS = 10.0
#: A node is taken for dead only once no scan has seen it for this long, and no node reaps for this
#: long after its own key had to be put back (Redis restarted empty, or this node was cut off):
#: meanwhile the others may not have put theirs back yet.
REAP_GRACE_SECONDS = 3 * TTL_SECONDS
#: How long a signed internal request stays valid (clocks of nodes may differ this much).
SIGNATURE_SECONDS = 30.0

CLUSTER_JOINED = "cluster.joined"
CLUSTER_LEFT = "cluster.left"
REDIS_UNAVAILABLE = "cluster.redis_unavailable"
REDIS_BACK = "cluster.redis_back"
HOME_LOST = "cluster.home_lost"
CLUSTER_NODE_REFUSED = "cluster.node_refused"

# Renew a key we hold; take it again if it expired meanwhile (Redis restarted empty, say); 0 when
# another node holds it now.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Place an organisation that has no home: on the node with the fewest homes among those that take
# them (registered now, and taking new homes: from when it has started until it drains or leaves),
# ties going to the node asking (ARGV[2]), which also takes it when nobody else can; all in one step,
# so that organisations arriving together spread. Returns the home, existing or new. KEYS: the home
# key; ARGV: TTL ms, this node, the organisation, the other live nodes. (Other keys are read by name:
# one Redis, not a Redis Cluster.)
_PLACE = (
    """
local prefix = '"""
    + PREFIX
    + """'
local holder = redis.call('GET', KEYS[1])
if holder then
  return holder
end
local best, fewest = nil, nil
for i = 2, #ARGV do
  if i ~= 3 and redis.call('EXISTS', prefix .. 'taking:' .. ARGV[i]) == 1
      and redis.call('EXISTS', prefix .. 'node:' .. ARGV[i]) == 1 then
    local homes = redis.call('SCARD', prefix .. 'homes:' .. ARGV[i])
    if fewest == nil or homes < fewest then
      best, fewest = ARGV[i], homes
    end
  end
end
best = best or ARGV[2]
redis.call('SADD', prefix .. 'homes:' .. best, ARGV[3])
redis.call('PEXPIRE', prefix .. 'homes:' .. best, ARGV[1])
redis.call('SET', KEYS[1], best, 'PX', ARGV[1])
return best
"""
)
# A node's set of homes, at a renewal: add what it holds (ARGV[3...]), remove what is no longer its
# home (its key expired or names another node), keep it alive. KEYS: the set; ARGV: TTL ms, this node.
_COUNT_HOMES = (
    """
local prefix = '"""
    + PREFIX
    + """'
for i = 3, #ARGV do
  redis.call('SADD', KEYS[1], ARGV[i])
end
for _, organisation in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('GET', prefix .. 'home:' .. organisation) ~= ARGV[2] then
    redis.call('SREM', KEYS[1], organisation)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('SCARD', KEYS[1])
"""
)
# Delete a key only if we still hold it.
_GIVE_UP = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class ClusterError(Exception):
    """This node cannot take part (its name is taken, Redis does not answer at start)."""


class NoHome(Exception):
    """No home can be found for an organisation just now (Redis away, its home just died)."""


@dataclass(frozen=True)
class Home:
    """Where an organisation's calls are carried: this node (``url`` None) or another."""

    node: str
    url: str | None


class Cluster:
    """This node's membership: its registration, the homes it holds, and the signatures of its
    internal requests. ``redis`` is a ``redis.asyncio.Redis``."""

    def __init__(
        self, redis: Any, *, name: str, internal_url: str, secret: bytes, tls: ClusterTLS | None = None
    ) -> None:
        self.name = name
        self.internal_url = internal_url
        #: The node's TLS contexts (``server.cluster_tls``): with them, only https nodes are reached.
        self.tls = tls
        self._refused: set[str] = set()
        self._refused_nodes: set[str] = set()
        self._redis = redis
        self._secret = secret
        self._ttl_ms = int(TTL_SECONDS * 1000)
        self._held: Counter[uuid.UUID] = Counter()
        #: Homes last seen, for when Redis is away.
        self._known: dict[uuid.UUID, Home] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._redis_down = False
        #: When each node was last seen registered, and until when this node does not reap.
        self._seen: dict[str, float] = {}
        self._quiet_until = 0.0
        self._renew = redis.register_script(_RENEW)
        self._give_up = redis.register_script(_GIVE_UP)
        self._place = redis.register_script(_PLACE)
        self._count_homes = redis.register_script(_COUNT_HOMES)
        self._taking = False
        #: Whether this process refuses calls for load just now (``server.load``): while it does, it
        #: takes no new homes (they go to a node that is not, if there is one), from its next renewal.
        self.busy: Callable[[], bool] = lambda: False
        #: The nodes registered at the last renewal (where homes may be placed).
        self._live: set[str] = {name}

    @property
    def redis(self) -> Any:
        """The cluster's Redis client (shared: other parts count in it too)."""
        return self._redis

    def key_for(self, purpose: str) -> bytes:
        """A key of the cluster's own for ``purpose``, the same on every node, apart from the one that
        signs internal requests."""
        return hmac.new(self._secret, f"callbutton cluster key: {purpose}".encode(), hashlib.sha256).digest()

    @property
    def internal_port(self) -> int:
        """The port of this node's internal listener (where signed requests are taken)."""
        return int(self.internal_url.rsplit(":", 1)[1].split("/", 1)[0])

    # --- membership -------------------------------------------------------------------------------

    async def join(self, wait: float = TTL_SECONDS * 2) -> None:
        """Register this node. A node of the same name that died leaves its key for up to
        :data:`TTL_SECONDS`: wait that long for it, then refuse (two live nodes of one name)."""
        value = json.dumps({"url": self.internal_url, "started": time.time()})
        deadline = time.monotonic() + wait
        try:
            while not await self._redis.set(self._node_key(self.name), value, nx=True, px=self._ttl_ms):
                if time.monotonic() > deadline:
                    raise ClusterError(
                        f"another node named {self.name!r} is running (CALLBUTTON_NODE_NAME must differ per node)"
                    )
                await asyncio.sleep(0.5)
        except ClusterError:
            raise
        except Exception as exc:
            raise ClusterError(f"Redis does not answer at CALLBUTTON_REDIS_URL: {exc}") from exc
        self._node_value = value
        with contextlib.suppress(Exception):
            await self._redis.delete(self._taking_key())  # (a node of this name that died): not yet
            self._live = await self.live_nodes()
        self._renewer = asyncio.create_task(self._renew_loop(), name="cluster-renew")
        log.info(CLUSTER_JOINED, node=self.name, internal_url=self.internal_url)

    async def take_homes(self, taking: bool) -> None:
        """Whether new organisations may be placed here: from when this node serves (it has
        started) until it drains."""
        self._taking = taking
        with contextlib.suppress(Exception):
            if taking:
                await self._redis.set(self._taking_key(), "1", px=self._ttl_ms)
            else:
                await self._redis.delete(self._taking_key())

    async def leave(self) -> None:
        """Stop renewing and give up this node's keys, so that others take over at once."""
        await self.take_homes(False)
        await cancel_and_wait(self._renewer)
        with contextlib.suppress(Exception):
            for organisation_id in list(self._held):
                await self._give_up(keys=[self._home_key(organisation_id)], args=[self.name])
            await self._redis.delete(self._homes_key())
            await self._give_up(keys=[self._node_key(self.name)], args=[self._node_value])
        log.info(CLUSTER_LEFT, node=self.name)

    async def live_nodes(self) -> set[str]:
        """The names of the nodes registered now (this one included)."""
        names = set()
        async for key in self._redis.scan_iter(match=f"{PREFIX}node:*", count=500):
            names.add((key.decode() if isinstance(key, bytes) else key).removeprefix(f"{PREFIX}node:"))
        return names

    async def _node_url(self, name: str) -> str | None:
        raw = await self._redis.get(self._node_key(name))
        if raw is None:
            return None
        url = str(json.loads(raw)["url"])
        if self.tls is not None and not url.startswith("https://"):
            # Not a node of this version (or not a node): nothing is relayed to it in the clear.
            if url not in self._refused:  # said once per address, not at every socket
                self._refused.add(url)
                log.warning(CLUSTER_NODE_REFUSED, node=name, url=url, reason="not https")
            self._refused_nodes.add(name)  # and no organisation is placed there from here
            return None
        self._refused_nodes.discard(name)
        return url

    # --- homes ------------------------------------------------------------------------------------

    async def home(self, organisation_id: uuid.UUID, *, place: bool = True) -> Home:
        """The organisation's home. When nobody holds it, it is placed on the node with the fewest
        homes among those taking new ones (``place``), or taken by this node (not ``place``: a socket
        relayed here by the node that placed it). Raises :class:`NoHome` when none can be found now."""
        if self._held[organisation_id] > 0:
            return Home(self.name, None)
        key = self._home_key(organisation_id)
        try:
            others = sorted(self._live - {self.name} - self._refused_nodes) if place else []
            holder = _text(await self._place(keys=[key], args=[self._ttl_ms, self.name, str(organisation_id), *others]))
            if holder == self.name:  # ours (until no socket of it is left here)
                home = Home(self.name, None)
            else:
                url = await self._node_url(holder)
                if url is None:
                    # Its node died and the home has not expired yet.
                    raise NoHome(f"the home of organisation {organisation_id} has just failed; try again")
                home = Home(holder, url)
        except NoHome:
            raise
        except Exception as exc:
            known = self._known.get(organisation_id)
            if known is None:
                raise NoHome(f"Redis does not answer: {exc}") from exc
            return known
        self._known[organisation_id] = home
        return home

    def hold(self, organisation_id: uuid.UUID) -> None:
        """A socket of the organisation opened here (this node is its home)."""
        self._held[organisation_id] += 1

    def release(self, organisation_id: uuid.UUID) -> None:
        """A socket of the organisation closed here; with none left, the home is given up."""
        self._held[organisation_id] -= 1
        if self._held[organisation_id] <= 0:
            del self._held[organisation_id]
            self._known.pop(organisation_id, None)
            task = asyncio.create_task(self._give_up_home(organisation_id))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _give_up_home(self, organisation_id: uuid.UUID) -> None:
        if self._held[organisation_id] == 0:
            key = self._home_key(organisation_id)
            with contextlib.suppress(Exception):
                if await self._give_up(keys=[key], args=[self.name]):
                    await self._redis.srem(self._homes_key(), str(organisation_id))
                if self._held[organisation_id] > 0:
                    # A socket of it opened here meanwhile (home() still saw the key ours): take it back.
                    await self._renew(keys=[key], args=[self.name, self._ttl_ms])

    def holds(self, organisation_id: uuid.UUID) -> bool:
        return self._held[organisation_id] > 0

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(min(RENEW_SECONDS, self._ttl_ms / 3000))
            try:
                if await self._renew(keys=[self._node_key(self.name)], args=[self._node_value, self._ttl_ms]) == 2:
                    self._quiet_until = time.monotonic() + REAP_GRACE_SECONDS
                if self._taking and not self.busy():
                    await self._redis.set(self._taking_key(), "1", px=self._ttl_ms)
                elif self._taking:
                    await self._redis.delete(self._taking_key())
                self._live = await self.live_nodes()
                held = []
                for organisation_id in list(self._held):
                    if await self._renew(keys=[self._home_key(organisation_id)], args=[self.name, self._ttl_ms]):
                        held.append(str(organisation_id))
                    else:
                        # Another node took it while we could not renew (Redis was away longer than
                        # the TTL): the calls here go on, new sockets go there.
                        log.error(HOME_LOST, organisation_id=str(organisation_id))
                await self._count_homes(keys=[self._homes_key()], args=[self._ttl_ms, self.name, *held])
            except Exception as exc:
                if not self._redis_down:
                    self._redis_down = True
                    log.warning(REDIS_UNAVAILABLE, error=repr(exc))
                continue
            if self._redis_down:
                self._redis_down = False
                self._quiet_until = time.monotonic() + REAP_GRACE_SECONDS
                log.info(REDIS_BACK)

    async def reap_forever(self, reap: Callable[[set[str]], Awaitable[None]]) -> None:
        """Every :data:`REAP_SECONDS`, hand ``reap`` the nodes to spare, for it to close the work of
        the others (a node that died and is not coming back): those registered now, and those seen
        within :data:`REAP_GRACE_SECONDS` (a key lost with a Redis restart is put back within a
        renewal; a node stalled for a few seconds is not dead)."""
        while True:
            await asyncio.sleep(REAP_SECONDS)
            try:
                live = await self.live_nodes()
                now = time.monotonic()
                for name in live:
                    self._seen[name] = now
                if self.name not in live or now < self._quiet_until:
                    continue  # we could be the one cut off, or others may not be back yet
                spared = {name for name, seen in self._seen.items() if now - seen < REAP_GRACE_SECONDS}
                await reap(spared)
            except Exception:
                log.warning("cluster.reap_failed", exc_info=True)

    # --- internal requests ------------------------------------------------------------------------

    def sign(self, target: str, method: str, path_qs: str, client: str, origin: str) -> str:
        """The ``X-Callbutton-Cluster`` header of an internal request this node makes to node
        ``target``: it binds the time, both nodes, the method, the path and query, and the client
        address and Origin it vouches for."""
        stamp = str(int(time.time()))
        return f"{stamp}.{self.name}.{self._mac(stamp, self.name, target, method, path_qs, client, origin)}"

    def verify(self, header: str, method: str, path_qs: str, client: str, origin: str) -> bool:
        """Whether ``header`` signs this request, for this node, within :data:`SIGNATURE_SECONDS`."""
        stamp, _, rest = header.partition(".")
        node, _, mac = rest.rpartition(".")
        try:
            fresh = abs(time.time() - int(stamp)) <= SIGNATURE_SECONDS
        except ValueError:
            return False
        expected = self._mac(stamp, node, self.name, method, path_qs, client, origin)
        return fresh and hmac.compare_digest(mac.encode(), expected.encode())

    def _mac(self, stamp: str, node: str, target: str, method: str, path_qs: str, client: str, origin: str) -> str:
        text = "\n".join((stamp, node, target, method, path_qs, client, origin)).encode()
        return base64.urlsafe_b64encode(hmac.digest(self._secret, text, hashlib.sha256)).decode().rstrip("=")

    @staticmethod
    def _node_key(name: str) -> str:
        return f"{PREFIX}node:{name}"

    @staticmethod
    def _home_key(organisation_id: uuid.UUID) -> str:
        return f"{PREFIX}home:{organisation_id}"

    def _taking_key(self) -> str:
        return f"{PREFIX}taking:{self.name}"

    def _homes_key(self) -> str:
        return f"{PREFIX}homes:{self.name}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
