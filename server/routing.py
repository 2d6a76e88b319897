"""The switchboard: places calls, rings agents, connects the first who accepts, ends calls.

Routing in this version rings every available agent of the button's organisation at once (ring-all);
the first to accept gets the call and the others stop ringing. A call nobody accepts within the ring
timeout ends as ``no_answer``; a call every rung agent declines, or that finds no agent available,
ends as ``rejected``.

The switchboard owns the live calls of this process and every task and timer it starts for them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from media.bridge import Bridge
from media.leg import IceSettings, Leg, LegState
from media.sdp import SdpError, check_offer
from server import logs, messages
from server.calls import Call, CallEvents, CallState, EndReason
from server.messages import ProtocolError
from server.presence import Agent, Roster
from storage.buttons import Button

log = structlog.get_logger(__name__)

VisitorSend = Callable[[messages.Outgoing], None]


@dataclass(eq=False)
class LiveCall:
    """A call in progress in this process, with everything that carries it."""

    call: Call
    button: Button
    send_visitor: VisitorSend
    leg: Leg
    bridge: Bridge
    ring_timeout: float
    rung: dict[uuid.UUID, Agent] = field(default_factory=dict)
    agent: Agent | None = None
    timer: asyncio.TimerHandle | None = None


class Switchboard:
    def __init__(self, *, roster: Roster, events: CallEvents, ice: IceSettings, ring_timeout: float) -> None:
        self.roster = roster
        self.calls: dict[uuid.UUID, LiveCall] = {}
        self._events = events
        self._ice = ice
        self._ring_timeout = ring_timeout
        self._tasks: set[asyncio.Task[None]] = set()

    # --- visitors ---------------------------------------------------------------------------------

    async def place(
        self, *, button: Button, page_url: str | None, offer_sdp: str, send_visitor: VisitorSend
    ) -> LiveCall:
        """Start a call from a visitor's request; the visitor is told every state through ``send_visitor``."""
        check_offer(offer_sdp)  # a malformed offer is a bad request, not a call attempt
        call = Call(
            organisation_id=button.organisation_id,
            button_id=button.id,
            page_url=page_url,
            events=self._events,
        )
        leg = Leg("visitor", self._ice)
        leg.bind(call_id=str(call.id), org_id=str(button.organisation_id))
        live = LiveCall(
            call=call,
            button=button,
            send_visitor=send_visitor,
            leg=leg,
            bridge=Bridge(leg),
            ring_timeout=float(button.ring_timeout_s or self._ring_timeout),
        )
        leg.on_state = lambda _, state: self._visitor_leg_state(live, state)
        self.calls[call.id] = live

        agents = self.roster.available(button.organisation_id)
        if not agents:
            await self.end(live, EndReason.REJECTED, detail="no_agent_available")
            return live

        call.queue()
        send_visitor(messages.CallState(call_id=call.id, state=CallState.QUEUED.value))
        ring = messages.Ring(
            call_id=call.id,
            button={"id": str(button.id), "name": button.name},
            visitor={"page_url": page_url},
            ring_timeout=live.ring_timeout,
        )
        for agent in agents:
            live.rung[agent.user_id] = agent
            agent.ringing.add(call.id)
            agent.send(ring)
            agent.changed()
            call.agent_event("agent_rung", agent.user_id)
            log.info(logs.AGENT_RUNG, call_id=str(call.id), agent_id=str(agent.user_id))
        live.timer = asyncio.get_running_loop().call_later(
            live.ring_timeout, lambda: self._spawn(self.end(live, EndReason.NO_ANSWER))
        )

        try:
            answer = await leg.answer(offer_sdp)
        except SdpError:
            if call.ended:
                return live  # ended meanwhile (declined, say), which closed the leg under the answer
            await self.end(live, EndReason.FAILED, detail="offer_refused")
            raise
        if not call.ended:
            send_visitor(messages.Answer(sdp=answer))
        if call.state is CallState.QUEUED:
            live.bridge.start_ringback()
        return live

    async def visitor_hangup(self, live: LiveCall) -> None:
        answered = live.call.state is CallState.ANSWERED
        await self.end(live, EndReason.VISITOR_HANGUP if answered else EndReason.ABANDONED)

    # --- agents -----------------------------------------------------------------------------------

    async def agent_offer(self, agent: Agent, sdp: str) -> str:
        """Negotiate ``agent``'s standing leg, replacing an earlier one; return our answer."""
        if agent.call_id is not None:
            raise ProtocolError("wrong_state", "the audio connection cannot be replaced during a call", "offer")
        leg = Leg("agent", self._ice)
        leg.bind(agent_id=str(agent.user_id), org_id=str(agent.organisation_id))
        leg.on_state = lambda changed, state: self._agent_leg_state(agent, changed, state)
        answer = await leg.answer(sdp)
        previous, agent.leg = agent.leg, leg
        if previous is not None:
            await previous.close()
        agent.changed()
        return answer

    def set_presence(self, agent: Agent, status: str) -> None:
        agent.wants_available = status == "available"
        agent.changed()

    async def accept(self, agent: Agent, call_id: uuid.UUID) -> None:
        live = self.calls.get(call_id)
        if live is None or call_id not in agent.ringing:
            raise ProtocolError("wrong_state", f"call {call_id} is not ringing you", "accept")
        if agent.leg is None or agent.leg.state is not LegState.CONNECTED:
            raise ProtocolError("wrong_state", "your audio is not connected; send an offer first", "accept")
        call = live.call
        self._cancel_timer(live)
        call.answer(agent.user_id)
        agent.ringing.discard(call_id)
        del live.rung[agent.user_id]
        self._stop_ringing(live, "answered_elsewhere")
        live.agent = agent
        agent.call_id = call_id
        live.bridge.connect(agent.leg)
        state = messages.CallState(call_id=call_id, state=CallState.ANSWERED.value)
        agent.send(state)
        live.send_visitor(state)
        agent.changed()

    async def decline(self, agent: Agent, call_id: uuid.UUID) -> None:
        live = self.calls.get(call_id)
        if live is None or call_id not in agent.ringing:
            raise ProtocolError("wrong_state", f"call {call_id} is not ringing you", "decline")
        self._unring(live, agent, "declined")
        live.call.agent_event("agent_declined", agent.user_id)
        if not live.rung:
            await self.end(live, EndReason.REJECTED, detail="declined")

    async def agent_hangup(self, agent: Agent, call_id: uuid.UUID) -> None:
        live = self.calls.get(call_id)
        if live is None or live.agent is not agent:
            raise ProtocolError("wrong_state", f"you are not in call {call_id}", "hangup")
        await self.end(live, EndReason.AGENT_HANGUP)

    async def agent_gone(self, agent: Agent, *, clean: bool) -> None:
        """The agent's socket closed (or was replaced): release its calls and its leg."""
        agent.connected = False
        for call_id in list(agent.ringing):
            live = self.calls.get(call_id)
            if live is not None:
                self._unring(live, agent, "agent_offline")
                live.call.agent_event("agent_ring_stopped", agent.user_id, "agent_offline")
                if not live.rung:
                    await self.end(live, EndReason.REJECTED, detail="agent_offline")
        if agent.call_id is not None and (live := self.calls.get(agent.call_id)) is not None:
            await self.end(live, EndReason.AGENT_HANGUP if clean else EndReason.FAILED)
        if agent.leg is not None:
            await agent.leg.close()
            agent.leg = None
        agent.changed()

    # --- ending -----------------------------------------------------------------------------------

    async def end(self, live: LiveCall, reason: EndReason, detail: str | None = None) -> None:
        """End a call for everyone on it; a no-op when it already ended."""
        call = live.call
        if not call.end(reason):
            return
        self._cancel_timer(live)
        self._stop_ringing(live, "ended")
        ended = messages.CallState(call_id=call.id, state=CallState.ENDED.value, reason=reason.value, detail=detail)
        live.send_visitor(ended)
        agent = live.agent
        if agent is not None:
            agent.call_id = None
            agent.send(ended)
            agent.changed()
        self.calls.pop(call.id, None)
        self._spawn(call.flush())
        await live.bridge.close()
        await live.leg.close()

    async def close(self) -> None:
        """Shut down: end every call, close every agent leg, wait for every write."""
        for live in list(self.calls.values()):
            await self.end(live, EndReason.SHUTDOWN)
        for agent in self.roster:
            if agent.leg is not None:
                await agent.leg.close()
        await self.drain()

    async def drain(self) -> None:
        """Wait for every task this switchboard started, among them the writes of ended calls."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- internals --------------------------------------------------------------------------------

    def _unring(self, live: LiveCall, agent: Agent, reason: str) -> None:
        live.rung.pop(agent.user_id, None)
        agent.ringing.discard(live.call.id)
        if agent.connected:
            agent.send(messages.RingStopped(call_id=live.call.id, reason=reason))
        agent.changed()

    def _stop_ringing(self, live: LiveCall, reason: str) -> None:
        for agent in list(live.rung.values()):
            self._unring(live, agent, reason)
            live.call.agent_event("agent_ring_stopped", agent.user_id, reason)

    def _cancel_timer(self, live: LiveCall) -> None:
        if live.timer is not None:
            live.timer.cancel()
            live.timer = None

    def _visitor_leg_state(self, live: LiveCall, state: LegState) -> None:
        if state is LegState.FAILED:
            self._spawn(self.end(live, EndReason.FAILED, detail="visitor_media_failed"))

    def _agent_leg_state(self, agent: Agent, leg: Leg, state: LegState) -> None:
        if leg is not agent.leg:
            return
        if agent.connected:
            agent.send(messages.LegState(state=state.value))
        if state is LegState.FAILED and agent.call_id is not None:
            live = self.calls.get(agent.call_id)
            if live is not None:
                self._spawn(self.end(live, EndReason.FAILED, detail="agent_media_failed"))
        agent.changed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(logs.TASK_FAILED, exc_info=task.exception())
