"""Agents who are connected, and their presence.

An agent's presence is not stored but derived, as a pure function of its parts: whether a socket is
open, what the agent chose (available or away), whether its standing media leg is connected, whether
it is being rung, whether it is in a call. Whenever a part changes the agent's socket is told the
new presence, if it changed.

Shared state stays in this process for now; the scale-out work puts it behind Redis with the same
interface.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterator

import structlog

from media.leg import Leg, LegState
from server import logs, messages

log = structlog.get_logger(__name__)


class Presence(enum.Enum):
    OFFLINE = "offline"
    AVAILABLE = "available"
    RINGING = "ringing"
    BUSY = "busy"
    AWAY = "away"


def presence(
    *,
    connected: bool,
    wants_available: bool,
    leg_connected: bool,
    ringing: bool,
    in_call: bool,
) -> Presence:
    """An agent's presence from its parts."""
    if not connected:
        return Presence.OFFLINE
    if in_call:
        return Presence.BUSY
    if ringing:
        return Presence.RINGING
    if wants_available and leg_connected:
        return Presence.AVAILABLE
    return Presence.AWAY


class Agent:
    """A connected agent: one signalling socket and at most one standing leg."""

    def __init__(
        self,
        *,
        user_id: uuid.UUID,
        organisation_id: uuid.UUID,
        display_name: str,
        send: Callable[[messages.Outgoing], None],
        close: Callable[[int, str], None],
        session: str,
    ) -> None:
        self.user_id = user_id
        self.organisation_id = organisation_id
        self.display_name = display_name
        self.send = send
        #: Closes the agent's socket (with a WebSocket close code and reason).
        self.close = close
        #: The session token the socket was opened with: logging that session out closes it.
        self.session = session
        self.connected = True
        self.wants_available = False
        self.leg: Leg | None = None
        self.ringing: set[uuid.UUID] = set()
        self.call_id: uuid.UUID | None = None
        self._reported = Presence.AWAY
        self._log = log.bind(agent_id=str(user_id), org_id=str(organisation_id))

    @property
    def presence(self) -> Presence:
        return presence(
            connected=self.connected,
            wants_available=self.wants_available,
            leg_connected=self.leg is not None and self.leg.state is LegState.CONNECTED,
            ringing=bool(self.ringing),
            in_call=self.call_id is not None,
        )

    def changed(self) -> None:
        """Call after changing any part: tells the agent its presence when it differs."""
        current = self.presence
        if current is not self._reported:
            self._log.info(logs.AGENT_PRESENCE, transition=f"{self._reported.value} -> {current.value}")
            self._reported = current
            if self.connected:
                self.send(messages.Presence(status=current.value))


class Roster:
    """The connected agents of this process, by user id."""

    def __init__(self) -> None:
        self._agents: dict[uuid.UUID, Agent] = {}

    def add(self, agent: Agent) -> Agent | None:
        """Register ``agent``; return the agent it replaces (same user, older socket), if any."""
        previous = self._agents.get(agent.user_id)
        self._agents[agent.user_id] = agent
        return previous

    def remove(self, agent: Agent) -> None:
        if self._agents.get(agent.user_id) is agent:
            del self._agents[agent.user_id]

    def get(self, user_id: uuid.UUID) -> Agent | None:
        return self._agents.get(user_id)

    def available(self, organisation_id: uuid.UUID) -> list[Agent]:
        return [
            a
            for a in self._agents.values()
            if a.organisation_id == organisation_id and a.presence is Presence.AVAILABLE
        ]

    def __iter__(self) -> Iterator[Agent]:
        return iter(list(self._agents.values()))
