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
from media.recorder import MuxWorker
from media.sdp import SdpError, check_offer
from server import logs, messages
from server.calls import Call, CallEvents, CallState, EndReason
from server.messages import ProtocolError
from server.presence import Agent, Roster
from server.recording import CallRecording
from storage.buttons import Button
from storage.recordings import RecordingStore

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
    #: The visitor has our SDP answer. Until then an answered state is held back, so that the
    #: visitor always gets ``answer`` before ``call_state answered``.
    visitor_has_answer: bool = False
    recording: CallRecording | None = None


class Switchboard:
    def __init__(
        self,
        *,
        roster: Roster,
        events: CallEvents,
        ice: IceSettings,
        ring_timeout: float,
        recordings: RecordingStore | None = None,
        mux: MuxWorker | None = None,
    ) -> None:
        self.roster = roster
        self._recordings = recordings
        self._mux = mux
        self.calls: dict[uuid.UUID, LiveCall] = {}
        self._events = events
        self._ice = ice
        self._ring_timeout = ring_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._legs: set[Leg] = set()
        self.closing = False

    # --- visitors ---------------------------------------------------------------------------------

    async def place(
        self,
        *,
        button: Button,
        page_url: str | None,
        offer_sdp: str,
        send_visitor: VisitorSend,
        admit: Callable[[], None] = lambda: None,
    ) -> LiveCall:
        """Start a call from a visitor's request; the visitor is told every state through ``send_visitor``.

        ``admit`` runs once the request is known to be well-formed and may refuse it by raising
        (rate limits); a refused or malformed request creates no call.
        """
        if self.closing:
            raise ProtocolError("unavailable", "the service is shutting down; call again in a moment", "call")
        check_offer(offer_sdp)  # a malformed offer is a bad request, not a call attempt
        admit()
        call = Call(
            organisation_id=button.organisation_id,
            button_id=button.id,
            page_url=page_url,
            events=self._events,
        )
        leg = self._new_leg("visitor")
        leg.bind(call_id=str(call.id), org_id=str(button.organisation_id))
        live = LiveCall(
            call=call,
            button=button,
            send_visitor=send_visitor,
            leg=leg,
            bridge=Bridge(leg),
            ring_timeout=float(button.ring_timeout_s or self._ring_timeout),
        )
        leg.on_state = lambda changed, state: self._visitor_leg_state(live, changed, state)
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
        if call.ended:
            return live
        send_visitor(messages.Answer(sdp=answer))
        live.visitor_has_answer = True
        if call.state is CallState.ANSWERED:
            send_visitor(messages.CallState(call_id=call.id, state=CallState.ANSWERED.value))
        else:
            live.bridge.start_ringback()
        return live

    async def visitor_hangup(self, live: LiveCall) -> None:
        answered = live.call.state is CallState.ANSWERED
        await self.end(live, EndReason.VISITOR_HANGUP if answered else EndReason.ABANDONED)

    async def visitor_gone(self, live: LiveCall, *, clean: bool) -> None:
        """The visitor's socket closed: a hang-up when it closed normally, a failure otherwise."""
        if clean:
            await self.visitor_hangup(live)
        else:
            await self.end(live, EndReason.FAILED, detail="visitor_disconnected")

    # --- agents -----------------------------------------------------------------------------------

    async def agent_offer(self, agent: Agent, sdp: str) -> str:
        """Negotiate ``agent``'s standing leg, replacing an earlier one; return our answer."""
        if agent.call_id is not None:
            raise ProtocolError("wrong_state", "the audio connection cannot be replaced during a call", "offer")
        leg = self._new_leg("agent")
        leg.bind(agent_id=str(agent.user_id), org_id=str(agent.organisation_id))
        leg.on_state = lambda changed, state: self._agent_leg_state(agent, changed, state)
        answer = await leg.answer(sdp)
        if not agent.connected or agent.call_id is not None:
            # The socket went (or took a call) while we answered: this leg has no owner.
            await leg.close()
            raise ProtocolError("wrong_state", "the audio connection is no longer wanted", "offer")
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
        if live.button.recording_enabled and self._recordings is not None and self._mux is not None:
            live.recording = CallRecording(
                store=self._recordings,
                mux=self._mux,
                organisation_id=call.organisation_id,
                call_id=call.id,
                call_stored=call.flush,
            )
            live.bridge.connect(agent.leg, live.recording.recorder)
            live.recording.start()
        else:
            live.bridge.connect(agent.leg)
        state = messages.CallState(call_id=call_id, state=CallState.ANSWERED.value)
        agent.send(state)
        if live.visitor_has_answer:
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

    async def agent_gone(self, agent: Agent, *, clean: bool, detail: str | None = None) -> None:
        """The agent's socket closed (or was replaced): release its calls and its leg.

        A call in progress ends as ``agent_hangup`` when the socket closed normally, else ``failed``.
        """
        agent.connected = False
        for call_id in list(agent.ringing):
            live = self.calls.get(call_id)
            if live is not None:
                self._unring(live, agent, "agent_offline")
                live.call.agent_event("agent_ring_stopped", agent.user_id, "agent_offline")
                if not live.rung:
                    await self.end(live, EndReason.REJECTED, detail="agent_offline")
        if agent.call_id is not None and (live := self.calls.get(agent.call_id)) is not None:
            if clean:
                await self.end(live, EndReason.AGENT_HANGUP)
            else:
                await self.end(live, EndReason.FAILED, detail=detail or "agent_disconnected")
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
        if live.recording is not None:
            self._spawn(live.recording.finish())
        await live.leg.close()

    async def close(self) -> None:
        """Shut down: refuse new calls, end every call, close every leg, wait for every write."""
        self.closing = True
        for live in list(self.calls.values()):
            await self.end(live, EndReason.SHUTDOWN)
        for leg in list(self._legs):
            await leg.close()
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

    def _new_leg(self, role: str) -> Leg:
        """A leg this switchboard tracks until it closes, so that none outlives :meth:`close`."""
        leg = Leg(role, self._ice)
        self._legs.add(leg)
        return leg

    def _visitor_leg_state(self, live: LiveCall, leg: Leg, state: LegState) -> None:
        if state is LegState.CLOSED:
            self._legs.discard(leg)
        # A leg closed by its peer (not by us: then the call has already ended) is as gone as a
        # failed one.
        if state in (LegState.FAILED, LegState.CLOSED) and not live.call.ended:
            self._spawn(self.end(live, EndReason.FAILED, detail="visitor_media_failed"))

    def _agent_leg_state(self, agent: Agent, leg: Leg, state: LegState) -> None:
        if state is LegState.CLOSED:
            self._legs.discard(leg)
        if leg is not agent.leg:
            return
        if agent.connected:
            agent.send(messages.LegState(state=state.value))
        if state in (LegState.FAILED, LegState.CLOSED) and agent.call_id is not None:
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
