"""Running a load test: calls started at a rate, up to a concurrency, each measured end to end.

Every call gets its own pair of tones (visitor low, agent high), so each party's check proves it hears
exactly its own partner: no silence, no cross-talk, no swapped legs. Phases are timed on this
process's clock from the messages each side sends and receives.

Which agent takes a call is the server's choice, as with real agents: each call is answered by the
first agent the server rings for it who is not taking another (:class:`Takers`), so a longest-idle or
round-robin button is driven as well as a ring-all one.

One call at a time is ringing: the next call is requested once the previous one is answered (or has
failed). A ring-all button rings every available agent for each call, so a call that arrives while
every agent is ringing waits in the queue; without that gate the test would measure the queue (the
routing policy), not the deployment. ``--overlapping-rings`` removes it (with a button that rings one
agent a call, calls then ring and are answered in parallel).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tqdm import tqdm

from loadtest.clients import Message, ProtocolFailure, SyntheticAgent, SyntheticVisitor
from loadtest.peer import Impairment, LoadPeer
from loadtest.quality import mos, percentiles
from media.synthetic import tone_loop

PHASES = (
    "socket_connected",
    "request_to_ringing",
    "accept_to_connected",
    "accept_to_first_audio_visitor",
    "accept_to_first_audio_agent",
    "hangup_to_ended",
)
HEARD_SHARE = 0.8  # of the window's power at the partner's tone
_TIMEOUT = 10.0


@dataclass
class Options:
    base_url: str
    button_key: str
    origin: str
    agents: list[tuple[str, str]]
    calls: int = 20
    rate: float = 2.0  # calls started per second
    concurrency: int = 5
    talk_time: float = 3.0
    answer_delay: float = 0.0
    duration_limit: float = 600.0
    hangup_by: str = "alternate"  # visitor, agent or alternate
    impairment: Impairment = field(default_factory=Impairment)
    overlapping_rings: bool = False
    seed: int = 1
    progress: bool = False


@dataclass
class Side:
    """What one party of one call measured."""

    heard_share: float = 0.0
    heard_frequency: float = 0.0
    packets: int = 0
    lost: int = 0
    loss_percent: float = 0.0
    jitter_ms: float = 0.0
    rtt_ms: float | None = None
    mos: float | None = None


@dataclass
class CallResult:
    index: int
    visitor_tone: float
    agent_tone: float
    agent: str = ""
    call_id: str | None = None
    started_at: float = 0.0  # seconds since the run started
    answered_at: float | None = None
    ended_at: float | None = None
    talk_seconds: float | None = None
    hung_up_by: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # milliseconds
    visitor: Side = field(default_factory=Side)
    agent_side: Side = field(default_factory=Side)
    failures: list[str] = field(default_factory=list)
    #: What exactly, for failures that can say (a socket's close code and reason, the server's error)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, reason: str, detail: str = "") -> None:
        if reason not in self.failures:
            self.failures.append(reason)
            if detail:
                self.details[reason] = detail


VISITOR_TONES, AGENT_TONES = 45, 75
#: With one ringing call at a time, how many visitors may have their socket open and offer made,
#: waiting for their turn. A browser requests its call within moments of opening its socket; the
#: server closes a visitor socket that has not in 30 s ("no call was requested"), which at 192
#: calls started at once, all opened at the start and queued for the ringing turn, most did.
PREPARED_AHEAD = 4


def tones(index: int) -> tuple[float, float]:
    """Call ``index``'s (visitor, agent) tones: 45 visitor and 75 agent tones, 20 Hz apart, far
    from the ringback's 440/480 Hz on the agent's side. Calls that could overlap never share one."""
    return 300.0 + 20 * (index % VISITOR_TONES), 1500.0 + 20 * (index % AGENT_TONES)


def encode_tones(calls: int) -> None:
    """Encode now every tone the first ``calls`` calls send (each is encoded once per process:
    about 16 ms of libopus). Left to each call's start, a burst of 50 calls set up at once spent
    1.5 s of the load tester's event loop encoding, and the calls' negotiations waited for it."""
    for index in range(min(calls, max(VISITOR_TONES, AGENT_TONES))):
        for frequency in tones(index):
            tone_loop(frequency)


class Takers:
    """Which agent takes which call: the first the server rings for it who is not taking another call.

    Rings are heard on the agents' sockets, and may arrive before the visitor has learnt its call's id:
    they are kept by call until taken, stopped (``ring_stopped``) or forgotten."""

    def __init__(self) -> None:
        self._rung: dict[str, dict[SyntheticAgent, float]] = {}  # call id -> agents ringing, since when
        self._taken: dict[str, SyntheticAgent] = {}  # call id -> the agent taking it
        self._changed = asyncio.Event()

    def heard(self, agent: SyntheticAgent, message: Message) -> None:
        call_id = str(message.get("call_id"))
        if message.get("type") == "ring":
            self._rung.setdefault(call_id, {})[agent] = time.monotonic()
        else:
            rung = self._rung.get(call_id, {})
            rung.pop(agent, None)
            if not rung:
                self._rung.pop(call_id, None)
        self._wake()

    async def take(self, call_id: str, within: float) -> tuple[SyntheticAgent, float]:
        """An agent rung for ``call_id`` and free to take it (now taken), and when its ring arrived."""
        deadline = time.monotonic() + within
        while True:
            taking = set(self._taken.values())
            for agent, rung_at in self._rung.get(call_id, {}).items():
                if agent not in taking:
                    self._taken[call_id] = agent
                    del self._rung[call_id][agent]
                    return agent, rung_at
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise ProtocolFailure("agent_not_rung") from None

    def done(self, call_id: str | None) -> SyntheticAgent | None:
        """``call_id`` is over: its agent (if one took it) is free for another, and rings still kept
        for it (a failed call's) are not wanted. The agent who took it, if any."""
        self._rung.pop(str(call_id), None)
        agent = self._taken.pop(str(call_id), None)
        if agent is not None:
            self._wake()
        return agent

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class Run:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.results: list[CallResult] = []
        #: (seconds into the run, calls in conversation: answered and not yet ended), every 0.5 s
        self.concurrency_samples: list[tuple[float, int]] = []
        self._active = 0  # calls started and not finished (waiting for an agent or a turn included)
        self._talking = 0
        self._rng = random.Random(options.seed)
        self.takers = Takers()
        self._ringing = asyncio.Lock()
        self._next_up = asyncio.Semaphore(PREPARED_AHEAD)
        self._began = 0.0
        self._bar: Any = None
        #: The button records its calls (the visitor socket's greeting says so).
        self.recorded = False

    async def run(self) -> list[CallResult]:
        options = self.options
        encode_tones(options.calls)
        self._began = time.monotonic()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            agents = [
                SyntheticAgent(http, options.base_url, email, password, impairment=options.impairment, rng=self._rng)
                for email, password in options.agents
            ]
            for agent in agents:
                agent.on_ring = self.takers.heard
            try:
                await asyncio.gather(*(agent.start(listen_tone=1000.0) for agent in agents))
                await self._calls(http, min(options.concurrency, len(agents)))
            finally:
                for agent in agents:
                    await agent.close()
        return self.results

    async def _calls(self, http: aiohttp.ClientSession, concurrency: int) -> None:
        options = self.options
        slots = asyncio.Semaphore(concurrency)
        tasks: list[asyncio.Task[None]] = []
        sampler = asyncio.create_task(self._sample())
        self._bar = tqdm(total=options.calls, unit="call", disable=not options.progress, dynamic_ncols=True)
        try:
            for index in range(options.calls):
                due = self._began + index / options.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if time.monotonic() - self._began > options.duration_limit:
                    break
                await slots.acquire()
                result = CallResult(index, *tones(index))
                result.started_at = time.monotonic() - self._began
                self.results.append(result)
                task = asyncio.create_task(self._call(http, result))
                task.add_done_callback(lambda _: slots.release())
                tasks.append(task)
            await asyncio.gather(*tasks)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
            self._bar.close()

    async def _sample(self) -> None:
        while True:
            self.concurrency_samples.append((round(time.monotonic() - self._began, 2), self._talking))
            await asyncio.sleep(0.5)

    async def _call(self, http: aiohttp.ClientSession, result: CallResult) -> None:
        self._active += 1
        visitor = SyntheticVisitor(http, self.options.base_url, self.options.button_key, self.options.origin)
        try:
            await self.talk(result, visitor)
        except ProtocolFailure as failure:
            result.fail(failure.reason, failure.detail)
        except Exception as exc:  # a bug or an unexpected server answer: counted, not fatal to the run
            result.fail(f"error:{type(exc).__name__}")
        finally:
            self._active -= 1
            if result.answered_at is not None:
                self._talking -= 1
            await visitor.close()
            self._progress(result)

    async def talk(self, result: CallResult, visitor: SyntheticVisitor) -> None:
        """One call, from the visitor's socket to both parties' checks after the hang-up, answered by
        an agent the server rang for it (see :class:`Takers`: every agent must be enlisted there)."""
        try:
            async with contextlib.nullcontext() if self.options.overlapping_rings else self._next_up:
                peer, agent, call_id, accepted = await self._answered_call(result, visitor)
            await self._talk(result, visitor, peer, agent, call_id, accepted)
        finally:
            taker = self.takers.done(result.call_id)
            if taker is not None and taker.socket.closed:
                result.fail("agent_socket_lost")

    async def _talk(
        self, result: CallResult, visitor: SyntheticVisitor, peer: LoadPeer, agent: SyntheticAgent, call_id: str,
        accepted: float,
    ) -> None:  # fmt: skip
        options = self.options
        assert agent.peer is not None

        window_at = accepted + min(1.0, options.talk_time / 2)
        peer.capture_window(window_at)
        agent.peer.capture_window(window_at)
        first_visitor, first_agent = await asyncio.gather(
            peer.wait_first_audio(_TIMEOUT), agent.peer.wait_first_audio(_TIMEOUT)
        )
        if first_visitor is None:
            result.fail("no_audio_at_visitor")
        else:
            result.phases["accept_to_first_audio_visitor"] = _ms(first_visitor - accepted)
        if first_agent is None:
            result.fail("no_audio_at_agent")
        else:
            result.phases["accept_to_first_audio_agent"] = _ms(first_agent - accepted)
        await asyncio.sleep(max(0.0, accepted + options.talk_time - time.monotonic()))
        for side, listener in ((result.visitor, peer), (result.agent_side, agent.peer)):
            if await listener.wait_window(1.0):
                side.heard_share, side.heard_frequency = listener.heard()
        if result.visitor.heard_share < HEARD_SHARE:
            result.fail("visitor_heard_wrong_audio")
        if result.agent_side.heard_share < HEARD_SHARE:
            result.fail("agent_heard_wrong_audio")

        await self._hang_up(result, visitor, agent, call_id)
        result.talk_seconds = round((result.ended_at or 0) - (result.answered_at or 0), 3)
        await self._quality(result.visitor, peer)
        await self._quality(result.agent_side, agent.peer)
        # An agent's socket lives for the whole run and hears every call's ring: keep only what is
        # still to be waited for, or a long run slows down and grows.
        agent.socket.forget(
            lambda m: m.get("call_id") == call_id or m.get("type") in ("ring", "ring_stopped", "presence", "leg_state")
        )

    async def _answered_call(
        self, result: CallResult, visitor: SyntheticVisitor
    ) -> tuple[LoadPeer, SyntheticAgent, str, float]:
        """From the visitor's socket to the call answered (one call ringing at a time unless
        overlapping): the visitor's peer, the agent who took it, the call's id, and when it accepted."""
        options = self.options
        began = time.monotonic()
        await visitor.connect()
        result.phases["socket_connected"] = _ms(time.monotonic() - began)
        self.recorded = self.recorded or bool((visitor.hello.get("button") or {}).get("recording", {}).get("enabled"))
        peer = visitor.peer = LoadPeer(
            send_tone=result.visitor_tone, expect_tone=result.agent_tone,
            ice_servers=visitor.hello.get("ice_servers") or [], impairment=options.impairment, rng=self._rng,
        )  # fmt: skip
        offer = await peer.offer()

        async with contextlib.nullcontext() if options.overlapping_rings else self._ringing:
            requested = time.monotonic()
            await visitor.socket.send({"type": "call", "sdp": offer, "page_url": "https://loadtest.invalid/call"})
            state = await visitor.socket.wait(
                lambda m: m.get("type") in ("call_state", "error"), _TIMEOUT, "no_call_state"
            )
            if state["type"] == "error":
                # Refused before a call existed (a rate limit, a refused offer): say which.
                raise ProtocolFailure(f"refused:{state.get('code')}", str(state.get("message", "")))
            call_id = result.call_id = str(state["call_id"])
            if state.get("state") == "ended":
                raise ProtocolFailure(f"{state.get('reason')}:{state.get('detail') or ''}".rstrip(":"))
            answer = await visitor.socket.wait(lambda m: m.get("type") == "answer", _TIMEOUT, "no_answer_sdp")
            await peer.answer(answer["sdp"])
            agent, rung_at = await self.takers.take(call_id, _TIMEOUT)
            result.agent = agent.email
            result.phases["request_to_ringing"] = _ms(rung_at - requested)
            assert agent.peer is not None
            agent.peer.next_call(send_tone=result.agent_tone, expect_tone=result.visitor_tone)
            await asyncio.sleep(options.answer_delay)
            accepted = time.monotonic()
            peer.listen_for_partner(accepted)
            agent.peer.listen_for_partner(accepted)
            await agent.socket.send({"type": "accept", "call_id": call_id})
            answered = await visitor.socket.wait(
                lambda m: m.get("type") == "call_state" and m.get("state") in ("answered", "ended"),
                _TIMEOUT,
                "not_connected",
            )
            if answered.get("state") != "answered":
                raise ProtocolFailure(f"{answered.get('reason')}:{answered.get('detail') or ''}".rstrip(":"))
        result.phases["accept_to_connected"] = _ms(answered["_at"] - accepted)
        result.answered_at = accepted - self._began
        self._talking += 1  # until the call is over (_call)
        return peer, agent, call_id, accepted

    async def _hang_up(
        self, result: CallResult, visitor: SyntheticVisitor, agent: SyntheticAgent, call_id: str
    ) -> None:
        by = self.options.hangup_by
        if by == "alternate":
            by = "visitor" if result.index % 2 == 0 else "agent"
        result.hung_up_by = by
        hung_up = time.monotonic()
        if by == "visitor":
            await visitor.socket.send({"type": "hangup"})
            ended = await agent.socket.wait(
                lambda m: m.get("type") == "call_state" and m.get("call_id") == call_id and m.get("state") == "ended",
                _TIMEOUT,
                "not_ended",
            )
        else:
            await agent.socket.send({"type": "hangup", "call_id": call_id})
            ended = await visitor.socket.wait(
                lambda m: m.get("type") == "call_state" and m.get("state") == "ended", _TIMEOUT, "not_ended"
            )
        result.phases["hangup_to_ended"] = _ms(ended["_at"] - hung_up)
        result.ended_at = hung_up - self._began
        expected = f"{by}_hangup"
        if ended.get("reason") != expected:
            result.fail(f"ended_as_{ended.get('reason')}")

    @staticmethod
    async def _quality(side: Side, peer: LoadPeer) -> None:
        reception = peer.reception
        side.packets = reception.call_packets
        side.lost = reception.lost
        side.loss_percent = round(reception.loss_percent, 2)
        side.jitter_ms = round(reception.jitter * 1000, 2)
        side.rtt_ms = (await peer.stats())["rtt_ms"]
        side.mos = mos(side.loss_percent, side.jitter_ms, side.rtt_ms)

    def _progress(self, result: CallResult) -> None:
        if self._bar is None:
            return
        done = [r for r in self.results if r.ended_at is not None or r.failures]
        first_audio = [
            r.phases[p] for r in done for p in ("accept_to_first_audio_visitor", "accept_to_first_audio_agent")
            if p in r.phases
        ]  # fmt: skip
        self._bar.set_postfix(
            started=len(self.results),
            connected=sum(1 for r in self.results if r.answered_at is not None),
            failed=sum(1 for r in done if r.failures),
            concurrent=self._active,
            first_audio_p95_ms=percentiles(first_audio)["p95"],
            refresh=False,
        )
        self._bar.update(1)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
