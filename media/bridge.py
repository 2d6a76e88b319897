"""The bridge: a call's audio forwarded between its visitor leg and its agent leg as RTP packets.

Each packet that arrives on one leg is rewritten into the other leg's outgoing stream and sent, in the
call that received it from the socket: there is no queue, task, coroutine or decoder between the legs,
so nothing can pile up between them and nothing is transcoded. Before an agent is connected the visitor hears
ringback; connecting the agent is a switch of where packets go, not a negotiation.
"""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from media.leg import Leg
from media.recorder import AGENT, VISITOR, Recorder
from media.ringback import RingbackPlayer


class Bridge:
    """Routes audio for one call. Owns the ringback task; does not own the legs."""

    def __init__(self, visitor: Leg) -> None:
        self.visitor = visitor
        self.agent: Leg | None = None
        #: packets forwarded between the legs so far, both ways (for the server's metrics)
        self.forwarded = 0
        self._ringback = RingbackPlayer(visitor.send)
        self._agent_handler: object = None
        visitor.inbound = None

    def start_ringback(self) -> None:
        self._ringback.start()

    def connect(self, agent: Leg, recorder: Recorder | None = None) -> None:
        """Stop ringback and forward audio both ways between the visitor and ``agent``; with a
        ``recorder``, hand it every forwarded packet (before rewriting: its own RTP timestamps).

        Synchronous, so that whoever answers a call switches its audio in the same step as its state.
        """
        self._ringback.stop()
        self.agent = agent
        visitor = self.visitor
        # Whatever either leg has received and not read yet was said before the call was answered:
        # while the server is behind, seconds of the agent's standing leg (their previous call, the
        # room) wait in its socket. Nobody hears it.
        visitor.discard_queued()
        agent.discard_queued()

        if recorder is None:

            def visitor_to_agent(packet: RtpPacket) -> None:
                self.forwarded += 1
                agent.send(visitor, packet)

            def agent_to_visitor(packet: RtpPacket) -> None:
                self.forwarded += 1
                visitor.send(agent, packet)

        else:
            recorder.start()
            tap = recorder.tap

            def visitor_to_agent(packet: RtpPacket) -> None:
                self.forwarded += 1
                tap(VISITOR, packet.timestamp, packet.payload)
                agent.send(visitor, packet)

            def agent_to_visitor(packet: RtpPacket) -> None:
                self.forwarded += 1
                tap(AGENT, packet.timestamp, packet.payload)
                visitor.send(agent, packet)

        visitor.inbound = visitor_to_agent
        agent.inbound = self._agent_handler = agent_to_visitor

    async def close(self) -> None:
        """Stop forwarding. The agent's leg stays up (it is the agent's standing leg)."""
        await self._ringback.close()
        self.visitor.inbound = None
        if self.agent is not None and self.agent.inbound is self._agent_handler:
            self.agent.inbound = None
        self._agent_handler = None  # (a closure over this bridge: a cycle)
        self.agent = None
