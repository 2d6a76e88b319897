"""A call in progress in this process (:class:`LiveCall`), and what the switchboard
(``server.routing``) takes from its callers to place one: the visitor's form answers, checked, a call
link's claim, and the reads of who may be rung."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from media.bridge import Bridge
from media.leg import Leg
from server import messages
from server.calls import Call
from server.messages import ProtocolError
from server.presence import Agent
from server.recording import CallRecording
from storage.buttons import Button

VisitorSend = Callable[[messages.Outgoing], None]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9 ().-]{3,30}$")


class LinkClaim(Protocol):
    """A call link a visitor calls through (``server.links``)."""

    agent_id: uuid.UUID

    async def claim(self) -> bool:
        """Mark the link used; False when it was used already or has expired."""
        ...

    async def attach(self, call_id: uuid.UUID) -> None:
        """Record which call used the link (once the call's row exists)."""
        ...


class Directory(Protocol):
    """What routing reads from storage besides call events (``storage.db.Database`` parts)."""

    async def eligible_agents(
        self, organisation_id: uuid.UUID, button_id: uuid.UUID
    ) -> frozenset[uuid.UUID] | None: ...

    async def earlier_calls(
        self, organisation_id: uuid.UUID, call_id: uuid.UUID, email: str | None, phone: str | None
    ) -> int: ...


def check_visitor_form(form_fields: dict[str, str], answers: dict[str, str] | None) -> dict[str, str]:
    """The visitor's answers the button asks for, validated; raises ProtocolError naming the field."""
    answers = answers or {}
    kept = {}
    for name in ("name", "email", "phone"):
        mode = form_fields.get(name, "off")
        value = answers.get(name)
        if mode == "off" or not value:
            if mode == "required":
                raise ProtocolError("bad_message", f"this button's form requires the visitor's {name}", "call")
            continue
        if name == "email" and not _EMAIL.match(value):
            raise ProtocolError("bad_message", "the email address is not valid", "call")
        if name == "email":
            value = value.lower()  # one caller, however they type it: earlier calls and search match
        if name == "phone" and not _PHONE.match(value):
            raise ProtocolError("bad_message", "the phone number is not valid", "call")
        kept[name] = value
    return kept


@dataclass(eq=False)
class LiveCall:
    """A call in progress in this process, with everything that carries it."""

    call: Call
    button: Button
    send_visitor: VisitorSend
    leg: Leg
    bridge: Bridge
    ring_timeout: float
    visitor: dict[str, str] = field(default_factory=dict)
    #: Who may be rung: None for every agent of the organisation.
    eligible: frozenset[uuid.UUID] | None = None
    #: A call link's agent: the only one rung.
    only_agent: uuid.UUID | None = None
    #: Calls the visitor made before (by email or phone); None while being read.
    earlier_calls: int | None = 0
    rung: dict[uuid.UUID, tuple[Agent, asyncio.TimerHandle]] = field(default_factory=dict)
    declined: set[uuid.UUID] = field(default_factory=set)
    timed_out: set[uuid.UUID] = field(default_factory=set)
    agent: Agent | None = None
    wait_timer: asyncio.TimerHandle | None = None
    #: The visitor has our SDP answer. Until then an answered state is held back, so that the
    #: visitor always gets ``answer`` before ``call_state answered``.
    visitor_has_answer: bool = False
    recording: CallRecording | None = None
    #: When the visitor asked for the call (event-loop time), for the setup-time metrics.
    requested_at: float = 0.0
    told: tuple[int, bool] | None = None  # the queue position and ringing flag last sent
    ring_message: messages.Ring | None = None

    def may_ring(self, agent: Agent) -> bool:
        if self.only_agent is not None:
            return agent.user_id == self.only_agent
        return agent.organisation_id == self.call.organisation_id and (
            self.eligible is None or agent.user_id in self.eligible
        )


def leg_drops(leg: Leg) -> dict[str, int]:
    """What a leg dropped to stay bounded (docs/media.md, "Bounded"), by why."""
    return {
        "over_rate": leg.counters.packets_over_rate,
        "receive_queue_full": leg.drops.datagrams,
        "send_buffer_full": leg.drops.sends,
        "send_failed": leg.counters.send_failures,
        "stale": leg.counters.packets_stale,
    }
