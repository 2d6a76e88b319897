"""The switchboard: places calls, queues them, rings agents, connects the first who accepts, ends calls.

Each button has a queue of calls waiting for an agent, first come first served. Whenever an agent may
have become free, or a call may need one, :meth:`Switchboard.dispatch` walks the queues in order
and rings agents for every call that is ringing nobody, by the button's strategy:

- ``ring_all``: every available agent the button routes to, at once; the first to accept wins;
- ``longest_idle``: the available agent idle the longest;
- ``round_robin``: the next available agent after the one rung last, in a fixed order.

An agent rung for ``ring_timeout`` without answering is skipped for the next (and rung again only
when every other has been tried); an agent who declines is not rung for that call again, and a call
every online agent declined ends as ``rejected``. A call waiting longer than the button's maximum
queue wait ends as ``no_answer``; outside opening hours, or with no agent of the button online, a
call is refused at once (``rejected``), so nobody queues forever. After a call an agent wraps up
for the button's wrap-up time before being rung again. A call made through a call link rings only
that link's agent.

The switchboard owns the live calls of this process and every task and timer it starts for them.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import structlog

from media.bridge import Bridge
from media.leg import IceSettings, Leg, LegState
from media.recorder import MuxWorker
from media.sdp import SdpError, check_offer
from server import hours, logs, messages
from server.calls import Call, CallEvents, CallState, EndReason
from server.livecall import Directory, LinkClaim, LiveCall, VisitorSend, check_visitor_form, leg_drops
from server.load import LoopLoad
from server.messages import ProtocolError
from server.presence import RELOAD_GRACE_SECONDS, Agent, AgentSocket, Presence, Roster
from server.queues import CallQueues
from server.recording import CallRecording, RecordingStats
from storage.buttons import Button
from storage.outbox import SHUTDOWN_GRACE_SECONDS, Outbox
from storage.recordings import RecordingStore

log = structlog.get_logger(__name__)

REFUSED_OVERLOADED = "call.refused_overloaded"
HISTORY_UNAVAILABLE = "call.history_unavailable"
BUSY = "every line is busy just now; try again in a minute"
LINK_WAIT_SECONDS = 120.0
#: Legs answered at once (SDP, certificate, ICE gathering: ~3 ms of CPU each, over several turns of
#: the event loop). The rest wait their turn, in order: with 50 answered at once, each turn of the
#: loop ran a slice of every one, and a request arriving meanwhile waited tens of ms to ring.
ANSWERS_AT_ONCE = 4


class Switchboard:
    def __init__(
        self,
        *,
        roster: Roster,
        events: CallEvents,
        ice: IceSettings,
        ring_timeout: float,
        directory: Directory | None = None,
        recordings: RecordingStore | None = None,
        mux: MuxWorker | None = None,
        clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
        node: str | None = None,
        max_calls: int = 0,
        load: LoopLoad | None = None,
    ) -> None:
        self.roster = roster
        #: Calls carried at once at most (0: no limit); past it a visitor's call is refused.
        self.max_calls = max_calls
        #: Visitors' calls refused so far because :attr:`max_calls` were in progress.
        self.refused_at_capacity = 0
        #: How busy the event loop is; past its limit a visitor's call is refused.
        self.load = load or LoopLoad()
        #: Visitors' calls refused so far because the event loop was past :attr:`load`'s limit.
        self.refused_overloaded = 0
        #: This server process's name in a cluster, written with each call it carries.
        self.node = node
        self.calls: dict[uuid.UUID, LiveCall] = {}
        self.queues = CallQueues()
        self.clock = clock
        self.closing = False
        #: False while the server drains (shutdown begun): calls in progress go on, new ones are refused.
        self.accepting = True
        self.recording_stats = RecordingStats()
        #: Packets the media path dropped on legs closed so far, by why (see :func:`leg_drops`).
        self.packets_dropped: collections.Counter[str] = collections.Counter()
        #: Where calls' events and recordings' final rows wait while the database is away.
        self.outbox = Outbox()
        #: Set while no call is in progress (a draining server waits for it).
        self.no_calls = asyncio.Event()
        self.no_calls.set()
        self._events = events
        self._directory = directory
        self._ice = ice
        self._ring_timeout = ring_timeout
        self._recordings = recordings
        self._mux = mux
        self._wrap_up_timers: dict[uuid.UUID, asyncio.TimerHandle] = {}
        self._dispatching: set[uuid.UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._legs: set[Leg] = set()
        #: Legs being answered at once (see ANSWERS_AT_ONCE). With STUN or TURN servers of its own an
        #: answer waits on the network while it gathers: turns would queue each call behind the round
        #: trips of those before it, so then there are none.
        self._answering = asyncio.Semaphore(ANSWERS_AT_ONCE if not ice.servers else 1 << 30)
        #: Told when a call ends (to close the visitor's socket, say).
        self.on_call_ended: Callable[[LiveCall], None] | None = None
        #: Told how long a phase of setting up a call or a leg took: ``(phase, seconds)``.
        self.on_setup: Callable[[str, float], None] | None = None

    # --- visitors ---------------------------------------------------------------------------------

    async def place(
        self,
        *,
        button: Button,
        page_url: str | None,
        offer_sdp: str,
        send_visitor: VisitorSend,
        visitor: dict[str, str] | None = None,
        admit: Callable[[], Awaitable[None]] | None = None,
        link: LinkClaim | None = None,
    ) -> LiveCall:
        """Start a call from a visitor's request; the visitor is told every state through ``send_visitor``.

        ``admit`` is awaited once the request is known to be well-formed and may refuse it by raising
        (rate limits); a refused or malformed request creates no call. With ``link`` the call is an
        outbound call through a call link: it rings only the link's agent, and only if the link can
        still be claimed.
        """
        requested_at = asyncio.get_running_loop().time()
        if self.closing or not self.accepting:
            raise ProtocolError("unavailable", "the service is shutting down; call again in a moment", "call")
        check_offer(offer_sdp)  # a malformed offer is a bad request, not a call attempt
        answers = check_visitor_form(button.form_fields, visitor) if link is None else {}
        if admit is not None:
            await admit()
            if self.closing or not self.accepting:  # (it began to drain meanwhile)
                raise ProtocolError("unavailable", "the service is shutting down; call again in a moment", "call")
        if self.max_calls and len(self.calls) >= self.max_calls:
            self.refused_at_capacity += 1
            raise ProtocolError("unavailable", BUSY, "call")
        if self.load.overloaded:
            self.refused_overloaded += 1
            log.warning(REFUSED_OVERLOADED, utilisation=round(self.load.utilisation, 3), calls=len(self.calls))
            raise ProtocolError("unavailable", BUSY, "call")
        if link is not None and not self._link_agent_online(link.agent_id):
            # Checked before the link is claimed: a customer who tries while the agent reloads its
            # page keeps the link for another try.
            raise ProtocolError("unavailable", "the person who sent this link is not online; try again soon", "call")
        if link is not None and not await link.claim():
            raise ProtocolError("link_used", "this call link was used already or has expired", "call")
        call = Call(
            organisation_id=button.organisation_id,
            button_id=button.id,
            page_url=page_url,
            events=self._events,
            outbox=self.outbox,
            node=self.node,
            direction="outbound" if link is not None else "inbound",
            visitor=answers,
        )
        if link is not None:
            self._spawn(self._attach_link(link, call))
        leg = self._new_leg("visitor")
        leg.bind(call_id=str(call.id), org_id=str(button.organisation_id))
        live = LiveCall(
            call=call,
            button=button,
            send_visitor=send_visitor,
            leg=leg,
            bridge=Bridge(leg),
            ring_timeout=float(button.ring_timeout_s or self._ring_timeout),
            visitor=answers,
            only_agent=link.agent_id if link is not None else None,
            requested_at=requested_at,
        )
        leg.on_state = lambda changed, state: self._visitor_leg_state(live, changed, state)
        self.calls[call.id] = live
        self.no_calls.clear()

        if link is None:
            try:
                closed = not hours.is_open(button.opening_hours, button.time_zone, self.clock())
                if not closed and self._directory is not None:
                    live.eligible = await self._directory.eligible_agents(button.organisation_id, button.id)
                    if answers.get("email") or answers.get("phone"):
                        # The ring does not wait for this read: it follows as ``call_details``.
                        live.earlier_calls = None
                        self._spawn(self._tell_history(live))
            except Exception:
                # The database is out, say: this call fails, and says so, rather than hang.
                log.exception(logs.TASK_FAILED, call_id=str(call.id))
                await self.end(live, EndReason.FAILED, detail="routing_unavailable")
                return live
            if closed:
                await self.end(live, EndReason.REJECTED, detail="closed", message=button.closed_message)
                return live
        if not self._anyone_online(live):
            await self.end(live, EndReason.REJECTED, detail="no_agent_available")
            return live

        call.queue()
        self.queues.add(live)
        wait = LINK_WAIT_SECONDS if link is not None else float(button.max_queue_wait_s)
        live.wait_timer = asyncio.get_running_loop().call_later(
            wait, lambda: self._spawn(self.end(live, EndReason.NO_ANSWER, detail="max_wait"))
        )
        self.dispatch(button.organisation_id)
        if live.rung:  # an agent was free (a call that waits for one is not setting up)
            self._setup_took("ring", requested_at)
        self.queues.announce(button.id)

        try:
            async with self._answering:
                if call.ended:
                    return live  # gone while waiting its turn (the leg is closed)
                answer = await leg.answer(offer_sdp)
        except SdpError:
            if call.ended:
                return live  # ended meanwhile (declined, say), which closed the leg under the answer
            await self.end(live, EndReason.FAILED, detail="offer_refused")
            raise
        if call.ended:
            return live
        send_visitor(messages.Answer(sdp=answer))
        self._setup_took("visitor_answer", requested_at)
        live.visitor_has_answer = True
        if call.state is CallState.ANSWERED:
            send_visitor(messages.CallState(call_id=call.id, state=CallState.ANSWERED.value))
        else:
            live.bridge.start_ringback()
        return live

    async def _tell_history(self, live: LiveCall) -> None:
        """Read how many earlier calls the visitor made (by email or phone) and tell the agents the
        call rings, or the one who answered it. Whom a button rings is kept in memory
        (``server.directory``), so that a ring waits for no database read; this one follows. If it
        fails (the database is away), the call goes on without the history."""
        assert self._directory is not None
        call = live.call
        try:
            count = await self._directory.earlier_calls(
                call.organisation_id, call.id, live.visitor.get("email"), live.visitor.get("phone")
            )
        except Exception as exc:
            log.warning(HISTORY_UNAVAILABLE, call_id=str(call.id), error=f"{type(exc).__name__}: {exc}")
            return
        if call.ended:
            return
        live.earlier_calls = count
        live.ring_message = None  # agents rung from now on hear it with the ring
        details = messages.CallDetails(call_id=call.id, visitor={"earlier_calls": count})
        for agent, _ in live.rung.values():
            agent.send(details)
        if live.agent is not None:
            live.agent.send(details)

    async def _attach_link(self, link: LinkClaim, call: Call) -> None:
        await call.flush()
        try:
            await link.attach(call.id)
        except Exception:
            log.warning(logs.TASK_FAILED, exc_info=True, call_id=str(call.id))

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

    async def agent_offer(self, agent: Agent, socket: AgentSocket, sdp: str) -> str:
        """Negotiate ``socket``'s standing leg, replacing an earlier one; return our answer."""
        if agent.call_socket is socket:
            raise ProtocolError("wrong_state", "the audio connection cannot be replaced during a call", "offer")
        offered_at = asyncio.get_running_loop().time()
        leg = self._new_leg("agent")
        leg.bind(agent_id=str(agent.user_id), org_id=str(agent.organisation_id))
        leg.on_state = lambda changed, state: self._agent_leg_state(agent, socket, changed, state, offered_at)
        async with self._answering:
            answer = await leg.answer(sdp)
        if socket not in agent.sockets or agent.call_socket is socket:
            # The socket went (or took a call) while we answered: this leg has no owner.
            await leg.close()
            raise ProtocolError("wrong_state", "the audio connection is no longer wanted", "offer")
        previous, socket.leg = socket.leg, leg
        if previous is not None:
            await previous.close()
        self.changed(agent)
        return answer

    def set_presence(self, agent: Agent, status: str) -> None:
        agent.wants_available = status == "available"
        self.changed(agent)

    def changed(self, agent: Agent) -> None:
        """Some part of ``agent``'s presence changed: tell the agent, and route (soon) if its presence
        did. An agent who chose to be away may leave queued calls nobody can answer: they end."""
        if agent.changed():
            self._dispatch_soon(agent.organisation_id)
            if agent.presence is Presence.AWAY and not agent.wants_available:
                self._spawn(self._end_unanswerable(agent.organisation_id))

    async def accept(self, agent: Agent, socket: AgentSocket, call_id: uuid.UUID) -> None:
        live = self.calls.get(call_id)
        if live is None or call_id not in agent.ringing:
            raise ProtocolError("wrong_state", f"call {call_id} is not ringing you", "accept")
        leg = agent.connected_leg(socket)
        if leg is None:
            raise ProtocolError("wrong_state", "your audio is not connected; send an offer first", "accept")
        call = live.call
        self._cancel(live.wait_timer)
        _, timer = live.rung.pop(agent.user_id)
        timer.cancel()
        agent.ringing.discard(call_id)
        call.answer(agent.user_id)
        self._stop_ringing(live, "answered_elsewhere")
        self.queues.remove(live)
        live.agent = agent
        agent.call_id = call_id
        agent.call_socket = socket
        if live.button.recording_enabled and self._recordings is not None and self._mux is not None:
            live.recording = CallRecording(
                store=self._recordings,
                mux=self._mux,
                organisation_id=call.organisation_id,
                call_id=call.id,
                call_row_stored=call.row_stored,
                call_stored=call.flush,
                outbox=self.outbox,
                stats=self.recording_stats,
                on_opened=self._recording_opened,
            )
            live.bridge.connect(leg, live.recording.recorder)
            live.recording.start()
        else:
            live.bridge.connect(leg)
        state = messages.CallState(call_id=call_id, state=CallState.ANSWERED.value)
        agent.send(state)
        if live.visitor_has_answer:
            live.send_visitor(state)
        self.changed(agent)
        self.queues.announce(live.button.id)

    async def decline(self, agent: Agent, call_id: uuid.UUID) -> None:
        live = self.calls.get(call_id)
        if live is None or call_id not in agent.ringing:
            raise ProtocolError("wrong_state", f"call {call_id} is not ringing you", "decline")
        live.declined.add(agent.user_id)
        self._unring(live, agent, "declined")
        live.call.agent_event("agent_declined", agent.user_id)
        self.changed(agent)
        self.dispatch(live.call.organisation_id)
        if not live.call.ended and not live.rung and self._all_declined(live):
            await self.end(live, EndReason.REJECTED, detail="declined")
        else:
            self.queues.announce(live.button.id)

    async def agent_hangup(self, agent: Agent, call_id: uuid.UUID) -> None:
        live = self.calls.get(call_id)
        if live is None or live.agent is not agent:
            raise ProtocolError("wrong_state", f"you are not in call {call_id}", "hangup")
        await self.end(live, EndReason.AGENT_HANGUP)

    async def agent_gone(self, agent: Agent, socket: AgentSocket, *, clean: bool, detail: str | None = None) -> None:
        """One of the agent's sockets closed: its leg goes, and its call if it carried one; when it
        was the last, the agent's rings stop and, after the reload grace, the agent is forgotten.

        A call in progress ends as ``agent_hangup`` when the socket closed normally, else ``failed``.
        """
        if socket in agent.sockets:
            agent.sockets.remove(socket)
        if agent.call_socket is socket and agent.call_id is not None and (live := self.calls.get(agent.call_id)):
            if clean:
                await self.end(live, EndReason.AGENT_HANGUP)
            else:
                await self.end(live, EndReason.FAILED, detail=detail or "agent_disconnected")
        if socket.leg is not None:
            leg, socket.leg = socket.leg, None
            await leg.close()
        if not agent.sockets:
            for call_id in list(agent.ringing):
                live = self.calls.get(call_id)
                if live is not None:
                    self._unring(live, agent, "agent_offline")
                    live.call.agent_event("agent_ring_stopped", agent.user_id, "agent_offline")
            self._cancel(agent.forget_timer)
            agent.forget_timer = asyncio.get_running_loop().call_later(RELOAD_GRACE_SECONDS, self._agent_left, agent)
        self.changed(agent)

    def _agent_left(self, agent: Agent) -> None:
        """The reload grace after an agent's last socket passed: it is gone, and the calls that only
        it could answer end."""
        agent.forget_timer = None
        if agent.sockets:
            return
        self.roster.forget(agent)
        self._spawn(self._end_unanswerable(agent.organisation_id))

    async def _end_unanswerable(self, organisation_id: uuid.UUID) -> None:
        """End the queued calls of the organisation that nobody online may answer any more."""
        for live in self.queues.waiting(organisation_id):
            if not live.call.ended and not self._anyone_online(live):
                await self.end(live, EndReason.REJECTED, detail="agent_offline")

    # --- ending -----------------------------------------------------------------------------------

    async def end(
        self, live: LiveCall, reason: EndReason, detail: str | None = None, message: str | None = None
    ) -> None:
        """End a call for everyone on it; a no-op when it already ended."""
        call = live.call
        answered = call.state is CallState.ANSWERED
        if not call.end(reason):
            return
        self._cancel(live.wait_timer)
        self._stop_ringing(live, "ended")
        self.queues.remove(live)
        rating_token = None
        if answered:
            rating_token = secrets.token_urlsafe(18)
            call.rating_token(rating_token)
        ended = messages.CallState(call_id=call.id, state=CallState.ENDED.value, reason=reason.value, detail=detail)
        live.send_visitor(
            messages.CallState(
                call_id=call.id,
                state=CallState.ENDED.value,
                reason=reason.value,
                detail=detail,
                message=message,
                rating_token=rating_token,
            )
        )
        agent = live.agent
        if agent is not None:
            agent.call_id = None
            agent.call_socket = None
            agent.send(ended)
            self._wrap_up(agent, live.button.wrap_up_s)
            self.changed(agent)
        self.calls.pop(call.id, None)
        if not self.calls:
            self.no_calls.set()
        self._spawn(call.flush())
        if self.on_call_ended is not None:
            self.on_call_ended(live)
        self.queues.announce(live.button.id)
        await live.bridge.close()
        await live.leg.close()
        if live.recording is not None:
            self._spawn(live.recording.finish())

    async def close(self) -> None:
        """Shut down: refuse new calls, end every call, close every leg, wait for every write."""
        self.closing = True
        self.outbox.give_up_after(SHUTDOWN_GRACE_SECONDS)
        for live in list(self.calls.values()):
            await self.end(live, EndReason.SHUTDOWN)
        for timer in self._wrap_up_timers.values():
            timer.cancel()
        for leg in list(self._legs):
            await leg.close()
        await self.drain()

    async def drain(self) -> None:
        """Wait for every task this switchboard started, among them the writes of ended calls."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- routing ----------------------------------------------------------------------------------

    def dispatch(self, organisation_id: uuid.UUID) -> None:
        """Ring agents for the organisation's queued calls, oldest first whatever their button: each
        call that rings nobody (or, ringing all, every agent free since) gets who its strategy picks."""
        queued = self.queues.waiting(organisation_id)
        # The organisation's available agents, worked out once: an agent rung here is no longer
        # available (they are ringing), and nothing else changes during a dispatch.
        available = self.roster.available(organisation_id) if queued else []
        for live in queued:
            if live.call.state is not CallState.QUEUED or (live.rung and live.button.strategy != "ring_all"):
                continue
            candidates = [
                agent
                for agent in self._free(live, available)
                if agent.user_id not in live.declined and agent.user_id not in live.rung
            ]
            fresh = [agent for agent in candidates if agent.user_id not in live.timed_out]
            if not fresh and not live.rung:
                live.timed_out.clear()  # everyone was tried: start another round
                fresh = candidates
            chosen = self.queues.choose(live.button, fresh)
            for agent in chosen:
                self._ring(live, agent)
            if chosen:
                available = [agent for agent in available if agent.presence is Presence.AVAILABLE]
        for button_id in {live.button.id for live in queued}:
            self.queues.announce(button_id)

    def _dispatch_soon(self, organisation_id: uuid.UUID) -> None:
        """Dispatch once the current step is done (coalesced): a presence change in the middle of
        accepting or ending a call must not route before that call's own state is settled."""
        if organisation_id in self._dispatching or self.closing:
            return
        self._dispatching.add(organisation_id)

        def run() -> None:
            self._dispatching.discard(organisation_id)
            self.dispatch(organisation_id)

        asyncio.get_running_loop().call_soon(run)

    def _free(self, live: LiveCall, available: list[Agent]) -> list[Agent]:
        """The agents who could be rung for ``live`` now: the ``available`` ones the button routes to;
        for a call link, its agent, available or not, as long as its audio is connected and it is free."""
        if live.only_agent is not None:
            agent = self.roster.get(live.only_agent)
            if agent is None or agent.connected_leg() is None:
                return []
            return [agent] if agent.presence in (Presence.AVAILABLE, Presence.AWAY) else []
        return [agent for agent in available if live.may_ring(agent)]

    def _ring(self, live: LiveCall, agent: Agent) -> None:
        call = live.call
        timer = asyncio.get_running_loop().call_later(live.ring_timeout, self._ring_timed_out, live, agent)
        live.rung[agent.user_id] = (agent, timer)
        agent.ringing.add(call.id)
        if live.ring_message is None:  # the same for every agent rung
            live.ring_message = messages.Ring(
                call_id=call.id,
                button={"id": str(live.button.id), "name": live.button.name},
                visitor={**live.visitor, "page_url": call.page_url}
                | ({} if live.earlier_calls is None else {"earlier_calls": live.earlier_calls}),
                ring_timeout=live.ring_timeout,
                direction=call.direction,
            )
        agent.send(live.ring_message)
        self.changed(agent)
        call.agent_event("agent_rung", agent.user_id)
        log.debug(logs.AGENT_RUNG, call_id=str(call.id), agent_id=str(agent.user_id))  # (also a call event)

    def _ring_timed_out(self, live: LiveCall, agent: Agent) -> None:
        if agent.user_id not in live.rung or live.call.ended:
            return
        live.timed_out.add(agent.user_id)
        self._unring(live, agent, "timeout")
        live.call.agent_event("agent_ring_timeout", agent.user_id)
        self.changed(agent)
        self.dispatch(live.call.organisation_id)

    def _unring(self, live: LiveCall, agent: Agent, reason: str) -> None:
        entry = live.rung.pop(agent.user_id, None)
        if entry is not None:
            entry[1].cancel()
        agent.ringing.discard(live.call.id)
        agent.send(messages.RingStopped(call_id=live.call.id, reason=reason))
        self.changed(agent)

    def _stop_ringing(self, live: LiveCall, reason: str) -> None:
        for agent, _ in list(live.rung.values()):
            self._unring(live, agent, reason)
            live.call.agent_event("agent_ring_stopped", agent.user_id, reason)

    def _link_agent_online(self, agent_id: uuid.UUID) -> bool:
        agent = self.roster.get(agent_id)
        return agent is not None and agent.connected

    def _anyone_online(self, live: LiveCall) -> bool:
        """Whether an agent who may answer this call is there at all (not offline, not away; a call
        link's agent need only be connected)."""
        if live.only_agent is not None:
            return self._link_agent_online(live.only_agent)
        return any(
            live.may_ring(agent) and agent.presence not in (Presence.OFFLINE, Presence.AWAY)
            for agent in self.roster.of(live.call.organisation_id)
        )

    def _all_declined(self, live: LiveCall) -> bool:
        online = [
            agent
            for agent in self.roster.of(live.call.organisation_id)
            if live.may_ring(agent) and agent.presence not in (Presence.OFFLINE, Presence.AWAY)
        ]
        return all(agent.user_id in live.declined for agent in online)

    def _wrap_up(self, agent: Agent, seconds: int) -> None:
        previous = self._wrap_up_timers.pop(agent.user_id, None)
        self._cancel(previous)
        if seconds <= 0:
            agent.wrap_up_until = 0.0
            return
        loop = asyncio.get_running_loop()
        agent.wrap_up_until = time.monotonic() + seconds

        def done() -> None:
            self._wrap_up_timers.pop(agent.user_id, None)
            self.changed(agent)

        self._wrap_up_timers[agent.user_id] = loop.call_later(seconds, done)

    # --- internals --------------------------------------------------------------------------------

    def _new_leg(self, role: str) -> Leg:
        """A leg this switchboard tracks until it closes, so that none outlives :meth:`close`."""
        leg = Leg(role, self._ice)
        self._legs.add(leg)
        return leg

    def _visitor_leg_state(self, live: LiveCall, leg: Leg, state: LegState) -> None:
        if state is LegState.CONNECTED:
            self._setup_took("visitor_connected", live.requested_at)
        if state is LegState.CLOSED:
            self._leg_closed(leg)
        # A leg closed by its peer (not by us: then the call has already ended) is as gone as a
        # failed one.
        if state in (LegState.FAILED, LegState.CLOSED) and not live.call.ended:
            self._spawn(self.end(live, EndReason.FAILED, detail="visitor_media_failed"))

    def _agent_leg_state(self, agent: Agent, socket: AgentSocket, leg: Leg, state: LegState, offered_at: float) -> None:
        if state is LegState.CONNECTED:
            self._setup_took("agent_connected", offered_at)
        if state is LegState.CLOSED:
            self._leg_closed(leg)
        if leg is not socket.leg:
            return
        socket.send(messages.LegState(state=state.value))
        if state in (LegState.FAILED, LegState.CLOSED) and agent.call_socket is socket and agent.call_id:
            live = self.calls.get(agent.call_id)
            if live is not None:
                self._spawn(self.end(live, EndReason.FAILED, detail="agent_media_failed"))
        self.changed(agent)

    def _leg_closed(self, leg: Leg) -> None:
        if leg in self._legs:
            self._legs.discard(leg)
            for reason, count in leg_drops(leg).items():
                self.packets_dropped[reason] += count

    def packets_dropped_now(self) -> collections.Counter[str]:
        """Packets the media path dropped since start, by why: closed legs' and open legs'."""
        total = collections.Counter(self.packets_dropped)
        for leg in self._legs:
            total.update(leg_drops(leg))
        return total

    def _setup_took(self, phase: str, since: float) -> None:
        if self.on_setup is not None:
            self.on_setup(phase, asyncio.get_running_loop().time() - since)

    def _recording_opened(self, seconds: float) -> None:
        if self.on_setup is not None:
            self.on_setup("recording_open", seconds)

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(logs.TASK_FAILED, exc_info=task.exception())
