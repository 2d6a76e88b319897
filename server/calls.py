"""The call state machine: one :class:`Call` per call, one table of allowed transitions.

``created -> queued (agents ringing) -> answered (bridged) -> ended``, and ``ended`` from every state
with a reason. A transition changes the in-memory state at once and is then persisted in order (the
``calls`` row and a ``call_events`` row, stamped with the transition's time), so signalling never waits
for the database and the stored history is the real one.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

from server import logs
from storage.calls import AgentEvent
from storage.outbox import Outbox

log = structlog.get_logger(__name__)


class CallState(enum.Enum):
    CREATED = "created"
    QUEUED = "queued"
    ANSWERED = "answered"
    ENDED = "ended"


class EndReason(enum.Enum):
    VISITOR_HANGUP = "visitor_hangup"
    AGENT_HANGUP = "agent_hangup"
    NO_ANSWER = "no_answer"
    ABANDONED = "abandoned"
    REJECTED = "rejected"
    FAILED = "failed"
    SHUTDOWN = "shutdown"


TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.CREATED: frozenset({CallState.QUEUED, CallState.ENDED}),
    CallState.QUEUED: frozenset({CallState.ANSWERED, CallState.ENDED}),
    CallState.ANSWERED: frozenset({CallState.ENDED}),
    CallState.ENDED: frozenset(),
}


class InvalidTransition(Exception):
    """A transition the table does not allow (a bug in the caller, not bad client input)."""


class CallEvents(Protocol):
    """Where calls are persisted (``storage.calls.CallStore``)."""

    async def create(
        self,
        *,
        call_id: uuid.UUID,
        organisation_id: uuid.UUID,
        button_id: uuid.UUID,
        page_url: str | None,
        at: datetime.datetime,
        direction: str = "inbound",
        visitor: dict[str, str | None] | None = None,
        node: str | None = None,
    ) -> None: ...

    async def transition(
        self,
        *,
        call_id: uuid.UUID,
        organisation_id: uuid.UUID,
        from_state: str,
        to_state: str,
        at: datetime.datetime,
        write_id: uuid.UUID,
        agent_id: uuid.UUID | None = None,
        reason: str | None = None,
    ) -> None: ...

    async def agent_events(
        self, *, call_id: uuid.UUID, organisation_id: uuid.UUID, events: Sequence[AgentEvent]
    ) -> None: ...

    async def set_rating_token(self, *, call_id: uuid.UUID, organisation_id: uuid.UUID, token_hash: bytes) -> None: ...


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Call:
    """State and history of one call. Routing decisions live in ``server.routing``."""

    def __init__(
        self,
        *,
        organisation_id: uuid.UUID,
        button_id: uuid.UUID,
        page_url: str | None,
        events: CallEvents,
        outbox: Outbox,
        direction: str = "inbound",
        visitor: dict[str, str] | None = None,
        node: str | None = None,
    ) -> None:
        self.id = uuid.uuid4()
        self.organisation_id = organisation_id
        self.button_id = button_id
        self.page_url = page_url
        #: ``outbound`` for a call an agent asked for through a call link.
        self.direction = direction
        self.visitor = dict(visitor or {})
        self.state = CallState.CREATED
        self.end_reason: EndReason | None = None
        self.agent_id: uuid.UUID | None = None
        self.created_at = _now()
        self.answered_at: datetime.datetime | None = None
        self._events = events
        self._outbox = outbox
        self._log = log.bind(call_id=str(self.id), org_id=str(organisation_id))
        self._last_write: asyncio.Task[None] | None = None
        self._agent_events: list[AgentEvent] = []
        self._persist(
            "call created",
            lambda: events.create(
                call_id=self.id,
                organisation_id=organisation_id,
                button_id=button_id,
                page_url=page_url,
                at=self.created_at,
                direction=direction,
                visitor=dict(self.visitor),
                node=node,
            ),
        )
        #: The write of the call's own row, the first of its writes.
        self._row_write = self._last_write
        self._log.info(logs.CALL_STATE, transition="-> created", button_id=str(button_id))

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    def queue(self) -> None:
        self._set_state(CallState.QUEUED)

    def answer(self, agent_id: uuid.UUID) -> None:
        self.agent_id = agent_id
        self.answered_at = _now()
        self._set_state(CallState.ANSWERED, agent_id=agent_id)

    def end(self, reason: EndReason) -> bool:
        """End the call; False (and nothing done) when it had already ended."""
        if self.ended:
            return False
        self.end_reason = reason
        self._set_state(CallState.ENDED, reason=reason)
        return True

    def agent_event(self, kind: str, agent_id: uuid.UUID, reason: str | None = None) -> None:
        """Record an agent-level event (``agent_rung``, ``agent_declined``, ``agent_ring_stopped``).

        The events of one step are stored together, in one statement: a ring-all call rings (and
        stops ringing) every agent at once, one write each was most of what a setup cost the server
        and the database (10,274 writes in 50 setups)."""
        if not self._agent_events:
            asyncio.get_running_loop().call_soon(self._store_agent_events)
        self._agent_events.append(AgentEvent(kind, agent_id, _now(), uuid.uuid4(), reason))

    def _store_agent_events(self) -> None:
        events, self._agent_events = self._agent_events, []
        if not events:
            return
        self._persist(
            "call events " + ", ".join(sorted({e.kind for e in events})),
            lambda: self._events.agent_events(call_id=self.id, organisation_id=self.organisation_id, events=events),
            events=[
                {"kind": e.kind, "agent_id": str(e.agent_id), "at": e.at.isoformat(), "reason": e.reason}
                for e in events
            ],
        )

    def rating_token(self, token: str) -> None:
        """Store (the hash of) the token with which the visitor may rate this call, once."""
        token_hash = hashlib.sha256(token.encode()).digest()
        self._persist(
            "call rating token",
            lambda: self._events.set_rating_token(
                call_id=self.id, organisation_id=self.organisation_id, token_hash=token_hash
            ),
        )

    async def row_stored(self) -> None:
        """Wait until the call's own row is written (or its write has failed and been logged), not
        for its later events: what only refers to the row (a recording's) need not queue behind them."""
        if self._row_write is not None:
            await asyncio.shield(self._row_write)

    async def flush(self) -> None:
        """Wait until every transition so far is persisted (or has failed and been logged)."""
        if self._agent_events:
            self._store_agent_events()
        if self._last_write is not None:
            await asyncio.shield(self._last_write)

    def _set_state(
        self,
        state: CallState,
        *,
        agent_id: uuid.UUID | None = None,
        reason: EndReason | None = None,
    ) -> None:
        previous = self.state
        if state not in TRANSITIONS[previous]:
            raise InvalidTransition(f"call {self.id}: {previous.value} -> {state.value}")
        self.state = state
        at = _now()
        write_id = uuid.uuid4()
        self._log.info(
            logs.CALL_STATE,
            transition=f"{previous.value} -> {state.value}",
            reason=reason.value if reason else None,
        )
        self._persist(
            f"call {state.value}",
            lambda: self._events.transition(
                call_id=self.id,
                organisation_id=self.organisation_id,
                from_state=previous.value,
                to_state=state.value,
                at=at,
                write_id=write_id,
                agent_id=agent_id,
                reason=reason.value if reason else None,
            ),
            at=at.isoformat(),
            agent_id=str(agent_id) if agent_id else None,
            reason=reason.value if reason else None,
        )

    def _persist(self, what: str, write: Callable[[], Awaitable[None]], **detail: Any) -> None:
        """Store with ``write`` after every earlier write of this call (history is stored in order),
        through the outbox: the call goes on while the database is away, and its history is
        written when it is back."""
        if self._agent_events:
            self._store_agent_events()  # the agent events so far come first
        previous = self._last_write
        outbox = self._outbox
        call_id = str(self.id)
        organisation_id = str(self.organisation_id)

        async def run() -> None:
            if previous is not None:
                await previous
            await outbox.write(what, write, call_id=call_id, org_id=organisation_id, **detail)

        self._last_write = asyncio.create_task(run(), name=f"call-{self.id}-write")
