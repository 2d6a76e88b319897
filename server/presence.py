"""Agents who are connected, and their presence.

An agent is one user, with one or more open console sockets (tabs, devices), each of which may hold
a standing media leg. The agent's presence is not stored but derived, as a pure function of its
parts: whether any socket is open, what the agent chose (available or away), whether a leg is
connected, whether it is being rung, in a call, or wrapping up after one. Whenever a part changes,
every socket of the agent is told the new presence, if it changed.

An agent whose last socket closes stays known for a grace period, so that a page reload keeps the
agent's choice (available stays available once the new page's leg connects); after it, the agent is
offline and forgotten.

Shared state stays in this process for now; the scale-out work puts it behind Redis with the same
interface.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog

from media.leg import Leg, LegState
from server import logs, messages

log = structlog.get_logger(__name__)

RELOAD_GRACE_SECONDS = 15.0
SOCKETS_PER_AGENT = 5


class Presence(enum.Enum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RINGING = "ringing"
    BUSY = "busy"
    WRAP_UP = "wrap_up"
    AWAY = "away"


def presence(
    *,
    connected: bool,
    wants_available: bool,
    leg_connected: bool,
    ringing: bool,
    in_call: bool,
    wrapping_up: bool,
) -> Presence:
    """An agent's presence from its parts."""
    if not connected:
        return Presence.OFFLINE
    if in_call:
        return Presence.BUSY
    if ringing:
        return Presence.RINGING
    if wrapping_up:
        return Presence.WRAP_UP
    if wants_available and leg_connected:
        return Presence.AVAILABLE
    return Presence.AWAY


@dataclass(eq=False)
class AgentSocket:
    """One console connection of an agent."""

    send: Callable[[messages.Outgoing], None]
    #: Closes the socket (with a WebSocket close code and reason).
    close: Callable[[int, str], None]
    #: The session token the socket was opened with: logging that session out closes it.
    session: str
    leg: Leg | None = None


@dataclass(eq=False)
class Agent:
    """A user taking calls, over any number of console sockets."""

    user_id: uuid.UUID
    organisation_id: uuid.UUID
    display_name: str
    sockets: list[AgentSocket] = field(default_factory=list)
    wants_available: bool = False
    ringing: set[uuid.UUID] = field(default_factory=set)
    call_id: uuid.UUID | None = None
    #: The socket (and so the leg) carrying the agent's call.
    call_socket: AgentSocket | None = None
    wrap_up_until: float = 0.0  # time.monotonic()
    #: When the agent last became available other than by a ring stopping, for longest-idle routing.
    idle_since: float = field(default_factory=time.monotonic)
    #: Forgets the agent once the reload grace after its last socket has passed.
    forget_timer: asyncio.TimerHandle | None = None
    _reported: Presence = Presence.OFFLINE

    def __post_init__(self) -> None:
        self._log = log.bind(agent_id=str(self.user_id), org_id=str(self.organisation_id))

    @property
    def connected(self) -> bool:
        return bool(self.sockets)

    def connected_leg(self, socket: AgentSocket | None = None) -> Leg | None:
        """A connected standing leg: ``socket``'s, or any socket's."""
        for candidate in [socket] if socket is not None else self.sockets:
            if candidate.leg is not None and candidate.leg.state is LegState.CONNECTED:
                return candidate.leg
        return None

    @property
    def wrap_up_seconds(self) -> float:
        return max(0.0, self.wrap_up_until - time.monotonic())

    @property
    def presence(self) -> Presence:
        return presence(
            connected=self.connected,
            wants_available=self.wants_available,
            leg_connected=self.connected_leg() is not None,
            ringing=bool(self.ringing),
            in_call=self.call_id is not None,
            wrapping_up=self.wrap_up_seconds > 0,
        )

    def send(self, message: messages.Outgoing) -> None:
        for socket in list(self.sockets):
            socket.send(message)

    def presence_message(self) -> messages.Presence:
        current = self.presence
        seconds = round(self.wrap_up_seconds, 1) if current is Presence.WRAP_UP else None
        return messages.Presence(status=current.value, wants_available=self.wants_available, wrap_up_seconds=seconds)

    def changed(self) -> bool:
        """Call after changing any part: tells the agent its presence when it differs, and says
        whether it did (routing may then have a call for it, or a call may have lost it)."""
        current = self.presence
        if current is self._reported:
            return False
        # A ring starting or stopping flips an agent between available and ringing, for every agent a
        # ring-all call rings: most of a busy server's log lines (the call's events keep who was rung).
        ring_flip = {current, self._reported} == {Presence.AVAILABLE, Presence.RINGING}
        (self._log.debug if ring_flip else self._log.info)(
            logs.AGENT_PRESENCE, transition=f"{self._reported.value} -> {current.value}"
        )
        previous, self._reported = self._reported, current
        if current is Presence.AVAILABLE and previous is not Presence.RINGING:
            # A ring that stopped (declined, timed out, taken elsewhere) leaves the agent as idle
            # as it was: longest-idle routing measures time since the last call, not the last ring.
            self.idle_since = time.monotonic()
        self.send(self.presence_message())
        return True


class Roster:
    """The agents of this process, by user id (connected, or within their reload grace)."""

    def __init__(self) -> None:
        self._agents: dict[uuid.UUID, Agent] = {}
        #: The same agents by organisation: routing asks for one organisation's at every change.
        self._by_organisation: dict[uuid.UUID, dict[uuid.UUID, Agent]] = {}

    def join(self, *, user_id: uuid.UUID, organisation_id: uuid.UUID, display_name: str) -> Agent:
        """The agent for ``user_id``: the one already known (another tab, a reload), or a new one."""
        agent = self._agents.get(user_id)
        if agent is None:
            agent = self._agents[user_id] = Agent(user_id, organisation_id, display_name)
            self._by_organisation.setdefault(organisation_id, {})[user_id] = agent
        if agent.forget_timer is not None:
            agent.forget_timer.cancel()
            agent.forget_timer = None
        return agent

    def forget(self, agent: Agent) -> None:
        if self._agents.get(agent.user_id) is agent and not agent.sockets:
            del self._agents[agent.user_id]
            organisation = self._by_organisation[agent.organisation_id]
            del organisation[agent.user_id]
            if not organisation:
                del self._by_organisation[agent.organisation_id]

    def get(self, user_id: uuid.UUID) -> Agent | None:
        return self._agents.get(user_id)

    def of(self, organisation_id: uuid.UUID) -> list[Agent]:
        return list(self._by_organisation.get(organisation_id, {}).values())

    def available(self, organisation_id: uuid.UUID) -> list[Agent]:
        return [a for a in self.of(organisation_id) if a.presence is Presence.AVAILABLE]

    def close_sockets(
        self, code: int, reason: str, *, session: str | None = None, user_id: uuid.UUID | None = None
    ) -> int:
        """Close the console sockets opened with ``session``, or every socket of ``user_id``; how many."""
        closed = 0
        for agent in list(self._agents.values()):
            for socket in list(agent.sockets):
                if (session is not None and socket.session == session) or agent.user_id == user_id:
                    socket.close(code, reason)
                    closed += 1
        return closed

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))
