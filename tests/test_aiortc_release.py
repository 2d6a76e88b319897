"""A closed call's connections are freed by reference counting (media/aiortc_release.py), so that the
server can freeze what is alive out of the collector's way (server.app.collect_garbage) without ended
calls piling up behind it. With the collector off, everything of a bridged call goes once it is closed;
when aiortc or aioice gain a reference cycle these classes do not cover, the first test fails."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from media.aiortc_release import connection_objects, release
from media.aiortc_seam import pin_host_addresses
from media.bridge import Bridge
from media.leg import IceSettings, Leg
from media.synthetic import OpusLoopTrack


async def connect(tone: float, leg: Leg) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(OpusLoopTrack.of_tone(tone))
    await pc.setLocalDescription(await pc.createOffer())
    answer = await leg.answer(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await asyncio.wait_for(leg.connected.wait(), 10)
    return pc


def parts(leg: Leg) -> list[weakref.ref[Any]]:
    """Weak references to ``leg`` and what it is made of, down to its sockets' protocols."""
    pc: Any = leg._pc
    transceiver = pc.getTransceivers()[0]
    dtls = transceiver.receiver.transport
    connection = dtls.transport._connection
    objects = [leg, pc, transceiver, transceiver.sender, transceiver.receiver, dtls, dtls.transport, connection]
    return [weakref.ref(obj) for obj in objects + list(connection._protocols)]


async def test_a_closed_call_is_freed_without_the_collector(no_collector: None) -> None:
    pin_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    visitor, agent = Leg("visitor", IceSettings()), Leg("agent", IceSettings())
    peers = [await connect(440, visitor), await connect(880, agent)]
    bridge = Bridge(visitor)
    bridge.connect(agent)
    await asyncio.sleep(1)  # audio both ways: forwarding, receive statistics, RTCP
    assert visitor.counters.packets_out > 10 and agent.counters.packets_out > 10
    # While a connection's tasks run, nothing of it is released.
    assert not release(connection_objects(visitor._pc))  # type: ignore[arg-type]
    sent = visitor.counters.packets_out
    await asyncio.sleep(0.3)
    assert visitor.counters.packets_out > sent
    refs = parts(visitor) + parts(agent) + [weakref.ref(bridge)]

    await bridge.close()
    for closable in (visitor, agent, *peers):
        await closable.close()
    del visitor, agent, bridge, peers
    for _ in range(50):
        if all(ref() is None for ref in refs):
            break
        await asyncio.sleep(0.1)
    alive = [type(obj).__name__ for ref in refs if (obj := ref()) is not None]
    assert alive == [], f"still alive with the collector off: {alive}"
    loop.set_exception_handler(None)
    assert errors == []


async def test_a_connection_that_never_connected_is_freed_too(no_collector: None) -> None:
    pin_host_addresses(["127.0.0.1"])
    leg = Leg("visitor", IceSettings())
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(OpusLoopTrack.of_tone(440))
    await pc.setLocalDescription(await pc.createOffer())
    await leg.answer(pc.localDescription.sdp)  # the peer never applies the answer: ICE never completes
    refs = parts(leg)
    await leg.close()
    await pc.close()
    del leg, pc
    for _ in range(50):
        if all(ref() is None for ref in refs):
            break
        await asyncio.sleep(0.1)
    assert [type(obj).__name__ for ref in refs if (obj := ref()) is not None] == []
